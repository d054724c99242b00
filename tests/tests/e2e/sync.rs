//! Sync with a real hub: three real edges keep trading while the hub is down, and
//! everything converges when it comes back; bad sync messages are refused whole.

use std::time::Duration;

use anyhow::{Context, Result};
use patron_protocol::Origin;
use patron_sync::session::{Batch, Fact, Push, batch};
use patron_tests::hub::TestHub;
use patron_tests::{TestEdge, refused};
use serde_json::{Value, json};

/// Sync quickly, so the test's bounds are about sync and not about idle timers.
use patron_tests::FAST_SYNC;

async fn enrolled_edge(hub: &TestHub, store: &str) -> Result<TestEdge> {
    let mut e = TestEdge::prepare(store, FAST_SYNC)?;
    e.enroll(hub)?;
    e.start().await?;
    Ok(e)
}

async fn commit(
    e: &TestEdge,
    member: &str,
    receipt: &str,
    price: i64,
    redeem: i64,
) -> Result<Value> {
    let body = json!({"member_id": member, "receipt_id": receipt, "redeem_points": redeem,
                      "lines": [{"sku": "A1", "qty": 1, "unit_price": price}]});
    let r = e.post("/v1/checkout/commit", &body, Some(receipt)).await?;
    anyhow::ensure!(r.status == 201, "commit {receipt}: {} {}", r.status, r.json);
    Ok(r.json)
}

async fn balance(e: &TestEdge, member: &str) -> Result<i64> {
    let r = e.get(&format!("/v1/members/{member}")).await?;
    r.json["points"]["balance"]
        .as_i64()
        .with_context(|| format!("balance in {}", r.json))
}

