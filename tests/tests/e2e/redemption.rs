//! Redemption authority: the hub authorizes redemptions while reachable (and its holds
//! survive its restart); without it the edge applies the offline floor limit per member
//! and the daily cap per store (`422 offline_limit_exceeded`).

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use serde_json::{Value, json};

const CONFIG: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 2000\n\
                      [redemption]\noffline_floor_points = 300\noffline_daily_cap_points = 450\n";

/// Another store (credential `store`) asks the hub to authorize `points` for sale `txn`.
async fn ask_hub(
    hub: &TestHub,
    store: &str,
    member: &str,
    txn: &str,
    points: i64,
) -> Result<patron_tests::Resp> {
    let ask = json!({"member": member, "txn": txn, "points": points, "unsynced": 0});
    hub.post_raw(
        "/v1/redeem/authorize",
        Some(store),
        serde_json::to_vec(&ask)?,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_authorizes_online_and_floor_limits_bound_offline_redemptions() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    let mut e = TestEdge::prepare("S001", CONFIG)?;
    e.enroll(&hub)?;
    e.start().await?;
    let m = e.register("13800000001", None).await?;
    let (st, _) = e.sale(&m, "R-earn", 200_000, 0).await?;
    anyhow::ensure!(st == 201, "earning sale: {st}");
    e.synced()
        .await
        .context("the earning sale reaches the hub")?;

    // Another store (S002, enrolled by hand) is authorized 1,500 of the member's 2,000
    // points for a sale in progress, once it has looked the member up (before, the
    // hub refuses to hold a member's points for a store that never served them).
    let other = hub.enroll_raw("S002").await?;
    let r = ask_hub(
        &hub,
        &other,
        &m,
        "0190a000-0000-7000-8000-0000000000a9",
        1500,
    )
    .await?;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{}",
        r.json
    );
    hub.look_up_as(&other, "13800000001").await?;
    let r = ask_hub(
        &hub,
        &other,
        &m,
        "0190a000-0000-7000-8000-0000000000aa",
        1500,
    )
    .await?;
    anyhow::ensure!(
        r.status == 200 && r.json["granted"] == true,
        "S002 authorization: {} {}",
        r.status,
        r.json
    );

    // The credential is checked before the body is judged, and a bad body is a 400.
    let bad = hub
        .post_raw(
            "/v1/redeem/authorize",
            Some("not-a-credential"),
            b"{".to_vec(),
        )
        .await?;
    assert_eq!(
        (bad.status, bad.code()),
        (401, "unauthorized"),
        "{}",
        bad.json
    );
    let bad = hub
        .post_raw("/v1/redeem/authorize", Some(&other), b"{".to_vec())
        .await?;
    assert_eq!(bad.status, 400, "{}", bad.json);
    let r = ask_hub(
        &hub,
        &other,
        "not-a-uuid",
        "0190a000-0000-7000-8000-0000000000ab",
        1,
    )
    .await?;
    assert_eq!(r.status, 400, "{}", r.json);

    // S001 still shows 2,000 locally, but the hub refuses 800: only 500 are left.
    let (st, body) = e.sale(&m, "R-800", 1_000, 800).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    assert_eq!(body["error"]["details"]["available"], 500, "{body}");
    let (st, body) = e.sale(&m, "R-500", 1_000, 500).await?;
    assert_eq!(st, 201, "{body}");
    e.synced().await?;

    // A second member, registered and earning while the hub is reachable.
    let m2 = e.register("13800000002", None).await?;
    let (st, _) = e.sale(&m2, "R-earn-2", 100_000, 0).await?;
    anyhow::ensure!(st == 201, "second member's sale: {st}");
    e.synced().await?;

    // The hub goes away: offline, one member may redeem 300 here, the store 450 a day.
    hub.kill();
    e.hub_reachable(false).await?;
    let (st, body) = e.sale(&m, "R-off-1", 1_000, 200).await?;
    assert_eq!(st, 201, "first offline redemption: {body}");
    let (st, body) = e.sale(&m, "R-off-2", 1_000, 200).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "offline_limit_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["member_left"], 100, "{body}");
    let (st, body) = e.sale(&m, "R-off-3", 1_000, 100).await?;
    assert_eq!(st, 201, "up to the floor limit: {body}");
    // A member registered now is provisional: they earn, but redeem nothing until the
    // hub has their registration (it may merge them with another store's member).
    let m3 = e.register("13800000003", None).await?;
    let (st, body) = e.sale(&m3, "R-earn-3", 100_000, 0).await?;
    assert_eq!(st, 201, "a provisional member earns: {body}");
    let (st, body) = e.sale(&m3, "R-prov", 1_000, 10).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "offline_limit_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["provisional"], true, "{body}");
    assert_eq!(body["error"]["details"]["member_left"], 0, "{body}");
    // The second member: the store's daily cap has 150 left.
    let (st, body) = e.sale(&m2, "R-off-4", 1_000, 200).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["details"]["store_left"], 150, "{body}");
    let (st, body) = e.sale(&m2, "R-off-5", 1_000, 150).await?;
    assert_eq!(st, 201, "up to the daily cap: {body}");
    // A refused sale wrote nothing: its receipt is still free.
    let (st, body) = e.sale(&m2, "R-off-4", 1_000, 0).await?;
    assert_eq!(st, 201, "{body}");

    // The hub returns with S002's hold intact (durable): of 2,000 points (and the few
    // the small sales earned), 800 were spent and 1,500 are held, so even 1 point is
    // refused although S001 shows over 1,200.
    hub.start().await?;
    e.synced()
        .await
        .context("offline redemptions reach the hub")?;
    let local = e.get(&format!("/v1/members/{m}")).await?.json["points"]["balance"]
        .as_i64()
        .context("balance")?;
    assert!((1200..1500).contains(&local), "local balance {local}");
    let (st, body) = e.sale(&m, "R-after", 1_000, 1).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    assert_eq!(body["error"]["details"]["available"], 0, "{body}");
    // The hub has the provisional member's registration now: they redeem.
    let (st, body) = e.sale(&m3, "R-prov-after", 1_000, 10).await?;
    assert_eq!(st, 201, "a confirmed member redeems: {body}");
    Ok(())
}

