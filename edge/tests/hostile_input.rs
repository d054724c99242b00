//! Issue 19, part 4: hostile input at every POS endpoint that reads a body, against
//! the real edge in process over HTTPS. A fixed corpus (deep nesting, duplicate keys,
//! non-UTF-8, huge and non-finite numbers, NUL and odd Unicode, wrong types, truncated
//! and oversized bodies) and `FUZZ_CASES` (default 300) times two generated bodies:
//! loose ones built from the API's own field names and nasty values, and well-formed
//! sales, registrations, adjustments and coupons with extreme values (so they reach
//! the rules: overflowing quantities and prices, negative points, far dates). Every answer
//! must be below 500 (a handler panic is a 500: the catch-panic layer), and a refused
//! request must write nothing (the fact log's length, read beside the running edge).
//!
//! `FUZZ_CASES=20000 cargo test -p patron-edge --test hostile_input -- --nocapture`
//! runs it longer by hand (docs/testing.md has the counts run).

use std::time::Duration;

use patron_edge::Config;
use patron_edge::app::App;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

/// The API's field names: generated objects use them, so bodies get past parsing.
const KEYS: &[&str] = &[
    "phone",
    "name",
    "birthday",
    "consents",
    "terms",
    "marketing",
    "tags_add",
    "tags_remove",
    "member_id",
    "receipt_id",
    "lines",
    "sku",
    "qty",
    "unit_price",
    "category",
    "catalogue",
    "redeem_points",
    "coupon_codes",
    "tender",
    "method",
    "amount",
    "points",
    "reason",
    "reference",
    "type",
    "ref",
    "label",
    "off",
    "min_spend",
    "valid_days",
    "stores",
    "to",
    "new_phone",
    "version",
    "rules",
];

/// Values that break careless code.
fn nasty_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(i64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1e308)),
        Just(json!(-0.5)),
        Just(json!(4_294_967_296_i64)),
        Just(json!("")),
        Just(json!("NaN")),
        Just(json!("Infinity")),
        Just(json!("13800000000")),
        Just(json!("+86 138 0000 0000")),
        Just(json!("A\u{0}B")),
        Just(json!("\u{202e}evil\u{200b}")),
        Just(json!("🎉".repeat(200))),
        Just(json!("9999-12-31")),
        Just(json!("0000-00-00")),
        Just(json!("0190a000-0000-7000-8000-000000000001")),
        Just(json!("x".repeat(5_000))),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9 _:.-]{0,12}".prop_map(|s| json!(s)),
    ]
}

/// JSON built from the API's names and nasty values, nested a few levels.
fn body() -> impl Strategy<Value = Value> {
    nasty_scalar().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..8).prop_map(
                |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            ),
        ]
    })
}

/// An integer from the edges of every range the API checks.
fn nasty_int() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1),
        Just(0),
        Just(1),
        Just(9_999),
        Just(10_000),
        Just(100_000),
        Just(100_001),
        Just(100_000_000),
        Just(1 << 40),
        any::<i64>(),
    ]
}

/// Well-formed requests of the shapes the busy endpoints take, with extreme values
/// (`MEMBER` stands for the real member's id), so they reach the rules, not only the
/// parser: sales, registrations, adjustments, events, coupons.
fn shaped() -> impl Strategy<Value = Value> {
    let line = (
        prop_oneof![Just("A"), Just("B"), Just("UMB"), Just("")],
        nasty_int(),
        nasty_int(),
        any::<bool>(),
    )
        .prop_map(|(sku, qty, price, cat)| {
            json!({"sku": sku, "qty": qty, "unit_price": price, "catalogue": cat})
        });
    prop_oneof![
        (
            proptest::collection::vec(line, 0..4),
            nasty_int(),
            nasty_int()
        )
            .prop_map(
                |(lines, redeem, amount)| json!({"member_id": "MEMBER", "receipt_id": "R-F",
                "lines": lines, "redeem_points": redeem,
                "tender": [{"method": "cash", "amount": amount}]})
            ),
        (nasty_scalar(), nasty_scalar(), nasty_scalar()).prop_map(|(phone, name, birthday)| {
            json!({"phone": phone, "name": name, "birthday": birthday,
                   "consents": {"terms": true}})
        }),
        (
            nasty_int(),
            proptest::sample::select(vec!["goodwill", "other", "x"])
        )
            .prop_map(
                |(points, reason)| json!({"points": points, "reason": reason, "to": "MEMBER"})
            ),
        (nasty_int(), nasty_int(), nasty_int()).prop_map(|(off, min, days)| {
            json!({"label": "c", "off": off, "min_spend": min, "valid_days": days,
                   "type": "check_in", "receipt_id": "R-F", "lines": [{"sku": "A", "qty": off}]})
        }),
    ]
}

