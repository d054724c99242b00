//! Promotions end to end: rule sets, coupons, limits under concurrency, referrals,
//! upgrade gifts, benefit quotas and pending points, against the real binary.

use patron_tests::{TestEdge, skew_to, store_time};
use serde_json::{Value, json};

const EXAMPLES: &str = include_str!("../../../edge/rules/examples.json");

fn commit(member: Option<&str>, receipt: &str, lines: Value, coupons: &[&str]) -> Value {
    json!({"member_id": member, "receipt_id": receipt, "lines": lines, "coupon_codes": coupons})
}

fn item(sku: &str, price: i64) -> Value {
    json!([{"sku": sku, "qty": 1, "unit_price": price}])
}

/// An edge under `rules`, its clock at a fixed instant (15 May 2027, noon at the
/// store): what the guide's examples give depends on the date (the flash sale's
/// window, birthday months), so the tests pin it rather than run on today.
async fn with_rules(rules: &Value) -> anyhow::Result<TestEdge> {
    with_rules_at(rules, store_time(2027, 5, 15, 12, 0, 0)?).await
}

/// An edge under `rules` whose clock reads `at` (unix ms) now.
async fn with_rules_at(rules: &Value, at: i64) -> anyhow::Result<TestEdge> {
    let mut edge = TestEdge::prepare("S001", "")?;
    edge.env = vec![("PATRON_CLOCK_SKEW_MS".into(), skew_to(at)?)];
    edge.start().await?;
    let r = edge.put("/v1/admin/rule-set", rules).await?;
    anyhow::ensure!(r.status == 201, "loading rules: {} {}", r.status, r.json);
    Ok(edge)
}

fn examples() -> Value {
    serde_json::from_str(EXAMPLES).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_fresh_edge_applies_no_promotions_until_a_rule_set_is_loaded() -> anyhow::Result<()> {
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800001001", None).await?;
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "Q", item("X", 25_000), &[]),
            None,
        )
        .await?;
    assert_eq!(
        (
            q.json["total"].as_i64(),
            q.json["discounts"].as_array().map(Vec::len)
        ),
        (Some(25_000), Some(0))
    );
    assert_eq!(q.json["rules_version"], Value::Null);
    let r = edge.get("/v1/admin/rule-set").await?;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    // Only an admin may load rules.
    let pos = edge.add_lane("lane-1", "pos")?;
    let r = edge
        .as_token(&pos)
        .put("/v1/admin/rule-set", &examples())
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = edge.put("/v1/admin/rule-set", &examples()).await?;
    assert_eq!(
        (
            r.status,
            r.json["version"].as_str(),
            r.json["rules"].as_u64()
        ),
        (201, Some("guide-examples-v1"), Some(9))
    );
    let r = edge.put("/v1/admin/rule-set", &examples()).await?;
    assert_eq!(r.status, 200, "the same version again is a no-op");
    let mut changed = examples();
    changed["rules"][0]["pay_permille"] = 700.into();
    let r = edge.put("/v1/admin/rule-set", &changed).await?;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "a published version never changes"
    );
    let mut typo = examples();
    typo["version"] = "v2".into();
    typo["rules"][5]["of"] = 1.into();
    let r = edge.put("/v1/admin/rule-set", &typo).await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.json);

    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "Q", item("X", 25_000), &[]),
            None,
        )
        .await?;
    assert_eq!(
        q.json["total"], 21_000,
        "满200减30 and 首单立减10元: {}",
        q.json
    );
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 25_000), &[]),
            Some("c1"),
        )
        .await?;
    assert_eq!(
        (c.json["total"].as_i64(), c.json["rules_version"].as_str()),
        (Some(21_000), Some("guide-examples-v1"))
    );
    assert_eq!(c.json["discounts"][0]["label"], "满200减30");
    assert_eq!(c.json["discounts"][1]["label"], "首单立减10元");
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-2", item("X", 25_000), &[]),
            Some("c2"),
        )
        .await?;
    assert_eq!(
        c.json["total"], 22_000,
        "the first-order reduction applies once"
    );
    Ok(())
}

