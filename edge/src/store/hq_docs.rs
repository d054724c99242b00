//! HQ documents as received from the hub: automerge bytes and the sync state with the hub.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A stored document: its automerge bytes and the persisted sync state, if any.
pub type Stored = (Vec<u8>, Option<Vec<u8>>);

/// A document's bytes and persisted sync state.
pub fn load(conn: &Connection, doc_id: &str) -> Result<Option<Stored>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT bytes, sync_state FROM hq_docs WHERE doc_id = ?1")?
        .query_row(params![doc_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?)
}

/// Stores a document and its sync state.
pub fn save(conn: &Connection, doc_id: &str, bytes: &[u8], state: &[u8]) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO hq_docs (doc_id, bytes, sync_state) VALUES (?1, ?2, ?3)
         ON CONFLICT (doc_id) DO UPDATE SET bytes = excluded.bytes, sync_state = excluded.sync_state",
    )?
    .execute(params![doc_id, bytes, state])?;
    Ok(())
}
