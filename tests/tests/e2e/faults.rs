//! Issue 5, test 6c: a real hub and three real edges, each behind a fault-injecting
//! proxy on loopback (partition, latency, pause), one edge's clock an hour ahead. The
//! hub stops; every store trades (one member at two stores, one phone registered at
//! two stores, redemptions up to and past the floor limit); the hub comes back behind
//! faults and one edge is killed mid-sync; everything restarts. Then: convergence
//! within a bound, exact balances, the merge, and the overdraw report.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use patron_tests::proxy::{Fault, FaultProxy};

const CONFIG: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 2000\n\
                      [redemption]\noffline_floor_points = 300\noffline_daily_cap_points = 100000\nleases = false\n";

async fn edge_behind(
    hub: &TestHub,
    proxy: &FaultProxy,
    store: &str,
    clock_skew_ms: i64,
) -> Result<TestEdge> {
    let mut e = TestEdge::prepare(store, CONFIG)?;
    if clock_skew_ms != 0 {
        e.env
            .push(("PATRON_CLOCK_SKEW_MS".into(), clock_skew_ms.to_string()));
    }
    e.enroll_at(hub, "pilot", &format!("https://{}", proxy.addr()))?;
    e.start().await?;
    Ok(e)
}

/// A sale that must succeed; returns points earned less points redeemed.
async fn sold(e: &TestEdge, member: &str, receipt: &str, price: i64, redeem: i64) -> Result<i64> {
    let (st, body) = e.sale(member, receipt, price, redeem).await?;
    anyhow::ensure!(st == 201, "{receipt}: {st} {body}");
    Ok(body["points_earned"].as_i64().context("points_earned")?
        - body["points_redeemed"]
            .as_i64()
            .context("points_redeemed")?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edges_behind_faults_converge_with_exact_balances_one_member_and_the_overdraws()
-> Result<()> {
    const PA: &str = "13900000031";
    const PB: &str = "13900000032";
    let mut hub = TestHub::spawn().await?;
    let proxies = [
        FaultProxy::start(hub.addr).await?,
        FaultProxy::start(hub.addr).await?,
        FaultProxy::start(hub.addr).await?,
    ];
    let mut s1 = edge_behind(&hub, &proxies[0], "S001", 0).await?;
    let mut s2 = edge_behind(&hub, &proxies[1], "S002", 0).await?;
    let mut s3 = edge_behind(&hub, &proxies[2], "S003", 3_600_000).await?;

    // Online: member A earns at S001; S002 fetches A by phone and, over a slow link,
    // has the hub authorize a small redemption.
    let a = s1.register(PA, None).await?;
    let mut a_balance = sold(&s1, &a, "R1-earn", 50_000, 0).await?;
    s1.synced().await?;
    s2.hub_reachable(true).await?;
    s3.hub_reachable(true).await?;
    assert_eq!(s2.by_phone(PA).await?, (a.clone(), a_balance));
    proxies[1].set(Fault::Latency(Duration::from_millis(40)));
    a_balance += sold(&s2, &a, "R2-online", 1_000, 10).await?;
    s2.synced().await?;
    proxies[1].set(Fault::None);

    // The hub stops. Every store trades.
    hub.kill();
    for e in [&s1, &s2, &s3] {
        e.hub_reachable(false).await?;
    }
    // A redeems at two stores, each up to its floor limit of 300, and one point past it.
    a_balance += sold(&s1, &a, "R1-off", 1_000, 300).await?;
    let (st, body) = s1.sale(&a, "R1-over", 1_000, 1).await?;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("offline_limit_exceeded")),
        "{body}"
    );
    a_balance += sold(&s2, &a, "R2-off", 1_000, 300).await?;
    let (st, body) = s2.sale(&a, "R2-over", 1_000, 1).await?;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (422, Some("offline_limit_exceeded")),
        "{body}"
    );
    assert!(a_balance < 0, "the two stores overdrew A: {a_balance}");
    // One phone registered at S002 and at S003 (whose clock is an hour ahead); both
    // members are provisional and earn.
    let b2 = s2.register(PB, Some("李雷")).await?;
    let b2_points = sold(&s2, &b2, "R2-b", 20_000, 0).await?;
    let b3 = s3.register(PB, None).await?;
    let b3_points = sold(&s3, &b3, "R3-b", 30_000, 0).await?;
    let (st, body) = s3.sale(&b3, "R3-prov", 1_000, 10).await?;
    assert_eq!(
        (st, body["error"]["details"]["provisional"].as_bool()),
        (422, Some(true)),
        "{body}"
    );

    // The hub comes back behind faults: S001's link slow, S002 cut off, S003 paused.
    proxies[0].set(Fault::Latency(Duration::from_millis(300)));
    proxies[1].set(Fault::Partition);
    proxies[2].set(Fault::Pause);
    hub.start().await?;
    // S001 is killed while its push crawls through the slow link, then restarted.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let pending = s1.get("/healthz").await?.json["hub"]["pending_facts"].as_i64();
    assert!(
        pending.is_some_and(|p| p > 0),
        "S001 is still syncing: {pending:?}"
    );
    s1.kill();
    proxies[0].set(Fault::None);
    s1.start().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxies[2].set(Fault::None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxies[1].set(Fault::None);
    // Everything restarts.
    hub.kill();
    hub.start().await?;
    for e in [&mut s1, &mut s2, &mut s3] {
        e.kill();
        e.start().await?;
    }
    let healed = Instant::now();
    for e in [&s1, &s2, &s3] {
        e.synced()
            .await
            .with_context(|| format!("{} converges", e.store_id))?;
    }
    let took = healed.elapsed();
    assert!(took < Duration::from_secs(20), "converged in {took:?}");

    // Exact balances: the hub holds every sale of A, overdrawn as the stores let it.
    assert_eq!(hub.balance(&a)?, a_balance);

    // The merge: both stores answer PB with one member holding both stores' points.
    let seen = std::sync::Mutex::new(Vec::new());
    TestHub::wait_for(Duration::from_secs(20), || async {
        let (x, y) = (s2.by_phone(PB).await?, s3.by_phone(PB).await?);
        let done = x == y && x.1 == b2_points + b3_points;
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = vec![x, y];
        Ok(done)
    })
    .await
    .with_context(|| format!("one member for PB: {:?}", seen.lock().map(|s| s.clone())))?;
    let survivor = seen.lock().map(|s| s[0].0.clone()).unwrap_or_default();
    assert!(survivor == b2 || survivor == b3, "{survivor}");

    // The overdraw report: A's overdraw as a debt, and A flagged for redeeming offline
    // at S001 and S002 within the hour.
    let report = hub.overdraws().await?;
    let owed: i64 = report["overdraws"]
        .as_array()
        .context("overdraws")?
        .iter()
        .filter(|o| o["member"] == a.as_str())
        .map(|o| o["points"].as_i64().unwrap_or(0))
        .sum();
    // Recorded when the spend ran past the balance; the same sales' small earnings have
    // repaid a little of it since. Within the bound: F at each of the two stores.
    assert!(
        owed >= -a_balance && owed <= 2 * 300,
        "owed {owed}, balance {a_balance}: {report}"
    );
    let flagged = report["flags"]
        .as_array()
        .context("flags")?
        .iter()
        .any(|f| {
            f["member"] == a.as_str()
                && [f["first_store"].as_str(), f["second_store"].as_str()]
                    .iter()
                    .all(|s| matches!(s, Some("S001") | Some("S002")))
        });
    assert!(flagged, "{report}");
    // S003 really ran an hour ahead (the test binaries honour the skew; shipped ones
    // do not): the hub saw its clock ahead, and only its.
    let stores = hub.stores().await?;
    let ahead = |id: &str| {
        stores
            .iter()
            .find(|s| s.store_id == id)
            .and_then(|s| s.clock_ahead_ms)
            .unwrap_or(0)
    };
    assert!(
        ahead("S003") > 30 * 60_000 && ahead("S001") < 60_000,
        "S003 {} ms ahead, S001 {} ms",
        ahead("S003"),
        ahead("S001")
    );
    Ok(())
}
