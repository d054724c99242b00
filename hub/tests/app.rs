//! The hub's composition root in process: the real application (storage, rules,
//! router, tracing) on a random port, over real HTTP, stopped by its shutdown future.

use patron_hub::app::App;
use patron_hub::config::HubConfig;

/// The real hub, serving in process on a random port.
struct Running {
    base: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// S001's one-time enrollment token.
    token: String,
}

impl Running {
    /// Opens the hub in `dir` (data in `hub`, keys beside it; plain HTTP), registers
    /// S001 and serves.
    async fn start(dir: &std::path::Path) -> Running {
        let cfg = HubConfig {
            data_dir: dir.join("hub"),
            insecure_dev: true,
            ..HubConfig::default()
        };
        Running::start_with(&cfg).await
    }

    /// Like [`Running::start`], under `cfg`.
    async fn start_with(cfg: &HubConfig) -> Running {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = App::open(cfg).unwrap_or_else(|e| panic!("{e:#}"));
        let token = app
            .hub
            .enrollment
            .add_store(
                "S001",
                "Store 1",
                "pilot",
                patron_hub::enrollment::TOKEN_VALID_MS,
            )
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
        Running {
            base,
            stop,
            server,
            token,
        }
    }

    /// S001 enrolls through the API; the answer.
    async fn enroll(&self, http: &reqwest::Client) -> serde_json::Value {
        let secret = self.token.rsplit_once('.').map_or("", |t| t.0);
        http.post(format!("{}/v1/enroll", self.base))
            .json(&serde_json::json!({"secret": secret, "store_id": "S001", "protocol": 2}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .json()
            .await
            .unwrap_or_default()
    }

    /// S001 enrolls through the API; its sync credential.
    async fn credential(&self, http: &reqwest::Client) -> String {
        self.enroll(http).await["credential"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Shuts the hub down; it must stop cleanly.
    async fn stop(self) {
        let _ = self.stop.send(());
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), self.server).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_hub_serves_in_process_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let hub = Running::start(dir.path()).await;
    let base = hub.base.clone();
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
    let enrolled = hub.enroll(&http).await;
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
    hub.stop().await;
}

/// A push's facts reach the activity projection in the background: the runner is
/// woken by the push (well before its 5 s idle tick), and HQ reads the member's
/// activity and the projection's position; stores and strangers read neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_sale_shows_in_the_members_activity_without_a_rebuild() {
    use patron_protocol::hub::{PushRequest, SyncReport};
    use patron_sync::session::{Fact, Push, batch};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let admin = "hq-admin-token";
    let hash = ring::digest::digest(&ring::digest::SHA256, admin.as_bytes());
    std::fs::create_dir_all(dir.path().join("hub")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.path().join("hub").join(patron_hub::app::ADMIN_HASH),
        hex::encode(hash.as_ref()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let hub = Running::start(dir.path()).await;
    let base = hub.base.clone();
    let http = reqwest::Client::new();
    let credential = hub.credential(&http).await;
    let member = uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_1001);
    let origin = patron_protocol::Origin {
        node: "S001".into(),
        incarnation: uuid::Uuid::from_u128(1),
    };
    let sale = |seq: u64, total: i64| Fact {
        origin: origin.clone(),
        seq,
        body: serde_json::json!({"kind": "purchase", "at": 1_764_000_000_000i64 + seq as i64,
            "member": member, "txn": uuid::Uuid::from_u128(u128::from(seq) << 64),
            "body": {"receipt_id": format!("R{seq}"), "subtotal": total, "total": total}})
        .to_string(),
    };
    let req = PushRequest {
        report: SyncReport {
            origin: Some(origin.clone()),
            last_seq: 2,
            protocol: Some(2),
            ..Default::default()
        },
        push: Push {
            from: "S001".into(),
            batches: vec![batch(origin.clone(), vec![sale(1, 1_200), sale(2, 800)])],
        },
    };
    let pushed = http
        .post(format!("{base}/v1/sync/push"))
        .bearer_auth(&credential)
        .json(&req)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pushed.status().as_u16(), 200);
    let pushed_at = std::time::Instant::now();
    let get = |path: String, bearer: Option<String>| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let mut req = http.get(url);
            if let Some(b) = bearer {
                req = req.bearer_auth(b);
            }
            let r = req.send().await.unwrap_or_else(|e| panic!("{e}"));
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let path = format!("/v1/members/{member}/activity");
    let activity = loop {
        let (status, body) = get(path.clone(), Some(admin.into())).await;
        if status == 200 {
            break body;
        }
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("not_found")),
            "{body}"
        );
        assert!(
            pushed_at.elapsed() < std::time::Duration::from_secs(4),
            "the push did not wake the projections (their idle tick is 5 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        (activity["purchases"].as_i64(), activity["spend"].as_i64()),
        (Some(2), Some(2_000)),
        "{activity}"
    );
    let (status, positions) = get("/v1/projections".into(), Some(admin.into())).await;
    assert_eq!(status, 200);
    assert_eq!(positions[0]["name"], "activity", "{positions}");
    assert_eq!(positions[0]["position"], positions[0]["end"], "{positions}");
    // A store's credential is not HQ's, and a path that names no member is refused.
    let (status, _) = get(path.clone(), Some(credential.clone())).await;
    assert_eq!(status, 401);
    let (status, _) = get(path.clone(), None).await;
    assert_eq!(status, 401);
    let (status, body) = get(
        "/v1/members/not-a-member/activity".into(),
        Some(admin.into()),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    hub.stop().await;
}

/// A value from the edges of every range the hub checks.
fn nasty() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::json;
    prop_oneof![
        Just(json!(null)),
        Just(json!(i64::MIN)),
        Just(json!(i64::MAX)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e308)),
        Just(json!("")),
        Just(json!("x".repeat(3_000))),
        Just(json!("A\u{0}\u{202e}")),
        Just(json!("0190a000-0000-7000-8000-000000000001")),
        Just(json!("S001")),
        Just(json!("coupon:ab")),
        Just(json!([])),
        Just(json!({})),
        any::<i64>().prop_map(|n| json!(n)),
    ]
}

