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
}

const COLUMNS: &str = "coupon_id, code, member, label, off, min_spend, issued_at, expires_at, source, source_txn, active, used_txn, revoked";

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
    })
}

/// Inserts a coupon; `Ok(false)` if its code is taken (the caller draws another).
pub fn insert(conn: &Connection, c: &CouponRow) -> Result<bool, StoreError> {
    let n = conn.prepare_cached(&format!(
        "INSERT INTO coupons ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (code) DO NOTHING"
    ))?
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
            c.revoked
        ])?;
    Ok(n == 1)
}

/// The coupon with this code.
pub fn by_code(conn: &Connection, code: &str) -> Result<Option<CouponRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM coupons WHERE code = ?1"))?
        .query_row(params![code], from_row)
        .optional()?)
}

/// A member's coupons, newest first.
pub fn for_member(conn: &Connection, member: &[u8; 16]) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM coupons WHERE member = ?1 ORDER BY issued_at DESC, coupon_id"
    ))?;
    let rows = stmt.query_map(params![&member[..]], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Marks a coupon used by `txn`; `false` if it was used already (the single-use guard).
pub fn mark_used(conn: &Connection, coupon: &[u8; 16], txn: &[u8; 16]) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE coupons SET used_txn = ?2 WHERE coupon_id = ?1 AND used_txn IS NULL",
        )?
        .execute(params![&coupon[..], &txn[..]])?;
    Ok(n == 1)
}

/// Activates a claim-first coupon; `false` if it was not found inactive.
pub fn activate(conn: &Connection, coupon: &[u8; 16]) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("UPDATE coupons SET active = 1 WHERE coupon_id = ?1 AND active = 0")?
        .execute(params![&coupon[..]])?;
    Ok(n == 1)
}

/// Coupons a sale used (to restore on a full refund).
pub fn used_by(conn: &Connection, txn: &[u8; 16]) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM coupons WHERE used_txn = ?1"
    ))?;
    let rows = stmt.query_map(params![&txn[..]], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Coupons a sale granted (to revoke on a full refund if unused).
pub fn granted_by(conn: &Connection, txn: &[u8; 16]) -> Result<Vec<CouponRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM coupons WHERE source_txn = ?1"
    ))?;
    let rows = stmt.query_map(params![&txn[..]], from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Makes a used coupon usable again.
pub fn restore(conn: &Connection, coupon: &[u8; 16]) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE coupons SET used_txn = NULL WHERE coupon_id = ?1")?
        .execute(params![&coupon[..]])?;
    Ok(())
}

/// Withdraws a coupon: it can never be used, or restored to use, again.
pub fn revoke(conn: &Connection, coupon: &[u8; 16]) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE coupons SET revoked = 1 WHERE coupon_id = ?1")?
        .execute(params![&coupon[..]])?;
    Ok(())
}
