//! Claims of limited entitlements held here, one row per claim fact (this store's and
//! the other stores' that came with a member's facts): what a counter stands at, as
//! far as this store knows. The rules are `patron_domain::claims`'.

use patron_domain::claims::{ClaimKey, Known};
use rusqlite::{Connection, params};

use super::StoreError;

/// A claim fact as counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRow {
    /// The fact's origin (this database's id for it).
    pub origin: i64,
    /// The fact's sequence.
    pub seq: i64,
    /// The member the fact names.
    pub member: [u8; 16],
    /// The counter.
    pub key: ClaimKey,
    /// +1, or −1 for a release.
    pub units: i64,
    /// Allowed by the store's offline policy.
    pub offline: bool,
}

/// Counts a claim fact (again: nothing).
pub fn record(conn: &Connection, c: &ClaimRow) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO member_claims (origin, seq, member, entitlement, period, units, offline)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        c.origin,
        c.seq,
        &c.member[..],
        c.key.entitlement,
        c.key.period,
        c.units,
        c.offline
    ])?;
    Ok(())
}

/// What this store knows of the counter of the person with member ids `ids`: net
/// claims (each origin's releases cancel only its own claims), and its own (origin `own`) offline claims after `acked`, the last sequence
/// the hub acknowledged (claims the hub granted it holds already, as holds or facts).
pub fn known(
    conn: &Connection,
    ids: &[[u8; 16]],
    key: &ClaimKey,
    own: i64,
    acked: i64,
) -> Result<Known, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(sum(max(net, 0)), 0), coalesce(sum(offline), 0) FROM (
           SELECT sum(units) AS net,
                  sum(CASE WHEN origin = ?4 AND seq > ?5 AND offline = 1 AND units > 0 THEN 1 ELSE 0 END) AS offline
             FROM member_claims WHERE member = ?1 AND entitlement = ?2 AND period = ?3
            GROUP BY origin)",
    )?;
    let mut known = Known::default();
    for id in ids {
        let (used, offline): (i64, i64) = stmt.query_row(
            params![&id[..], key.entitlement, key.period, own, acked],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        known.used += used;
        known.offline_unsynced += offline;
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upgrade to schema 19 keeps every claim made before claims were facts: each
    /// check-in, share, benefit use, upgrade gift, referral and per-member rule use
    /// counts in the counter it belongs to.
    #[test]
    fn the_upgrade_to_schema_19_keeps_every_earlier_claim() {
        use super::super::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..18] {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        let m = [1u8; 16];
        conn.execute_batch(
            "PRAGMA user_version = 18;
             INSERT INTO event_claims (member, kind, period) VALUES
               (x'01010101010101010101010101010101', 'check_in', '2026-12-01'),
               (x'01010101010101010101010101010101', 'share', '2026-12-01#1'),
               (x'01010101010101010101010101010101', 'share', '2026-12-01#2'),
               (x'01010101010101010101010101010101', 'benefit:dry_cleaning', '2026-12#1'),
               (x'01010101010101010101010101010101', 'profile_completed', 'once'),
               (x'01010101010101010101010101010101', 'upgrade', 'gold'),
               (x'01010101010101010101010101010101', 'referral_first_purchase', '0202');
             INSERT INTO rule_usage (rule_id, member, uses, amount) VALUES
               ('first10', x'', 7, 700), ('first10', x'01010101010101010101010101010101', 2, 200);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let used = |key: ClaimKey| {
            known(&conn, &[m], &key, 1, 0)
                .unwrap_or_else(|e| panic!("{e}"))
                .used
        };
        assert_eq!(used(ClaimKey::check_in("2026-12-01")), 1);
        assert_eq!(used(ClaimKey::share("2026-12-01")), 2);
        assert_eq!(used(ClaimKey::share("2026-12-02")), 0);
        assert_eq!(used(ClaimKey::benefit("dry_cleaning", "2026-12")), 1);
        assert_eq!(used(ClaimKey::profile_completed()), 1);
        assert_eq!(used(ClaimKey::upgrade("gold")), 1);
        assert_eq!(used(ClaimKey::upgrade("silver")), 0);
        assert_eq!(used(ClaimKey::referral("first_purchase", "0202")), 1);
        assert_eq!(used(ClaimKey::rule("first10")), 2);
        let store_wide: i64 = conn
            .query_row(
                "SELECT uses FROM rule_usage WHERE rule_id = 'first10' AND member = x''",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store_wide, 7, "budgets keep counting store-wide");
        let k = known(&conn, &[m], &ClaimKey::check_in("2026-12-01"), 1, 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            k.offline_unsynced, 0,
            "not this origin's: the hub never saw them and they are not sent"
        );
    }

    #[test]
    fn a_counter_sums_every_id_of_the_person_and_sees_its_unsynced_claims() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let key = ClaimKey::share("2026-12-01");
        let row = |origin, seq, member, units, offline| ClaimRow {
            origin,
            seq,
            member,
            key: key.clone(),
            units,
            offline,
        };
        for r in [
            row(1, 5, [1; 16], 1, false),
            row(1, 6, [1; 16], 1, true),
            row(1, 6, [1; 16], 1, true), // the same fact again: counted once
            row(1, 7, [2; 16], 1, true),
            row(2, 3, [2; 16], 1, true), // another store's offline claim
            row(3, 1, [1; 16], -1, false), // another store's release: cancels nothing here
            row(1, 8, [9; 16], 1, true), // someone else's
        ] {
            record(&conn, &r).unwrap_or_else(|e| panic!("{e}"));
        }
        let k = known(&conn, &[[1; 16], [2; 16]], &key, 1, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (k.used, k.offline_unsynced),
            (4, 2),
            "every id's claims; this origin's offline ones after 5"
        );
        record(&conn, &row(1, 9, [1; 16], -1, false)).unwrap_or_else(|e| panic!("{e}"));
        let k = known(&conn, &[[1; 16], [2; 16]], &key, 1, 5).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (k.used, k.offline_unsynced),
            (3, 2),
            "a release lowers what is used"
        );
    }
}
