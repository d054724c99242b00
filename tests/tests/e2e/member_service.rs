//! Issue 18, part 4: what a front desk does for a member — their ledger a page at a
//! time, manual adjustments under the two-person rule, and points sent to another
//! member of the chain (through the hub, never offline).

use std::time::Duration;

use anyhow::{Context, Result};
use patron_tests::TestEdge;
use patron_tests::hub::TestHub;
use serde_json::{Value, json};

use crate::claims::{balance_becomes, two_stores_with};

async fn adjust(
    c: &patron_tests::Client<'_>,
    m: &str,
    points: i64,
    reason: &str,
    key: &str,
) -> Result<patron_tests::Resp> {
    let body = json!({"points": points, "reason": reason});
    c.post(&format!("/v1/members/{m}/adjustments"), &body, Some(key))
        .await
}

async fn balance(e: &TestEdge, m: &str) -> Result<Value> {
    Ok(e.get(&format!("/v1/members/{m}")).await?.json["points"]["balance"].clone())
}

async fn send(
    e: &TestEdge,
    from: &str,
    points: i64,
    to: &str,
    key: &str,
) -> Result<patron_tests::Resp> {
    let body = json!({"to_member_id": to, "points": points});
    e.post(&format!("/v1/members/{from}/transfers"), &body, Some(key))
        .await
}

fn entries(page: &Value) -> Result<Vec<Value>> {
    Ok(page["entries"].as_array().context("entries")?.clone())
}