/// A store's lease on the member's balance, held in the hub's database.
fn hub_lease(hub: &TestHub, member: &str) -> Result<Option<(String, i64, i64)>> {
    let conn = rusqlite::Connection::open_with_flags(
        hub.data_dir().join("hub.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut stmt = conn.prepare("SELECT store, points, spent FROM leases WHERE member = ?1")?;
    let mut rows = stmt.query_map([member], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.next().transpose()?)
}

async fn leases_held(e: &TestEdge) -> Result<i64> {
    e.get("/healthz").await?.json["hub"]["leases_held"]
        .as_i64()
        .context("leases_held")
}

/// Rights follow the member: identified while the hub is reachable, the member's store
/// gets a lease on half the balance, which the hub keeps from other stores, which the
/// store draws on online once the free points are used, and spends offline beyond its
/// floor limit; once spent and synced, it goes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lets_the_store_redeem_offline_beyond_the_floor_limit() -> Result<()> {
    const CONFIG: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 2000\n\
                          [redemption]\noffline_floor_points = 100\noffline_daily_cap_points = 100000\n";
    let mut hub = TestHub::spawn().await?;
    let mut e = TestEdge::prepare("S001", CONFIG)?;
    e.enroll(&hub)?;
    e.start().await?;
    let m = e.register("13800000011", None).await?;
    let (st, _) = e.sale(&m, "R-earn", 200_000, 0).await?;
    anyhow::ensure!(st == 201, "earning sale: {st}");
    e.synced().await?;

    // The cashier looks the member up: the store asks for a lease in the background.
    assert_eq!(leases_held(&e).await?, 0);
    let r = e.get(&format!("/v1/members/{m}")).await?;
    anyhow::ensure!(r.status == 200, "lookup: {}", r.json);
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(leases_held(&e).await? == 1)
    })
    .await
    .context("a lease is granted")?;
    assert_eq!(hub_lease(&hub, &m)?, Some(("S001".into(), 1000, 0)));

    // Another store asking the hub now finds half the points taken by the lease, and
    // is told where they are. (An ask the lease would cover is granted by recalling
    // it while S001 is online: `online_redemptions_follow_the_chain_balance_…`; this
    // one, beyond the whole balance, recalls nothing.)
    let other = hub.enroll_raw("S002").await?;
    hub.look_up_as(&other, "13800000011").await?;
    let r = ask_hub(
        &hub,
        &other,
        &m,
        "0190a000-0000-7000-8000-0000000000bb",
        2500,
    )
    .await?;
    assert_eq!(
        (
            r.json["granted"].clone(),
            r.json["available"].clone(),
            r.json["reserved"].clone()
        ),
        (
            json!(false),
            json!(1000),
            json!([{"store": "S001", "points": 1000}])
        ),
        "{}",
        r.json
    );

    // Online, the store itself redeems more than its lease: the hub grants the 1,000
    // free points and 200 of the lease, which shrinks to 800 at the hub and here.
    let mut earned = 0;
    let (st, body) = e.sale(&m, "R-online", 1_500, 1200).await?;
    assert_eq!(st, 201, "free points, then the lease: {body}");
    earned += body["points_earned"].as_i64().context("points_earned")?;
    e.synced().await?;
    assert_eq!(hub_lease(&hub, &m)?, Some(("S001".into(), 800, 0)));

    // The hub goes away. 700 is far past the floor limit (100), but within the lease.
    hub.kill();
    let (st, body) = e.sale(&m, "R-lease-1", 1_000, 700).await?;
    assert_eq!(st, 201, "within the lease: {body}");
    // (The local balance is now ~100: asking more fails on the balance itself.)
    earned += body["points_earned"].as_i64().context("points_earned")?;
    // The lease's last 100; past it, the floor limit decides again (10 of its 100).
    let (st, body) = e.sale(&m, "R-lease-2", 1_000, 100).await?;
    assert_eq!(st, 201, "the rest of the lease: {body}");
    earned += body["points_earned"].as_i64().context("points_earned")?;
    let (st, body) = e.sale(&m, "R-floor", 1_000, 10).await?;
    assert_eq!(st, 201, "under the floor limit: {body}");
    earned += body["points_earned"].as_i64().context("points_earned")?;
    // A purchase tops the balance up: the floor limit, not the balance, now refuses.
    let (st, body) = e.sale(&m, "R-top-up", 100_000, 0).await?;
    assert_eq!(st, 201, "{body}");
    earned += body["points_earned"].as_i64().context("points_earned")?;
    let (st, body) = e.sale(&m, "R-over", 1_000, 91).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "offline_limit_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["member_left"], 90, "{body}");

    // Back online: the spends reach the hub and are credited to the lease; spent out,
    // the lease is given back.
    hub.start().await?;
    e.synced().await?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(leases_held(&e).await? == 0)
    })
    .await
    .context("the spent lease is given back")?;
    assert_eq!(hub_lease(&hub, &m)?, None);
    // 2,000 earned and what the small sales earned, less 1,000 free, 1,000 under the
    // lease and 10 under the floor limit: the hub, the store and what the hub would
    // authorize agree, and nothing was overdrawn.
    let expected = 2000 + earned - 2010;
    assert_eq!(hub.balance(&m)?, expected);
    let r = ask_hub(
        &hub,
        &other,
        &m,
        "0190a000-0000-7000-8000-0000000000bc",
        1_000_000,
    )
    .await?;
    assert_eq!(r.json["available"], expected, "{}", r.json);
    // (Looked up last: the lookup asks for a new lease.)
    let local = e.get(&format!("/v1/members/{m}")).await?.json["points"]["balance"].as_i64();
    assert_eq!(local, Some(expected));
    Ok(())
}