#[tokio::test]
async fn quote_and_commit_agree_under_the_guide_examples() -> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001002", None).await?;
    let lines = json!([{"sku": "A", "qty": 2, "unit_price": 12_000}, {"sku": "B", "qty": 1, "unit_price": 11_000},
                       {"sku": "S1", "category": "skincare", "qty": 1, "unit_price": 10_000}]);
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-Q", lines.clone(), &[]),
            None,
        )
        .await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-Q", lines, &[]),
            Some("q1"),
        )
        .await?;
    assert_eq!(c.status, 201, "{}", c.json);
    for f in ["total", "discounts", "points_redeemed"] {
        assert_eq!(q.json[f], c.json[f], "{f}");
    }
    assert_eq!(q.json["points_to_earn"], c.json["points_earned"]);
    let labels: Vec<&str> = c.json["discounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["label"].as_str())
        .collect();
    assert_eq!(
        labels,
        vec!["限时8折", "A+B=¥199", "满200减30", "首单立减10元"]
    );
    Ok(())
}

#[tokio::test]
async fn granted_coupons_are_single_use_and_come_back_on_a_full_refund() -> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001003", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 40_000), &[]),
            Some("g1"),
        )
        .await?;
    assert_eq!(
        c.json["coupons_issued"][0]["label"], "¥50 off",
        "满300赠50元券: {}",
        c.json
    );
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    let code = member.json["coupons"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(member.json["coupons"][0]["amount"], 5_000);

    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-2", item("Y", 15_000), &[&code]),
            Some("g2"),
        )
        .await?;
    assert_eq!(c.status, 201, "{}", c.json);
    assert_eq!(c.json["total"], 10_000);
    let again = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-3", item("Y", 15_000), &[&code]),
            None,
        )
        .await?;
    assert_eq!((again.status, again.code()), (422, "coupon_invalid"));
    assert_eq!(again.json["error"]["details"]["reason"], "was already used");

    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-2"}), Some("rf2"))
        .await?;
    assert_eq!(r.json["coupons_restored"], json!([code]), "{}", r.json);
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-4", item("Y", 15_000), &[&code]),
            None,
        )
        .await?;
    assert_eq!(
        (q.status, q.json["total"].as_i64()),
        (200, Some(10_000)),
        "usable again: {}",
        q.json
    );

    // Refunding the granting sale withdraws the (now unused) coupon.
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-1"}), Some("rf1"))
        .await?;
    assert_eq!(r.json["coupons_withdrawn"], json!([code]));
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-5", item("Y", 15_000), &[&code]),
            None,
        )
        .await?;
    assert_eq!((q.status, q.code()), (422, "coupon_invalid"));

    // A granted coupon used by another sale: refunding the granting sale withdraws it,
    // and refunding the sale that used it does not bring it back.
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-8", item("X", 40_000), &[]),
            Some("g8"),
        )
        .await?;
    assert_eq!(c.json["coupons_issued"].as_array().map(Vec::len), Some(1));
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    let code2 = member.json["coupons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["code"].as_str())
        .find(|c| *c != code)
        .unwrap_or_default()
        .to_string();
    let u = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-9", item("Y", 15_000), &[&code2]),
            Some("g9"),
        )
        .await?;
    assert_eq!(u.status, 201, "{}", u.json);
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-8"}), Some("rf8"))
        .await?;
    assert_eq!(r.json["coupons_withdrawn"], json!([code2]));
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-9"}), Some("rf9"))
        .await?;
    assert_eq!(
        r.json["coupons_restored"],
        json!([]),
        "a withdrawn coupon stays withdrawn"
    );
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-10", item("Y", 15_000), &[&code2]),
            None,
        )
        .await?;
    assert_eq!((q.status, q.code()), (422, "coupon_invalid"));

    let other = edge.register("13800001004", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&other), "R-6", item("X", 40_000), &[]),
            Some("g6"),
        )
        .await?;
    let foreign = c.json["coupons_issued"][0]["coupon_id"]
        .as_str()
        .map(String::from);
    assert!(foreign.is_some());
    let theirs = edge.get(&format!("/v1/members/{other}")).await?;
    let their_code = theirs.json["coupons"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "R-7", item("Y", 15_000), &[&their_code]),
            None,
        )
        .await?;
    assert_eq!(
        (q.status, q.json["error"]["details"]["reason"].as_str()),
        (422, Some("belongs to another member"))
    );
    Ok(())
}

