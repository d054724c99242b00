//! Referral codes and dues in the ingest transaction: the code index (the first
//! registration received under a code keeps it), the dues stores could not credit, and
//! their settlement by the rules of `patron_domain::referral` — a credit is the hub's
//! own `claim` and `referral_reward` facts, streamed to every store holding the
//! referrer.

use std::collections::BTreeSet;

use patron_domain::referral::{Settlement, settle};
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, counted_claims, insert_claim, judge_counter};
use crate::ingest::{DueRow, HUB_NODE};

/// Indexes `member`'s own code (registration fact `fact`) unless another member has it
/// already, then settles the dues waiting for it.
pub(super) fn index_code(
    tx: &Connection,
    hub_origin: i64,
    code: &str,
    member: &str,
    fact: i64,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO referral_codes (code, member, fact) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![code, member, fact])?;
    if n == 0 {
        // Two registrations under one code: only codes from before codes named their
        // store (or a store rebuilt without its backup) can collide. The first keeps it.
        tracing::warn!(
            fact,
            "a referral code registered twice: the first member keeps it"
        );
        return Ok(());
    }
    settle_pending(tx, hub_origin, code, now, streamed)
}

/// Records due `d` of `store` (fact `fact`) and settles it if the code's member is known.
pub(super) fn add_due(
    tx: &Connection,
    hub_origin: i64,
    store: &str,
    fact: i64,
    d: &DueRow,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO referral_dues (fact, code, friend, event, points, expires_at, store)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        fact,
        d.code,
        d.friend.to_string(),
        d.event,
        d.points,
        d.expires_at,
        store
    ])?;
    settle_pending(tx, hub_origin, &d.code, now, streamed)
}

/// Settles every pending due of `code`, oldest first, once a member has the code.
fn settle_pending(
    tx: &Connection,
    hub_origin: i64,
    code: &str,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let referrer: Option<String> = tx
        .prepare_cached("SELECT member FROM referral_codes WHERE code = ?1")?
        .query_row(params![code], |r| r.get(0))
        .optional()?;
    let Some(referrer) = referrer else {
        return Ok(());
    };
    let referrer = root(tx, &referrer)?;
    let pending: Vec<(i64, String, String, i64, i64)> = tx
        .prepare_cached(
            "SELECT fact, friend, event, points, expires_at FROM referral_dues
              WHERE code = ?1 AND outcome = 'pending' ORDER BY fact",
        )?
        .query_map(params![code], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (fact, friend, event, points, expires_at) in pending {
        let friend_id = uuid(&friend)?;
        let event = match event.as_str() {
            "register" => "register",
            _ => "first_purchase",
        };
        let due = DueRow {
            friend: friend_id,
            code: code.to_string(),
            event,
            points,
            expires_at,
        };
        let key =
            patron_domain::claims::ClaimKey::referral(event, &hex::encode(friend_id.as_bytes()));
        // A store that holds the referrer may have been granted this claim and not
        // pushed it yet: its hold counts as taken, so the referral is never paid twice.
        let held: i64 = tx
            .prepare_cached(
                "SELECT count(*) FROM claim_holds
                  WHERE member = ?1 AND entitlement = ?2 AND period = ?3 AND until > ?4",
            )?
            .query_row(params![referrer, key.entitlement, key.period, now], |r| {
                r.get(0)
            })?;
        let taken = counted_claims(tx, &referrer, &key)?
            .net
            .saturating_add(held);
        let outcome = settle(points, &root(tx, &friend)?, Some(&referrer), taken);
        let reward = match outcome {
            Settlement::Credit(points) => Some(credit(
                tx, hub_origin, &referrer, &due, points, now, streamed,
            )?),
            _ => None,
        };
        tx.prepare_cached(
            "UPDATE referral_dues SET outcome = ?2, reward = ?3, settled_at = ?4 WHERE fact = ?1",
        )?
        .execute(params![fact, outcome.as_str(), reward, now])?;
        tracing::info!(due = fact, outcome = outcome.as_str(), "referral settled");
    }
    Ok(())
}

/// Writes the hub's claim and reward facts for `referrer`; the reward's position.
fn credit(
    tx: &Connection,
    hub_origin: i64,
    referrer: &str,
    due: &DueRow,
    points: i64,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<i64, StoreError> {
    let member = uuid(referrer)?;
    let facts = crate::ingest::referral_facts(member, due, points, now)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut pos = 0;
    for entry in &facts {
        pos = super::append_hub_fact(tx, hub_origin, entry, now)?;
        if let Some(c) =
            crate::ingest::claim_row(entry).map_err(|e| StoreError::Corrupt(e.to_string()))?
        {
            insert_claim(tx, pos, &c, HUB_NODE)?;
            judge_counter(tx, referrer, &c.key, now)?;
        }
        super::fan_out_hub_fact(tx, member.as_bytes(), pos, streamed)?;
    }
    Ok(pos)
}

fn root(tx: &Connection, member: &str) -> Result<String, StoreError> {
    Ok(tx
        .prepare_cached(concat!("SELECT ", root_of!("?1")))?
        .query_row(params![member], |r| r.get(0))?)
}

fn uuid(s: &str) -> Result<uuid::Uuid, StoreError> {
    uuid::Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("member id {s}: {e}")))
}