/// Stores with generous timeouts, no offline redemptions (a timed-out ask is refused,
/// never granted under the floor limit), and the stream followed.
const TWO_STORES: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 3000\n\
                          [redemption]\nauthorize_timeout_ms = 3000\noffline_floor_points = 0\noffline_daily_cap_points = 0\n";

/// A redemption outside a sale: (status, body).
async fn redeem(e: &TestEdge, member: &str, points: i64, key: &str) -> Result<(u16, Value)> {
    let r = e
        .post(
            &format!("/v1/members/{member}/redemptions"),
            &json!({"points": points, "reason": "gift:TEST"}),
            Some(key),
        )
        .await?;
    Ok((r.status, r.json))
}

/// Two stores, both following the stream and both holding a lease on one member with
/// 1,000 points. `in_turn`: S002 identifies the member only once S001 holds its lease
/// (500, then 250); otherwise at once, and the leases are granted in whichever order.
async fn two_stores_with_leases(
    phone: &str,
    in_turn: bool,
) -> Result<(TestHub, TestEdge, TestEdge, String)> {
    let hub = TestHub::spawn().await?;
    let mut s1 = TestEdge::prepare("S001", TWO_STORES)?;
    s1.enroll(&hub)?;
    s1.start().await?;
    let mut s2 = TestEdge::prepare("S002", TWO_STORES)?;
    s2.enroll(&hub)?;
    s2.start().await?;
    let m = s1.register(phone, None).await?;
    let (st, body) = s1.sale(&m, "R-earn", 100_000, 0).await?;
    anyhow::ensure!(
        st == 201 && body["points_earned"] == 1000,
        "earning sale: {st} {body}"
    );
    s1.synced().await?;
    // Both identify the member (S002 fetches them from the hub): each asks for a lease.
    let r = s1.get(&format!("/v1/members/{m}")).await?;
    anyhow::ensure!(r.status == 200, "lookup at S001: {}", r.json);
    if in_turn {
        leased_and_streaming(&s1).await?;
    }
    let (at2, balance) = s2.by_phone(phone).await?;
    anyhow::ensure!(
        at2 == m && balance == 1000,
        "S002 sees {at2} with {balance}"
    );
    leased_and_streaming(&s1).await?;
    leased_and_streaming(&s2).await?;
    Ok((hub, s1, s2, m))
}

