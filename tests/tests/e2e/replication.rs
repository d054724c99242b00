//! Members across stores: every enrolled store holds member keys of its own, and the
//! hub translates a member's keys for the store that receives them, so a phone
//! registered at one store is fetched at another in one round trip when the hub is
//! reachable, and that store reads the member, their balance and their tier.

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use serde_json::{Value, json};

const CONFIG: &str = "[sync]\npush_delay_ms = 10\nheartbeat_ms = 200\nretry_min_ms = 100\nretry_max_ms = 400\ntimeout_ms = 2000\n";

async fn enrolled_edge(hub: &TestHub, store: &str) -> Result<TestEdge> {
    enrolled_edge_with(hub, store, CONFIG).await
}

async fn enrolled_edge_with(hub: &TestHub, store: &str, config: &str) -> Result<TestEdge> {
    let mut e = TestEdge::prepare(store, config)?;
    e.enroll(hub)?;
    e.start().await?;
    Ok(e)
}

async fn sale(e: &TestEdge, member: &str, receipt: &str, price: i64, redeem: i64) -> Result<Value> {
    let (status, body) = e.sale(member, receipt, price, redeem).await?;
    anyhow::ensure!(status == 201, "commit {receipt}: {status} {body}");
    Ok(body)
}

/// Waits until both stores answer `phone` with one member holding `balance` points and
/// named `name` (lookups bring a store up to date from the hub in the background, so
/// within a few lookups); returns that member's id. The name is waited for too: the
/// stream brings a merge, and the loser's facts written after it, before the store's
/// fetch of the loser's earlier facts (its registration, with the name) has finished,
/// so for a moment a store can show the merged points under the survivor's profile.
async fn one_member_at_both(
    s1: &TestEdge,
    s2: &TestEdge,
    phone: &str,
    balance: i64,
    name: &str,
) -> Result<String> {
    let seen = std::sync::Mutex::new(Vec::new());
    TestHub::wait_for(Duration::from_secs(20), || async {
        let mut shown = Vec::new();
        for e in [s1, s2] {
            let r = e.get(&format!("/v1/members?phone={phone}")).await?;
            anyhow::ensure!(r.status == 200, "lookup: {} {}", r.status, r.json);
            shown.push((
                r.json["member_id"].as_str().unwrap_or_default().to_string(),
                r.json["points"]["balance"].as_i64(),
                r.json["name"].as_str().map(str::to_string),
            ));
        }
        let done = shown[0] == shown[1]
            && shown[0].1 == Some(balance)
            && shown[0].2.as_deref() == Some(name);
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = shown;
        Ok(done)
    })
    .await
    .with_context(|| {
        format!(
            "one member at both stores: {:?}",
            seen.lock().map(|s| s.clone())
        )
    })?;
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(seen[0].0.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_another_store_is_fetched_by_phone_in_one_round_trip() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    let s1 = enrolled_edge(&hub, "S001").await?;
    let s2 = enrolled_edge(&hub, "S002").await?;
    let m = s1.register("13900000001", Some("王芳")).await?;
    let earned = sale(&s1, &m, "R1-earn", 250_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    s1.synced().await?;
    s2.hub_reachable(true).await?;

    // S002 has never seen this phone: the lookup fetches the member from the hub and
    // answers with S001's registration, decrypted here, and S001's points.
    let r = s2.get("/v1/members?phone=13900000001").await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["member_id"], m.as_str(), "{}", r.json);
    assert_eq!(r.json["name"], "王芳", "{}", r.json);
    assert_eq!(r.json["points"]["balance"], earned, "{}", r.json);
    let at_home = s1.get(&format!("/v1/members/{m}")).await?.json;
    assert_eq!(r.json["tier"], at_home["tier"], "{}", r.json);
    // Held here now: registering the phone again is a conflict, not a second member.
    let again = s2
        .post(
            "/v1/members",
            &json!({"phone": "13900000001", "consents": {"terms": true}}),
            None,
        )
        .await?;
    assert_eq!(again.status, 409, "{}", again.json);
    assert_eq!(
        again.json["error"]["details"]["member_id"],
        m.as_str(),
        "{}",
        again.json
    );

    // The member redeems at S002 (the hub authorizes) and earns there; both stores'
    // sales reach the hub, which holds the one balance.
    let sold = sale(&s2, &m, "R2-redeem", 10_000, 500).await?;
    let earned2 = sold["points_earned"].as_i64().context("points_earned")?;
    s2.synced().await?;
    assert_eq!(hub.balance(&m)?, earned - 500 + earned2);
    let here = s2.get(&format!("/v1/members/{m}")).await?.json;
    assert_eq!(here["points"]["balance"], earned - 500 + earned2, "{here}");

    // A phone no store registered is not found; one registered while S002 cannot reach
    // the hub is not found there either (it is not held, and there is no one to ask).
    let r = s2.get("/v1/members?phone=13900000002").await?;
    assert_eq!(r.status, 404, "{}", r.json);
    let m3 = s1.register("13900000003", None).await?;
    s1.synced().await?;
    hub.kill();
    s2.hub_reachable(false)
        .await
        .context("S002 sees the hub gone")?;
    let r = s2.get("/v1/members?phone=13900000003").await?;
    assert_eq!(r.status, 404, "{}", r.json);
    hub.start().await?;
    s2.hub_reachable(true).await?;
    let r = s2.get("/v1/members?phone=13900000003").await?;
    assert_eq!(
        (r.status, r.json["member_id"].as_str()),
        (200, Some(m3.as_str())),
        "{}",
        r.json
    );
    Ok(())
}

/// What one stolen store PC opens: each store holds keys of its own from the hub (no
/// chain key), and its database holds only the members it registered or served. A
/// store that never served a member holds nothing of them; the store that looked one
/// up holds that one member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_holds_keys_of_its_own_and_only_the_members_it_served() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let s1 = enrolled_edge(&hub, "S001").await?;
    let s2 = enrolled_edge(&hub, "S002").await?;
    let s3 = enrolled_edge(&hub, "S003").await?;
    for (i, phone) in ["13900000011", "13900000012", "13900000013"]
        .iter()
        .enumerate()
    {
        s1.register(phone, Some(["王一", "王二", "王三"][i]))
            .await?;
    }
    s1.synced().await?;
    s2.hub_reachable(true).await?;
    let r = s2.get("/v1/members?phone=13900000012").await?;
    assert_eq!(
        (r.status, r.json["name"].as_str()),
        (200, Some("王二")),
        "{}",
        r.json
    );

    let keys: Vec<Vec<u8>> = [&s1, &s2, &s3]
        .iter()
        .map(|e| std::fs::read(e.key_dir().join("store.key")))
        .collect::<std::io::Result<_>>()
        .context("every enrolled store holds store.key")?;
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
    for e in [&s1, &s2, &s3] {
        assert!(
            !e.key_dir().join("chain.key").exists(),
            "no store holds the chain's key"
        );
    }
    let members = |e: &TestEdge| -> Result<i64> {
        Ok(e.db()?
            .query_row("SELECT count(*) FROM members", [], |r| r.get(0))?)
    };
    assert_eq!(members(&s1)?, 3);
    assert_eq!(members(&s2)?, 1, "S002 holds the one member it looked up");
    assert_eq!(members(&s3)?, 0, "S003 never served any");
    Ok(())
}

