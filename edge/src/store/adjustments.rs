//! Manual points adjustments asked for at this store, and their decisions. The rules
//! (who may decide, what waits) are `patron_domain::adjustment`'s.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// An adjustment as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentRow {
    /// Its id: the adjustment fact's transaction once applied.
    pub id: [u8; 16],
    /// The member.
    pub member: [u8; 16],
    /// Points added (> 0) or taken (< 0).
    pub points: i64,
    /// The reason code.
    pub reason: String,
    /// A ticket or receipt number.
    pub reference: Option<String>,
    /// The lane that asked.
    pub maker_lane: i64,
    /// Its name, as the fact records it.
    pub maker_name: String,
    /// `pending`, `applied` or `rejected`.
    pub status: String,
    /// The manager's lane that decided.
    pub checker_lane: Option<i64>,
    /// Its name.
    pub checker_name: Option<String>,
    /// When it was asked for.
    pub created_at: i64,
    /// When it was decided (or applied at once).
    pub decided_at: Option<i64>,
}

const COLUMNS: &str = "id, member, points, reason, reference, maker_lane, maker_name, status, checker_lane, checker_name, created_at, decided_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AdjustmentRow> {
    Ok(AdjustmentRow {
        id: r.get(0)?,
        member: r.get(1)?,
        points: r.get(2)?,
        reason: r.get(3)?,
        reference: r.get(4)?,
        maker_lane: r.get(5)?,
        maker_name: r.get(6)?,
        status: r.get(7)?,
        checker_lane: r.get(8)?,
        checker_name: r.get(9)?,
        created_at: r.get(10)?,
        decided_at: r.get(11)?,
    })
}

/// Records an adjustment.
pub fn insert(conn: &Connection, a: &AdjustmentRow) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO adjustments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        &a.id[..],
        &a.member[..],
        a.points,
        a.reason,
        a.reference,
        a.maker_lane,
        a.maker_name,
        a.status,
        a.checker_lane,
        a.checker_name,
        a.created_at,
        a.decided_at
    ])?;
    Ok(())
}

/// The adjustment with this id.
pub fn get(conn: &Connection, id: &[u8; 16]) -> Result<Option<AdjustmentRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM adjustments WHERE id = ?1"))?
        .query_row(params![&id[..]], row)
        .optional()?)
}

/// Adjustments waiting for a decision, oldest first, at most `max`.
pub fn pending(conn: &Connection, max: usize) -> Result<Vec<AdjustmentRow>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM adjustments WHERE status = 'pending' ORDER BY created_at LIMIT ?1"
        ))?
        .query_map(params![max as i64], row)?
        .collect::<rusqlite::Result<_>>()?)
}

/// Decides a pending adjustment; false if it was not pending (decided meanwhile).
pub fn decide(
    conn: &Connection,
    id: &[u8; 16],
    status: &str,
    checker: (i64, &str),
    at: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE adjustments SET status = ?2, checker_lane = ?3, checker_name = ?4, decided_at = ?5
              WHERE id = ?1 AND status = 'pending'",
        )?
        .execute(params![&id[..], status, checker.0, checker.1, at])?;
    Ok(n == 1)
}

/// Points lane `lane` moved (either way) by adjustments applied without approval since
/// `since`.
pub fn unapproved_since(conn: &Connection, lane: i64, since: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(abs(points)), 0) FROM adjustments
              WHERE maker_lane = ?1 AND status = 'applied' AND checker_lane IS NULL
                AND created_at >= ?2",
        )?
        .query_row(params![lane, since], |r| r.get(0))?)
}