#[tokio::test]
async fn a_members_ledger_shows_each_movement_with_a_running_balance_a_page_at_a_time() -> Result<()>
{
    let edge = TestEdge::spawn().await?;
    let m = edge.register("13800000401", None).await?;
    let (st, sale) = edge.sale(&m, "L-1", 10_000, 0).await?;
    assert_eq!(st, 201, "{sale}");
    let earned = sale["points_earned"].as_i64().context("points_earned")?;
    assert!(earned > 0, "{sale}");
    let r = edge
        .post(
            &format!("/v1/members/{m}/events"),
            &json!({"type": "check_in"}),
            None,
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = edge
        .post(
            &format!("/v1/members/{m}/redemptions"),
            &json!({"points": 30, "reason": "gift"}),
            Some("red-1"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);
    let r = edge
        .post(
            &format!("/v1/members/{m}/adjustments"),
            &json!({"points": 50, "reason": "goodwill", "reference": "T-9"}),
            Some("adj-1"),
        )
        .await?;
    assert_eq!(r.status, 201, "{}", r.json);

    let page = edge.get(&format!("/v1/members/{m}/ledger")).await?;
    assert_eq!(page.status, 200, "{}", page.json);
    let all = entries(&page.json)?;
    let kinds: Vec<&str> = all.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        ["adjustment", "redemption", "event", "purchase"],
        "newest first"
    );
    assert_eq!(all[0]["points"], 50);
    assert_eq!(all[0]["note"], "goodwill");
    assert_eq!(all[1]["points"], -30);
    assert_eq!(all[1]["note"], "gift");
    assert_eq!(all[3]["receipt_id"], "L-1");
    assert_eq!(all[3]["amount"], 10_000);
    assert_eq!(all[3]["points"], earned);
    assert_eq!(all[3]["store"], "S001");
    // Each line's total is the one before it plus its points; the newest is the card's.
    for w in all.windows(2) {
        assert_eq!(
            w[0]["balance_after"]
                .as_i64()
                .zip(w[0]["points"].as_i64())
                .map(|(b, p)| b - p),
            w[1]["balance_after"].as_i64(),
            "{w:?}"
        );
    }
    assert_eq!(all[3]["balance_after"], earned);
    let card = edge.get(&format!("/v1/members/{m}")).await?.json;
    let held = card["points"]["balance"].as_i64().unwrap_or(-1)
        + card["points"]["pending"].as_i64().unwrap_or(-1);
    assert_eq!(all[0]["balance_after"].as_i64(), Some(held), "{card}");
    assert!(page.json.get("next_before").is_none(), "one page holds all");

    // Two at a time: the pages follow one another without a gap or an overlap, even
    // when a sale lands between two pages (it is newer than the cursor).
    let mut seen = Vec::new();
    let mut path = format!("/v1/members/{m}/ledger?limit=2");
    for n in 0..3 {
        let p = edge.get(&path).await?;
        assert_eq!(p.status, 200, "{}", p.json);
        seen.extend(entries(&p.json)?);
        if n == 0 {
            let (st, body) = edge.sale(&m, "L-2", 500, 0).await?;
            assert_eq!(st, 201, "{body}");
        }
        match p.json["next_before"].as_str() {
            Some(c) => path = format!("/v1/members/{m}/ledger?limit=2&before={c}"),
            None => break,
        }
    }
    assert_eq!(seen, all);
    let now = entries(&edge.get(&format!("/v1/members/{m}/ledger")).await?.json)?;
    assert_eq!(now.len(), 5);
    assert_eq!(now[0]["receipt_id"], "L-2");
    assert_eq!(&now[1..], &all[..], "older entries keep their figures");

    for (q, code) in [
        ("limit=0", "invalid_request"),
        ("limit=201", "invalid_request"),
        ("limit=x", "invalid_request"),
        ("before=!!", "invalid_request"),
    ] {
        let r = edge.get(&format!("/v1/members/{m}/ledger?{q}")).await?;
        assert_eq!((r.status, r.code()), (400, code), "{q}: {}", r.json);
    }
    let r = edge
        .get("/v1/members/0190a000-0000-7000-8000-0000000000ff/ledger")
        .await?;
    assert_eq!((r.status, r.code()), (404, "member_not_found"));
    Ok(())
}

#[tokio::test]
async fn adjustments_above_the_threshold_wait_for_a_second_manager() -> Result<()> {
    let edge = TestEdge::spawn_with("[member_service]\napprove_adjustments_above = 100\n").await?;
    let desk = edge.add_lane("desk", "pos")?;
    let manager_b = edge.add_lane("manager-b", "admin")?;
    let (desk, b) = (edge.as_token(&desk), edge.as_token(&manager_b));
    let m = edge.register("13800000402", None).await?;
    let r = adjust(&desk, &m, 80, "goodwill", "a-1").await?;
    assert_eq!(r.status, 201, "within the threshold: {}", r.json);
    assert_eq!(
        (r.json["status"].as_str(), r.json["balance_after"].as_i64()),
        (Some("applied"), Some(80))
    );
    let again = adjust(&desk, &m, 80, "goodwill", "a-1").await?;
    assert_eq!(again.json, r.json, "a retry is answered, not applied twice");
    let big = adjust(&desk, &m, 500, "complaint", "a-2").await?;
    assert_eq!(big.status, 202, "{}", big.json);
    assert_eq!(big.json["status"], "pending");
    assert_eq!(big.json["requested_by"], "desk");
    let big_id = big.json["adjustment_id"]
        .as_str()
        .context("id")?
        .to_string();
    assert_eq!(
        balance(&edge, &m).await?,
        80,
        "a pending adjustment moves nothing"
    );

    // The desk may neither list nor decide; a manager may not decide their own.
    let r = desk.get("/v1/adjustments").await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"));
    let r = desk
        .post(
            &format!("/v1/adjustments/{big_id}/approve"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.json);
    let own = edge
        .post(
            &format!("/v1/members/{m}/adjustments"),
            &json!({"points": 300, "reason": "correction"}),
            Some("a-3"),
        )
        .await?;
    assert_eq!(own.status, 202, "{}", own.json);
    let own_id = own.json["adjustment_id"]
        .as_str()
        .context("id")?
        .to_string();
    let r = edge
        .post(
            &format!("/v1/adjustments/{own_id}/approve"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "the maker is not the checker: {}",
        r.json
    );

    let list = b.get("/v1/adjustments").await?;
    assert_eq!(list.status, 200, "{}", list.json);
    let ids: Vec<&str> = list.json["adjustments"]
        .as_array()
        .context("adjustments")?
        .iter()
        .filter_map(|a| a["adjustment_id"].as_str())
        .collect();
    assert_eq!(ids, [big_id.as_str(), own_id.as_str()]);

    let r = b
        .post(
            &format!("/v1/adjustments/{big_id}/approve"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(
        (r.json["status"].as_str(), r.json["decided_by"].as_str()),
        (Some("applied"), Some("manager-b"))
    );
    assert_eq!(r.json["balance_after"], 580);
    let r2 = b
        .post(
            &format!("/v1/adjustments/{big_id}/approve"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!(
        (r2.status, r2.json["status"].as_str()),
        (200, Some("applied")),
        "approving again changes nothing"
    );
    let r = edge
        .post(
            &format!("/v1/adjustments/{big_id}/reject"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "conflict"), "{}", r.json);
    let r = b
        .post(
            &format!("/v1/adjustments/{own_id}/reject"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (200, Some("rejected")),
        "{}",
        r.json
    );
    assert_eq!(balance(&edge, &m).await?, 580);

    // Taking more than the member has is refused when approved, and stays pending.
    let take = adjust(&desk, &m, -1_000, "correction", "a-4").await?;
    assert_eq!(take.status, 202, "{}", take.json);
    let take_id = take.json["adjustment_id"]
        .as_str()
        .context("id")?
        .to_string();
    let r = b
        .post(
            &format!("/v1/adjustments/{take_id}/approve"),
            &json!({}),
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, "insufficient_points"),
        "{}",
        r.json
    );
    let still: Vec<Value> = b.get("/v1/adjustments").await?.json["adjustments"]
        .as_array()
        .context("adjustments")?
        .clone();
    assert_eq!(still.len(), 1, "{still:?}");
    // Manager B moved nothing without approval today: 50 points apply at once.
    let r = adjust(&b, &m, -50, "correction", "a-5").await?;
    assert_eq!(
        (r.status, r.json["balance_after"].as_i64()),
        (201, Some(530)),
        "{}",
        r.json
    );
    // The desk moved 80 without approval today: 30 more would pass the 100, so a
    // large adjustment split into small ones still waits.
    let r = adjust(&desk, &m, 30, "goodwill", "a-6").await?;
    assert_eq!(
        (r.status, r.json["status"].as_str()),
        (202, Some("pending")),
        "{}",
        r.json
    );

    for (body, what) in [
        (json!({"points": 0, "reason": "goodwill"}), "zero points"),
        (
            json!({"points": 10, "reason": "because"}),
            "an unknown reason",
        ),
        (
            json!({"points": 10, "reason": "goodwill", "reference": "called 张三"}),
            "free text",
        ),
        (
            json!({"points": 10, "reason": "goodwill", "note": "x"}),
            "an unknown field",
        ),
    ] {
        let r = desk
            .post(&format!("/v1/members/{m}/adjustments"), &body, Some("bad"))
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (400, "invalid_request"),
            "{what}: {}",
            r.json
        );
    }
    let r = desk
        .post(
            &format!("/v1/members/{m}/adjustments"),
            &json!({"points": 10, "reason": "goodwill"}),
            None,
        )
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "no Idempotency-Key"
    );
    let r = b
        .post("/v1/adjustments/not-an-id/approve", &json!({}), None)
        .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"));

    let ledger = edge.get(&format!("/v1/members/{m}/ledger")).await?.json;
    let adjusted: Vec<i64> = entries(&ledger)?
        .iter()
        .filter(|e| e["kind"] == "adjustment")
        .filter_map(|e| e["points"].as_i64())
        .collect();
    assert_eq!(adjusted, [-50, 500, 80], "the applied ones, newest first");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_move_between_members_of_two_stores_through_the_hub_and_never_offline() -> Result<()>
{
    let (mut hub, s1, s2) = two_stores_with(
        "[member_service]\ntransfer_max_points = 400\ntransfer_monthly_points = 500\n",
        r#"{"version":"plain-v1"}"#,
        "plain-v1",
    )
    .await?;
    let sender = s1.register("13800000411", None).await?;
    let (st, sale) = s1.sale(&sender, "T-1", 100_000, 0).await?;
    assert_eq!(st, 201, "{sale}");
    let start = sale["balance_after"].as_i64().context("balance")?;
    assert!(start >= 1_000, "{sale}");
    let receiver = s2.register("13800000412", None).await?;
    s2.synced().await?;
    let (found, _) = s1.by_phone("13800000412").await?;
    assert_eq!(found, receiver, "S001 fetches the receiver from the hub");

    let r = send(&s1, &sender, 300, &receiver, "x-1").await?;
    assert_eq!(r.status, 201, "{}", r.json);
    assert_eq!(r.json["balance_after"].as_i64(), Some(start - 300));
    s1.synced().await?;
    balance_becomes(&s2, &receiver, 300).await?;
    let ledger = s1.get(&format!("/v1/members/{sender}/ledger")).await?.json;
    let newest = &entries(&ledger)?[0];
    assert_eq!(
        (newest["kind"].as_str(), newest["points"].as_i64()),
        (Some("transfer"), Some(-300)),
        "{ledger}"
    );
    assert_eq!(
        newest["note"].as_str(),
        Some(format!("to:{receiver}").as_str())
    );

    let r = send(&s1, &sender, 401, &receiver, "x-2").await?;
    assert_eq!((r.status, r.code()), (422, "limit_exceeded"), "{}", r.json);
    assert_eq!(r.json["error"]["details"]["limit"], "transfer_max_points");
    let r = send(&s1, &sender, 300, &receiver, "x-3").await?;
    assert_eq!((r.status, r.code()), (422, "limit_exceeded"), "{}", r.json);
    assert_eq!(
        r.json["error"]["details"]["limit"],
        "transfer_monthly_points"
    );
    let r = send(&s1, &sender, 10, &sender, "x-4").await?;
    assert_eq!(
        (r.status, r.code()),
        (400, "invalid_request"),
        "to themselves: {}",
        r.json
    );
    let r = send(
        &s1,
        &sender,
        10,
        "0190a000-0000-7000-8000-0000000000ff",
        "x-5",
    )
    .await?;
    assert_eq!((r.status, r.code()), (404, "not_found"), "{}", r.json);

    // Offline: refused, and nothing moves.
    hub.kill();
    s1.hub_reachable(false).await?;
    let r = send(&s1, &sender, 100, &receiver, "x-6").await?;
    assert_eq!((r.status, r.code()), (503, "hub_unreachable"), "{}", r.json);
    let card = s1.get(&format!("/v1/members/{sender}")).await?.json;
    assert_eq!(
        card["points"]["balance"].as_i64(),
        Some(start - 300),
        "{card}"
    );
    hub.start().await?;
    s1.synced().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send(&s1, &sender, 100, &receiver, "x-7").await?;
    assert_eq!(r.status, 201, "online again: {}", r.json);
    s1.synced().await?;
    balance_becomes(&s2, &receiver, 400).await?;
    Ok(())
}

async fn lookup(e: &TestEdge, phone: &str) -> Result<(u16, Value)> {
    let r = e
        .post("/v1/members/lookup", &json!({"phone": phone}), None)
        .await?;
    Ok((r.status, r.json["member_id"].clone()))
}

async fn change_phone(
    e: &TestEdge,
    m: &str,
    old: &str,
    new: &str,
    key: &str,
) -> Result<patron_tests::Resp> {
    let body = json!({"old_phone": old, "new_phone": new});
    e.post(&format!("/v1/members/{m}/phone"), &body, Some(key))
        .await
}

/// The phone number change: the old number proves the request; the new one must be
/// no member's anywhere (the hub is asked, so offline it is refused); afterwards the
/// member is found under the new number at every store and the old number finds
/// nobody, so its next owner registers as a new member, not as this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_change_moves_the_member_and_retires_the_old_number_across_the_chain() -> Result<()>
{
    let (mut hub, s1, s2) = two_stores_with("", r#"{"version":"plain-v2"}"#, "plain-v2").await?;
    let (old, new) = ("13800000601", "13800000602");
    let m = s1.register(old, None).await?;
    let (st, sale) = s1.sale(&m, "P-1", 10_000, 0).await?;
    assert_eq!(st, 201, "{sale}");
    s1.synced().await?;
    let (at2, _) = s2.by_phone(old).await?;
    assert_eq!(at2, m);
    let other = s2.register("13800000603", None).await?;
    s2.synced().await?;

    // A manager's act: a POS lane is refused even with the right numbers.
    let desk = s1.add_lane("desk", "pos")?;
    let r = s1
        .as_token(&desk)
        .post(
            &format!("/v1/members/{m}/phone"),
            &json!({"old_phone": old, "new_phone": new}),
            Some("k-0"),
        )
        .await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.json);
    let r = change_phone(&s1, &m, "13800000699", new, "k-1").await?;
    assert_eq!(
        (r.status, r.code()),
        (403, "forbidden"),
        "a wrong old number: {}",
        r.json
    );
    let r = change_phone(&s1, &m, old, "13800000603", "k-2").await?;
    assert_eq!((r.status, r.code()), (409, "member_exists"), "{}", r.json);
    assert_eq!(r.json["error"]["details"]["member_id"], other.as_str());
    let r = change_phone(&s1, &m, old, old, "k-3").await?;
    assert_eq!((r.status, r.code()), (400, "invalid_request"), "{}", r.json);
    hub.kill();
    s1.hub_reachable(false).await?;
    let r = change_phone(&s1, &m, old, new, "k-4").await?;
    assert_eq!((r.status, r.code()), (503, "hub_unreachable"), "{}", r.json);
    hub.start().await?;
    s1.synced().await?;

    let r = change_phone(&s1, &m, old, new, "k-5").await?;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["phone_masked"], "138****0602");
    s1.synced().await?;
    assert_eq!(lookup(&s1, new).await?, (200, json!(m)));
    assert_eq!(
        lookup(&s1, old).await?.0,
        404,
        "the old number finds nobody here"
    );
    // S002 holds the member: the change reaches it through the hub's stream.
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(lookup(&s2, new).await? == (200, json!(m)))
    })
    .await
    .context("S002 finds the member under the new number")?;
    assert_eq!(lookup(&s2, old).await?.0, 404, "nor at S002");

    // The old number's next owner is a new member, at any store.
    let fresh = s2.register(old, None).await?;
    assert_ne!(fresh, m);
    s2.synced().await?;
    TestHub::wait_for(Duration::from_secs(15), || async {
        Ok(lookup(&s1, old).await? == (200, json!(fresh)))
    })
    .await
    .context("S001 fetches the new owner from the hub")?;
    assert_eq!(lookup(&s1, new).await?, (200, json!(m)), "not merged");
    let card = s1.get(&format!("/v1/members/{m}")).await?.json;
    assert_eq!(card["points"]["balance"], sale["balance_after"], "{card}");
    Ok(())
}