async fn health(e: &TestEdge) -> Result<Value> {
    Ok(e.get("/healthz").await?.json["hub"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_stores_trade_while_the_hub_is_down_then_converge() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    let mut edges = Vec::new();
    for s in ["S001", "S002", "S003"] {
        edges.push(enrolled_edge(&hub, s).await?);
    }
    // Online trading: every store registers members and sells.
    let mut members = Vec::new();
    for (i, e) in edges.iter().enumerate() {
        for m in 0..3 {
            let id = e.register(&format!("1380000{i}{m:03}"), None).await?;
            commit(e, &id, &format!("R{i}-{m}-on"), 12_300, 0).await?;
            members.push((i, id));
        }
    }
    TestHub::wait_for(Duration::from_secs(15), || async {
        for e in &edges {
            if health(e).await?["pending_facts"] != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .context("online sync")?;

    // The hub goes away; every store keeps serving: sales, redemptions, new members.
    hub.kill();
    for (n, (i, id)) in members.iter().enumerate() {
        let e = &edges[*i];
        commit(e, id, &format!("R{i}-{n}-off1"), 45_600, 0).await?;
        commit(e, id, &format!("R{i}-{n}-off2"), 7_800, 100).await?;
    }
    for (i, e) in edges.iter().enumerate() {
        let id = e.register(&format!("1390000{i}999"), None).await?;
        commit(e, &id, &format!("R{i}-new"), 9_900, 0).await?;
        members.push((i, id));
    }
    // Offline: the stores know the hub is unreachable and count what waits.
    TestHub::wait_for(Duration::from_secs(10), || async {
        for e in &edges {
            let h = health(e).await?;
            if h["reachable"] != false || h["pending_facts"].as_u64().unwrap_or(0) == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .context("stores notice the hub is down")?;

    hub.start().await?;
    let took = TestHub::wait_for(Duration::from_secs(20), || async {
        for e in &edges {
            let h = health(e).await?;
            if h["pending_facts"] != 0 || h["reachable"] != true {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
    .context("convergence after the hub returns")?;
    eprintln!("converged {took:?} after the hub restarted");

    // The hub holds exactly every fact each store wrote, and its balances agree.
    let stores = hub.stores().await?;
    for e in &edges {
        let written = e.facts_written().await?;
        let s = stores
            .iter()
            .find(|s| s.store_id == e.store_id)
            .context("store listed")?;
        assert_eq!(s.facts, written, "{}: hub holds all facts", e.store_id);
        assert_eq!(s.pending, 0, "{}", e.store_id);
        assert!(s.lag_ms.is_some_and(|l| l < 10_000), "{s:?}");
    }
    for (i, id) in &members {
        let at_store = balance(&edges[*i], id).await?;
        assert!(at_store > 0);
        assert_eq!(hub.balance(id)?, at_store, "member {id} at S00{}", i + 1);
    }
    Ok(())
}

fn origin(node: &str) -> Origin {
    Origin {
        node: node.into(),
        incarnation: uuid::Uuid::from_u128(42),
    }
}

fn facts(node: &str, from: u64, to: u64) -> Vec<Fact> {
    (from..=to)
        .map(|seq| Fact {
            origin: origin(node),
            seq,
            body: json!({"kind": "event", "at": 1, "member": uuid::Uuid::from_u128(1 << 100),
                         "txn": uuid::Uuid::from_u128(seq as u128), "earn": 5,
                         "expires_at": 4_102_444_800_000_i64,
                         "body": {"type": "check_in", "ref": null}})
            .to_string(),
        })
        .collect()
}

fn push_body(node: &str, batches: Vec<Batch>) -> Result<Vec<u8>> {
    Ok(serde_json::to_vec(&json!({
        "report": {"origin": origin(node), "last_seq": 0},
        "push": Push { from: node.into(), batches },
    }))?)
}

async fn held(hub: &TestHub) -> Result<i64> {
    Ok(hub.facts_by_origin()?.iter().map(|(_, _, n)| n).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sync_messages_are_refused_and_apply_nothing() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let cred = hub.enroll_raw("S001").await?;
    let _other = hub.enroll_raw("S002").await?;
    let push = |body: Vec<u8>| hub.post_raw("/v1/sync/push", Some(&cred), body);
    let verdict = |r: &patron_tests::Resp| r.json["verdicts"][0].clone();

    // No credential, or a wrong one: 401.
    let ok_body = push_body("S001", vec![batch(origin("S001"), facts("S001", 1, 3))])?;
    let r = hub.post_raw("/v1/sync/push", None, ok_body.clone()).await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    let r = hub
        .post_raw("/v1/sync/push", Some("not-a-credential"), ok_body.clone())
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthorized"));
    // Enrollment tokens are one use.
    let token = hub.add_store("S003")?;
    let secret = token.rsplit_once('.').context("token")?.0.to_string();
    let enroll = serde_json::to_vec(&json!({"secret": secret, "store_id": "S003"}))?;
    assert_eq!(
        hub.post_raw("/v1/enroll", None, enroll.clone())
            .await?
            .status,
        201
    );
    let r = hub.post_raw("/v1/enroll", None, enroll).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));

    // Malformed JSON.
    let r = push(b"{\"report\": {".to_vec()).await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.json);
    // Forged origin: S001 pushing S002's facts (even beside its own) — 403, nothing.
    let forged = push_body(
        "S001",
        vec![
            batch(origin("S001"), facts("S001", 1, 3)),
            batch(origin("S002"), facts("S002", 1, 3)),
        ],
    )?;
    let r = push(forged).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.json);
    // Truncated in transit: the checksum no longer matches.
    let mut cut = batch(origin("S001"), facts("S001", 1, 3));
    cut.facts.pop();
    let r = push(push_body("S001", vec![cut])?).await?;
    assert!(
        verdict(&r)["Refused"]["reason"]
            .as_str()
            .is_some_and(|m| m.contains("checksum")),
        "{}",
        r.json
    );
    // Oversized batch.
    let r = push(push_body(
        "S001",
        vec![batch(origin("S001"), facts("S001", 1, 1001))],
    )?)
    .await?;
    assert!(verdict(&r)["Refused"].is_object(), "{}", r.json);
    // A fact body that is not a ledger entry.
    let mut junk = facts("S001", 1, 2);
    // Compact JSON: the push is built through serde_json::Value, which would re-space
    // the text and leave it refused for its checksum instead.
    junk[1].body = "{\"no\":\"entry\"}".into();
    let r = push(push_body("S001", vec![batch(origin("S001"), junk)])?).await?;
    assert!(
        verdict(&r)["Refused"]["reason"]
            .as_str()
            .is_some_and(|m| m.starts_with("fact 2: not a ledger entry")),
        "the refusal names the fact: {}",
        r.json
    );
    // A gap: facts 5.. before 1..4 are answered with the next expected sequence.
    let r = push(push_body(
        "S001",
        vec![batch(origin("S001"), facts("S001", 5, 6))],
    )?)
    .await?;
    assert_eq!(verdict(&r)["Gap"]["expected"], 1, "{}", r.json);
    // A body too large for the endpoint.
    let r = push(vec![b' '; 17 * 1024 * 1024]).await?;
    assert_eq!(
        (r.status, r.code()),
        (413, "payload_too_large"),
        "{}",
        r.json
    );
    assert!(r.closes, "a 413 announces that the connection closes");
    assert_eq!(held(&hub).await?, 0, "nothing refused was applied");

    // A good push applies; replaying it changes nothing.
    let r = push(ok_body.clone()).await?;
    assert_eq!(verdict(&r)["Applied"]["high"], 3, "{}", r.json);
    let r = push(ok_body).await?;
    assert_eq!(verdict(&r)["AlreadyHeld"]["high"], 3, "{}", r.json);
    // Other facts under numbers the hub holds (a store restored from an old copy that
    // wrote on): refused as a conflict, never taken as "already held".
    let mut other = facts("S001", 2, 4);
    for f in &mut other {
        f.body = f.body.replace("\"earn\":5", "\"earn\":6");
    }
    let r = push(push_body("S001", vec![batch(origin("S001"), other)])?).await?;
    assert!(
        verdict(&r)["Refused"]["reason"]
            .as_str()
            .is_some_and(|m| m.starts_with("conflict")),
        "{}",
        r.json
    );
    assert_eq!(held(&hub).await?, 3);
    Ok(())
}

/// Copies the database files (the edge is stopped).
fn copy_db(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for f in ["edge.sqlite", "edge.sqlite-wal", "edge.sqlite-shm"] {
        let _ = std::fs::remove_file(to.join(f));
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f))?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_restored_from_an_old_backup_gets_a_new_incarnation_and_loses_nothing() -> Result<()>
{
    let hub = TestHub::spawn().await?;
    let mut edge = enrolled_edge(&hub, "S001").await?;
    let alice = edge.register("13700000001", Some("Alice")).await?;
    commit(&edge, &alice, "R-1", 10_000, 0).await?;
    edge.synced().await?;

    // Last night's backup.
    edge.stop();
    let backup = edge.dir.path().join("backup");
    copy_db(&edge.data_dir(), &backup)?;
    edge.start().await?;

    // Today's trade, acknowledged by the hub — then the disk dies.
    let bob = edge.register("13700000002", Some("Bob")).await?;
    commit(&edge, &alice, "R-2", 20_000, 0).await?;
    commit(&edge, &bob, "R-3", 30_000, 0).await?;
    commit(&edge, &alice, "R-4", 5_000, 50).await?;
    let r = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-2"}),
            Some("refund-R-2"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    edge.synced().await?;
    let (alice_before, bob_before) = (balance(&edge, &alice).await?, balance(&edge, &bob).await?);
    let written_before = edge.facts_written().await?;
    edge.stop();

    // IT restores last night's database file (keys and hub link stay on the machine).
    copy_db(&backup, &edge.data_dir())?;
    edge.start().await?;

    // The edge serves at once under a new incarnation, and takes back from the hub
    // what the backup lacked: today's member, sales and balances.
    assert_eq!(
        edge.facts_written().await?,
        0,
        "a new incarnation starts at sequence 1"
    );
    TestHub::wait_for(Duration::from_secs(15), || async {
        let r = edge.get("/v1/members?phone=13700000002").await?;
        Ok(r.status == 200 && balance(&edge, &alice).await? == alice_before)
    })
    .await
    .context("the restored store refetches what the hub held")?;
    assert_eq!(balance(&edge, &bob).await?, bob_before);
    // A refund made before the restore still counts: the receipt cannot be refunded twice.
    let r = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-2"}),
            Some("refund-R-2-again"),
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "refunded twice: {}",
        r.json
    );
    assert!(
        r.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing left to refund")),
        "{}",
        r.json
    );
    // A receipt sold before the restore can be refunded after it.
    let r = edge
        .post(
            "/v1/refunds",
            &json!({"receipt_id": "R-3", "lines": [{"sku": "A1", "qty": 1}]}),
            Some("refund-R-3"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    commit(&edge, &alice, "R-5", 1_000, 0).await?;
    edge.synced().await?;

    // The hub holds both incarnations: every fact of the old one (none reused) and the
    // new one's; balances over its facts match the store's.
    let origins: Vec<_> = hub
        .facts_by_origin()?
        .into_iter()
        .filter(|(n, _, _)| n == "S001")
        .collect();
    assert_eq!(origins.len(), 2, "{origins:?}");
    assert!(
        origins.iter().any(|(_, _, n)| *n as u64 == written_before),
        "{origins:?}"
    );
    assert_eq!(hub.balance(&alice)?, balance(&edge, &alice).await?);
    assert_eq!(hub.balance(&bob)?, balance(&edge, &bob).await?);
    assert!(
        health(&edge).await?["alert"].is_null(),
        "{}",
        health(&edge).await?
    );
    Ok(())
}

async fn tier_of(e: &TestEdge, m: &str) -> Result<String> {
    let r = e.get(&format!("/v1/members/{m}")).await?;
    Ok(r.json["tier"]["code"].as_str().unwrap_or("").to_string())
}

async fn rule_set_version(e: &TestEdge) -> Result<Option<String>> {
    let r = e.get("/v1/admin/rule-set").await?;
    Ok(r.json["version"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hq_rule_sets_reach_the_stores_of_the_rings_they_target() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let mut pilot = TestEdge::prepare("S001", FAST_SYNC)?;
    pilot.enroll_in(&hub, "pilot")?;
    pilot.start().await?;
    let mut wave = TestEdge::prepare("S002", FAST_SYNC)?;
    wave.enroll_in(&hub, "wave1")?;
    wave.start().await?;

    // HQ publishes the guide's examples to the pilot ring only.
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../edge/rules/examples.json");
    hub.publish_rules(&examples, "pilot")?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(rule_set_version(&pilot).await?.as_deref() == Some("guide-examples-v1"))
    })
    .await
    .context("the pilot store adopts the pilot rule set")?;
    // The store prices with it: 满200减30 applies to a ¥250 basket.
    let q = pilot
        .post(
            "/v1/checkout/quote",
            &json!({"lines": [{"sku": "X", "qty": 1, "unit_price": 25_000}]}),
            None,
        )
        .await?;
    assert_eq!(q.json["rules_version"], "guide-examples-v1", "{}", q.json);
    assert!(
        q.json["total"].as_i64().is_some_and(|t| t < 25_000),
        "{}",
        q.json
    );
    // The wave-1 store got nothing: the set does not target it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rule_set_version(&wave).await?, None);

    // A set for every store reaches wave 1; the pilot keeps its ring's own.
    let all = pilot.dir.path().join("all.json");
    std::fs::write(&all, r#"{"version":"chain-v1","rules":[]}"#)?;
    hub.publish_rules(&all, "all")?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(rule_set_version(&wave).await?.as_deref() == Some("chain-v1"))
    })
    .await
    .context("the wave-1 store adopts the chain-wide set")?;
    assert_eq!(
        rule_set_version(&pilot).await?.as_deref(),
        Some("guide-examples-v1")
    );

    // Tier thresholds HQ publishes for the pilot ring apply there, to existing spend.
    let m = pilot.register("13600000001", None).await?;
    commit(&pilot, &m, "R-T1", 25_000, 0).await?;
    assert_eq!(tier_of(&pilot, &m).await?, "normal");
    let tiers = pilot.dir.path().join("tiers.json");
    std::fs::write(
        &tiers,
        r#"{"window_months":12,"silver":10000,"gold":20000000,"diamond":30000000}"#,
    )?;
    hub.publish_tiers(&tiers, "pilot")?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(tier_of(&pilot, &m).await? == "silver")
    })
    .await
    .context("HQ tier thresholds reach the pilot store")?;
    std::fs::write(
        &tiers,
        r#"{"window_months":12,"silver":30000,"gold":20000}"#,
    )?;
    refused(
        hub.publish_tiers(&tiers, "pilot"),
        "diamond",
        "incomplete or disordered thresholds are refused",
    );

    // A store may not sync another ring's document.
    let link: Value = serde_json::from_slice(&std::fs::read(pilot.data_dir().join("hub.json"))?)?;
    let cred = link["credential"].as_str().context("credential")?;
    let r = hub
        .post_raw(
            "/v1/docs/sync",
            Some(cred),
            serde_json::to_vec(&json!({"doc": "ring:wave1"}))?,
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.json);
    Ok(())
}

/// Points settings are the chain's, not a store's: an enrolled store ignores its own
/// `[points]` section (the documented defaults apply, and `/healthz` says so) until HQ
/// publishes settings for its ring; then every store of the ring earns by them. A store
/// not enrolled with a hub runs on its own configuration and says that instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_settings_are_the_chains_not_the_stores() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let mut a = TestEdge::prepare("S001", &format!("{FAST_SYNC}[points]\nearn_points = 5\n"))?;
    a.enroll_in(&hub, "pilot")?;
    a.start().await?;
    let mut b = TestEdge::prepare("S002", FAST_SYNC)?;
    b.enroll_in(&hub, "pilot")?;
    b.start().await?;
    async fn settings(e: &TestEdge) -> Result<Value> {
        Ok(e.get("/healthz").await?.json["settings"].clone())
    }
    async fn earned(e: &TestEdge, phone: &str, receipt: &str) -> Result<i64> {
        let m = e.register(phone, None).await?;
        let r = commit(e, &m, receipt, 10_000, 0).await?;
        r["points_earned"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no points_earned in {r}"))
    }
    for e in [&a, &b] {
        assert_eq!(
            settings(e).await?,
            json!({"points": "default", "tiers": "default"})
        );
    }
    // ¥100 earns the default 100 points at both stores, not S001's configured 500.
    assert_eq!(earned(&a, "13700000001", "R-P1").await?, 100);
    assert_eq!(earned(&b, "13700000002", "R-P2").await?, 100);

    // HQ publishes 3 points per ¥1 for the pilot ring; a file with a bad rate is refused.
    let bad = a.dir.path().join("bad-points.json");
    std::fs::write(
        &bad,
        r#"{"earn_points":3,"earn_per_fen":0,"expiry_months":12,"expiring_notice_days":30,"redeem_points":100,"redeem_value_fen":100}"#,
    )?;
    // Refused for the rate, not for any failure of the command.
    let refused = hub
        .publish_points(&bad, "pilot")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("earn_per_fen and redeem_points must be > 0"),
        "{refused:?}"
    );
    let file = a.dir.path().join("points.json");
    std::fs::write(
        &file,
        r#"{"earn_points":3,"earn_per_fen":100,"expiry_months":12,"expiring_notice_days":30,"redeem_points":100,"redeem_value_fen":100}"#,
    )?;
    hub.publish_points(&file, "pilot")?;
    for e in [&a, &b] {
        TestHub::wait_for(Duration::from_secs(15), || async {
            Ok(settings(e).await?["points"] == "hq")
        })
        .await
        .context("the store adopts HQ's points settings")?;
    }
    assert_eq!(earned(&a, "13700000003", "R-P3").await?, 300);
    assert_eq!(earned(&b, "13700000004", "R-P4").await?, 300);

    // The per-fact projections rebuilt from the facts: four registrations, nothing
    // unreadable, and a member still found by phone from the other store.
    a.synced().await?;
    b.synced().await?;
    let report = hub.rebuild()?;
    assert!(
        report.contains(": 4 registrations") && report.contains("; 0 unreadable"),
        "{report}"
    );
    // And members' activity, folded again from the whole log while the hub serves.
    let folded: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("activity: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    assert!(folded >= 4 && report.contains("; 0 unreadable"), "{report}");
    let r = b.get("/v1/members?phone=13700000001").await?;
    assert_eq!(r.status, 200, "{}", r.json);

    // On its own, a store's configuration is the chain's.
    let solo = TestEdge::spawn_with("[points]\nearn_points = 5\n").await?;
    assert_eq!(
        settings(&solo).await?,
        json!({"points": "config", "tiers": "config"})
    );
    assert_eq!(earned(&solo, "13700000005", "R-P5").await?, 500);
    Ok(())
}

/// The hub stops on SIGTERM (systemd's stop) by itself, with exit code 0, after the
/// requests in flight — a waiting stream poll is answered, not waited out; what it
/// acknowledged is there at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_stops_cleanly_on_sigterm() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    let e = enrolled_edge(&hub, "S001").await?;
    let m = e.register("13900000091", None).await?;
    e.synced().await?;
    // A stream poll waits at the hub (up to 20 s) while nothing happens: the shutdown
    // must answer it rather than wait it out.
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(e.get("/healthz").await?.json["hub"]["streaming"] == true)
    })
    .await
    .context("the store follows the stream")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hub.terminate(), Some(0), "a clean exit on SIGTERM");
    hub.start().await?;
    assert_eq!(hub.balance(&m)?, 0);
    let held = hub.stores().await?;
    assert!(
        held.iter().any(|s| s.store_id == "S001" && s.facts >= 1),
        "{held:?}"
    );
    Ok(())
}
