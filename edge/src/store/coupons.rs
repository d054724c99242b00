//! Coupons held by members.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A coupon row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CouponRow {
    /// Coupon id (UUIDv7 bytes).
    pub coupon_id: [u8; 16],
    /// The code the POS sends.
    pub code: String,
    /// Holder.
    pub member: [u8; 16],
    /// Display label.
    pub label: String,
    /// Value in fen.
    pub off: i64,
    /// Smallest amount due it applies to.
    pub min_spend: i64,
    /// Issue time (ms).
    pub issued_at: i64,
    /// Last usable instant (ms).
    pub expires_at: i64,
    /// Rule id, `manual` or `upgrade:<tier>`.
    pub source: String,
    /// The sale that granted it.
    pub source_txn: Option<[u8; 16]>,
    /// Usable (claimed, or auto-active).
    pub active: bool,
    /// The sale that used it.
    pub used_txn: Option<[u8; 16]>,
    /// Withdrawn (its granting sale was refunded before use).
    pub revoked: bool,
    /// The store that issued it (`None`: this store). Offline, only the issuing store
    /// may take it (docs/claims.md).
    pub store: Option<String>,
    /// The stores it may be used at (empty: any store of the chain).
    pub stores: Vec<String>,
}

/// The column list, as a macro so statements are built at compile time: a `format!`
/// per call cost an allocation on the writer's hot path.
macro_rules! coupon_columns {
    () => {
        "coupon_id, code, member, label, off, min_spend, issued_at, expires_at, source, source_txn, active, used_txn, revoked, store, stores"
    };
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CouponRow> {
    Ok(CouponRow {
        coupon_id: r.get(0)?,
        code: r.get(1)?,
        member: r.get(2)?,
        label: r.get(3)?,
        off: r.get(4)?,
        min_spend: r.get(5)?,
        issued_at: r.get(6)?,
        expires_at: r.get(7)?,
        source: r.get(8)?,
        source_txn: r.get(9)?,
        active: r.get(10)?,
        used_txn: r.get(11)?,
        revoked: r.get(12)?,
        store: r.get(13)?,
        stores: r
            .get::<_, Option<String>>(14)?
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    })
}

/// Inserts a coupon; `Ok(false)` if its code is taken (the caller draws another).
pub fn insert(conn: &Connection, c: &CouponRow) -> Result<bool, StoreError> {
    let n = conn.prepare_cached(concat!("INSERT INTO coupons (", coupon_columns!(), ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT (code) DO NOTHING"))?
        .execute(params![
            &c.coupon_id[..],
            c.code,
            &c.member[..],
            c.label,
            c.off,
            c.min_spend,
            c.issued_at,
            c.expires_at,
            c.source,
            c.source_txn.as_ref().map(|t| &t[..]),
            c.active,
            c.used_txn.as_ref().map(|t| &t[..]),
            c.revoked,
            c.store,
            (!c.stores.is_empty()).then(|| c.stores.join(","))
        ])?;
    if n == 1 {
        list_for_member(conn, c)?;
    }
    Ok(n == 1)
}

/// Lists `c` beside its member's ledger (`store::ledgers`), dropping the codes of
/// their coupons that were no longer open when `c` was issued.
fn list_for_member(conn: &Connection, c: &CouponRow) -> Result<(), StoreError> {
    let now = c.issued_at;
    super::ledgers::add_coupon(conn, &c.member, &c.code, |code| {
        Ok(by_code(conn, code)?
            .is_some_and(|o| o.used_txn.is_none() && !o.revoked && now <= o.expires_at))
    })
}

/// The coupon with this code.
pub fn by_code(conn: &Connection, code: &str) -> Result<Option<CouponRow>, StoreError> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            coupon_columns!(),
            " FROM coupons WHERE code = ?1"
        ))?
        .query_row(params![code], from_row)
        .optional()?)
}

/// Codes of member `?1`'s coupons that have a `coupon_issued` fact (cashier, HQ and
/// upgrade coupons, and grants of sales recorded before grants moved into the
/// purchase fact), found in the member-ledger index (migration 3).
macro_rules! issued_codes_sql {
    () => {
        concat!(
            "SELECT json_extract(body, '$.code') FROM facts WHERE ",
            crate::store::facts::ledger_where!(),
            " AND kind = 'coupon_issued'"
        )
    };
}

/// Member `?1`'s coupons with a `coupon_issued` fact granted by sale `?2`.
const ISSUED_FOR_SQL: &str = concat!(
    "SELECT ",
    coupon_columns!(),
    " FROM coupons WHERE member = ?1 AND code IN (",
    issued_codes_sql!(),
    ") AND source_txn = ?2"
);