/// Requests of the shapes the hub's store endpoints take, with nasty values, and
/// pushes whose batches are well formed (the right checksum) around nasty facts, so
/// they reach the judge, the typing and the storage.
fn hub_body() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::json;
    let nasty_fact =
        (nasty(), nasty(), nasty(), nasty(), nasty()).prop_map(|(kind, at, earn, spend, body)| {
            let kind = if kind.is_string() {
                kind
            } else {
                json!("purchase")
            };
            json!({"kind": kind, "at": at, "member": "0190a000-0000-7000-8000-000000000001",
                   "txn": "0190a000-0000-7000-8000-0000000000f1", "earn": earn, "spend": spend,
                   "body": {"receipt_id": body, "subtotal": earn, "total": spend,
                            "entitlement": body, "period": "once", "limit": at, "code": body}})
            .to_string()
        });
    // A well-formed sale with extreme points (past the hub's limits: quarantined) or a
    // well-formed claim: entries the hub must type and keep.
    let entry = (
        0i64..=i64::MAX,
        any::<u128>(),
        prop_oneof![Just("purchase"), Just("claim")],
    )
        .prop_map(|(points, txn, kind)| {
            json!({"kind": kind, "at": 1_764_000_000_000i64,
                   "member": "0190a000-0000-7000-8000-000000000001",
                   "txn": uuid::Uuid::from_u128(txn), "earn": points,
                   "expires_at": 1_900_000_000_000i64,
                   "body": {"receipt_id": "R", "subtotal": 100, "total": 100,
                            "entitlement": "coupon:x", "period": "once", "limit": 1,
                            "auth": "offline", "release": false}})
            .to_string()
        });
    let fact = prop_oneof![nasty_fact, entry];
    prop_oneof![
        (nasty(), nasty(), nasty(), nasty(), nasty(), nasty()).prop_map(|(m, t, p, u, l, b)| {
            json!({"member": m, "txn": t, "points": p, "unsynced": u, "lease_left": l,
                   "budget_ms": b, "claim": t, "entitlement": b, "period": b, "limit": p,
                   "coupons_only": u, "spent": p, "lease": l, "phone_idx": b, "after": p,
                   "items": [{"sku": b, "units": p, "stock": l}], "secret": b,
                   "store_id": m, "protocol": p})
        }),
        // A new incarnation each time, its log from 1 (sometimes after a hole): the
        // batch is judged and its facts typed and stored or quarantined, not
        // acknowledged as already held.
        (
            proptest::collection::vec(fact, 1..4),
            prop_oneof![Just(1u64), Just(1u64), Just(1u64), 2u64..4],
            nasty(),
            any::<u128>(),
        )
            .prop_map(|(facts, seq, last, incarnation)| {
                let origin = patron_protocol::Origin {
                    node: "S001".into(),
                    incarnation: uuid::Uuid::from_u128(incarnation),
                };
                let facts = facts
                    .into_iter()
                    .enumerate()
                    .map(|(i, body)| patron_sync::session::Fact {
                        origin: origin.clone(),
                        seq: seq + i as u64,
                        body,
                    })
                    .collect();
                json!({"report": {"origin": origin, "last_seq": last},
                   "push": {"from": "S001",
                            "batches": [patron_sync::session::batch(origin.clone(), facts)]}})
            }),
    ]
}

