//! POS lanes and cashiers, each with a bearer token stored only as its SHA-256 hash.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A registered lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneRow {
    /// Row id; scopes idempotency keys.
    pub id: i64,
    /// Human name, unique.
    pub name: String,
    /// `pos`, `cashier` or `admin`.
    pub role: String,
}

/// Adds a lane; fails if the name is taken.
pub fn insert(
    conn: &Connection,
    name: &str,
    role: &str,
    token_hash: &[u8; 32],
    at: i64,
) -> Result<i64, StoreError> {
    conn.execute(
        "INSERT INTO lanes (name, role, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![name, role, &token_hash[..], at],
    )?;
    Ok(conn.last_insert_rowid())
}

/// The active lane whose token hashes to `token_hash`.
pub fn by_token_hash(
    conn: &Connection,
    token_hash: &[u8; 32],
) -> Result<Option<LaneRow>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, name, role FROM lanes WHERE token_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row(params![&token_hash[..]], |r| {
            Ok(LaneRow {
                id: r.get(0)?,
                name: r.get(1)?,
                role: r.get(2)?,
            })
        })
        .optional()?)
}

/// Whether a lane of this name exists.
pub fn name_taken(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .query_row("SELECT 1 FROM lanes WHERE name = ?1", params![name], |_| {
            Ok(())
        })
        .optional()?
        .is_some())
}

/// Revokes the lane named `name`; `false` if there is no such active lane.
pub fn revoke(conn: &Connection, name: &str, at: i64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE lanes SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
        params![name, at],
    )?;
    Ok(n == 1)
}
