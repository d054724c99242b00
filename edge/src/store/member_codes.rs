//! Member codes taken as proof of presence (`member_codes_used`), each once.

use rusqlite::{Connection, params};

use super::StoreError;

/// Records the use of the code `id` (its signature), valid until `expires_at` (ms);
/// false if it was used before. Records of expired codes go (their codes are refused
/// as expired anyway).
pub fn use_once(
    conn: &Connection,
    id: &[u8; 64],
    expires_at: i64,
    now: i64,
) -> Result<bool, StoreError> {
    conn.prepare_cached("DELETE FROM member_codes_used WHERE expires_at < ?1")?
        .execute(params![now])?;
    let n = conn
        .prepare_cached("INSERT OR IGNORE INTO member_codes_used (id, expires_at) VALUES (?1, ?2)")?
        .execute(params![&id[..], expires_at])?;
    Ok(n == 1)
}

/// Whether the code `id` was used (and has not expired since).
pub fn used(conn: &Connection, id: &[u8; 64]) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM member_codes_used WHERE id = ?1")?
        .query_row(params![&id[..]], |r| r.get::<_, i64>(0))?
        > 0)
}
