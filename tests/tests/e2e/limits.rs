//! Issue 17, part 4, against the real binary: a stolen POS token or a rogue cashier is
//! held to the abuse limits — per sale, per lane and store day, across a restart — and
//! the store's manager is not; what a limit refuses writes nothing and is counted in
//! `/healthz`.

use anyhow::{Context, Result};
use patron_tests::{TestEdge, skew_to, store_time};
use serde_json::{Value, json};

const LIMITS: &str = "[limits]\nmax_points_per_sale = 500\nlane_daily_points_earned = 800\n\
lane_daily_points_redeemed = 10000\nlane_daily_refund_fen = 50000\nlane_daily_coupons = 1\n\
coupon_max_off_fen = 1000\ncoupon_max_valid_days = 30\nstandalone_redemption_points = 100\n\
lane_daily_registrations = 2\n";

/// The skew that puts the edge's clock at local noon today (+08:00), so that the
/// store day cannot turn in the middle of the test, whatever the time it runs.
fn noon_skew_ms() -> Result<i64> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis(),
    )?;
    let (day, local) = (86_400_000, now + 8 * 3_600_000);
    Ok(local - local.rem_euclid(day) + day / 2 - local)
}

fn sale(member: &str, receipt: &str, price: i64) -> Value {
    json!({"member_id": member, "receipt_id": receipt,
           "lines": [{"sku": "A1", "qty": 1, "unit_price": price}]})
}

async fn balance(edge: &TestEdge, member: &str) -> Result<i64> {
    let r = edge.get(&format!("/v1/members/{member}")).await?;
    r.json["points"]["balance"].as_i64().context("balance")
}

fn refused(r: &patron_tests::Resp, limit: &str) -> bool {
    r.status == 422 && r.code() == "limit_exceeded" && r.json["error"]["details"]["limit"] == limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_are_held_to_the_limits_across_a_restart_and_the_manager_is_not() -> Result<()> {
    let mut edge = TestEdge::prepare("S001", LIMITS)?;
    edge.env
        .push(("PATRON_CLOCK_SKEW_MS".into(), noon_skew_ms()?.to_string()));
    edge.start().await?;
    let m = edge.register("13800000211", Some("Abuse Test")).await?;
    let pos_token = edge.add_lane("lane-1", "pos")?;
    let desk_token = edge.add_lane("desk-1", "cashier")?;

    // A made-up basket earning more than one sale may: refused, nothing written.
    let pos = edge.as_token(&pos_token);
    let r = pos
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-big", 60_000),
            Some("R-big"),
        )
        .await?;
    assert!(
        refused(&r, "max_points_per_sale"),
        "{} {}",
        r.status,
        r.json
    );
    assert_eq!(r.json["error"]["details"]["asked"], 600);
    assert_eq!(balance(&edge, &m).await?, 0, "nothing was written");

    // The lane's day: 400 + 400 earned, then nothing more.
    for (i, price) in [40_000, 40_000].into_iter().enumerate() {
        let receipt = format!("R-ok-{i}");
        let r = pos
            .post(
                "/v1/checkout/commit",
                &sale(&m, &receipt, price),
                Some(&receipt),
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let r = pos
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-over", 100),
            Some("R-over"),
        )
        .await?;
    assert!(refused(&r, "lane_daily_points_earned"), "{}", r.json);
    assert_eq!(r.json["error"]["details"]["used"], 800);
    // A retry of a sale that went through is its stored answer, not a second count.
    let r = pos
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-ok-0", 40_000),
            Some("R-ok-0"),
        )
        .await?;
    assert_eq!((r.status, r.replayed), (201, true));
    // Another lane has its own day; the manager has none.
    let desk = edge.as_token(&desk_token);
    let r = desk
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-desk", 100),
            Some("R-desk"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = edge
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-mgr", 60_000),
            Some("R-mgr"),
        )
        .await?;
    assert_eq!(r.status, 201, "the manager is not limited: {}", r.json);

    // Points for a gift outside a sale, above the threshold: the manager's.
    let gift = json!({"points": 150, "reason": "gift:SAMPLE"});
    let path = format!("/v1/members/{m}/redemptions");
    let r = pos.post(&path, &gift, Some("gift-1")).await?;
    assert!(refused(&r, "standalone_redemption_points"), "{}", r.json);
    let r = edge.post(&path, &gift, Some("gift-1")).await?;
    assert_eq!(r.status, 201, "{}", r.json);

    // A cashier's coupons: capped in value, validity and number.
    let coupon = |off: i64, days: i64| json!({"label": "sorry", "off": off, "valid_days": days});
    let cpath = format!("/v1/members/{m}/coupons");
    let r = desk.post(&cpath, &coupon(100_000_000, 3650), None).await?;
    assert!(refused(&r, "coupon_max_off_fen"), "{}", r.json);
    let r = desk.post(&cpath, &coupon(1_000, 365), None).await?;
    assert!(refused(&r, "coupon_max_valid_days"), "{}", r.json);
    let r = desk.post(&cpath, &coupon(1_000, 30), None).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = desk.post(&cpath, &coupon(500, 7), None).await?;
    assert!(refused(&r, "lane_daily_coupons"), "{}", r.json);

    // Refunds: at most ¥500 a day per lane; ¥400 goes through and is counted.
    let refund = |receipt: &str| json!({ "receipt_id": receipt });
    let r = pos
        .post("/v1/refunds", &refund("R-ok-0"), Some("ref-1"))
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = pos
        .post("/v1/refunds", &refund("R-ok-1"), Some("ref-2"))
        .await?;
    assert!(refused(&r, "lane_daily_refund_fen"), "{}", r.json);
    assert_eq!(r.json["error"]["details"]["used"], 40_000);

    // Registrations (each may carry a referral reward): two a day for this lane.
    let join = |phone: &str| json!({"phone": phone, "consents": {"terms": true}});
    for phone in ["13800000212", "13800000213"] {
        let r = pos.post("/v1/members", &join(phone), None).await?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let r = pos.post("/v1/members", &join("13800000214"), None).await?;
    assert!(refused(&r, "lane_daily_registrations"), "{}", r.json);

    // Counted in the database, not in memory: a restart changes nothing.
    edge.stop();
    edge.start().await?;
    let pos = edge.as_token(&pos_token);
    let r = pos
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-after", 100),
            Some("R-after"),
        )
        .await?;
    assert!(refused(&r, "lane_daily_points_earned"), "{}", r.json);
    // Counted once: the replayed sale above added nothing.
    assert_eq!(r.json["error"]["details"]["used"], 800, "{}", r.json);
    let h = edge.get("/healthz").await?;
    assert_eq!(h.json["limits_refused_today"], 9, "{}", h.json);
    // The manager's 600-point sale and 150-point gift went beyond limits: counted.
    assert_eq!(h.json["limits_overridden_today"], 2, "{}", h.json);
    assert_eq!(balance(&edge, &m).await?, 400 + 400 + 1 + 600 - 150 - 400);
    Ok(())
}