#[cfg(test)]
mod tests {
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;
    const EXPIRES: i64 = T0 + 400 * 86_400_000;

    fn id(n: u128) -> String {
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
    }

    /// Member `member` registered under phone index `phone` with their own `code`.
    fn registration(t: &TestHub, member: &str, phone: u8, code: &str) -> String {
        use base64::Engine;
        let idx = base64::engine::general_purpose::STANDARD.encode([phone; 32]);
        serde_json::json!({
            "kind": "member_registered", "at": t.time(), "member": member,
            "txn": uuid::Uuid::now_v7().to_string(),
            "body": {"phone_idx": idx, "referral_code": code},
        })
        .to_string()
    }

    fn due(t: &TestHub, friend: &str, code: &str, event: &str, points: i64) -> String {
        serde_json::json!({
            "kind": "referral_due", "at": t.time(), "member": friend,
            "txn": uuid::Uuid::now_v7().to_string(),
            "body": {"code": code, "event": event, "points": points, "expires_at": EXPIRES},
        })
        .to_string()
    }

    fn balance(t: &TestHub, member: &str) -> i64 {
        let mut got = 0;
        t.hub
            .store()
            .authority_tx(&mut |tx| {
                got = tx.balance(member, t.time())?;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        got
    }

    /// Outcomes of the dues, oldest first.
    fn outcomes(t: &TestHub) -> Vec<String> {
        let c = rusqlite::Connection::open(t.db_path()).unwrap_or_else(|e| panic!("{e}"));
        let mut st = c
            .prepare("SELECT outcome FROM referral_dues ORDER BY fact")
            .unwrap_or_else(|e| panic!("{e}"));
        st.query_map([], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Kinds of the facts streamed to store `store`.
    fn streamed(t: &TestHub, store: &str) -> Vec<String> {
        let read = t
            .hub
            .store()
            .stream(store, 0, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        read.facts
            .iter()
            .filter_map(|(_, f)| patron_domain::Entry::parse(&f.body).ok())
            .map(|e| e.kind().to_string())
            .collect()
    }

    #[test]
    fn a_due_credits_the_referrer_at_another_store_once_per_friend_and_event() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, friend) = (id(1), id(2));
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA"));
        t.push_fact(1, registration(&t, &friend, 2, "S002-BBBBBB"));
        t.push_fact(1, due(&t, &friend, "s001-aaaaaa", "register", 100));
        assert_eq!(balance(&t, &referrer), 100);
        assert_eq!(balance(&t, &friend), 0, "the friend earns nothing from it");
        // The store holding the referrer receives the claim and the points.
        assert_eq!(streamed(&t, "S001"), ["claim", "referral_reward"]);
        // The same referral again (a store that thought it new, or a retry written as a
        // new fact) is not paid twice; the first purchase is another event.
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "register", 100));
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "first_purchase", 50));
        assert_eq!(balance(&t, &referrer), 150);
        assert_eq!(
            outcomes(&t),
            ["credited", "already_credited", "credited"],
            "one credit per friend and event"
        );
    }

    #[test]
    fn a_due_waits_for_its_code_and_a_store_s_own_credit_counts() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, friend, other) = (id(1), id(2), id(3));
        // The friend's store syncs before the referrer's registration reaches the hub.
        t.push_fact(1, registration(&t, &friend, 2, "S002-BBBBBB"));
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "register", 100));
        assert_eq!(outcomes(&t), ["pending"]);
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA"));
        assert_eq!(outcomes(&t), ["credited"]);
        assert_eq!(balance(&t, &referrer), 100);
        // A store that holds the referrer credited another friend itself (its claim,
        // counted here): a due for that referral later is not paid again.
        t.push_fact(1, registration(&t, &other, 3, "S002-CCCCCC"));
        let friend_hex = hex::encode(uuid::Uuid::parse_str(&other).unwrap_or_default().as_bytes());
        t.push_fact(
            0,
            serde_json::json!({
                "kind": "claim", "at": t.time(), "member": referrer,
                "txn": uuid::Uuid::now_v7().to_string(),
                "body": {"entitlement": format!("referral:register:{friend_hex}"),
                         "period": "once", "limit": 1, "auth": "offline"},
            })
            .to_string(),
        );
        t.push_fact(1, due(&t, &other, "S001-AAAAAA", "register", 100));
        assert_eq!(outcomes(&t), ["credited", "already_credited"]);
        assert_eq!(balance(&t, &referrer), 100);
    }

    #[test]
    fn a_friend_under_the_referrer_s_phone_earns_nothing_and_bad_dues_are_quarantined() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, twin) = (id(1), id(2));
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA"));
        // Registered again at S002 under the same phone: merged into the referrer.
        t.push_fact(1, registration(&t, &twin, 1, "S002-BBBBBB"));
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "register", 100));
        assert_eq!(outcomes(&t), ["self_referral"]);
        assert_eq!(balance(&t, &referrer), 0);
        // A due the hub cannot settle is set aside, not the store's push.
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "birthday", 100));
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "register", 2_000_000));
        let quarantined = t.hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(quarantined.len(), 2, "{quarantined:?}");
        assert_eq!(outcomes(&t).len(), 1);
    }
}
