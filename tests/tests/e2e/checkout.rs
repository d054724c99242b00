use patron_tests::TestEdge;
use serde_json::{Value, json};

fn basket(member: Option<&str>, lines: Value, redeem: i64) -> Value {
    json!({"member_id": member, "lines": lines, "redeem_points": redeem})
}

fn commit_body(member: Option<&str>, receipt: &str, lines: Value, redeem: i64) -> Value {
    let mut b = basket(member, lines, redeem);
    b["receipt_id"] = receipt.into();
    b
}

#[tokio::test]
async fn quote_and_commit_agree_and_points_round_down() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000001", None).await?;
    let lines = json!([{"sku": "A1", "category": "skincare", "qty": 2, "unit_price": 9_950}, {"sku": "B2", "qty": 1, "unit_price": 99}]);
    let q = edge
        .post(
            "/v1/checkout/quote",
            &basket(Some(&m), lines.clone(), 0),
            None,
        )
        .await?;
    assert_eq!(q.status, 200, "{}", q.json);
    assert_eq!(
        (q.json["subtotal"].as_i64(), q.json["total"].as_i64()),
        (Some(19_999), Some(19_999))
    );
    assert_eq!(
        q.json["points_to_earn"], 199,
        "¥199.99 earns 199 points: fractions are dropped"
    );
    assert!(!q.json["explain"].as_array().is_none_or(Vec::is_empty));
    assert_eq!(edge.facts_written().await?, 1, "a quote writes nothing");

    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(Some(&m), "R-1", lines, 0),
            Some("k1"),
        )
        .await?;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(
        (c.json["total"].as_i64(), c.json["points_earned"].as_i64()),
        (Some(19_999), Some(199))
    );
    assert_eq!(c.json["balance_after"], 199);
    assert_eq!(c.json["tier_after"], "normal");
    Ok(())
}

#[tokio::test]
async fn redemption_pays_part_and_earns_only_on_money() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000002", None).await?;
    let lines = json!([{"sku": "A1", "qty": 1, "unit_price": 100_000}]);
    edge.post(
        "/v1/checkout/commit",
        &commit_body(Some(&m), "R-1", lines.clone(), 0),
        Some("k1"),
    )
    .await?;
    // 1000 points. Redeem 500 (= ¥5.00) on a ¥100.00 basket.
    let lines2 = json!([{"sku": "C3", "qty": 1, "unit_price": 10_000}]);
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(Some(&m), "R-2", lines2.clone(), 500),
            Some("k2"),
        )
        .await?;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(
        (
            c.json["total"].as_i64(),
            c.json["points_redeemed"].as_i64(),
            c.json["points_earned"].as_i64()
        ),
        (Some(9_500), Some(500), Some(95))
    );
    assert_eq!(c.json["balance_after"], 1_000 - 500 + 95);

    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(Some(&m), "R-3", lines2.clone(), 5_000),
            Some("k3"),
        )
        .await?;
    assert_eq!((c.status, c.code()), (422, "insufficient_points"));
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(Some(&m), "R-3", lines2, 10_001),
            Some("k3b"),
        )
        .await?;
    assert_eq!(
        (c.status, c.code()),
        (400, "invalid_request"),
        "worth more than the amount due"
    );
    assert_eq!(c.json["error"]["details"]["max_points"], 10_000);

    let r = edge
        .post(
            &format!("/v1/members/{m}/redemptions"),
            &json!({"points": 400, "reason": "gift:SAMPLE-01"}),
            Some("g1"),
        )
        .await?;
    assert_eq!(
        (r.status, r.json["balance_after"].as_i64()),
        (201, Some(195))
    );
    let r = edge
        .post(
            &format!("/v1/members/{m}/redemptions"),
            &json!({"points": 400, "reason": "gift:SAMPLE-01"}),
            Some("g2"),
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, "insufficient_points"));
    Ok(())
}