/// Bodies no JSON library should choke on, each raw.
fn corpus() -> Vec<Vec<u8>> {
    let mut c: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"just a string\"".to_vec(),
        b"{".to_vec(),
        b"{\"lines\": [{\"sku\": \"A\", \"qty\": 1".to_vec(),
        "[".repeat(50_000).into_bytes(),
        format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)).into_bytes(),
        br#"{"phone":"13800000000","phone":"13900000000","consents":{"terms":true}}"#.to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"phone\": \"\xff\xfe\", \"consents\": {\"terms\": true}}".to_vec(),
        br#"{"lines":[{"sku":"A","qty":1e400,"unit_price":1}],"receipt_id":"R1"}"#.to_vec(),
        br#"{"lines":[{"sku":"A","qty":99999999999999999999999,"unit_price":1}],"receipt_id":"R1"}"#.to_vec(),
        br#"{"lines":[{"sku":"A","qty":NaN,"unit_price":Infinity}],"receipt_id":"R1"}"#.to_vec(),
        br#"{"lines":[{"sku":"A","qty":9223372036854775807,"unit_price":9223372036854775807}],"receipt_id":"R1"}"#.to_vec(),
        br#"{"lines":[{"sku":"A","qty":-9223372036854775808,"unit_price":-1}],"receipt_id":"R1"}"#.to_vec(),
        br#"{"lines":[{"sku":"A","qty":1,"unit_price":1}],"receipt_id":"R1","redeem_points":-9223372036854775808}"#.to_vec(),
        br#"{"lines":[],"receipt_id":"R1"}"#.to_vec(),
        br#"{"phone":"13800000000\u0000","consents":{"terms":true}}"#.to_vec(),
        br#"{"phone":"\ud800","consents":{"terms":true}}"#.to_vec(),
        br#"{"points":-9223372036854775808,"reason":"goodwill"}"#.to_vec(),
        br#"{"receipt_id":"R1","lines":[{"sku":"A","qty":9223372036854775807}]}"#.to_vec(),
        br#"{"type":"check_in","ref":"\u202e"}"#.to_vec(),
    ];
    // Past the 64 KiB body limit.
    c.push(format!("{{\"name\":\"{}\"}}", "x".repeat(70_000)).into_bytes());
    c
}

