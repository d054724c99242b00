//! Committed sales by receipt number, and the refunds against them.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::domain::pricing::Line;

/// A committed sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// POS receipt number.
    pub receipt_id: String,
    /// Transaction id (keys the points lot the sale earned).
    pub txn: [u8; 16],
    /// The member, if any.
    pub member: Option<[u8; 16]>,
    /// Sale time (ms).
    pub at: i64,
    /// The purchase fact holding the lines: origin row id.
    pub origin: i64,
    /// The purchase fact's sequence.
    pub seq: i64,
    /// Σ qty × unit_price.
    pub subtotal: i64,
    /// Money paid.
    pub total: i64,
    /// Points earned.
    pub earned: i64,
    /// Points redeemed to pay. Subtotal, total and these leave a sale's catalogue part
    /// out: they are what refunds are proportional to.
    pub redeemed: i64,
    /// The rule-set version it was priced with.
    pub rules_version: Option<String>,
}

/// Inserts a sale; `Ok(false)` if the receipt number was committed already.
pub fn insert(conn: &Connection, r: &ReceiptRow) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO receipts (receipt_id, txn, member, at, origin, seq, subtotal, total, earned, redeemed, rules_version)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (receipt_id) DO NOTHING",
        )?
        .execute(params![
            r.receipt_id,
            &r.txn[..],
            r.member.as_ref().map(|m| &m[..]),
            r.at,
            r.origin,
            r.seq,
            r.subtotal,
            r.total,
            r.earned,
            r.redeemed,
            r.rules_version
        ])?;
    Ok(n == 1)
}

/// The sale with this receipt number.
pub fn get(conn: &Connection, receipt_id: &str) -> Result<Option<ReceiptRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT receipt_id, txn, member, at, origin, seq, subtotal, total, earned, redeemed, rules_version
             FROM receipts WHERE receipt_id = ?1",
        )?
        .query_row(params![receipt_id], |r| {
            Ok(ReceiptRow {
                receipt_id: r.get(0)?,
                txn: r.get(1)?,
                member: r.get(2)?,
                at: r.get(3)?,
                origin: r.get(4)?,
                seq: r.get(5)?,
                subtotal: r.get(6)?,
                total: r.get(7)?,
                earned: r.get(8)?,
                redeemed: r.get(9)?,
                rules_version: r.get(10)?,
            })
        })
        .optional()?)
}

/// What a refund needs of a sale, from its purchase fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleRecord {
    /// The priced lines.
    pub lines: Vec<Line>,
    /// Codes of the coupons the sale used.
    pub coupons_used: Vec<String>,
    /// Codes of the coupons its rules granted (sales recorded before grants moved into
    /// the purchase fact list none: theirs are `coupon_issued` facts).
    pub coupons_granted: Vec<String>,
}

/// The record of sale `r`, from its purchase fact.
pub fn record(conn: &Connection, r: &ReceiptRow) -> Result<SaleRecord, StoreError> {
    let body: String = conn
        .prepare_cached("SELECT body FROM facts WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![r.origin, r.seq], |row| row.get(0))?;
    record_of(&body)
}

/// The record of a sale from its purchase fact's details (`body`).
pub fn record_of(body: &str) -> Result<SaleRecord, StoreError> {
    #[derive(serde::Deserialize)]
    struct Granted {
        code: String,
    }
    #[derive(serde::Deserialize)]
    struct Body {
        lines: Vec<Line>,
        #[serde(default)]
        coupons_used: Vec<String>,
        #[serde(default)]
        coupons_granted: Vec<Granted>,
    }
    let parsed: Body = serde_json::from_str(body)
        .map_err(|e| StoreError::Corrupt(format!("purchase fact body: {e}")))?;
    Ok(SaleRecord {
        lines: parsed.lines,
        coupons_used: parsed.coupons_used,
        coupons_granted: parsed.coupons_granted.into_iter().map(|g| g.code).collect(),
    })
}

/// A refund against a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRow {
    /// Refund id.
    pub refund_id: [u8; 16],
    /// The receipt.
    pub receipt_id: String,
    /// When (ms).
    pub at: i64,
    /// Units refunded per receipt line.
    pub per_line: Vec<i64>,
    /// Gross value of those units.
    pub gross: i64,
    /// Money back.
    pub amount: i64,
    /// Earned points taken back.
    pub points_reversed: i64,
    /// Redeemed points given back.
    pub points_returned: i64,
}

/// Inserts a refund.
pub fn insert_refund(conn: &Connection, r: &RefundRow) -> Result<(), StoreError> {
    let per_line =
        serde_json::to_string(&r.per_line).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO refunds (refund_id, receipt_id, at, per_line, gross, amount, points_reversed, points_returned)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![&r.refund_id[..], r.receipt_id, r.at, per_line, r.gross, r.amount, r.points_reversed, r.points_returned])?;
    Ok(())
}

/// Units already refunded per line, and the gross value refunded so far.
pub fn refunded_so_far(
    conn: &Connection,
    receipt_id: &str,
    n_lines: usize,
) -> Result<(Vec<i64>, i64), StoreError> {
    let mut stmt =
        conn.prepare_cached("SELECT per_line, gross FROM refunds WHERE receipt_id = ?1")?;
    let rows = stmt.query_map(params![receipt_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut units = vec![0i64; n_lines];
    let mut gross = 0i64;
    for row in rows {
        let (per_line, g) = row?;
        let per_line: Vec<i64> = serde_json::from_str(&per_line)
            .map_err(|e| StoreError::Corrupt(format!("refunds.per_line: {e}")))?;
        for (u, n) in units.iter_mut().zip(per_line) {
            *u += n;
        }
        gross += g;
    }
    Ok((units, gross))
}

/// Units of catalogue item `sku` this store gave.
pub fn catalogue_given(conn: &Connection, sku: &str) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT units FROM catalogue_given WHERE sku = ?1")?
        .query_row(params![sku], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Counts `units` more of catalogue item `sku` given.
pub fn give_catalogue(conn: &Connection, sku: &str, units: i64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO catalogue_given (sku, units) VALUES (?1, ?2)
         ON CONFLICT (sku) DO UPDATE SET units = units + excluded.units",
    )?
    .execute(params![sku, units])?;
    Ok(())
}