#[tokio::test]
async fn concurrent_commits_never_share_a_coupon_or_overrun_a_budget() -> anyhow::Result<()> {
    let rules = json!({"version": "budget-v1", "rules": [
        {"id": "first-10", "label": "前10单立减", "type": "order_reduction", "threshold": 0, "off": 500,
         "limits": {"budget_count": 10}}
    ]});
    let edge = with_rules(&rules).await?;
    let m = edge.register("13800001005", None).await?;
    let c = edge
        .post(
            &format!("/v1/members/{m}/coupons"),
            &json!({"label": "¥20", "off": 2_000, "valid_days": 7}),
            None,
        )
        .await?;
    assert_eq!(c.status, 201, "{}", c.json);
    let code = c.json["code"].as_str().unwrap_or_default().to_string();

    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, url, token, code, m) = (
            edge.http.clone(),
            edge.url("/v1/checkout/commit"),
            edge.token.clone(),
            code.clone(),
            m.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = commit(Some(&m), &format!("R-C{i}"), item("X", 10_000), &[&code]);
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("k{i}"))
                .json(&body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>((r.status().as_u16(), r.json::<Value>().await?))
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await??;
        match status {
            201 => ok += 1,
            422 => assert_eq!(body["error"]["code"], "coupon_invalid"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 1, "a single-use coupon is used exactly once");

    let mut tasks = Vec::new();
    for i in 0..24 {
        let (http, url, token) = (
            edge.http.clone(),
            edge.url("/v1/checkout/commit"),
            edge.token.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let body = commit(None, &format!("R-B{i}"), item("X", 10_000), &[]);
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", format!("b{i}"))
                .json(&body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>(r.json::<Value>().await?)
        }));
    }
    let mut discounted = 0;
    for t in tasks {
        if t.await??["discounts"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
        {
            discounted += 1;
        }
    }
    // One discounted sale above (the coupon winner also got the rule): 9 left of 10.
    assert_eq!(
        discounted, 9,
        "the budget of 10 applications is never exceeded"
    );
    Ok(())
}

/// Registers a referrer, then a friend with the referrer's code: (referrer, friend).
async fn referred_pair(
    edge: &TestEdge,
    referrer_phone: &str,
    friend_phone: &str,
) -> anyhow::Result<(String, String)> {
    let a = edge.register(referrer_phone, None).await?;
    let code = edge.get(&format!("/v1/members/{a}")).await?.json["referral_code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let r = edge
        .post(
            "/v1/members",
            &json!({"phone": friend_phone, "referrer_code": code, "consents": {"terms": true}}),
            None,
        )
        .await?;
    anyhow::ensure!(r.status == 201, "registering the friend: {}", r.json);
    let b = r.json["member_id"].as_str().unwrap_or_default().to_string();
    Ok((a, b))
}

#[tokio::test]
async fn referrers_are_rewarded_once_per_friend() -> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let (a, b) = referred_pair(&edge, "13800001006", "13800001007").await?;
    let bal = |v: &Value| v["points"]["balance"].as_i64();
    assert_eq!(
        bal(&edge.get(&format!("/v1/members/{a}")).await?.json),
        Some(50)
    );
    edge.post(
        "/v1/checkout/commit",
        &commit(Some(&b), "R-1", item("X", 5_000), &[]),
        Some("r1"),
    )
    .await?;
    assert_eq!(
        bal(&edge.get(&format!("/v1/members/{a}")).await?.json),
        Some(150),
        "first purchase: +100"
    );
    edge.post(
        "/v1/checkout/commit",
        &commit(Some(&b), "R-2", item("X", 5_000), &[]),
        Some("r2"),
    )
    .await?;
    assert_eq!(
        bal(&edge.get(&format!("/v1/members/{a}")).await?.json),
        Some(150),
        "only the first purchase"
    );
    Ok(())
}

/// A rule set whose rules never look at the profile still rewards the referrer of a
/// first purchase (the commit then reads the friend's profile for the referral alone).
#[tokio::test]
async fn referral_rewards_need_no_profile_rule() -> anyhow::Result<()> {
    let rules = json!({"version": "referral-only", "rules": [],
                       "referral": {"on_register": 0, "on_first_purchase": 70}});
    let edge = with_rules(&rules).await?;
    let (a, b) = referred_pair(&edge, "13800001016", "13800001017").await?;
    for receipt in ["R-1", "R-2"] {
        let c = edge
            .post(
                "/v1/checkout/commit",
                &commit(Some(&b), receipt, item("X", 5_000), &[]),
                Some(receipt),
            )
            .await?;
        assert_eq!(c.status, 201, "{}", c.json);
    }
    assert_eq!(
        edge.get(&format!("/v1/members/{a}")).await?.json["points"]["balance"].as_i64(),
        Some(70),
        "the first purchase rewards the referrer once"
    );
    Ok(())
}

/// Issue 17: buying into a tier for its welcome coupon and returning the goods does not
/// keep the coupon.
#[tokio::test]
async fn refunding_the_sale_that_upgraded_withdraws_its_upgrade_coupon() -> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001018", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-up", item("X", 120_000), &[]),
            Some("up-1"),
        )
        .await?;
    assert_eq!(c.json["tier_after"], "silver", "{}", c.json);
    let welcome = |member: &serde_json::Value| {
        member["coupons"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["label"] == "¥20 silver welcome")
    };
    assert!(welcome(&edge.get(&format!("/v1/members/{m}")).await?.json));
    let r = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-up"}),
            Some("up-back"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let withdrawn = r.json["coupons_withdrawn"].as_array().map_or(0, Vec::len);
    assert!(withdrawn >= 1, "{}", r.json);
    assert!(
        !welcome(&edge.get(&format!("/v1/members/{m}")).await?.json),
        "the upgrade coupon went with the sale"
    );
    Ok(())
}

