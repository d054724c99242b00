//! Referral codes and dues in the ingest transaction: the code index (the first
//! registration received under a code keeps it), the dues stores could not credit, and
//! their settlement by the rules of `patron_domain::referral` — a credit is the hub's
//! own `claim` and `referral_reward` facts, streamed to every store holding the
//! referrer.

use std::collections::BTreeSet;

use patron_domain::referral::{Settlement, settle};
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, counted_claims, insert_claim, judge_counter, open_claim_holds};
use crate::ingest::{DueRow, HUB_NODE, TypedFact};

/// Indexes what registration `t` (fact `fact` of `member`) says of referrals: its own
/// code, unless another member has it already (the first keeps it), and the referrer's
/// code it names. The own code, when this member took it: dues may wait for it.
pub(super) fn index(
    tx: &Connection,
    t: &TypedFact,
    member: &str,
    fact: i64,
) -> Result<Option<String>, StoreError> {
    if let Some(code) = &t.referred_by {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO referred (friend, code, fact) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![member, code, fact])?;
    }
    let Some(code) = &t.code else {
        return Ok(None);
    };
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
        return Ok(None);
    }
    Ok(Some(code.clone()))
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
pub(super) fn settle_pending(
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
        let Some(event) = ["register", "first_purchase"]
            .into_iter()
            .find(|e| *e == event)
        else {
            return Err(StoreError::Corrupt(format!("due {fact}: event {event}")));
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
        let held = open_claim_holds(tx, &referrer, &key, now, "")?;
        let taken = counted_claims(tx, &referrer, &key)?
            .net
            .saturating_add(held);
        // The code the friend registered with, under any of the person's ids.
        let friend_root = root(tx, &friend)?;
        let registered: Vec<String> = tx
            .prepare_cached(
                "SELECT code FROM referred WHERE friend IN (?1, ?2)
                 UNION SELECT r.code FROM referred r JOIN member_aliases a ON a.loser = r.friend
                  WHERE a.survivor = ?2",
            )?
            .query_map(params![friend, friend_root], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        let referred = registered.iter().any(|c| c == code);
        let outcome = settle(points, &friend_root, Some(&referrer), referred, taken);
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

    /// Member `member` registered under phone index `phone` with their own `code`, and
    /// the code of the member who referred them.
    fn registration(t: &TestHub, member: &str, phone: u8, code: &str, by: Option<&str>) -> String {
        use base64::Engine;
        let idx = base64::engine::general_purpose::STANDARD.encode([phone; 32]);
        serde_json::json!({
            "kind": "member_registered", "at": t.time(), "member": member,
            "txn": uuid::Uuid::now_v7().to_string(),
            "body": {"phone_idx": idx, "referral_code": code, "referrer_code": by},
        })
        .to_string()
    }

    fn due(t: &TestHub, friend: &str, code: &str, event: &str, points: i64) -> String {
        due_until(t, friend, code, event, points, EXPIRES)
    }

    fn due_until(
        t: &TestHub,
        friend: &str,
        code: &str,
        event: &str,
        points: i64,
        expires_at: i64,
    ) -> String {
        serde_json::json!({
            "kind": "referral_due", "at": t.time(), "member": friend,
            "txn": uuid::Uuid::now_v7().to_string(),
            "body": {"code": code, "event": event, "points": points, "expires_at": expires_at},
        })
        .to_string()
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

    #[test]
    fn a_due_credits_the_referrer_at_another_store_once_per_friend_and_event() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, friend) = (id(1), id(2));
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA", None));
        t.push_fact(
            1,
            registration(&t, &friend, 2, "S002-BBBBBB", Some("S001-AAAAAA")),
        );
        t.push_fact(1, due(&t, &friend, "s001-aaaaaa", "register", 100));
        assert_eq!(t.balance(&referrer), 100);
        assert_eq!(t.balance(&friend), 0, "the friend earns nothing from it");
        // The store holding the referrer receives the claim and the points.
        assert_eq!(t.streamed("S001"), ["claim", "referral_reward"]);
        // The same referral again (a store that thought it new, or a retry written as a
        // new fact) is not paid twice; the first purchase is another event.
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "register", 100));
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "first_purchase", 50));
        assert_eq!(t.balance(&referrer), 150);
        // A second member of S001 with a code of their own: the friend did not register
        // with it, so a store naming it as the referrer's is paid nothing.
        let (other, stranger) = (id(3), id(4));
        t.push_fact(0, registration(&t, &other, 5, "S001-CCCCCC", None));
        t.push_fact(1, due(&t, &friend, "S001-CCCCCC", "register", 100));
        // Nor is a member who registered with no code at all.
        t.push_fact(1, registration(&t, &stranger, 6, "S002-DDDDDD", None));
        t.push_fact(1, due(&t, &stranger, "S001-AAAAAA", "register", 100));
        assert_eq!((t.balance(&referrer), t.balance(&other)), (150, 0));
        assert_eq!(
            outcomes(&t),
            [
                "credited",
                "already_credited",
                "credited",
                "not_referred",
                "not_referred"
            ],
            "one credit per friend and event, only under the friend's code"
        );
    }

    #[test]
    fn a_due_waits_for_its_code_and_a_store_s_own_credit_counts() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, friend, other) = (id(1), id(2), id(3));
        // The friend's store syncs before the referrer's registration reaches the hub.
        t.push_fact(
            1,
            registration(&t, &friend, 2, "S002-BBBBBB", Some("S001-AAAAAA")),
        );
        t.push_fact(1, due(&t, &friend, "S001-AAAAAA", "register", 100));
        assert_eq!(outcomes(&t), ["pending"]);
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA", None));
        assert_eq!(outcomes(&t), ["credited"]);
        assert_eq!(t.balance(&referrer), 100);
        // A store that holds the referrer credited another friend itself (its claim,
        // counted here): a due for that referral later is not paid again.
        t.push_fact(
            1,
            registration(&t, &other, 3, "S002-CCCCCC", Some("S001-AAAAAA")),
        );
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
        assert_eq!(t.balance(&referrer), 100);
    }

    #[test]
    fn a_friend_under_the_referrer_s_phone_earns_nothing_and_bad_dues_are_quarantined() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        let (referrer, twin) = (id(1), id(2));
        t.push_fact(0, registration(&t, &referrer, 1, "S001-AAAAAA", None));
        // Registered again at S002 under the same phone: merged into the referrer.
        t.push_fact(
            1,
            registration(&t, &twin, 1, "S002-BBBBBB", Some("S001-AAAAAA")),
        );
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "register", 100));
        assert_eq!(outcomes(&t), ["self_referral"]);
        assert_eq!(t.balance(&referrer), 0);
        // A due the hub cannot settle is set aside, not the store's push: an unknown
        // event, points past the hub's limit for one fact, points that never expire or
        // are dead on arrival.
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "birthday", 100));
        t.push_fact(1, due(&t, &twin, "S001-AAAAAA", "register", 100_001));
        let now = t.time();
        t.push_fact(1, due_until(&t, &twin, "S001-AAAAAA", "register", 100, now));
        let forever = now + 3_661 * 86_400_000;
        t.push_fact(
            1,
            due_until(&t, &twin, "S001-AAAAAA", "register", 100, forever),
        );
        let quarantined = t.hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(quarantined.len(), 4, "{quarantined:?}");
        assert!(
            quarantined
                .iter()
                .all(|q| q.reason == crate::ingest::DUE_NOT_SETTLEABLE),
            "{quarantined:?}"
        );
        assert_eq!(outcomes(&t).len(), 1);
    }
}
