//! Issue 18, part 1: limited entitlements hold per member across the chain. With the hub
//! reachable a second claim at another store is refused; with it stopped each store
//! allows what the offline policy says (once per offline period), and what passed the
//! limit is reported once the stores reconnect.

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use serde_json::{Value, json};

const CONFIG: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 3000\n\
                      [redemption]\nauthorize_timeout_ms = 3000\n";

/// A monthly benefit with a quota of one for every member, and a once-per-member offer.
const RULES: &str = r#"{"version":"claims-v1",
  "tiers":{"normal":{"benefits":[{"code":"dry_cleaning","label":"Dry cleaning","quota_per_month":1}]}},
  "rules":[{"id":"welcome-5","label":"Welcome ¥5 off","type":"order_reduction","threshold":0,"off":500,
            "limits":{"per_member":1}}]}"#;

async fn event(e: &TestEdge, member: &str, kind: &str) -> Result<(u16, Value)> {
    let r = e
        .post(
            &format!("/v1/members/{member}/events"),
            &json!({"type": kind}),
            None,
        )
        .await?;
    Ok((r.status, r.json))
}

async fn benefit(e: &TestEdge, member: &str) -> Result<(u16, Value)> {
    let r = e
        .post(
            &format!("/v1/members/{member}/benefits/dry_cleaning/use"),
            &json!({}),
            None,
        )
        .await?;
    Ok((r.status, r.json))
}

/// The welcome offer's discount in a ¥50 sale.
async fn welcome_off(e: &TestEdge, member: &str, receipt: &str) -> Result<i64> {
    let r = e
        .post(
            "/v1/checkout/commit",
            &json!({"member_id": member, "receipt_id": receipt,
                    "lines": [{"sku": "A", "qty": 1, "unit_price": 5_000}]}),
            Some(receipt),
        )
        .await?;
    anyhow::ensure!(r.status == 201, "sale {receipt}: {} {}", r.status, r.json);
    Ok(r.json["discounts"]
        .as_array()
        .context("discounts")?
        .iter()
        .filter(|d| d["id"] == "welcome-5")
        .filter_map(|d| d["amount"].as_i64())
        .sum())
}

/// A hub, and S001 and S002 once both run rule set `json` (version `version`).
async fn two_stores_under(json: &str, version: &str) -> Result<(TestHub, TestEdge, TestEdge)> {
    two_stores_with("", json, version).await
}

/// [`two_stores_under`], with `extra` appended to both stores' configuration (after
/// the `[redemption]` table: a line without a table header of its own lands there).
pub(crate) async fn two_stores_with(
    extra: &str,
    json: &str,
    version: &str,
) -> Result<(TestHub, TestEdge, TestEdge)> {
    let config = format!("{CONFIG}{extra}");
    let hub = TestHub::spawn().await?;
    let mut s1 = TestEdge::prepare("S001", &config)?;
    s1.enroll(&hub)?;
    s1.start().await?;
    let mut s2 = TestEdge::prepare("S002", &config)?;
    s2.enroll(&hub)?;
    s2.start().await?;
    let rules = s1.dir.path().join("rules.json");
    std::fs::write(&rules, json)?;
    hub.publish_rules(&rules, "all")?;
    for e in [&s1, &s2] {
        TestHub::wait_for(Duration::from_secs(15), || async {
            Ok(e.get("/v1/admin/rule-set").await?.json["version"] == version)
        })
        .await
        .context("the stores adopt the rule set")?;
    }
    Ok((hub, s1, s2))
}

