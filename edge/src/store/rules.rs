//! Loaded rule-set versions and how often limited rules were used.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A stored rule-set version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetRow {
    /// Version id.
    pub version: String,
    /// The JSON as loaded.
    pub body: String,
    /// When it was loaded (ms).
    pub loaded_at: i64,
}

fn rule_set_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RuleSetRow> {
    Ok(RuleSetRow {
        version: r.get(0)?,
        body: r.get(1)?,
        loaded_at: r.get(2)?,
    })
}

/// The rule set in force: the one loaded last.
pub fn current(conn: &Connection) -> Result<Option<RuleSetRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version, body, loaded_at FROM rule_sets ORDER BY seq DESC LIMIT 1",
            [],
            rule_set_row,
        )
        .optional()?)
}

/// A version, if it was ever loaded.
pub fn get(conn: &Connection, version: &str) -> Result<Option<RuleSetRow>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT version, body, loaded_at FROM rule_sets WHERE version = ?1",
            params![version],
            rule_set_row,
        )
        .optional()?)
}

/// Stores a new version and puts it in force.
pub fn insert(conn: &Connection, row: &RuleSetRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO rule_sets (version, body, loaded_at, seq) VALUES (?1, ?2, ?3, (SELECT coalesce(max(seq), 0) + 1 FROM rule_sets))",
        params![row.version, row.body, row.loaded_at],
    )?;
    Ok(())
}

/// Makes an already loaded version the one in force again (a rollback).
pub fn reactivate(conn: &Connection, version: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE rule_sets SET seq = (SELECT max(seq) + 1 FROM rule_sets) WHERE version = ?1",
        params![version],
    )?;
    Ok(())
}

const STORE_WIDE: &[u8] = &[];

/// `(uses, amount)` of a rule by one member (or store-wide with `member = None`).
pub fn usage(
    conn: &Connection,
    rule_id: &str,
    member: Option<&[u8; 16]>,
) -> Result<(u32, i64), StoreError> {
    let m: &[u8] = member.map_or(STORE_WIDE, |m| &m[..]);
    Ok(conn
        .prepare_cached("SELECT uses, amount FROM rule_usage WHERE rule_id = ?1 AND member = ?2")?
        .query_row(params![rule_id, m], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

/// Records one application of a rule giving `amount` fen, for the member and store-wide.
pub fn record_use(
    conn: &Connection,
    rule_id: &str,
    member: Option<&[u8; 16]>,
    amount: i64,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO rule_usage (rule_id, member, uses, amount) VALUES (?1, ?2, 1, ?3)
         ON CONFLICT (rule_id, member) DO UPDATE SET uses = uses + 1, amount = amount + excluded.amount",
    )?;
    stmt.execute(params![rule_id, STORE_WIDE, amount])?;
    if let Some(m) = member {
        stmt.execute(params![rule_id, &m[..], amount])?;
    }
    Ok(())
}
