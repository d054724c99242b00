//! The edge's composition root in process: the real application (store, rules, API,
//! tracing) on a random port, over real HTTP, stopped by its shutdown future.

use patron_edge::Config;
use patron_edge::app::App;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_edge_serves_in_process_and_stops_on_shutdown() {
    patron_edge::hub::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let rules = dir.path().join("rules.json");
    std::fs::write(&rules, r#"{"version": "in-process-1", "rules": []}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config {
        store_id: "S042".into(),
        data_dir: dir.path().join("data"),
        rules_file: Some(rules),
        ..Config::default()
    };
    let token = patron_edge::service::add_lane(&cfg, "admin", patron_edge::service::Role::Admin)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let app = App::open(cfg).await.unwrap_or_else(|e| panic!("{e:#}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "https://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (transport, tls) = app.transport(addr).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(transport, patron_edge::config::Transport::Https);
    let server = tokio::spawn(app.serve(listener, tls, async {
        let _ = stopped.await;
    }));
    // HTTPS by default, under the CA the edge made for itself (what a POS imports).
    let ca = std::fs::read(dir.path().join("data/tls/ca.pem")).unwrap_or_else(|e| panic!("{e}"));
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap_or_else(|e| panic!("{e}"))])
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let health: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(health["store_id"], "S042", "{health}");
    assert_eq!(health["transport"], "https", "{health}");
    assert_eq!(health["hub"]["enrolled"], false, "{health}");
    let r = client
        .get(format!("{base}/v1/admin/rule-set"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 401, "the POS API wants a lane token");
    let set: serde_json::Value = client
        .get(format!("{base}/v1/admin/rule-set"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(
        set["version"], "in-process-1",
        "the configured rule set is in force: {set}"
    );
    let _ = stop.send(());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