/// A hub, S001 and S002 with the rule set, and a member registered (with a complete
/// profile) at S001 and looked up at S002.
async fn two_stores(phone: &str) -> Result<(TestHub, TestEdge, TestEdge, String)> {
    let (hub, s1, s2) = two_stores_under(RULES, "claims-v1").await?;
    let r = s1
        .post(
            "/v1/members",
            &json!({"phone": phone, "name": "Li", "birthday": "1990-05-01",
                    "consents": {"terms": true}}),
            None,
        )
        .await?;
    anyhow::ensure!(r.status == 201, "registration: {}", r.json);
    let m = r.json["member_id"]
        .as_str()
        .context("member_id")?
        .to_string();
    s1.synced().await?;
    let (at2, _) = s2.by_phone(phone).await?;
    anyhow::ensure!(at2 == m, "S002 finds the member");
    Ok((hub, s1, s2, m))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entitlement_is_claimed_once_across_stores_and_offline_claims_are_bounded_and_reported()
-> Result<()> {
    let (mut hub, s1, s2, m) = two_stores("13800000181").await?;

    // Online: what S001 gave, S002 refuses, whether or not the stream has brought
    // S001's claim yet (the hub counts it).
    let (st, body) = event(&s1, &m, "check_in").await?;
    assert_eq!(
        (st, body["points_awarded"].as_i64()),
        (201, Some(5)),
        "{body}"
    );
    let (st, body) = event(&s2, &m, "check_in").await?;
    assert_eq!(st, 200, "a second check-in the same day: {body}");
    assert_eq!(body["points_awarded"], 0, "{body}");
    let (st, body) = event(&s1, &m, "profile_completed").await?;
    assert_eq!(
        (st, body["points_awarded"].as_i64()),
        (201, Some(50)),
        "{body}"
    );
    let (st, body) = event(&s2, &m, "profile_completed").await?;
    assert_eq!(
        (st, body["points_awarded"].as_i64()),
        (200, Some(0)),
        "{body}"
    );
    let (st, body) = benefit(&s1, &m).await?;
    assert_eq!(
        (st, body["remaining_this_month"].as_i64()),
        (201, Some(0)),
        "{body}"
    );
    let (st, body) = benefit(&s2, &m).await?;
    assert_eq!(st, 422, "the month's quota was used at S001: {body}");
    assert_eq!(body["error"]["code"], "claim_limit_reached", "{body}");
    assert_eq!(welcome_off(&s1, &m, "R-1").await?, 500);
    assert_eq!(
        welcome_off(&s2, &m, "R-2").await?,
        0,
        "the once-per-member offer was S001's"
    );
    // Two shares of three, online.
    for e in [&s1, &s2] {
        let (st, body) = event(e, &m, "share").await?;
        assert_eq!(st, 201, "{body}");
    }
    s1.synced().await?;
    s2.synced().await?;

    // Offline: each store allows one share (the third at each), not a second.
    hub.kill();
    s1.hub_reachable(false).await?;
    s2.hub_reachable(false).await?;
    let (st, body) = event(&s1, &m, "share").await?;
    assert_eq!(st, 201, "one offline share at S001: {body}");
    let (st, body) = event(&s1, &m, "share").await?;
    assert_eq!(st, 200, "a second waits for the hub: {body}");
    let (st, body) = event(&s2, &m, "share").await?;
    assert_eq!(st, 201, "one offline share at S002: {body}");
    // What S002 knows of the check-in and the profile reward still holds offline.
    let (st, _) = event(&s2, &m, "check_in").await?;
    assert_eq!(st, 200);

    // Reconnected: the hub reports the share counter passed its limit by one (four
    // of three, at both stores), counted once however often the facts arrive.
    hub.start().await?;
    s1.synced().await?;
    s2.synced().await?;
    let report = hub.overdraws().await?;
    let over = report["over_claims"].as_array().context("over_claims")?;
    assert_eq!(over.len(), 1, "{report}");
    assert_eq!(over[0]["member"], m.as_str(), "{report}");
    assert_eq!(over[0]["entitlement"], "share", "{report}");
    assert_eq!(
        (over[0]["claimed"].as_i64(), over[0]["limit"].as_i64()),
        (Some(4), Some(3)),
        "{report}"
    );
    assert_eq!(over[0]["stores"], json!(["S001", "S002"]), "{report}");
    // Online again, the counter stays closed at both stores.
    for e in [&s1, &s2] {
        let (st, body) = event(e, &m, "share").await?;
        assert_eq!(st, 200, "{body}");
    }
    let (st, _) = event(&s2, &m, "check_in").await?;
    assert_eq!(st, 200);
    Ok(())
}

/// Simultaneous check-ins of one member at two stores, twelve at each: the hub grants
/// exactly one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_claims_at_two_stores_never_pass_the_limit() -> Result<()> {
    let (hub, s1, s2, m) = two_stores("13800000182").await?;
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..24 {
        let e = if i % 2 == 0 { &s1 } else { &s2 };
        let (url, token, client, m) = (e.url(""), e.token.clone(), e.http.clone(), m.clone());
        asks.spawn(async move {
            let r = client
                .post(format!("{url}/v1/members/{m}/events"))
                .bearer_auth(token)
                .json(&json!({"type": "check_in"}))
                .send()
                .await?;
            Ok::<u16, anyhow::Error>(r.status().as_u16())
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = asks.join_next().await {
        statuses.push(r??);
    }
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 200),
        "{statuses:?}"
    );
    s1.synced().await?;
    s2.synced().await?;
    let report = hub.overdraws().await?;
    assert_eq!(report["over_claims"], json!([]), "{report}");
    Ok(())
}

/// A coupon given at `e` to `member`: its code.
async fn give_coupon(e: &TestEdge, member: &str, stores: Value) -> Result<String> {
    let r = e
        .post(
            &format!("/v1/members/{member}/coupons"),
            &json!({"label": "¥10 off", "off": 1_000, "valid_days": 30, "stores": stores}),
            None,
        )
        .await?;
    anyhow::ensure!(r.status == 201, "coupon: {} {}", r.status, r.json);
    Ok(r.json["code"].as_str().context("code")?.to_string())
}

/// A ¥50 sale of `member` at `e` with coupon `code`: (status, body).
async fn sale_with(e: &TestEdge, member: &str, receipt: &str, code: &str) -> Result<(u16, Value)> {
    let r = e
        .post(
            "/v1/checkout/commit",
            &json!({"member_id": member, "receipt_id": receipt, "coupon_codes": [code],
                    "lines": [{"sku": "A", "qty": 1, "unit_price": 5_000}]}),
            Some(receipt),
        )
        .await?;
    Ok((r.status, r.json))
}

/// Waits until `e` lists coupon `code` among the member's.
async fn knows_coupon(e: &TestEdge, member: &str, code: &str) -> Result<()> {
    TestHub::wait_for(Duration::from_secs(15), || async {
        let r = e.get(&format!("/v1/members/{member}")).await?;
        Ok(r.json["coupons"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["code"] == code)))
    })
    .await
    .map(|_| ())
}