/// Member `?1`'s tier-upgrade coupons not withdrawn (source `upgrade:<tier>`).
const UPGRADE_COUPONS_SQL: &str = concat!(
    "SELECT ",
    coupon_columns!(),
    " FROM coupons WHERE member = ?1 AND code IN (",
    issued_codes_sql!(),
    ") AND source LIKE 'upgrade:%' AND revoked = 0"
);

/// The tier-upgrade coupons of `member` that are not withdrawn.
pub fn upgrade_coupons(conn: &Connection, member: &[u8; 16]) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare_cached(UPGRADE_COUPONS_SQL)?;
    let rows = stmt.query_map(params![&member[..]], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The coupons of the person `member` stands for that may still be open, newest
/// first: the codes kept beside their ledger snapshot (`store::ledgers`), each read
/// by its code. A member with ten years of sales costs what their open coupons cost.
pub fn for_member(conn: &Connection, member: &[u8; 16]) -> Result<Vec<CouponRow>, StoreError> {
    let mut out = Vec::new();
    for code in super::ledgers::coupon_codes(conn, member)? {
        if let Some(c) = by_code(conn, &code)? {
            out.push(c);
        }
    }
    out.sort_by(|a, b| (b.issued_at, a.coupon_id).cmp(&(a.issued_at, b.coupon_id)));
    Ok(out)
}

/// Coupons of `member` that sale `txn` granted and recorded as `coupon_issued` facts
/// (sales recorded before grants moved into the purchase fact; the sale's own record
/// lists the others).
pub fn issued_for(
    conn: &Connection,
    member: &[u8; 16],
    txn: &[u8; 16],
) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare_cached(ISSUED_FOR_SQL)?;
    let rows = stmt.query_map(params![&member[..], &txn[..]], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The coupons of `member` with these codes (codes held by no coupon of the member
/// are skipped).
pub fn by_codes(
    conn: &Connection,
    member: &[u8; 16],
    codes: &[String],
) -> Result<Vec<CouponRow>, StoreError> {
    let mut out = Vec::with_capacity(codes.len());
    for code in codes {
        if let Some(c) = by_code(conn, code)?.filter(|c| c.member == *member) {
            out.push(c);
        }
    }
    Ok(out)
}

/// Every coupon held, oldest first (tests compare whole tables).
#[cfg(test)]
pub fn all(conn: &Connection) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare(concat!(
        "SELECT ",
        coupon_columns!(),
        " FROM coupons ORDER BY issued_at, coupon_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Marks coupon `code` used by `txn`; `false` if it was used already (the single-use
/// guard).
pub fn mark_used(conn: &Connection, code: &str, txn: &[u8; 16]) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE coupons SET used_txn = ?2 WHERE code = ?1 AND used_txn IS NULL")?
        .execute(params![code, &txn[..]])?;
    Ok(n == 1)
}

/// Activates a claim-first coupon; `false` if it was not found inactive.
pub fn activate(conn: &Connection, code: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE coupons SET active = 1 WHERE code = ?1 AND active = 0")?
        .execute(params![code])?;
    Ok(n == 1)
}

/// Makes a used coupon usable again, and lists it for its member again (a used code
/// leaves the member's list when the next coupon is added).
pub fn restore(conn: &Connection, code: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE coupons SET used_txn = NULL WHERE code = ?1")?
        .execute(params![code])?;
    if let Some(c) = by_code(conn, code)? {
        list_for_member(conn, &c)?;
    }
    Ok(())
}

/// Withdraws a coupon: it can never be used, or restored to use, again.
pub fn revoke(conn: &Connection, code: &str) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE coupons SET revoked = 1 WHERE code = ?1")?
        .execute(params![code])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The upgrade to schema 10 keys coupons by code and keeps every column, and a
    /// code stays unique.
    #[test]
    fn the_upgrade_to_schema_10_keeps_coupons_keyed_by_code() {
        use super::super::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..9] {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        let held = CouponRow {
            coupon_id: [7; 16],
            code: "45AXB3D2KT48BW".into(),
            member: [1; 16],
            label: "¥50 off".into(),
            off: 5_000,
            min_spend: 10_000,
            issued_at: 1,
            expires_at: 2,
            source: "g".into(),
            source_txn: Some([2; 16]),
            active: false,
            used_txn: Some([3; 16]),
            revoked: true,
            store: None,
            stores: Vec::new(),
        };
        conn.execute_batch("PRAGMA user_version = 9")
            .unwrap_or_else(|e| panic!("{e}"));
        // As the schema-9 edge wrote it (`insert` of today also keeps the member's list).
        let n = conn.execute(
            "INSERT INTO coupons (coupon_id, code, member, label, off, min_spend, issued_at,
                                  expires_at, source, source_txn, active, used_txn, revoked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                &held.coupon_id[..],
                held.code,
                &held.member[..],
                held.label,
                held.off,
                held.min_spend,
                held.issued_at,
                held.expires_at,
                held.source,
                held.source_txn.as_ref().map(|t| &t[..]),
                held.active,
                held.used_txn.as_ref().map(|t| &t[..]),
                held.revoked
            ],
        );
        assert_eq!(n.ok(), Some(1));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all(&conn).ok(), Some(vec![held.clone()]));
        let again = CouponRow {
            coupon_id: [8; 16],
            ..held.clone()
        };
        assert_eq!(insert(&conn, &again).ok(), Some(false), "the code is taken");
        let plan =
            crate::store::facts::tests::plan_of("SELECT coupon_id FROM coupons WHERE code = ?1");
        assert!(plan.iter().any(|p| p.contains("PRIMARY KEY")), "{plan:?}");
    }

    /// The upgrade to schema 13 lists each member's open coupons beside their ledger,
    /// under the id their merges survive in.
    #[test]
    fn the_upgrade_to_schema_13_keeps_each_members_open_coupons() {
        use super::super::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..12] {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        conn.execute_batch(
            "PRAGMA user_version = 12;
             INSERT INTO member_aliases (loser, survivor) VALUES (zeroblob(16), x'01010101010101010101010101010101');
             INSERT INTO coupons (coupon_id, code, member, label, off, min_spend, issued_at, expires_at,
                                  source, active, used_txn, revoked)
             VALUES (x'01', 'OPEN1', x'01010101010101010101010101010101', 'a', 1, 0, 1, 9, 'r', 1, NULL, 0),
                    (x'02', 'USED1', x'01010101010101010101010101010101', 'a', 1, 0, 1, 9, 'r', 1, x'09', 0),
                    (x'03', 'OPEN0', zeroblob(16), 'a', 1, 0, 2, 9, 'r', 1, NULL, 0),
                    (x'04', 'GONE2', x'02020202020202020202020202020202', 'a', 1, 0, 1, 9, 'r', 1, NULL, 1);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let codes = |m: [u8; 16]| crate::store::ledgers::coupon_codes(&conn, &m).ok();
        assert_eq!(
            codes([1; 16]),
            Some(vec!["OPEN0".to_string(), "OPEN1".to_string()])
        );
        assert_eq!(
            codes([0; 16]),
            codes([1; 16]),
            "the merged id reads the survivor's"
        );
        assert_eq!(codes([2; 16]), Some(Vec::new()));
        // No snapshot was kept: the ledger is derived from the facts when read.
        assert_eq!(crate::store::ledgers::get(&conn, &[1; 16]).ok(), Some(None));
    }

    /// An active ¥5 coupon of member `[1; 16]`, issued at instant `at` (its id too).
    fn coupon(code: &str, at: u8) -> CouponRow {
        CouponRow {
            coupon_id: [at; 16],
            code: code.into(),
            member: [1; 16],
            label: "¥5".into(),
            off: 500,
            min_spend: 0,
            issued_at: i64::from(at),
            expires_at: 9,
            source: "r".into(),
            source_txn: None,
            active: true,
            used_txn: None,
            revoked: false,
            store: None,
            stores: Vec::new(),
        }
    }

    /// A coupon is used by one sale: a second sale marking it (another lane's at the
    /// same moment, or a replay with another transaction) is told it is used; a
    /// refund's restore frees it for one more.
    #[test]
    fn a_coupon_is_marked_used_once_until_a_refund_restores_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(insert(&conn, &coupon("ONCE", 3)).ok(), Some(true));
        let used = |txn: u8| mark_used(&conn, "ONCE", &[txn; 16]).unwrap_or_else(|e| panic!("{e}"));
        assert!(used(1));
        assert!(!used(2), "a second sale");
        assert!(!used(1), "the same sale again");
        let row = by_code(&conn, "ONCE").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(row.and_then(|r| r.used_txn), Some([1; 16]));
        restore(&conn, "ONCE").unwrap_or_else(|e| panic!("{e}"));
        assert!(used(3));
        assert!(!used(4));
    }

    /// A member's list holds their coupons and no other member's, even when a fact
    /// fetched from another store names a code this store also issued.
    #[test]
    fn a_member_lists_the_coupons_their_facts_name_and_only_theirs() {
        use crate::store::facts::{NewFact, insert_at};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(
            "INSERT INTO origins (id, node, incarnation) VALUES (1, 'S001', 'a'), (2, 'S002', 'b')",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (mine, granted) = (coupon("AAA", 1), coupon("BBB", 2));
        for c in [&mine, &granted] {
            assert_eq!(insert(&conn, c).ok(), Some(true));
        }
        let facts = [
            (1, 1, "coupon_issued", [1u8; 16], r#"{"code": "AAA"}"#),
            (
                1,
                2,
                "purchase",
                [1; 16],
                r#"{"coupons_granted": [{"code": "BBB"}]}"#,
            ),
            // Another store's coupon of another member, with the same code as one here.
            (2, 7, "coupon_issued", [2; 16], r#"{"code": "AAA"}"#),
        ];
        for (origin, seq, kind, member, body) in facts {
            let kind = patron_domain::Kind::parse(kind).unwrap_or_else(|| panic!("{kind}"));
            let f = NewFact::new(kind, seq, Some(member), [seq as u8; 16], body.into());
            insert_at(&conn, origin, seq, &f).unwrap_or_else(|e| panic!("{e}"));
        }
        let codes = |m: u8| -> Vec<String> {
            for_member(&conn, &[m; 16])
                .unwrap_or_else(|e| panic!("{e}"))
                .into_iter()
                .map(|c| c.code)
                .collect()
        };
        assert_eq!(codes(1), vec!["BBB".to_string(), "AAA".to_string()]);
        assert!(codes(2).is_empty(), "{:?}", codes(2));
    }

    /// The codes kept beside a member's ledger are the coupons they can still use
    /// (those used, withdrawn or expired go when the next is added), and a merge
    /// brings the merged id's coupons to the survivor.
    #[test]
    fn a_members_coupon_list_keeps_the_open_ones_and_follows_a_merge() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("c.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let coupon = |n: u8, member: u8, expires_at: i64| CouponRow {
            coupon_id: [n; 16],
            code: format!("C{n}"),
            member: [member; 16],
            label: "¥5".into(),
            off: 500,
            min_spend: 0,
            issued_at: i64::from(n) * 10,
            expires_at,
            source: "r".into(),
            source_txn: None,
            active: true,
            used_txn: None,
            revoked: false,
            store: None,
            stores: Vec::new(),
        };
        let add = |c: CouponRow| assert_eq!(insert(&conn, &c).ok(), Some(true));
        add(coupon(1, 1, 1_000));
        add(coupon(2, 1, 15)); // expired by the time coupon 3 is issued (30)
        add(coupon(3, 1, 1_000));
        assert_eq!(mark_used(&conn, "C1", &[9; 16]).ok(), Some(true));
        add(coupon(4, 1, 1_000));
        let kept = crate::store::ledgers::coupon_codes(&conn, &[1; 16]);
        assert_eq!(kept.ok(), Some(vec!["C3".to_string(), "C4".to_string()]));
        // A refund gives the used coupon back: listed again.
        restore(&conn, "C1").unwrap_or_else(|e| panic!("{e}"));
        let kept = crate::store::ledgers::coupon_codes(&conn, &[1; 16]);
        let kept = kept.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(kept, ["C3", "C4", "C1"]);
        add(coupon(5, 2, 1_000));
        crate::store::members::merge(&conn, &[2; 16], &[1; 16]).unwrap_or_else(|e| panic!("{e}"));
        let listed: Vec<String> = for_member(&conn, &[2; 16])
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|c| c.code)
            .collect();
        assert_eq!(
            listed,
            ["C5", "C4", "C3", "C1"],
            "either id lists the person's coupons"
        );
    }

    /// Each lookup of a sale's granted coupons must read that member's index range: a
    /// scan of all coupons on every refund is what the old used_txn query did.
    #[test]
    fn a_sales_granted_coupons_are_found_in_the_ledger_index() {
        let plan = crate::store::facts::tests::plan_of(ISSUED_FOR_SQL);
        assert_eq!(
            plan.iter()
                .filter(|p| p.contains("USING INDEX facts_ledger_by_member"))
                .count(),
            1,
            "{plan:?}"
        );
        assert!(
            !plan
                .iter()
                .any(|p| p.starts_with("SCAN") && !p.contains("VIRTUAL TABLE")),
            "{plan:?}"
        );
    }
}