/// Issue 17: the gift points a sale's upgrade brought go back when the refund takes the
/// member below the gift's tier (or returns the sale whole), once, and reaching the tier
/// again gifts again.
#[tokio::test]
async fn refunding_the_sale_that_upgraded_takes_back_its_gift_points_tier_by_tier()
-> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001019", None).await?;
    let r1 = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 120_000), &[]),
            Some("g1"),
        )
        .await?;
    assert_eq!(r1.json["tier_after"], "silver", "{}", r1.json);
    let silver_balance = r1.json["balance_after"].as_i64().unwrap_or(-1);
    // Four units of ¥2,000, 5% silver discount, − ¥30: ¥1,160 + ¥7,570 reaches diamond
    // (gold +200, diamond +500). Each unit refunds ¥1,892.50 of qualifying spend.
    let four = json!([{"sku": "X", "qty": 4, "unit_price": 200_000}]);
    let r2 = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-2", four, &[]),
            Some("g2"),
        )
        .await?;
    assert_eq!(r2.json["tier_after"], "diamond", "{}", r2.json);
    let earned = r2.json["points_earned"].as_i64().unwrap_or(0);
    assert_eq!(
        r2.json["balance_after"].as_i64(),
        Some(silver_balance + earned + 700)
    );
    let refund_one = |key: &'static str| {
        let body = json!({"receipt_id": "R-2", "lines": [{"sku": "X", "qty": 1}]});
        let edge = &edge;
        async move { edge.post("/v1/refunds", &body, Some(key)).await }
    };
    let path = format!("/v1/members/{m}");
    let tier = || {
        let (edge, path) = (&edge, &path);
        async move {
            let r = edge.get(path).await?;
            anyhow::Ok(r.json["tier"]["code"].as_str().unwrap_or("?").to_string())
        }
    };
    // Each step: the refund's key, the gift points it takes back, the tier after it.
    for (key, gift, after) in [
        ("g-back-1", 0, "diamond"),  // ¥6,837.50: nothing goes back
        ("g-back-2", 500, "gold"),   // ¥4,945: the diamond gift goes, gold's stays
        ("g-back-3", 0, "gold"),     // ¥3,052.50: still gold
        ("g-back-4", 200, "silver"), // the sale is back whole: gold's gift goes too
    ] {
        let r = refund_one(key).await?;
        assert_eq!(r.status, 201, "{key}: {}", r.json);
        assert_eq!(r.json["gift_points_withdrawn"], gift, "{key}: {}", r.json);
        assert_eq!(tier().await?, after, "{key}");
        // A retry answers the same refund and takes nothing twice.
        assert_eq!(refund_one(key).await?.json, r.json, "{key} retried");
        if key == "g-back-4" {
            // The balance is the one the member had before the sale, to the point.
            assert_eq!(
                r.json["balance_after"].as_i64(),
                Some(silver_balance),
                "{}",
                r.json
            );
        }
    }
    // Reaching gold again earns its gift again: the claim went back with the points.
    let r3 = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-3", item("X", 200_000), &[]),
            Some("g3"),
        )
        .await?;
    assert_eq!(r3.json["tier_after"], "gold", "{}", r3.json);
    let earned3 = r3.json["points_earned"].as_i64().unwrap_or(0);
    assert_eq!(
        r3.json["balance_after"].as_i64(),
        Some(silver_balance + earned3 + 200),
        "{}",
        r3.json
    );
    Ok(())
}