/// HQ rotates a running store's keys: the store takes the next generation with its
/// next sync, re-wraps its members in the background and destroys the old keys; its
/// members stay readable there and at another store, and the hub translates for it
/// under the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_s_keys_rotate_while_it_runs() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let s1 = enrolled_edge(&hub, "S001").await?;
    let s2 = enrolled_edge(&hub, "S002").await?;
    let m = s1.register("13900000021", Some("李雷")).await?;
    s1.synced().await?;
    let before = std::fs::read(s1.key_dir().join("store.key"))?;

    let out = hub.hq(&["store", "rotate-keys", "S001"])?;
    assert!(out.contains("generation 2"), "{out}");
    TestHub::wait_for(Duration::from_secs(10), || async {
        let st = hub.stores().await?;
        let s = st.iter().find(|s| s.store_id == "S001").context("S001")?;
        Ok(s.key_generation == Some(2) && s.key_offered.is_none())
    })
    .await
    .context("S001 reports holding generation 2")?;
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(!s1.key_dir().join("store.key").exists())
    })
    .await
    .context("generation 1 is destroyed once its members are re-wrapped")?;
    assert!(s1.key_dir().join("store-2.key").exists());
    assert_ne!(std::fs::read(s1.key_dir().join("store-2.key"))?, before);

    let r = s1.get("/v1/members?phone=13900000021").await?;
    assert_eq!(
        (r.status, r.json["name"].as_str()),
        (200, Some("李雷")),
        "{}",
        r.json
    );
    // Registered and looked up elsewhere after the rotation: translated both ways.
    let m2 = s2.register("13900000022", Some("韩梅")).await?;
    s2.synced().await?;
    s1.hub_reachable(true).await?;
    let r = s1.get("/v1/members?phone=13900000022").await?;
    assert_eq!(
        (r.status, r.json["member_id"].as_str()),
        (200, Some(m2.as_str())),
        "{}",
        r.json
    );
    assert_eq!(r.json["name"], "韩梅", "{}", r.json);
    s2.hub_reachable(true).await?;
    let r = s2.get("/v1/members?phone=13900000021").await?;
    assert_eq!(
        (r.status, r.json["member_id"].as_str()),
        (200, Some(m.as_str())),
        "{}",
        r.json
    );
    assert_eq!(r.json["name"], "李雷", "{}", r.json);
    Ok(())
}

