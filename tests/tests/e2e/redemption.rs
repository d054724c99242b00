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

async fn sale(
    e: &TestEdge,
    member: &str,
    receipt: &str,
    price: i64,
    redeem: i64,
) -> Result<(u16, Value)> {
    let body = json!({"member_id": member, "receipt_id": receipt, "redeem_points": redeem,
                      "lines": [{"sku": "A1", "qty": 1, "unit_price": price}]});
    let r = e.post("/v1/checkout/commit", &body, Some(receipt)).await?;
    Ok((r.status, r.json))
}

async fn synced(e: &TestEdge) -> Result<()> {
    TestHub::wait_for(Duration::from_secs(15), || async {
        let h = e.get("/healthz").await?.json["hub"].clone();
        Ok(h["pending_facts"] == 0 && h["reachable"] == true)
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_authorizes_online_and_floor_limits_bound_offline_redemptions() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    let mut e = TestEdge::prepare("S001", CONFIG)?;
    e.enroll(&hub)?;
    e.start().await?;
    let m = e.register("13800000001", None).await?;
    let (st, _) = sale(&e, &m, "R-earn", 200_000, 0).await?;
    anyhow::ensure!(st == 201, "earning sale: {st}");
    synced(&e)
        .await
        .context("the earning sale reaches the hub")?;

    // Another store (S002, enrolled by hand) is authorized 1,500 of the member's 2,000
    // points for a sale in progress: the hub holds them.
    let other = hub.enroll_raw("S002").await?;
    let ask = json!({"member": m, "txn": "0190a000-0000-7000-8000-0000000000aa",
                     "points": 1500, "unsynced": 0});
    let r = hub
        .post_raw(
            "/v1/redeem/authorize",
            Some(&other),
            serde_json::to_vec(&ask)?,
        )
        .await?;
    anyhow::ensure!(
        r.status == 200 && r.json["granted"] == true,
        "S002 authorization: {} {}",
        r.status,
        r.json
    );

    // S001 still shows 2,000 locally, but the hub refuses 800: only 500 are left.
    let (st, body) = sale(&e, &m, "R-800", 1_000, 800).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    assert_eq!(body["error"]["details"]["available"], 500, "{body}");
    let (st, body) = sale(&e, &m, "R-500", 1_000, 500).await?;
    assert_eq!(st, 201, "{body}");
    synced(&e).await?;

    // The hub goes away: offline, one member may redeem 300 here, the store 450 a day.
    hub.kill();
    let (st, body) = sale(&e, &m, "R-off-1", 1_000, 200).await?;
    assert_eq!(st, 201, "first offline redemption: {body}");
    let (st, body) = sale(&e, &m, "R-off-2", 1_000, 200).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "offline_limit_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["member_left"], 100, "{body}");
    let (st, body) = sale(&e, &m, "R-off-3", 1_000, 100).await?;
    assert_eq!(st, 201, "up to the floor limit: {body}");
    // A second member, registered offline: the store's daily cap has 150 left.
    let m2 = e.register("13800000002", None).await?;
    let (st, _) = sale(&e, &m2, "R-earn-2", 100_000, 0).await?;
    anyhow::ensure!(st == 201, "second member's sale: {st}");
    let (st, body) = sale(&e, &m2, "R-off-4", 1_000, 200).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["details"]["store_left"], 150, "{body}");
    let (st, body) = sale(&e, &m2, "R-off-5", 1_000, 150).await?;
    assert_eq!(st, 201, "up to the daily cap: {body}");
    // A refused sale wrote nothing: its receipt is still free.
    let (st, body) = sale(&e, &m2, "R-off-4", 1_000, 0).await?;
    assert_eq!(st, 201, "{body}");

    // The hub returns with S002's hold intact (durable): of 2,000 points (and the few
    // the small sales earned), 800 were spent and 1,500 are held, so even 1 point is
    // refused although S001 shows over 1,200.
    hub.start().await?;
    synced(&e)
        .await
        .context("offline redemptions reach the hub")?;
    let local = e.get(&format!("/v1/members/{m}")).await?.json["points"]["balance"]
        .as_i64()
        .context("balance")?;
    assert!((1200..1500).contains(&local), "local balance {local}");
    let (st, body) = sale(&e, &m, "R-after", 1_000, 1).await?;
    assert_eq!(st, 422, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_points", "{body}");
    assert_eq!(body["error"]["details"]["available"], 0, "{body}");
    Ok(())
}