#[tokio::test]
async fn retries_replay_and_receipts_commit_once() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000003", None).await?;
    let body = commit_body(
        Some(&m),
        "R-20261124-0001",
        json!([{"sku": "A1", "qty": 1, "unit_price": 5_000}]),
        0,
    );
    let first = edge
        .post("/v1/checkout/commit", &body, Some("key-1"))
        .await?;
    assert_eq!((first.status, first.replayed), (201, false));
    let again = edge
        .post("/v1/checkout/commit", &body, Some("key-1"))
        .await?;
    assert_eq!((again.status, again.replayed), (201, true));
    assert_eq!(again.json, first.json, "a replay returns the first answer");

    let other = edge
        .post("/v1/checkout/commit", &body, Some("key-2"))
        .await?;
    assert_eq!((other.status, other.code()), (409, "receipt_exists"));
    let mut changed = body.clone();
    changed["receipt_id"] = "R-20261124-0002".into();
    let reused = edge
        .post("/v1/checkout/commit", &changed, Some("key-1"))
        .await?;
    assert_eq!(
        (reused.status, reused.code()),
        (422, "idempotency_key_reused")
    );

    let missing = edge.post("/v1/checkout/commit", &changed, None).await?;
    assert_eq!(
        (missing.status, missing.code()),
        (400, "invalid_request"),
        "commit requires a key"
    );
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(member.json["points"]["balance"], 50, "earned once");
    Ok(())
}

#[tokio::test]
async fn a_purchase_that_crosses_a_threshold_upgrades_in_that_commit() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000004", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(
                Some(&m),
                "R-1",
                json!([{"sku": "A", "qty": 1, "unit_price": 99_999}]),
                0,
            ),
            Some("a"),
        )
        .await?;
    assert_eq!(c.json["tier_after"], "normal");
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(
                Some(&m),
                "R-2",
                json!([{"sku": "A", "qty": 1, "unit_price": 1}]),
                0,
            ),
            Some("b"),
        )
        .await?;
    assert_eq!(c.json["tier_after"], "silver");
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(member.json["tier"]["code"], "silver");
    assert_eq!(
        member.json["tier"]["next"],
        json!({"code": "gold", "remaining_spend": 200_000})
    );
    // Points never buy a tier: spending points lowers qualifying spend's growth, not the tier.
    assert_eq!(member.json["tier"]["qualifying_spend"], 100_000);
    Ok(())
}

#[tokio::test]
async fn partial_then_whole_refunds_reverse_exactly_once() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000005", None).await?;
    edge.post(
        "/v1/checkout/commit",
        &commit_body(
            Some(&m),
            "R-0",
            json!([{"sku": "Z", "qty": 1, "unit_price": 100_000}]),
            0,
        ),
        Some("seed"),
    )
    .await?;
    // 1000 points. A sale of 3 × ¥100.01 paying 999 points.
    let lines = json!([{"sku": "A1", "qty": 3, "unit_price": 10_001}]);
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit_body(Some(&m), "R-1", lines, 999),
            Some("c1"),
        )
        .await?;
    assert_eq!(
        (c.json["total"].as_i64(), c.json["points_earned"].as_i64()),
        (Some(29_004), Some(290))
    );
    let bal = c.json["balance_after"].as_i64().unwrap_or_default();
    assert_eq!(bal, 1_000 - 999 + 290);

    let r1 = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-1", "lines": [{"sku": "A1", "qty": 1}]}),
            Some("r1"),
        )
        .await?;
    assert_eq!(r1.status, 201, "{}", r1.json);
    // Cumulative floors: ⌊290/3⌋ = 96 reversed, ⌊999/3⌋ = 333 returned, ⌊29004/3⌋ = 9668 back.
    assert_eq!(
        (
            r1.json["points_reversed"].as_i64(),
            r1.json["points_returned"].as_i64(),
            r1.json["amount_refunded"].as_i64()
        ),
        (Some(96), Some(333), Some(9_668))
    );
    let replay = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-1", "lines": [{"sku": "A1", "qty": 1}]}),
            Some("r1"),
        )
        .await?;
    assert!(replay.replayed);
    assert_eq!(replay.json, r1.json);

    let r2 = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-1"}), Some("r2"))
        .await?;
    assert_eq!(r2.status, 201, "{}", r2.json);
    let reversed = r1.json["points_reversed"].as_i64().unwrap_or(0)
        + r2.json["points_reversed"].as_i64().unwrap_or(0);
    let returned = r1.json["points_returned"].as_i64().unwrap_or(0)
        + r2.json["points_returned"].as_i64().unwrap_or(0);
    let amount = r1.json["amount_refunded"].as_i64().unwrap_or(0)
        + r2.json["amount_refunded"].as_i64().unwrap_or(0);
    assert_eq!(
        (reversed, returned, amount),
        (290, 999, 29_004),
        "a whole refund is exact"
    );
    assert_eq!(r2.json["balance_after"], 1_000, "back to before the sale");

    let r3 = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-1"}), Some("r3"))
        .await?;
    assert_eq!(
        (r3.status, r3.code()),
        (400, "invalid_request"),
        "nothing left to refund"
    );
    let r4 = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-404"}), Some("r4"))
        .await?;
    assert_eq!((r4.status, r4.code()), (404, "not_found"));
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(
        member.json["tier"]["qualifying_spend"], 100_000,
        "refunded spend no longer qualifies"
    );
    Ok(())
}