/// Every body-reading route, with a member that exists where a path names one.
fn routes(member: &str) -> Vec<(reqwest::Method, String)> {
    use reqwest::Method;
    let m = |p: &str| format!("/v1/members/{member}{p}");
    vec![
        (Method::POST, "/v1/members".into()),
        (Method::POST, "/v1/members/lookup".into()),
        (Method::PATCH, m("")),
        (Method::POST, m("/adjustments")),
        (Method::POST, m("/transfers")),
        (Method::POST, m("/phone")),
        (Method::POST, m("/redemptions")),
        (Method::POST, m("/events")),
        (Method::POST, m("/coupons")),
        (Method::POST, m("/coupons/NOPE/claim")),
        (Method::POST, m("/benefits/NOPE/use")),
        (Method::POST, "/v1/checkout/quote".into()),
        (Method::POST, "/v1/checkout/commit".into()),
        (Method::POST, "/v1/refunds".into()),
        (Method::PUT, "/v1/admin/rule-set".into()),
        (
            Method::POST,
            "/v1/adjustments/0190a000-0000-7000-8000-000000000009/approve".into(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_a_clear_refusal_and_write_nothing() {
    patron_edge::hub::client::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config {
        store_id: "S001".into(),
        data_dir: dir.path().join("data"),
        ..Config::default()
    };
    let token = patron_edge::service::add_lane(&cfg, "admin", patron_edge::service::Role::Admin)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let app = App::open(cfg.clone())
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (_, tls) = app.transport(addr).unwrap_or_else(|e| panic!("{e:#}"));
    let server = tokio::spawn(app.serve(listener, tls, async {
        let _ = stopped.await;
    }));
    let ca = std::fs::read(dir.path().join("data/tls/ca.pem")).unwrap_or_else(|e| panic!("{e}"));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap_or_else(|e| panic!("{e}"))])
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("https://{addr}");

    // One real member, so paths that name one reach their body.
    let r = http
        .post(format!("{base}/v1/members"))
        .bearer_auth(&token)
        .json(&json!({"phone": "13700000001", "consents": {"terms": true}}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status().as_u16(), 201);
    let member: Value = r.json().await.unwrap_or_default();
    let member = member["member_id"].as_str().unwrap_or_default().to_string();

    let (_, log) = patron_edge::store::connect_at(&cfg.data_dir, &cfg.key_dir(), true)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let facts = || -> i64 {
        log.query_row("SELECT count(*) FROM facts", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
    };

    let cases: usize = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // Deterministic: a failure in CI is the same bodies on any machine.
    let mut runner = TestRunner::deterministic();
    let (loose, tight) = (body(), shaped());
    let mut bodies = corpus();
    for _ in 0..cases {
        for v in [
            loose.new_tree(&mut runner).map(|t| t.current()),
            tight.new_tree(&mut runner).map(|t| t.current()),
        ] {
            let v = v.unwrap_or_else(|e| panic!("{e}"));
            let text = serde_json::to_string(&v).unwrap_or_default();
            bodies.push(text.replace("MEMBER", &member).into_bytes());
        }
    }

    let (mut sent, mut accepted) = (0u64, 0u64);
    for (n, body) in bodies.iter().enumerate() {
        for (method, path) in routes(&member) {
            let before = facts();
            let r = http
                .request(method.clone(), format!("{base}{path}"))
                .bearer_auth(&token)
                .header("content-type", "application/json")
                .header("idempotency-key", format!("fuzz-{n}-{sent}"))
                .body(body.clone())
                .send()
                .await;
            sent += 1;
            let r = match r {
                Ok(r) => r,
                // Past the body limit the edge answers 413 without reading the body
                // and closes: the client may fail writing it before it reads that
                // (any smaller body must be answered).
                Err(_) if body.len() > 64 * 1024 => {
                    assert_eq!(facts(), before, "{method} {path}: an oversized body wrote");
                    continue;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            };
            let status = r.status().as_u16();
            let answer = r.text().await.unwrap_or_default();
            let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).to_string();
            assert!(
                status < 500,
                "{method} {path} answered {status} to {shown}: {answer}"
            );
            if body.len() > 64 * 1024 && path.contains("/v1/checkout/") {
                assert_eq!(status, 413, "{method} {path}: a body past the limit");
            }
            if status >= 400 {
                let code = serde_json::from_str::<Value>(&answer).unwrap_or_default();
                assert!(
                    code["error"]["code"].is_string(),
                    "{method} {path} refused {shown} without an error code: {answer}"
                );
                assert_eq!(
                    facts(),
                    before,
                    "{method} {path} refused {shown} ({status}) but wrote"
                );
            } else {
                accepted += 1;
            }
        }
    }
    eprintln!("hostile input: {sent} requests, {accepted} accepted, none above 499");
    assert!(accepted > 0, "well-formed requests got through");
    assert!(sent >= (corpus().len() * routes(&member).len()) as u64);

    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(10), server).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
}