/// Issue 17, part 4: a lane that looks members up without selling to them is raised as
/// an anomaly once, counted in `/healthz`, and reaches HQ through sync
/// (`patron-hub alerts`) with its store, lane and figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_looking_members_up_without_selling_reaches_hq_as_an_alert() -> Result<()> {
    let hub = patron_tests::hub::TestHub::spawn().await?;
    let config = format!(
        "{}[alerts]\nscan_secs = 1\nlookups_floor = 5\nlookups_per_sale = 2\n",
        patron_tests::FAST_SYNC
    );
    let mut edge = TestEdge::prepare("S001", &config)?;
    edge.env
        .push(("PATRON_CLOCK_SKEW_MS".into(), noon_skew_ms()?.to_string()));
    edge.enroll(&hub)?;
    edge.start().await?;
    let m = edge.register("13800000221", None).await?;
    let pos = edge.as_token(&edge.add_lane("lane-7", "pos")?);
    // One sale, then four lookups: 4 ≤ 2 × 1 and below the floor — nothing.
    let r = pos
        .post("/v1/checkout/commit", &sale(&m, "R-1", 1_000), Some("R-1"))
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    for _ in 0..4 {
        assert_eq!(pos.get(&format!("/v1/members/{m}")).await?.status, 200);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(edge.get("/healthz").await?.json["anomalies_today"], 0);
    // Three more: seven lookups, one sale.
    for _ in 0..3 {
        assert_eq!(pos.get(&format!("/v1/members/{m}")).await?.status, 200);
    }
    patron_tests::hub::TestHub::wait_for(std::time::Duration::from_secs(15), || async {
        Ok(edge.get("/healthz").await?.json["anomalies_today"] == 1)
    })
    .await?;
    edge.synced().await?;
    let listed: Value = serde_json::from_str(&hub.hq(&["alerts", "--json"])?)?;
    let a = &listed[0];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        (&a["store_id"], &a["lane"], &a["anomaly"], &a["against"]),
        (
            &json!("S001"),
            &json!("lane-7"),
            &json!("lookups_without_sales"),
            &json!(1)
        ),
        "{a}"
    );
    assert!(a["figure"].as_i64() >= Some(5), "{a}");
    Ok(())
}