/// Issue 16, part 3: while both stores are online, what the member may redeem is the
/// chain balance, whichever store holds which lease. Leases of 500 and 250 leave 250
/// free at the hub, so 800 at S002 can only be granted by recalling S001's lease; S001
/// gives it back at once (and holds none after), the rest follows exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_redemptions_follow_the_chain_balance_whichever_store_holds_a_lease() -> Result<()> {
    let (_hub, s1, s2, m) = two_stores_with_leases("13800000061", false).await?;
    let (st, body) = redeem(&s2, &m, 800, "k1").await?;
    assert_eq!(st, 201, "800 of 1,000 at S002: {body}");
    assert_eq!(body["balance_after"], 200, "{body}");
    assert_eq!(
        leases_held(&s1).await?,
        0,
        "S001's lease was recalled and given back"
    );
    let (st, body) = redeem(&s1, &m, 200, "k2").await?;
    assert_eq!(st, 201, "the last 200 at S001: {body}");
    let (st, body) = redeem(&s2, &m, 1, "k3").await?;
    assert_eq!(st, 422, "nothing left: {body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    assert_eq!(body["error"]["details"]["available"], 0, "{body}");
    assert!(
        body["error"]["details"].get("reserved_at").is_none(),
        "{body}"
    );
    Ok(())
}

