//! Incarnations: a database restored from an older copy must not hand out sequence
//! numbers the hub already holds under other facts.
//!
//! The sync worker records, beside the database, the highest own sequence the hub has
//! acknowledged (`sync-state.json`, written atomically after each acknowledgement). At
//! open, a database whose own facts end before that point — or whose incarnation is
//! older than the recorded one — was restored from an older copy: it gets a new
//! incarnation (sequences start again at 1 under a new origin id), and remembers to
//! fetch back from the hub what the old incarnation had beyond its end.

use std::io::Write;
use std::path::Path;

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{OwnOrigin, StoreError, facts, meta_get, meta_set};

/// The file beside the database.
pub const SYNC_STATE_FILE: &str = "sync-state.json";

/// `meta` key of a pending refetch (JSON [`Refetch`]).
pub const REFETCH_KEY: &str = "refetch";

/// What the hub acknowledged, as last recorded outside the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The incarnation the acknowledgement is for.
    pub incarnation: Uuid,
    /// Highest own sequence the hub holds.
    pub acked: i64,
}

/// Facts of an old incarnation to fetch back from the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refetch {
    /// The old origin's row id here.
    pub origin_id: i64,
    /// Its incarnation.
    pub incarnation: Uuid,
    /// The last sequence this database holds of it.
    pub after: i64,
    /// What the hub held at least, when last recorded.
    pub upto: i64,
}

/// Records `state` atomically (temp file, fsync, rename).
pub fn record(data_dir: &Path, state: &SyncState) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{SYNC_STATE_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(state).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, data_dir.join(SYNC_STATE_FILE))?;
    // The rename itself must survive a power cut.
    std::fs::File::open(data_dir)?.sync_all()?;
    Ok(())
}

fn load(data_dir: &Path) -> Result<Option<SyncState>, StoreError> {
    match std::fs::read(data_dir.join(SYNC_STATE_FILE)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("{SYNC_STATE_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Starts a new incarnation if this database was restored from an older copy;
/// returns the origin to write under.
pub fn check(
    conn: &Connection,
    data_dir: &Path,
    current: OwnOrigin,
) -> Result<OwnOrigin, StoreError> {
    let Some(state) = load(data_dir)? else {
        return Ok(current);
    };
    let recorded: Option<i64> = conn
        .query_row(
            "SELECT id FROM origins WHERE node = ?1 AND incarnation = ?2",
            params![current.node, state.incarnation.to_string()],
            |r| r.get(0),
        )
        .ok();
    let (restored, old_id) = match recorded {
        // The recorded incarnation is the current one: restored if its facts end early.
        Some(id) if id == current.id => (facts::last_seq(conn, id)? < state.acked, id),
        // Known but not current: this database already moved on to a newer incarnation
        // (the record is from before the switch); nothing to do again.
        Some(id) => (false, id),
        // Never heard of it: the copy is older than that incarnation.
        None => (true, 0),
    };
    if !restored {
        return Ok(current);
    }
    // One transaction: a crash half-way must not leave a new origin without its refetch.
    let tx = conn.unchecked_transaction()?;
    let conn = &*tx;
    let incarnation = Uuid::now_v7();
    conn.execute(
        "INSERT INTO origins (node, incarnation) VALUES (?1, ?2)",
        params![current.node, incarnation.to_string()],
    )?;
    let id = conn.last_insert_rowid();
    meta_set(conn, "origin_id", &id.to_string())?;
    // The old incarnation's facts beyond this copy's end are at the hub: fetch them.
    let old_id = if old_id == 0 {
        conn.execute(
            "INSERT INTO origins (node, incarnation) VALUES (?1, ?2)",
            params![current.node, state.incarnation.to_string()],
        )?;
        conn.last_insert_rowid()
    } else {
        old_id
    };
    let refetch = Refetch {
        origin_id: old_id,
        incarnation: state.incarnation,
        after: facts::last_seq(conn, old_id)?,
        upto: state.acked,
    };
    meta_set(
        conn,
        REFETCH_KEY,
        &serde_json::to_string(&refetch).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    )?;
    tx.commit()?;
    tracing::warn!(
        old = %state.incarnation,
        new = %incarnation,
        held_here = refetch.after,
        hub_held = state.acked,
        "this database was restored from an older copy: new incarnation started"
    );
    Ok(OwnOrigin {
        id,
        node: current.node,
        incarnation,
    })
}

/// The pending refetch, if any.
pub fn pending_refetch(conn: &Connection) -> Result<Option<Refetch>, StoreError> {
    match meta_get(conn, REFETCH_KEY)? {
        Some(v) => serde_json::from_str(&v)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("meta.refetch: {e}"))),
        None => Ok(None),
    }
}
