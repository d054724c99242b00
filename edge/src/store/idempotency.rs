//! Stored answers to idempotent requests, written in the same transaction as the
//! effect they describe: either both are durable or neither is.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// Keyed hash of the original request.
    pub request_hash: [u8; 32],
    /// HTTP status of the original answer.
    pub status: u16,
    /// The sealed response body.
    pub response: Vec<u8>,
}

/// The stored answer for `(lane, key)`, if any.
pub fn get(conn: &Connection, lane: i64, key: &str) -> Result<Option<StoredReply>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT request_hash, status, response FROM idempotency WHERE lane = ?1 AND key = ?2",
        )?
        .query_row(params![lane, key], |r| {
            Ok(StoredReply {
                request_hash: r.get(0)?,
                status: r.get(1)?,
                response: r.get(2)?,
            })
        })
        .optional()?)
}

/// Stores the answer for `(lane, key)`.
pub fn put(
    conn: &Connection,
    lane: i64,
    key: &str,
    reply: &StoredReply,
    at: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO idempotency (lane, key, request_hash, status, response, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![lane, key, &reply.request_hash[..], reply.status, reply.response, at])?;
    Ok(())
}