/// Issue 19, part 4, at the hub: every store endpoint that reads a body gets a fixed
/// corpus of broken JSON and `FUZZ_CASES` (default 300) generated requests under a
/// real store credential. Every answer is below 500, every refusal carries an error
/// code, and a refused request writes no fact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_at_the_hub_get_a_clear_refusal_and_write_nothing() {
    use proptest::strategy::{Strategy, ValueTree};
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = HubConfig {
        data_dir: dir.path().join("hub"),
        insecure_dev: true,
        // The fuzz sends thousands of requests a second under one credential.
        store_requests_per_second: 1_000_000,
        ..HubConfig::default()
    };
    let hub = Running::start_with(&cfg).await;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let credential = hub.credential(&http).await;
    assert!(!credential.is_empty(), "S001 enrolled");
    let db = rusqlite::Connection::open_with_flags(
        dir.path()
            .join("hub")
            .join(patron_hub::store::sqlite::DB_FILE),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let facts = || -> i64 {
        db.query_row("SELECT count(*) FROM facts", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut bodies: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"{".to_vec(),
        "[".repeat(50_000).into_bytes(),
        vec![0xff, 0xfe, b'{', b'}'],
        br#"{"member":"0190a000-0000-7000-8000-000000000001","member":1}"#.to_vec(),
        br#"{"points":1e400,"member":"0190a000-0000-7000-8000-000000000001"}"#.to_vec(),
        br#"{"report":{},"push":{"from":"S001","batches":[{"origin":{"node":"S001","incarnation":"0190a000-0000-7000-8000-000000000001"},"facts":[],"checksum":0}]}}"#.to_vec(),
    ];
    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let generated = hub_body();
    for _ in 0..cases {
        let v = generated
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{e}"))
            .current();
        bodies.push(serde_json::to_vec(&v).unwrap_or_default());
    }
    let paths = [
        "/v1/enroll",
        "/v1/sync/push",
        "/v1/sync/refetch",
        "/v1/sync/stream",
        "/v1/docs/sync",
        "/v1/redeem/authorize",
        "/v1/claims",
        "/v1/claims/release",
        "/v1/stock/reserve",
        "/v1/stock/release",
        "/v1/leases",
        "/v1/leases/return",
        "/v1/members/fetch",
    ];
    let (mut sent, mut accepted) = (0u64, 0u64);
    for body in &bodies {
        for path in paths {
            let before = facts();
            let r = http
                .post(format!("{}{path}", hub.base))
                .bearer_auth(&credential)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            sent += 1;
            let status = r.status().as_u16();
            let answer = r.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
            assert!(
                status < 500,
                "{path} answered {status} to {shown}: {answer}"
            );
            if status >= 400 {
                let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
                assert!(
                    v["error"]["code"].is_string(),
                    "{path} refused {shown} without an error code: {answer}"
                );
                assert_eq!(
                    facts(),
                    before,
                    "{path} refused {shown} ({status}) but wrote"
                );
            } else {
                accepted += 1;
            }
        }
    }
    eprintln!("hostile input at the hub: {sent} requests, {accepted} accepted, none above 499");
    // The generated pushes got past authentication and parsing into the log (stored
    // or quarantined): the fuzz reached the judge and the storage.
    assert!(
        accepted > 0 && facts() > 0,
        "{accepted} accepted, {} facts",
        facts()
    );
    hub.stop().await;
}