/// Issue 17: the purchase that crosses gold split in two — a large sale to just below
/// it, a small one across it — and the large one returned: the gold gifts go, though
/// the sale returned is not the one that reached gold; silver's stay.
#[tokio::test]
async fn a_refund_takes_back_the_gifts_of_the_tiers_it_takes_away_whichever_sale_reached_them()
-> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001020", None).await?;
    // ¥2,000 − ¥30 − ¥10: ¥1,960 paid, silver (its welcome coupon).
    let a = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-A", item("X", 200_000), &[]),
            Some("a"),
        )
        .await?;
    assert_eq!(a.json["tier_after"], "silver", "{}", a.json);
    // ¥1,200 at 5% off − ¥30: ¥1,110 more, ¥3,070 in all: gold (+200 points).
    let b = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-B", item("Y", 120_000), &[]),
            Some("b"),
        )
        .await?;
    assert_eq!(b.json["tier_after"], "gold", "{}", b.json);
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-A"}), Some("a-back"))
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["gift_points_withdrawn"], 200, "{}", r.json);
    let member = edge.get(&format!("/v1/members/{m}")).await?.json;
    assert_eq!(member["tier"]["code"], "silver", "{member}");
    let labels: Vec<&str> = member["coupons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["label"].as_str())
        .collect();
    assert!(
        labels.contains(&"¥20 silver welcome"),
        "silver's gift stays: {labels:?}"
    );
    // Refunding B too takes silver's away as well, and no gold gift twice.
    let r = edge
        .post("/v1/refunds", &json!({"receipt_id": "R-B"}), Some("b-back"))
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["gift_points_withdrawn"], 0, "{}", r.json);
    assert_eq!(r.json["balance_after"], 0, "{}", r.json);
    Ok(())
}

#[tokio::test]
async fn upgrades_bring_gifts_and_diamond_benefits_have_quotas() -> anyhow::Result<()> {
    let edge = with_rules(&examples()).await?;
    let m = edge.register("13800001008", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 120_000), &[]),
            Some("u1"),
        )
        .await?;
    assert_eq!(c.json["tier_after"], "silver");
    let labels: Vec<&str> = c.json["coupons_issued"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["label"].as_str())
        .collect();
    assert!(labels.contains(&"¥20 silver welcome"), "{labels:?}");
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-2", item("X", 600_000), &[]),
            Some("u2"),
        )
        .await?;
    assert_eq!(c.json["tier_after"], "diamond");
    // Gold +200 and diamond +500 gift points on top of what the sale earned.
    let earned = c.json["points_earned"].as_i64().unwrap_or(0);
    let before = 1_160; // ¥1,200 − ¥30 (满200减30) − ¥10 (首单立减) = ¥1,160 paid
    assert_eq!(
        c.json["balance_after"].as_i64(),
        Some(before + earned + 200 + 500),
        "{}",
        c.json
    );
    // A sale is priced with the tier held before it; the next one sees diamond perks.
    let q = edge
        .post(
            "/v1/checkout/quote",
            &commit(Some(&m), "Q", item("X", 100), &[]),
            None,
        )
        .await?;
    assert!(
        q.json["flags"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("free_shipping"))),
        "{}",
        q.json
    );

    let member = edge.get(&format!("/v1/members/{m}")).await?;
    let dry = member.json["benefits"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["code"] == "dry_cleaning")
        .cloned();
    assert_eq!(
        dry.map(|d| d["remaining_this_month"].clone()),
        Some(json!(1))
    );
    let r = edge
        .post(
            &format!("/v1/members/{m}/benefits/dry_cleaning/use"),
            &json!(null),
            Some("d1"),
        )
        .await?;
    assert_eq!(
        (r.status, r.json["remaining_this_month"].as_i64()),
        (201, Some(0)),
        "{}",
        r.json
    );
    let replay = edge
        .post(
            &format!("/v1/members/{m}/benefits/dry_cleaning/use"),
            &json!(null),
            Some("d1"),
        )
        .await?;
    assert!(replay.replayed);
    let r = edge
        .post(
            &format!("/v1/members/{m}/benefits/dry_cleaning/use"),
            &json!(null),
            Some("d2"),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, "claim_limit_reached"),
        "quota used up"
    );
    Ok(())
}