#[tokio::test]
async fn walk_in_customers_get_priced_and_earn_nothing() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let body = commit_body(
        None,
        "R-W1",
        json!([{"sku": "A1", "qty": 2, "unit_price": 9_900}]),
        0,
    );
    let c = edge.post("/v1/checkout/commit", &body, Some("w1")).await?;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(
        (c.json["total"].as_i64(), c.json["points_earned"].as_i64()),
        (Some(19_800), Some(0))
    );
    assert_eq!(c.json["balance_after"], Value::Null);
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-W1"}), Some("w2"))
        .await?;
    assert_eq!(
        (r.status, r.json["amount_refunded"].as_i64()),
        (201, Some(19_800))
    );
    Ok(())
}

#[tokio::test]
async fn points_expire_a_year_later_and_show_as_expiring_within_30_days() -> anyhow::Result<()> {
    // Expiry of 1 month with a 40-day notice window: fresh points are already "expiring".
    let edge =
        TestEdge::spawn_with("[points]\nexpiry_months = 1\nexpiring_notice_days = 40\n").await?;
    let m = edge.register("13800000006", None).await?;
    edge.post(
        "/v1/checkout/commit",
        &commit_body(
            Some(&m),
            "R-1",
            json!([{"sku": "A", "qty": 1, "unit_price": 30_000}]),
            0,
        ),
        Some("e1"),
    )
    .await?;
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    let expiring = &member.json["points"]["expiring"];
    assert_eq!(expiring[0]["points"], 300, "{member:?}");
    assert!(
        expiring[0]["expires_at"]
            .as_str()
            .is_some_and(|s| s.ends_with("T23:59:59+08:00"))
    );
    Ok(())
}

/// Issue 18, part 7: a sale records how it was paid, for reports and ERP; tender lines
/// that do not add up to the sale's total are refused and write nothing.
#[tokio::test]
async fn a_sale_records_how_it_was_paid_and_tender_must_add_up() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000018", None).await?;
    let lines = json!([{"sku": "A1", "qty": 1, "unit_price": 10_000}]);
    let with = |receipt: &str, tender: Value, redeem: i64| {
        let mut b = commit_body(Some(&m), receipt, lines.clone(), redeem);
        b["tender"] = tender;
        b
    };
    let before = edge.facts_written().await?;
    for (tender, why) in [
        (
            json!([{"method": "cash", "amount": 9_999}]),
            "short by one fen",
        ),
        (
            json!([{"method": "cash", "amount": 10_000}, {"method": "card", "amount": 0}]),
            "an empty line",
        ),
        (
            json!([{"method": "bitcoin", "amount": 10_000}]),
            "an unknown method",
        ),
    ] {
        let r = edge
            .post(
                "/v1/checkout/commit",
                &with("R-bad", tender, 0),
                Some("bad"),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{why}: {}",
            r.json
        );
    }
    assert_eq!(
        edge.facts_written().await?,
        before,
        "a refused sale writes nothing"
    );

    let r = edge
        .post(
            "/v1/checkout/commit",
            &with(
                "R-1",
                json!([{"method": "wechat_pay", "amount": 6_000}, {"method": "cash", "amount": 4_000}]),
                0,
            ),
            Some("k1"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = edge
        .post(
            "/v1/checkout/commit",
            &with("R-2", json!([{"method": "alipay", "amount": 10_000}]), 0),
            Some("k2"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    // 100 points pay ¥1: the rest by card.
    let r = edge
        .post(
            "/v1/checkout/commit",
            &with("R-3", json!([{"method": "card", "amount": 9_900}]), 100),
            Some("k3"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let conn = edge.db()?;
    let sale = |receipt: &str| -> anyhow::Result<Value> {
        let body: String = conn.query_row(
            "SELECT body FROM facts WHERE kind = 'purchase' AND json_extract(body, '$.receipt_id') = ?1",
            [receipt],
            |r| r.get(0),
        )?;
        Ok(serde_json::from_str(&body)?)
    };
    let r1 = sale("R-1")?;
    assert_eq!(r1["paid_by"], "mixed", "{r1}");
    assert_eq!(
        r1["tender"],
        json!([{"method": "wechat_pay", "amount": 6_000}, {"method": "cash", "amount": 4_000}])
    );
    assert_eq!(sale("R-2")?["paid_by"], "alipay");
    assert_eq!(sale("R-3")?["paid_by"], "mixed", "card and points");
    Ok(())
}
