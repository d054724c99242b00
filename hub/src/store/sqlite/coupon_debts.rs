//! Coupons used more than once, settled in the ingest transaction. A coupon is single
//! use across the chain (a claim of `coupon:<id>`, limit 1), but two stores that could
//! not reach the hub may each take it. Once both uses are held here, the member owes
//! the coupon's face value at the chain's redeem rate: the hub writes its own
//! `adjustment` fact (reason `coupon_reused`) taking those points, streamed to every
//! store holding the member, so every replica derives the same balance and debt
//! (`docs/claims.md`, "A coupon used twice").

use std::collections::{BTreeMap, BTreeSet};

use patron_domain::adjustment::MAX_POINTS;
use patron_domain::claims::{ClaimFact, coupon_reuses, tally};
use patron_domain::settings::PointsRules;
use patron_domain::{Detail, Entry};
use rusqlite::{Connection, OptionalExtension, params};

use super::{StoreError, append_hub_fact, fan_out_hub_fact};
use crate::ingest::ClaimRow;

/// How far a use's time (the store's clock) may lie outside a hold of the member's
/// coupons (the hub's clock) and still count as made under it.
const CLOCK_MARGIN_MS: i64 = 10 * 60_000;

/// After claim `c` of `store` was counted: if it is a coupon's and the uses of it that
/// stores could make now pass one, writes a debt for each such use not yet charged.
pub(super) fn settle(
    tx: &Connection,
    hub_origin: i64,
    store: &str,
    c: &ClaimRow,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let Some(coupon) = c.key.coupon_id() else {
        return Ok(());
    };
    let member = uuid::Uuid::from_bytes(c.member).to_string();
    let root: String = tx
        .prepare_cached(concat!("SELECT ", root_of!("?1")))?
        .query_row(params![member], |r| r.get(0))?;
    let charged: i64 = tx
        .prepare_cached("SELECT count(*) FROM coupon_debts WHERE coupon = ?1")?
        .query_row(params![coupon], |r| r.get(0))?;
    let Some((off, issuer)) = issued(tx, &root, coupon)? else {
        // Every store that takes a coupon got it from a fact the hub held first; a use
        // of one the hub never saw issued stays in the over-claim report only.
        tracing::warn!(coupon, "a coupon used twice that the hub never saw issued");
        return Ok(());
    };
    let reuses = coupon_reuses(uses_by_store(tx, &root, c, &issuer)?.into_values());
    if reuses <= charged {
        return Ok(());
    }
    let points = rules_in_force(tx, store)?.points_worth(off).min(MAX_POINTS);
    if points == 0 {
        return Ok(());
    }
    let person = uuid::Uuid::parse_str(&root)
        .map_err(|e| StoreError::Corrupt(format!("member id {root}: {e}")))?;
    for nth in charged + 1..=reuses {
        let entry = crate::ingest::coupon_debt_fact(person, coupon, points, now)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let pos = append_hub_fact(tx, hub_origin, &entry, now)?;
        tx.prepare_cached(
            "INSERT INTO coupon_debts (coupon, nth, member, points, fact, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![coupon, nth, root, points, pos, now])?;
        fan_out_hub_fact(tx, person.as_bytes(), pos, streamed)?;
        tracing::info!(
            coupon,
            nth,
            points,
            "a coupon used again: its member owes its value"
        );
    }
    Ok(())
}

/// Per store, whether it could take the coupon (the hub granted one of its uses, it
/// issued the coupon, or it held the member's coupons when it used it) and its net
/// uses, from the claim facts of the coupon's counter held, over every id of the person.
fn uses_by_store(
    tx: &Connection,
    root: &str,
    c: &ClaimRow,
    issuer: &str,
) -> Result<BTreeMap<String, (bool, i64)>, StoreError> {
    let rows: Vec<(String, i64, i64, i64, Vec<u8>)> = tx
        .prepare_cached(
            concat!("SELECT c.store, c.at, c.units, c.cap, f.txn FROM claims c JOIN facts f ON f.id = c.fact
              WHERE c.member IN ", person_ids!("?1"), "
                AND c.entitlement = ?2 AND c.period = ?3"),
        )?
        .query_map(params![root, c.key.entitlement, c.key.period], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut facts: BTreeMap<String, Vec<ClaimFact<String>>> = BTreeMap::new();
    let mut entitled: BTreeMap<String, bool> = BTreeMap::new();
    for (store, at, units, cap, txn) in rows {
        let may = store == issuer
            || (units > 0 && (granted(tx, &txn, &store)? || held(tx, root, &store, at)?));
        *entitled.entry(store.clone()).or_default() |= may;
        facts.entry(store.clone()).or_default().push(ClaimFact {
            store,
            at,
            units,
            limit: u32::try_from(cap).unwrap_or(u32::MAX),
        });
    }
    Ok(facts
        .into_iter()
        .map(|(store, f)| {
            let may = entitled.get(&store).copied().unwrap_or(false);
            (store, (may, tally(f).net))
        })
        .collect())
}

/// Whether the hub granted claim `txn` (16 bytes) to `store`.
fn granted(tx: &Connection, txn: &[u8], store: &str) -> Result<bool, StoreError> {
    let Ok(id) = uuid::Uuid::from_slice(txn) else {
        return Ok(false);
    };
    Ok(tx
        .prepare_cached("SELECT 1 FROM coupon_grants WHERE claim = ?1 AND store = ?2")?
        .query_row(params![id.to_string(), store], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether `store` held the person's coupons at `at` (within the clocks' margin).
fn held(tx: &Connection, root: &str, store: &str, at: i64) -> Result<bool, StoreError> {
    Ok(tx
        .prepare_cached(
            "SELECT 1 FROM coupon_lease_log
              WHERE member IN (SELECT ?1 UNION ALL
                               SELECT loser FROM member_aliases WHERE survivor = ?1)
                AND store = ?2 AND since <= ?3 + ?4 AND until >= ?3 - ?4
              LIMIT 1",
        )?
        .query_row(params![root, store, at, CLOCK_MARGIN_MS], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The face value (`off`, fen) of coupon `coupon` (hex id) of the person `root`, and
/// the store that issued it, from the fact that did: a `coupon_issued` fact, or the
/// sale that granted it. A held fact that does not parse is skipped (logged): one bad
/// fact must not stop a store's sync.
fn issued(tx: &Connection, root: &str, coupon: &str) -> Result<Option<(i64, String)>, StoreError> {
    let mut stmt = tx.prepare_cached(concat!(
        "SELECT f.id, f.body, o.node FROM facts f JOIN origins o ON o.id = f.origin
          WHERE f.member IN ",
        person_ids!("?1"),
        "
            AND f.kind IN ('coupon_issued', 'purchase') AND f.quarantine IS NULL
          ORDER BY f.id"
    ))?;
    let rows = stmt
        .query_map(params![root], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, body, node) in rows {
        let e = match Entry::parse(&body) {
            Ok(e) => e,
            Err(why) => {
                tracing::error!(fact = id, %why, "a held fact does not parse");
                continue;
            }
        };
        let off = match &e.detail {
            Detail::CouponIssued(r) => (r.coupon_id == coupon).then_some(r.off),
            Detail::Purchase(s) => s
                .coupons_granted
                .iter()
                .find(|r| r.coupon_id == coupon)
                .map(|r| r.off),
            _ => None,
        };
        if let Some(off) = off {
            return Ok(Some((off, node)));
        }
    }
    Ok(None)
}

/// The points settings HQ published for `store`'s ring, else for every store, else the
/// defaults: what the store itself holds in force (`Edge::adopt_hq_docs`). A document
/// or setting that does not read is passed over (logged): the defaults then apply.
fn rules_in_force(tx: &Connection, store: &str) -> Result<PointsRules, StoreError> {
    use patron_sync::docs::{HqDoc, ring_doc};
    let ring: Option<String> = tx
        .prepare_cached("SELECT ring FROM stores WHERE store_id = ?1")?
        .query_row(params![store], |r| r.get(0))
        .optional()?;
    let mut ids: Vec<String> = ring.iter().map(|r| ring_doc(r)).collect();
    ids.push(ring_doc("all"));
    for id in ids {
        let bytes: Option<Vec<u8>> = tx
            .prepare_cached("SELECT bytes FROM docs WHERE doc_id = ?1")?
            .query_row(params![id], |r| r.get(0))
            .optional()?;
        let Some(bytes) = bytes else { continue };
        let json = HqDoc::load(&bytes)
            .map_err(|e| e.to_string())
            .map(|d| d.points_rules());
        match json.and_then(|j| {
            j.map(|j| serde_json::from_str(&j))
                .transpose()
                .map_err(|e| e.to_string())
        }) {
            Ok(Some(rules)) => return Ok(rules),
            Ok(None) => {}
            Err(why) => tracing::error!(doc = %id, %why, "points settings do not read"),
        }
    }
    Ok(PointsRules::default())
}

#[cfg(test)]
mod tests {
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;
    const MEMBER: &str = "0190a000-0000-7000-8000-000000000001";
    const COUPON: &str = "0190a0000000700080000000000000c1";

    fn id(n: u128) -> String {
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
    }

    /// A sale of `MEMBER` earning `earn` points.
    fn sale(t: &TestHub, earn: i64) -> String {
        serde_json::json!({
            "kind": "purchase", "at": t.time(), "member": MEMBER, "txn": id(900 + earn as u128),
            "earn": earn, "expires_at": T0 + 400 * 86_400_000,
            "body": {"receipt_id": "R1", "subtotal": earn * 100, "total": earn * 100},
        })
        .to_string()
    }

    /// Coupon `COUPON`, ¥10 off, given to `MEMBER` at a desk.
    fn issued(t: &TestHub) -> String {
        serde_json::json!({
            "kind": "coupon_issued", "at": t.time(), "member": MEMBER,
            "txn": uuid::Uuid::parse_str(COUPON).map(|u| u.to_string()).unwrap_or_default(),
            "body": {"coupon_id": COUPON, "code": "C-1", "label": "¥10", "off": 1000,
                     "min_spend": 0, "expires_at": T0 + 86_400_000, "source": "manual"},
        })
        .to_string()
    }

    /// A store's use of `COUPON` (claim `n`), or its release.
    fn used(t: &TestHub, n: u128, release: bool) -> String {
        serde_json::json!({
            "kind": "claim", "at": t.time(), "member": MEMBER, "txn": id(n),
            "body": {"entitlement": format!("coupon:{COUPON}"), "period": "once",
                     "limit": 1, "auth": "offline", "release": release},
        })
        .to_string()
    }

    /// Store `i` identifies the member online: it holds their coupons from now.
    fn holds(t: &TestHub, i: usize) {
        t.hub
            .grant_lease(
                &t.rows[i],
                &patron_protocol::hub::LeaseRequest {
                    member: MEMBER.into(),
                    coupons_only: true,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Store `i` asks the hub for use `n` of the coupon: whether it was granted.
    fn hub_grants(t: &TestHub, i: usize, n: u128) -> bool {
        let ask = patron_protocol::hub::ClaimRequest {
            member: MEMBER.into(),
            claim: id(n),
            entitlement: format!("coupon:{COUPON}"),
            period: "once".into(),
            limit: 1,
            unsynced: 0,
        };
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(t.hub.authorize_claim(&t.rows[i], &ask))
            .unwrap_or_else(|e| panic!("{e}"))
            .granted
    }

    fn debts(t: &TestHub) -> Vec<(i64, i64)> {
        let c = rusqlite::Connection::open(t.db_path()).unwrap_or_else(|e| panic!("{e}"));
        let mut st = c
            .prepare("SELECT nth, points FROM coupon_debts ORDER BY nth")
            .unwrap_or_else(|e| panic!("{e}"));
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn each_reuse_of_a_coupon_costs_its_value_once_and_every_holder_hears_of_it() {
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        t.share_member(MEMBER);
        t.push_fact(0, sale(&t, 1_500));
        t.push_fact(0, issued(&t));
        t.push_fact(0, used(&t, 1, false));
        assert!(debts(&t).is_empty(), "one use is the coupon's own");
        assert_eq!(t.balance(MEMBER), 1_500);
        // S002, holding the member's coupons, took it offline too: ¥10 at 100 points a
        // yuan is owed.
        holds(&t, 1);
        t.push_fact(1, used(&t, 2, false));
        assert_eq!(debts(&t), [(1, 1_000)]);
        assert_eq!(t.balance(MEMBER), 500);
        for store in ["S001", "S002", "S003"] {
            assert_eq!(
                t.streamed(store).last().map(String::as_str),
                Some("adjustment"),
                "{store} holds the member"
            );
        }
        // A third store's use, made while it held the coupons, is a second reuse: the
        // balance cannot cover it all, and what it cannot is a debt.
        holds(&t, 2);
        t.push_fact(2, used(&t, 3, false));
        assert_eq!(debts(&t), [(1, 1_000), (2, 1_000)]);
        assert_eq!(t.balance(MEMBER), -500);
        // A rebuild writes nothing again; a refund that gives one use back does not
        // charge anew, and the next earnings repay the debt first.
        t.hub
            .rebuild_projections()
            .unwrap_or_else(|e| panic!("{e}"));
        t.push_fact(2, used(&t, 3, true));
        assert_eq!(debts(&t).len(), 2);
        t.push_fact(1, sale(&t, 700));
        assert_eq!(t.balance(MEMBER), 200);
        // S003 uses it again after its release: its net use is one again, charged
        // already; nothing more is owed.
        t.push_fact(2, used(&t, 4, false));
        assert_eq!(debts(&t).len(), 2, "two reuses, two debts");
    }

    #[test]
    fn the_debt_follows_the_chains_redeem_rate() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        t.hub
            .documents
            .publish_points_rules(
                "all",
                r#"{"earn_points":1,"earn_per_fen":100,"expiry_months":12,
                    "expiring_notice_days":30,"redeem_points":1,"redeem_value_fen":3}"#,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        t.push_fact(0, sale(&t, 1_000));
        t.push_fact(0, issued(&t));
        t.push_fact(0, used(&t, 1, false));
        holds(&t, 1);
        t.push_fact(1, used(&t, 2, false));
        assert_eq!(
            debts(&t),
            [(1, 333)],
            "1000 fen at 1 point per 3 fen, rounded down"
        );
        assert_eq!(t.balance(MEMBER), 667);
    }

    /// Uses by a store that could not take the coupon (it neither issued it, nor held
    /// the member's coupons, nor was granted the use by the hub) are reported, and
    /// charge nobody however many it writes.
    #[test]
    fn a_store_that_could_not_take_the_coupon_charges_nobody() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        t.push_fact(0, sale(&t, 1_500));
        t.push_fact(0, issued(&t));
        for n in 1..=3 {
            t.push_fact(1, used(&t, n, false));
        }
        t.push_fact(0, used(&t, 4, false));
        assert!(debts(&t).is_empty(), "{:?}", debts(&t));
        assert_eq!(t.balance(MEMBER), 1_500);
        let report = t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            report.over_claims.first().map(|o| o.stores.clone()),
            Some(vec!["S001".to_string(), "S002".into()]),
            "{report:?}"
        );
    }

    /// A use the hub granted is one a store could make: with the issuing store's use
    /// offline, the member owes one.
    #[test]
    fn a_use_the_hub_granted_counts() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        t.push_fact(0, sale(&t, 1_500));
        t.push_fact(0, issued(&t));
        assert!(hub_grants(&t, 1, 7));
        t.push_fact(1, used(&t, 7, false).replace("offline", "hub"));
        t.push_fact(0, used(&t, 8, false));
        assert_eq!(debts(&t), [(1, 1_000)]);
    }
}