/// Issue 18, part 2: a coupon issued at S001 is used at S002 while the hub is
/// reachable, and is then refused at S001; a coupon scoped to S001 is refused at S002;
/// offline a coupon is usable at the store that issued it and at the one where the
/// member was last identified online, and a use at both is settled as a debt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coupon_is_usable_once_at_any_store_of_the_chain() -> Result<()> {
    const PHONE: &str = "13800000183";
    let (mut hub, s1, s2, m) = two_stores(PHONE).await?;
    let code = give_coupon(&s1, &m, json!([])).await?;
    knows_coupon(&s2, &m, &code)
        .await
        .context("S002 receives the coupon S001 gave")?;
    let (st, body) = sale_with(&s2, &m, "R-1", &code).await?;
    assert_eq!(st, 201, "used at S002: {body}");
    assert!(
        body["discounts"].as_array().is_some_and(|d| d
            .iter()
            .any(|d| d["source"] == "coupon" && d["amount"] == 1_000)),
        "{body}"
    );
    let (st, body) = sale_with(&s1, &m, "R-2", &code).await?;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("coupon_invalid")),
        "{body}"
    );

    let local = give_coupon(&s1, &m, json!(["S001"])).await?;
    knows_coupon(&s2, &m, &local).await?;
    let (st, body) = sale_with(&s2, &m, "R-3", &local).await?;
    assert_eq!(st, 422, "scoped to S001: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("not valid at this store")),
        "{body}"
    );

    // Offline, a coupon is usable at the store that issued it and at the store where
    // the member was last identified online. S001 looks the member up after S002 did:
    // the hub asks S002 to let go of their coupons, and S002 refuses the coupon offline.
    let third = give_coupon(&s1, &m, json!([])).await?;
    knows_coupon(&s2, &m, &third).await?;
    s2.by_phone(PHONE).await?;
    coupons_held(&s2, 1)
        .await
        .context("S002 holds the coupons")?;
    s1.by_phone(PHONE).await?;
    coupons_held(&s1, 1)
        .await
        .context("S001 holds the coupons")?;
    coupons_held(&s2, 0)
        .await
        .context("the hub asked S002 to let go")?;
    offline(&mut hub, &s1, &s2).await?;
    let (st, body) = sale_with(&s2, &m, "R-4", &third).await?;
    assert_eq!(st, 422, "another store's coupon waits for the hub: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|t| t.contains("last identified online")),
        "{body}"
    );
    online(&mut hub, &s1, &s2).await?;

    // Now S002 identifies the member last, and both stores lose the hub: S002 takes the
    // coupon under its hold, S001 as its issuer. The second use reaches the hub as an
    // over-claim and is settled as a debt of the coupon's value (¥10 = 1,000 points at
    // the default rate), which both stores then show.
    let (_, before) = s2.by_phone(PHONE).await?;
    coupons_held(&s2, 1).await?;
    coupons_held(&s1, 0)
        .await
        .context("the hub asked S001 to let go")?;
    offline(&mut hub, &s1, &s2).await?;
    let (st, at2) = sale_with(&s2, &m, "R-5", &third).await?;
    assert_eq!(st, 201, "S002 holds the member's coupons: {at2}");
    let (st, at1) = sale_with(&s1, &m, "R-6", &third).await?;
    assert_eq!(st, 201, "the issuing store takes it offline: {at1}");
    let earned = at2["points_earned"].as_i64().context("earned")?
        + at1["points_earned"].as_i64().context("earned")?;
    online(&mut hub, &s1, &s2).await?;
    let report = hub.overdraws().await?;
    let coupon_claims: Vec<&Value> = report["over_claims"]
        .as_array()
        .context("over_claims")?
        .iter()
        .filter(|o| {
            o["entitlement"]
                .as_str()
                .is_some_and(|e| e.starts_with("coupon:"))
        })
        .collect();
    assert_eq!(coupon_claims.len(), 1, "{report}");
    assert_eq!(
        (&coupon_claims[0]["claimed"], &coupon_claims[0]["stores"]),
        (&json!(2), &json!(["S001", "S002"])),
        "{report}"
    );
    for e in [&s1, &s2] {
        balance_becomes(e, &m, before + earned - 1_000).await?;
    }
    let (st, body) = sale_with(&s2, &m, "R-7", &third).await?;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("coupon_invalid")),
        "{body}"
    );
    Ok(())
}