/// Issue 16, part 3: twenty redemptions of 300 at once, ten at each store, for a member
/// with 1,000 points and leases at both stores: exactly three are granted (before
/// recalls, only one was), the others are refused as insufficient, and the hub finds
/// nothing overdrawn once both stores have pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_at_two_stores_get_exactly_what_the_balance_allows() -> Result<()> {
    let (hub, s1, s2, m) = two_stores_with_leases("13800000062", false).await?;
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let e = if i % 2 == 0 { &s1 } else { &s2 };
        let req = e
            .http
            .post(e.url(&format!("/v1/members/{m}/redemptions")))
            .bearer_auth(&e.token)
            .header("Idempotency-Key", format!("c{i}"))
            .json(&json!({"points": 300, "reason": "gift:TEST"}));
        asks.spawn(async move {
            let r = req.send().await?;
            let st = r.status().as_u16();
            Ok::<_, anyhow::Error>((st, r.json::<Value>().await?))
        });
    }
    let mut granted = 0;
    while let Some(a) = asks.join_next().await {
        let (st, body) = a??;
        match st {
            201 => granted += 1,
            422 => assert_eq!(body["error"]["code"], "insufficient_points", "{body}"),
            _ => anyhow::bail!("unexpected answer {st}: {body}"),
        }
    }
    assert_eq!(granted, 3, "1,000 points cover three redemptions of 300");
    s1.synced().await?;
    s2.synced().await?;
    assert_eq!(hub.balance(&m)?, 100);
    let report = hub.overdraws().await?;
    assert_eq!(report["overdraws"], json!([]), "{report}");
    Ok(())
}

/// Issue 16, part 3: points leased to a store that is offline stay reserved for it (it
/// may be spending them right now), and the refusal says where and how many.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_leased_to_an_offline_store_are_named_in_the_refusal() -> Result<()> {
    let (hub, mut s1, s2, m) = two_stores_with_leases("13800000063", true).await?;
    assert_eq!(
        hub_leases(&hub, &m)?,
        vec![("S001".into(), 500), ("S002".into(), 250)]
    );
    // S001's machine dies: it no longer polls the hub, so the hub cannot recall.
    s1.kill();
    let mut n = 0;
    let refusal = TestHub::wait_for(Duration::from_secs(15), || {
        n += 1;
        let key = format!("o{n}");
        let s2 = &s2;
        let m = &m;
        async move {
            let (st, body) = redeem(s2, m, 800, &key).await?;
            anyhow::ensure!(st == 422, "not refused: {st} {body}");
            Ok(body["error"]["details"].get("reserved_at").is_some())
        }
    })
    .await;
    refusal.context("S001 counts as offline within a few seconds")?;
    let (st, body) = redeem(&s2, &m, 800, "o-final").await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    let d = &body["error"]["details"];
    assert_eq!(d["available"], 500, "250 free and S002's own 250: {body}");
    assert_eq!(
        d["reserved_at"],
        json!([{"store": "S001", "points": 500}]),
        "{body}"
    );
    // What is not reserved elsewhere is still granted.
    let (st, body) = redeem(&s2, &m, 500, "o-ok").await?;
    assert_eq!(st, 201, "{body}");
    Ok(())
}

/// Waits until the store holds a lease and follows the stream.
async fn leased_and_streaming(e: &TestEdge) -> Result<()> {
    TestHub::wait_for(Duration::from_secs(10), || async {
        let h = e.get("/healthz").await?.json;
        Ok(h["hub"]["leases_held"] == 1 && h["hub"]["streaming"] == true)
    })
    .await
    .map(|_| ())
    .with_context(|| format!("{} holds a lease and follows the stream", e.store_id))
}

/// Every store's lease on the member at the hub: (store, points not yet spent).
fn hub_leases(hub: &TestHub, member: &str) -> Result<Vec<(String, i64)>> {
    let conn = rusqlite::Connection::open_with_flags(
        hub.data_dir().join("hub.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    let mut stmt =
        conn.prepare("SELECT store, points - spent FROM leases WHERE member = ?1 ORDER BY store")?;
    let rows = stmt.query_map([member], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