#[tokio::test]
async fn pending_points_wait_for_the_return_window() -> anyhow::Result<()> {
    let edge = with_rules(&json!({"version": "pending-v1", "pending_points_days": 7})).await?;
    let m = edge.register("13800001009", None).await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 30_000), &[]),
            Some("p1"),
        )
        .await?;
    assert_eq!(
        (
            c.json["points_earned"].as_i64(),
            c.json["balance_after"].as_i64()
        ),
        (Some(300), Some(0))
    );
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(
        (
            member.json["points"]["balance"].as_i64(),
            member.json["points"]["pending"].as_i64()
        ),
        (Some(0), Some(300))
    );
    let r = edge
        .post(
            &format!("/v1/members/{m}/redemptions"),
            &json!({"points": 100, "reason": "x"}),
            Some("p2"),
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, "insufficient_points"));
    edge.post("/v1/refunds", &json!({"receipt_id": "R-1"}), Some("p3"))
        .await?;
    let member = edge.get(&format!("/v1/members/{m}")).await?;
    assert_eq!(
        (
            member.json["points"]["balance"].as_i64(),
            member.json["points"]["pending"].as_i64()
        ),
        (Some(0), Some(0)),
        "the refund cancelled them"
    );
    Ok(())
}

#[tokio::test]
async fn birthday_month_doubles_points_and_walk_ins_get_only_open_promotions() -> anyhow::Result<()>
{
    // The edge's clock reads 15 May (`with_rules`): May is the birthday month.
    let edge = with_rules(&examples()).await?;
    let birthday = "1990-05-01";
    let r = edge
        .post(
            "/v1/members",
            &json!({"phone": "13800001010", "birthday": birthday, "consents": {"terms": true}}),
            None,
        )
        .await?;
    let m = r.json["member_id"].as_str().unwrap_or_default().to_string();
    edge.post(
        "/v1/checkout/commit",
        &commit(Some(&m), "R-0", item("X", 100), &[]),
        Some("b0"),
    )
    .await?;
    let c = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(&m), "R-1", item("X", 15_000), &[]),
            Some("b1"),
        )
        .await?;
    assert_eq!(c.json["points_earned"], 300, "生日月双倍积分: {}", c.json);

    let w = edge
        .post(
            "/v1/checkout/commit",
            &commit(None, "R-W", item("X", 25_000), &[]),
            Some("w1"),
        )
        .await?;
    let labels: Vec<&str> = w.json["discounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["label"].as_str())
        .collect();
    assert_eq!(
        labels,
        vec!["满200减30"],
        "no member-only rule for a walk-in"
    );
    Ok(())
}

#[tokio::test]
async fn a_rule_set_file_is_loaded_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("rules.json");
    std::fs::write(&path, EXAMPLES)?;
    let edge =
        TestEdge::spawn_with(&format!("rules_file = {:?}\n", path.display().to_string())).await?;
    let r = edge.get("/v1/admin/rule-set").await?;
    assert_eq!(
        (r.status, r.json["version"].as_str()),
        (200, Some("guide-examples-v1"))
    );
    Ok(())
}

/// `member`'s daily check-in at `edge`: the points it gave.
async fn check_in(edge: &TestEdge, member: &str) -> anyhow::Result<i64> {
    let path = format!("/v1/members/{member}/events");
    let r = edge.post(&path, &json!({"type": "check_in"}), None).await?;
    anyhow::ensure!(r.status == 200 || r.status == 201, "check-in: {}", r.json);
    Ok(r.json["points_awarded"].as_i64().unwrap_or(-1))
}