/// The same phone registered at two stores while the hub is down ends as one member
/// after sync: the hub merges the registration it received second into the first, and
/// every store answers the phone, and either id, with one member and both stores'
/// points, which the member can spend in one redemption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_phone_registered_at_two_offline_stores_becomes_one_member() -> Result<()> {
    const PHONE: &str = "13900000021";
    // Without leases: a lookup's lease would rightly keep half the points from the
    // other store, and the single redemption below is about the merge.
    let config = format!("{CONFIG}[redemption]\nleases = false\n");
    let mut hub = TestHub::spawn().await?;
    let s1 = enrolled_edge_with(&hub, "S001", &config).await?;
    let s2 = enrolled_edge_with(&hub, "S002", &config).await?;
    s1.hub_reachable(true).await?;
    s2.hub_reachable(true).await?;
    hub.kill();
    s1.hub_reachable(false).await?;
    s2.hub_reachable(false).await?;
    let a = s1.register(PHONE, Some("张三")).await?;
    let e1 = sale(&s1, &a, "R1-earn", 100_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    let b = s2.register(PHONE, None).await?;
    let e2 = sale(&s2, &b, "R2-earn", 50_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    assert_ne!(a, b, "two members while apart");

    hub.start().await?;
    s1.synced().await?;
    s2.synced().await?;
    let survivor = one_member_at_both(&s1, &s2, PHONE, e1 + e2, "张三").await?;
    assert!(survivor == a || survivor == b, "{survivor}");
    for e in [&s1, &s2] {
        for id in [&a, &b] {
            let r = e.get(&format!("/v1/members/{id}")).await?;
            assert_eq!(r.json["member_id"], survivor.as_str(), "{}", r.json);
            assert_eq!(r.json["points"]["balance"], e1 + e2, "{}", r.json);
            // Profiles merge field by field: S002 took no name, S001's stays.
            assert_eq!(r.json["name"], "张三", "{}", r.json);
        }
    }
    // One redemption spends points earned at both stores: the store and the hub count
    // both ids.
    let spend = e1 + e2 - 100;
    let sold = sale(&s2, &b, "R2-spend", 5_000, spend).await?;
    let e3 = sold["points_earned"].as_i64().context("points_earned")?;
    s2.synced().await?;
    assert_eq!(hub.balance(&a)? + hub.balance(&b)?, 100 + e3);
    // Offline again: both ids draw on one floor limit (500 points by default).
    sale(&s2, &b, "R2-more", 100_000, 0).await?;
    s2.synced().await?;
    hub.kill();
    s2.hub_reachable(false).await?;
    sale(&s2, &a, "R2-off-1", 5_000, 400).await?;
    let (status, body) = s2.sale(&b, "R2-off-2", 5_000, 101).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "offline_limit_exceeded", "{body}");
    assert_eq!(body["error"]["details"]["member_left"], 100, "{body}");
    Ok(())
}