/// Waits until `e` holds the coupons of `want` members (10 s at most).
async fn coupons_held(e: &TestEdge, want: u64) -> Result<()> {
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(e.get("/healthz").await?.json["hub"]["coupon_leases_held"] == want)
    })
    .await
    .map(|_| ())
}

/// Starts the hub and waits until both stores have pushed to it and follow its
/// stream again (a recall reaches a store through its stream).
async fn online(hub: &mut TestHub, s1: &TestEdge, s2: &TestEdge) -> Result<()> {
    hub.start().await?;
    for e in [s1, s2] {
        e.synced().await?;
        TestHub::wait_for(Duration::from_secs(30), || async {
            Ok(e.get("/healthz").await?.json["hub"]["streaming"] == true)
        })
        .await
        .with_context(|| format!("{} follows the stream", e.store_id))?;
    }
    Ok(())
}

/// Stops the hub once both stores hold every fact they wrote, and waits until both
/// see it gone.
async fn offline(hub: &mut TestHub, s1: &TestEdge, s2: &TestEdge) -> Result<()> {
    s1.synced().await?;
    s2.synced().await?;
    hub.kill();
    s1.hub_reachable(false).await?;
    s2.hub_reachable(false).await
}

/// A one-line sale of `fen` for `member` at `e`.
async fn plain_sale(
    e: &TestEdge,
    member: &str,
    receipt: &str,
    fen: i64,
) -> Result<patron_tests::Resp> {
    let body = json!({"member_id": member, "receipt_id": receipt,
                      "lines": [{"sku": "A", "qty": 1, "unit_price": fen}]});
    e.post("/v1/checkout/commit", &body, Some(receipt)).await
}

/// Issue 18, part 6: the rule set's welcome rewards — 100 points on registration, and a
/// registration gift (50 points and a ¥10 coupon) on the first purchase of at least ¥50
/// — are each given once per member across the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_rewards_are_given_once_per_member_across_the_chain() -> Result<()> {
    let (hub, s1, s2) = two_stores_under(
        r#"{"version":"welcome-v1","welcome":{"register_points":100,
            "first_purchase":{"threshold":5000,"points":50,
                              "coupon":{"label":"注册礼 ¥10","off":1000,"valid_days":30}}}}"#,
        "welcome-v1",
    )
    .await?;
    let r = s1
        .post(
            "/v1/members",
            &json!({"phone": "13800000186", "consents": {"terms": true}}),
            None,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.json["points"]["balance"], 100,
        "注册送100积分: {}",
        r.json
    );
    let m = r.json["member_id"]
        .as_str()
        .context("member_id")?
        .to_string();
    s1.synced().await?;
    let (_, balance) = s2.by_phone("13800000186").await?;
    assert_eq!(balance, 100);

    let r = plain_sale(&s1, &m, "R-1", 4_000).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.json["coupons_issued"],
        json!([]),
        "¥40 is below the gift's ¥50"
    );
    assert_eq!(r.json["balance_after"], 140);
    s1.synced().await?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(s2.get(&format!("/v1/members/{m}")).await?.json["points"]["balance"] == 140)
    })
    .await
    .context("S002 receives S001's sale")?;
    let r = plain_sale(&s2, &m, "R-2", 6_000).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.json["coupons_issued"][0]["label"], "注册礼 ¥10",
        "{}",
        r.json
    );
    assert_eq!(r.json["balance_after"], 140 + 60 + 50, "{}", r.json);
    s2.synced().await?;
    let r = plain_sale(&s1, &m, "R-3", 6_000).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(
        r.json["coupons_issued"],
        json!([]),
        "once per member: {}",
        r.json
    );
    // S001 may not have S002's sale yet: what it shows is its own knowledge, but the
    // gift was not given twice.
    let r = s1
        .post(
            "/v1/members",
            &json!({"phone": "13800000186", "consents": {"terms": true}}),
            None,
        )
        .await?;
    assert_eq!(
        r.status, 409,
        "the phone is a member: no second welcome: {}",
        r.json
    );
    let report = hub.overdraws().await?;
    assert_eq!(report["over_claims"], json!([]), "{report}");
    Ok(())
}

