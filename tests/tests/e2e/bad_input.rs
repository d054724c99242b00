//! Bad input gets its specified 4xx code, never a 500, and writes nothing.

use patron_tests::TestEdge;
use serde_json::json;

#[tokio::test]
async fn bad_input_is_refused_with_its_code_and_writes_nothing() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000010", Some("测试")).await?;
    edge.post(
        "/v1/checkout/commit",
        &json!({"member_id": m, "receipt_id": "R-OK", "lines": [{"sku": "A", "qty": 1, "unit_price": 1000}]}),
        Some("ok"),
    )
    .await?;
    let before = edge.facts_written().await?;
    let auth = format!("Bearer {}", edge.token);
    let h: &[(&str, &str)] = &[
        ("Authorization", &auth),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "bad-1"),
    ];

    let line = |qty: serde_json::Value, price: serde_json::Value| {
        json!({"member_id": m, "receipt_id": "R-BAD", "lines": [{"sku": "A", "qty": qty, "unit_price": price}]}).to_string()
    };
    let redeem_path = format!("/v1/members/{m}/redemptions");
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("malformed json", "/v1/checkout/commit", "{\"lines\": [".into(), 400, "invalid_request"),
        ("not json at all", "/v1/members", "phone=13800000011".into(), 400, "invalid_request"),
        ("wrong type", "/v1/checkout/commit", line(json!("two"), json!(100)), 400, "invalid_request"),
        ("zero qty", "/v1/checkout/commit", line(json!(0), json!(100)), 400, "invalid_request"),
        ("negative qty", "/v1/checkout/commit", line(json!(-1), json!(100)), 400, "invalid_request"),
        ("negative price", "/v1/checkout/commit", line(json!(1), json!(-100)), 400, "invalid_request"),
        ("fractional price", "/v1/checkout/commit", line(json!(1), json!(99.5)), 400, "invalid_request"),
        ("overflowing price", "/v1/checkout/commit", line(json!(1), json!(9_223_372_036_854_775_807i64)), 400, "invalid_request"),
        ("price beyond i64", "/v1/checkout/commit", line(json!(1), json!(1e30)), 400, "invalid_request"),
        (
            "absurd subtotal",
            "/v1/checkout/commit",
            json!({"member_id": m, "receipt_id": "R-BAD", "lines": vec![json!({"sku": "A", "qty": 100_000, "unit_price": 1_000_000_000}); 200]}).to_string(),
            400,
            "invalid_request",
        ),
        ("no lines", "/v1/checkout/commit", json!({"receipt_id": "R-BAD", "lines": []}).to_string(), 400, "invalid_request"),
        ("bad receipt id", "/v1/checkout/commit", json!({"receipt_id": "R BAD'--", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}).to_string(), 400, "invalid_request"),
        ("negative redemption", "/v1/checkout/commit", json!({"member_id": m, "receipt_id": "R-BAD", "redeem_points": -5, "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}).to_string(), 400, "invalid_request"),
        (
            "unknown member",
            "/v1/checkout/commit",
            json!({"member_id": "0190f1c2-0000-7000-8000-000000000000", "receipt_id": "R-BAD", "lines": [{"sku": "A", "qty": 1, "unit_price": 1}]}).to_string(),
            404,
            "member_not_found",
        ),
        ("unknown receipt", "/v1/refunds", json!({"receipt_id": "R-NOPE"}).to_string(), 404, "not_found"),
        ("refund of an unknown sku", "/v1/refunds", json!({"receipt_id": "R-OK", "lines": [{"sku": "Q", "qty": 1}]}).to_string(), 400, "invalid_request"),
        ("refund of too many units", "/v1/refunds", json!({"receipt_id": "R-OK", "lines": [{"sku": "A", "qty": 2}]}).to_string(), 400, "invalid_request"),
        ("sql injection in a name", "/v1/members", json!({"phone": "13800000012", "name": "x'); DROP TABLE members;--", "consents": {"terms": true}}).to_string(), 400, "invalid_request"),
        ("script in a name", "/v1/members", json!({"phone": "13800000013", "name": "<script>alert(1)</script>", "consents": {"terms": true}}).to_string(), 400, "invalid_request"),
        ("bad phone", "/v1/members", json!({"phone": "1380013800'", "consents": {"terms": true}}).to_string(), 400, "invalid_request"),
        ("terms not accepted", "/v1/members", json!({"phone": "13800000014", "consents": {"terms": false}}).to_string(), 400, "invalid_request"),
        ("missing consents", "/v1/members", json!({"phone": "13800000014"}).to_string(), 400, "invalid_request"),
        ("future birthday", "/v1/members", json!({"phone": "13800000015", "birthday": "2999-01-01", "consents": {"terms": true}}).to_string(), 400, "invalid_request"),
        ("zero points redemption", &redeem_path, json!({"points": 0, "reason": "x"}).to_string(), 400, "invalid_request"),
        ("huge points redemption", &redeem_path, json!({"points": 9_223_372_036_854_775_807i64, "reason": "x"}).to_string(), 400, "invalid_request"),
        ("bad member id", "/v1/members/not-a-uuid/redemptions", json!({"points": 1, "reason": "x"}).to_string(), 400, "invalid_request"),
    ];
    for (what, path, body, status, code) in cases {
        let r = edge.raw("POST", path, h, body.into_bytes()).await?;
        assert_eq!((r.status, r.code()), (status, code), "{what}: {}", r.json);
        assert!(
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // Injection strings are data, never SQL: the lookup finds nothing and breaks nothing.
    let r = edge
        .get("/v1/members?phone=13800000010%27%20OR%20%271%27%3D%271")
        .await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"));

    let big = format!(
        "{{\"phone\":\"13800000016\",\"name\":\"{}\",\"consents\":{{\"terms\":true}}}}",
        "a".repeat(70 * 1024)
    );
    let r = edge.raw("POST", "/v1/members", h, big.into_bytes()).await?;
    assert_eq!((r.status, r.code()), (413, "payload_too_large"));
    // Refused unread: the client must not reuse the connection (it raced before: the
    // next request on it failed with a broken pipe).
    assert!(
        r.closes,
        "a 413 answered before reading the body says Connection: close"
    );

    let r = edge.raw("POST", "/v1/nowhere", h, b"{}".to_vec()).await?;
    assert_eq!((r.status, r.code()), (404, "not_found"));
    let r = edge
        .raw("DELETE", "/v1/checkout/commit", h, Vec::new())
        .await?;
    assert_eq!((r.status, r.code()), (405, "invalid_request"));

    assert_eq!(
        edge.facts_written().await?,
        before,
        "no bad request wrote anything"
    );
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(member.json["points"]["balance"], 10);
    Ok(())
}