/// A store that ran on its own before it enrolled, then synced with a version that did
/// not re-key (simulated by marking the pass done): once upgraded it re-keys the
/// members it registered, so a phone it registered then and another store registered
/// since end as one member, although the other store had fetched that phone past every
/// fact of the re-keyed member; the other store reads the name sealed before enrollment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_registered_before_the_store_enrolled_joins_the_chain() -> Result<()> {
    const PHONE: &str = "13900000041";
    let config = format!("{CONFIG}[redemption]\nleases = false\n");
    let hub = TestHub::spawn().await?;
    let mut s1 = TestEdge::prepare("S001", &config)?;
    s1.start().await?;
    let a = s1.register(PHONE, Some("李四")).await?;
    let e1 = sale(&s1, &a, "R1-early", 100_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    s1.stop();
    s1.enroll(&hub)?;
    let (data, keys) = (s1.data_dir(), s1.key_dir());
    let rekey_done = |done: bool| -> Result<()> {
        let (_, conn) = patron_edge::store::connect_at(&data, &keys, false)?;
        if done {
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('rekeyed_for_chain', '1')",
                [],
            )?;
        } else {
            conn.execute("DELETE FROM meta WHERE key = 'rekeyed_for_chain'", [])?;
        }
        Ok(())
    };
    rekey_done(true)?;
    s1.start().await?;
    s1.synced().await?;

    let s2 = enrolled_edge_with(&hub, "S002", &config).await?;
    let b = s2.register(PHONE, None).await?;
    let e2 = sale(&s2, &b, "R2", 50_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    s2.synced().await?;
    assert_ne!(a, b);
    // S002 brings the phone up to date (in the background of a lookup): its position
    // is then past every fact S001 synced.
    assert_eq!(s2.by_phone(PHONE).await?, (b.clone(), e2));
    tokio::time::sleep(Duration::from_millis(500)).await;

    s1.stop();
    rekey_done(false)?;
    s1.start().await?;
    s1.synced().await?;
    // S002's registration reached the hub under the chain's index first: its member
    // survives.
    assert_eq!(
        one_member_at_both(&s1, &s2, PHONE, e1 + e2, "李四").await?,
        b
    );
    for e in [&s1, &s2] {
        let r = e.get(&format!("/v1/members/{a}")).await?;
        assert_eq!(r.json["member_id"], b.as_str(), "{}", r.json);
        assert_eq!(r.json["name"], "李四", "{}", r.json);
    }
    Ok(())
}

/// Any enrolled store can read any member by phone index, so the hub holds each store
/// to a fetch budget: over it, lookups of more phones answer not found, and the store
/// stays online (the hub answered; only a missing answer means offline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_over_its_fetch_budget_is_refused_and_stays_online() -> Result<()> {
    let mut hub = TestHub::spawn().await?;
    hub.kill();
    hub.set_serve_args(&["--fetches-per-minute", "1"]);
    hub.start().await?;
    let s1 = enrolled_edge(&hub, "S001").await?;
    let s2 = enrolled_edge(&hub, "S002").await?;
    s1.register("13900000031", None).await?;
    s1.register("13900000032", None).await?;
    s1.synced().await?;
    s2.hub_reachable(true).await?;
    let found = s2.by_phone("13900000031").await;
    assert!(
        found.is_ok(),
        "the first fetch is within the budget: {found:?}"
    );
    let r = s2.get("/v1/members?phone=13900000032").await?;
    assert_eq!(
        (r.status, r.code()),
        (404, "member_not_found"),
        "{}",
        r.json
    );
    let h = s2.get("/healthz").await?;
    assert_eq!(h.json["hub"]["reachable"], true, "{}", h.json);
    Ok(())
}