/// The member `member`'s balance as store `e` knows it, once it is `want` (15 s at most).
pub(crate) async fn balance_becomes(e: &TestEdge, member: &str, want: i64) -> Result<()> {
    let path = format!("/v1/members/{member}");
    let waited = TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(e.get(&path).await?.json["points"]["balance"] == want)
    })
    .await;
    if waited.is_err() {
        let seen = e.get(&path).await?.json["points"]["balance"].clone();
        anyhow::bail!("balance {want} at {}: it is {seen}", e.store_id);
    }
    Ok(())
}

async fn register(e: &TestEdge, phone: &str, code: Option<&str>) -> Result<patron_tests::Resp> {
    let body = json!({"phone": phone, "consents": {"terms": true}, "referrer_code": code});
    e.post("/v1/members", &body, None).await
}

/// Issue 18, part 3: referral codes are unique across the chain and resolved by the hub.
/// A friend who joins at another store than the referrer credits the referrer once for
/// registering and once for the first purchase; a friend registered while the hub is
/// away is settled on sync; the referrer's own phone earns nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_at_another_store_credits_the_referrer_once_through_the_hub() -> Result<()> {
    let (mut hub, s1, s2) = two_stores_under(
        r#"{"version":"ref-v1","referral":{"on_register":100,"on_first_purchase":50}}"#,
        "ref-v1",
    )
    .await?;
    let r = register(&s1, "13800000301", None).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let referrer = r.json["member_id"]
        .as_str()
        .context("member_id")?
        .to_string();
    let code = r.json["referral_code"]
        .as_str()
        .context("code")?
        .to_string();
    assert!(
        code.starts_with("S001-"),
        "the code names its store: {code}"
    );
    s1.synced().await?;

    // S002 does not hold the referrer: the hub resolves the code (typed in lower case).
    let r = register(&s2, "13800000302", Some(&code.to_lowercase())).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let friend = r.json["member_id"]
        .as_str()
        .context("member_id")?
        .to_string();
    assert!(
        r.json["referral_code"]
            .as_str()
            .is_some_and(|c| c.starts_with("S002-"))
    );
    s2.synced().await?;
    balance_becomes(&s1, &referrer, 100).await?;
    let sale = json!({"member_id": friend, "receipt_id": "F-1",
                      "lines": [{"sku": "A", "qty": 1, "unit_price": 1_000}]});
    let r = s2.post("/v1/checkout/commit", &sale, Some("F-1")).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let sale = json!({"member_id": friend, "receipt_id": "F-2",
                      "lines": [{"sku": "A", "qty": 1, "unit_price": 1_000}]});
    let r = s2.post("/v1/checkout/commit", &sale, Some("F-2")).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    s2.synced().await?;
    balance_becomes(&s1, &referrer, 150).await?;

    // With the hub away S002 records the next friend's referral; the hub settles it
    // when S002 syncs again.
    hub.kill();
    s2.hub_reachable(false).await?;
    let r = register(&s2, "13800000303", Some(&code)).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    hub.start().await?;
    s2.synced().await?;
    balance_becomes(&s1, &referrer, 250).await?;

    // The referrer's own phone, registered again at S002 with their own code: the hub
    // merges the two and credits nothing.
    let r = register(&s2, "13800000301", Some(&code)).await?;
    assert!(matches!(r.status, 201 | 409), "{} {}", r.status, r.json);
    s2.synced().await?;
    s1.synced().await?;
    // Everything S002 wrote has reached the hub and S001 has what the hub streamed it:
    // the balance is the three credits, each once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    balance_becomes(&s1, &referrer, 250).await?;
    let (_, at_hub_and_s2) = s2.by_phone("13800000301").await?;
    assert_eq!(
        at_hub_and_s2, 250,
        "S002 fetches the referrer with the hub's credits"
    );
    Ok(())
}