/// Issue 17, part 4: above the standalone threshold a POS lane needs the member present.
/// The hub signs a member code (`patron-hub member-code`), the store checks it offline
/// with the key enrollment handed it, and takes each code once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redemption_above_the_threshold_takes_the_member_s_code_once() -> Result<()> {
    let hub = patron_tests::hub::TestHub::spawn().await?;
    // The edge's clock is the hub's here: codes live two minutes by either.
    let mut edge = TestEdge::prepare("S001", patron_tests::FAST_SYNC)?;
    edge.enroll(&hub)?;
    edge.start().await?;
    let m = edge.register("13800000231", None).await?;
    // The manager's sale: 12,000 points.
    let r = edge
        .post(
            "/v1/checkout/commit",
            &sale(&m, "R-1", 1_200_000),
            Some("R-1"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    edge.synced().await?;
    let pos = edge.as_token(&edge.add_lane("lane-1", "pos")?);
    let path = format!("/v1/members/{m}/redemptions");
    let redeem =
        |code: Option<&str>| json!({"points": 6_000, "reason": "gift:KETTLE", "member_code": code});
    let r = pos.post(&path, &redeem(None), Some("x-1")).await?;
    assert!(refused(&r, "standalone_redemption_points"), "{}", r.json);
    let code = hub.hq(&["member-code", &m])?.trim().to_string();
    let r = pos.post(&path, &redeem(Some(&code)), Some("x-2")).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"], 12_000 - 6_000, "{}", r.json);
    let r = pos.post(&path, &redeem(Some(&code)), Some("x-3")).await?;
    assert_eq!(
        (r.status, r.code()),
        (422, "member_code_invalid"),
        "{}",
        r.json
    );
    // Nothing refused above held points at the hub: a fresh code spends the rest.
    edge.synced().await?;
    let fresh = hub.hq(&["member-code", &m])?.trim().to_string();
    let r = pos.post(&path, &redeem(Some(&fresh)), Some("x-5")).await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"], 0, "{}", r.json);
    // Another member's code proves nothing about this one.
    let other = edge.register("13800000232", None).await?;
    edge.synced().await?;
    let theirs = hub.hq(&["member-code", &other])?.trim().to_string();
    let r = pos.post(&path, &redeem(Some(&theirs)), Some("x-4")).await?;
    assert_eq!(
        (r.status, r.code()),
        (422, "member_code_invalid"),
        "{}",
        r.json
    );
    Ok(())
}

/// Issue 19, part 5: a lane's day is the store's day, at fixed instants either side of
/// its midnight (+08:00) whatever the date the test runs: the lane that earned its
/// day's 800 points at 23:50 is refused until midnight, and earns again at 00:00:30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_daily_cap_renews_at_the_store_s_midnight() -> Result<()> {
    let mut edge = TestEdge::prepare("S001", LIMITS)?;
    edge.env = vec![(
        "PATRON_CLOCK_SKEW_MS".into(),
        skew_to(store_time(2027, 3, 9, 23, 50, 0)?)?,
    )];
    edge.start().await?;
    let m = edge.register("13800000241", None).await?;
    let pos_token = edge.add_lane("lane-1", "pos")?;
    let pos = edge.as_token(&pos_token);
    for (receipt, price) in [("R-1", 40_000), ("R-2", 40_000)] {
        let r = pos
            .post(
                "/v1/checkout/commit",
                &sale(&m, receipt, price),
                Some(receipt),
            )
            .await?;
        assert_eq!(r.status, 201, "{}", r.json);
    }
    let r = pos
        .post("/v1/checkout/commit", &sale(&m, "R-3", 100), Some("R-3"))
        .await?;
    assert!(refused(&r, "lane_daily_points_earned"), "{}", r.json);
    edge.kill();
    edge.env = vec![(
        "PATRON_CLOCK_SKEW_MS".into(),
        skew_to(store_time(2027, 3, 10, 0, 0, 30)?)?,
    )];
    edge.start().await?;
    let pos = edge.as_token(&pos_token);
    let r = pos
        .post("/v1/checkout/commit", &sale(&m, "R-4", 40_000), Some("R-4"))
        .await?;
    assert_eq!(r.status, 201, "a new store day: {}", r.json);
    Ok(())
}