/// The stream: once S002 holds a member (it fetched them), a sale at S001 shows in
/// S002's balance within a round trip — through the member's page, which asks the hub
/// nothing — and S001 sees S002's redemption the same way. Both stores say they speak
/// protocol 2 and follow the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_at_one_store_shows_at_every_store_holding_the_member() -> Result<()> {
    let hub = TestHub::spawn().await?;
    let s1 = enrolled_edge(&hub, "S001").await?;
    let s2 = enrolled_edge(&hub, "S002").await?;
    let m = s1.register("13900000021", None).await?;
    let earned = sale(&s1, &m, "R1", 100_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    s1.synced().await?;
    s2.hub_reachable(true).await?;
    let r = s2.get("/v1/members?phone=13900000021").await?;
    assert_eq!(r.json["points"]["balance"], earned, "{}", r.json);
    for e in [&s1, &s2] {
        TestHub::wait_for(Duration::from_secs(10), || async {
            let h = e.get("/healthz").await?.json;
            Ok(h["hub"]["streaming"] == true && h["hub"]["protocol"] == 2)
        })
        .await
        .context("the store follows the stream")?;
    }
    let more = sale(&s1, &m, "R2", 50_000, 0).await?["points_earned"]
        .as_i64()
        .context("points_earned")?;
    assert!(more > 0);
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(balance_at(&s2, &m).await? == earned + more)
    })
    .await
    .context("S001's sale reaches S002 without a lookup")?;
    // The other way: S002 redeems, S001 (which registered the member) sees it.
    sale(&s2, &m, "R3", 10_000, 300).await?;
    let earned3 = balance_at(&s2, &m).await? - (earned + more - 300);
    TestHub::wait_for(Duration::from_secs(10), || async {
        Ok(balance_at(&s1, &m).await? == earned + more - 300 + earned3)
    })
    .await
    .context("S002's redemption reaches S001")?;
    Ok(())
}

/// The member's balance as the store's member page shows it (no lookup by phone, so
/// nothing is fetched from the hub).
async fn balance_at(e: &TestEdge, m: &str) -> Result<i64> {
    let r = e.get(&format!("/v1/members/{m}")).await?;
    anyhow::ensure!(r.status == 200, "{}", r.json);
    r.json["points"]["balance"]
        .as_i64()
        .context("points.balance")
}

/// Issue 16, part 2: with the shipped sync settings, a sale at one store shows in the
/// balance another store holding the member displays within 2 s at the 99th
/// percentile, both ways, measured over 100 sales; and once the hub is gone the member
/// card says the view is no longer live and as of when it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_stores_sales_show_within_two_seconds_and_the_card_says_how_fresh_it_is() -> Result<()>
{
    let mut hub = TestHub::spawn().await?;
    // Defaults throughout: what a store runs with.
    let s1 = enrolled_edge_with(&hub, "S001", "").await?;
    let s2 = enrolled_edge_with(&hub, "S002", "").await?;
    let phone = "13900000071";
    let m = s1.register(phone, None).await?;
    s1.synced().await?;
    s2.by_phone(phone).await?;
    for e in [&s1, &s2] {
        TestHub::wait_for(Duration::from_secs(10), || async {
            let h = e.get("/healthz").await?.json;
            Ok(h["hub"]["streaming"] == true)
        })
        .await
        .context("the store follows the stream")?;
    }
    let card = s2.get(&format!("/v1/members/{m}")).await?.json;
    assert_eq!(card["freshness"]["live"], true, "{card}");

    let mut delays = Vec::with_capacity(100);
    for i in 0..100 {
        let (at, other) = if i % 2 == 0 { (&s1, &s2) } else { (&s2, &s1) };
        let body = sale(at, &m, &format!("F{i}"), 1_000 + i, 0).await?;
        let after = body["balance_after"].as_i64().context("balance_after")?;
        let waited = TestHub::wait_for(Duration::from_secs(10), || async {
            Ok(balance_at(other, &m).await? == after)
        })
        .await
        .with_context(|| format!("sale {i} reaches the other store"))?;
        delays.push(waited);
    }
    delays.sort();
    let p50 = delays[delays.len() / 2];
    let p99 = delays[delays.len() * 99 / 100];
    println!(
        "freshness over {} sales: p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays.len(),
        delays[delays.len() - 1]
    );
    assert!(p99 <= Duration::from_secs(2), "p99 {p99:?}");

    // The hub goes away: the card is no longer live, and says as of when.
    hub.kill();
    TestHub::wait_for(Duration::from_secs(15), || async {
        let card = s2.get(&format!("/v1/members/{m}")).await?.json;
        Ok(card["freshness"]["live"] == false)
    })
    .await
    .context("the card stops saying live")?;
    let card = s2.get(&format!("/v1/members/{m}")).await?.json;
    let as_of = card["freshness"]["as_of"]
        .as_str()
        .context("freshness.as_of")?;
    let as_of = time::OffsetDateTime::parse(as_of, &time::format_description::well_known::Rfc3339)?;
    let age = time::OffsetDateTime::now_utc() - as_of;
    assert!(
        age >= time::Duration::ZERO && age < time::Duration::seconds(60),
        "as of {as_of}, {age} ago"
    );
    Ok(())
}