/// A ¥150 sale of `member` at `edge`: the points it earned.
async fn sale_15000(edge: &TestEdge, member: &str, receipt: &str) -> anyhow::Result<i64> {
    let r = edge
        .post(
            "/v1/checkout/commit",
            &commit(Some(member), receipt, item("X", 15_000), &[]),
            Some(receipt),
        )
        .await?;
    anyhow::ensure!(r.status == 201, "sale: {}", r.json);
    Ok(r.json["points_earned"].as_i64().unwrap_or(-1))
}

/// Issue 19, part 5: at fixed instants either side of a month's last midnight (the
/// store's, +08:00: 23:50 and 00:00:30), whatever day the test runs: the daily check-in counts per store
/// day and the birthday month turns with the month.
#[tokio::test]
async fn the_day_and_the_month_turn_at_the_store_s_midnight() -> anyhow::Result<()> {
    let mut edge = TestEdge::prepare("S001", "")?;
    edge.env = vec![(
        "PATRON_CLOCK_SKEW_MS".into(),
        skew_to(store_time(2027, 1, 31, 23, 50, 0)?)?,
    )];
    edge.start().await?;
    let r = edge.put("/v1/admin/rule-set", &examples()).await?;
    anyhow::ensure!(r.status == 201, "loading rules: {} {}", r.status, r.json);
    let r = edge
        .post(
            "/v1/members",
            &json!({"phone": "13800001020", "birthday": "1990-01-15", "consents": {"terms": true}}),
            None,
        )
        .await?;
    anyhow::ensure!(r.status == 201, "{}", r.json);
    let m = r.json["member_id"].as_str().unwrap_or_default().to_string();
    edge.post(
        "/v1/checkout/commit",
        &commit(Some(&m), "R-0", item("X", 100), &[]),
        Some("R-0"),
    )
    .await?;
    // 31 January, 23:50 (ten minutes for the edge to start and answer): the day's
    // check-in once, and January's birthday points.
    assert!(check_in(&edge, &m).await? > 0);
    assert_eq!(check_in(&edge, &m).await?, 0, "one check-in a store day");
    let january = sale_15000(&edge, &m, "R-1").await?;
    // 1 February, 00:00:30: a new day's check-in; the birthday month is over.
    edge.kill();
    edge.env = vec![(
        "PATRON_CLOCK_SKEW_MS".into(),
        skew_to(store_time(2027, 2, 1, 0, 0, 30)?)?,
    )];
    edge.start().await?;
    assert!(check_in(&edge, &m).await? > 0, "a new store day");
    let february = sale_15000(&edge, &m, "R-2").await?;
    assert_eq!(
        (january, february),
        (300, 150),
        "生日月双倍积分 in January only"
    );
    Ok(())
}

/// Issue 19, part 5: the guide's flash sale (限时8折, skincare at 80%, from 1 November
/// 2026 to 1 January 2036 at the store) at fixed instants either side of each end of
/// its window, whatever day the test runs.
#[tokio::test]
async fn the_flash_sale_holds_inside_its_window_only() -> anyhow::Result<()> {
    let skincare = json!([{"sku": "S1", "category": "skincare", "qty": 1, "unit_price": 10_000}]);
    for (at, open) in [
        (store_time(2026, 10, 31, 23, 50, 0)?, false),
        (store_time(2026, 11, 1, 0, 0, 30)?, true),
        (store_time(2035, 12, 31, 23, 50, 0)?, true),
        (store_time(2036, 1, 1, 0, 0, 30)?, false),
    ] {
        let edge = with_rules_at(&examples(), at).await?;
        let q = edge
            .post(
                "/v1/checkout/quote",
                &commit(None, "Q", skincare.clone(), &[]),
                None,
            )
            .await?;
        anyhow::ensure!(q.status == 200, "{}", q.json);
        let flash = q.json["discounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| d["label"] == "限时8折" && d["amount"] == 2_000);
        assert_eq!(flash, open, "at {at}: {}", q.json);
    }
    Ok(())
}
