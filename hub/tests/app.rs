//! The hub's composition root in process: the real application (storage, rules,
//! router, tracing) on a random port, over real HTTP, stopped by its shutdown future.

use patron_hub::app::App;
use patron_hub::config::HubConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_hub_serves_in_process_and_stops_on_shutdown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = HubConfig {
        data_dir: dir.path().to_path_buf(),
        insecure_dev: true,
        ..HubConfig::default()
    };
    let app = App::open(&cfg).unwrap_or_else(|e| panic!("{e:#}"));
    let token = app
        .hub
        .add_store("S001", "Store 1", "pilot")
        .unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!(
        "http://{}",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(listener, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let r = http.get(url).send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let (status, health) = get("/healthz").await;
    assert_eq!(
        (status, health["stores"].as_u64()),
        (200, Some(1)),
        "{health}"
    );
    let (status, body) = get("/v1/nowhere").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    // Enrollment through the API, then the stream with the credential it gave.
    let secret = token.rsplit_once('.').map_or("", |t| t.0);
    let enrolled: serde_json::Value = http
        .post(format!("{base}/v1/enroll"))
        .json(&serde_json::json!({"secret": secret, "store_id": "S001", "protocol": 2}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(enrolled["negotiated"]["protocol"], 2, "{enrolled}");
    let credential = enrolled["credential"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stream = |cred: Option<String>| {
        let (http, url) = (http.clone(), format!("{base}/v1/sync/stream"));
        async move {
            let mut req = http.post(url).json(&serde_json::json!({"after": 0}));
            if let Some(c) = cred {
                req = req.bearer_auth(c);
            }
            let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (status, body) = stream(None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = stream(Some(credential)).await;
    assert_eq!(
        (status, body["answer"].as_str()),
        (200, Some("page")),
        "{body}"
    );
    let _ = stop.send(());
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
