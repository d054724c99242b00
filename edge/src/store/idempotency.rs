//! Stored answers to idempotent requests, written in the same transaction as the
//! effect they describe: either both are durable or neither is.
//!
//! The table is an append-only log; [`IdemIndex`] maps `(lane, key)` to a row in memory.
//! Only the writer thread reads or changes the index, and it is rebuilt from the table
//! at start, so after a crash it holds exactly the durable rows. A rolled-back append may
//! leave an entry pointing at a row id that is reused later: every hit is verified
//! against the row's own lane and key.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// How long answers are kept: a POS retries within minutes; a week covers a lane that
/// was offline over a holiday.
pub const RETENTION_MS: i64 = 7 * 24 * 3_600_000;

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredReply {
    /// Keyed hash of the original request.
    pub request_hash: [u8; 32],
    /// HTTP status of the original answer.
    pub status: u16,
    /// The member whose key sealed `response` (answers holding personal data), so that
    /// erasing the member's key erases them too; `None`: sealed under the store key.
    pub member: Option<[u8; 16]>,
    /// The sealed response body.
    pub response: Vec<u8>,
}

/// How often the log is pruned while running.
const PRUNE_EVERY_MS: i64 = 60_000;

/// `(lane, key)` → row id in the log.
type RowMap = HashMap<(i64, String), i64>;

/// In-memory index of the idempotency log.
#[derive(Default)]
pub struct IdemIndex {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rows: RowMap,
    /// `(created_at, id, lane, key)` in append order, for pruning from the front.
    order: VecDeque<(i64, i64, i64, String)>,
    last_prune: i64,
}

impl IdemIndex {
    /// Drops answers older than the retention and indexes the rest.
    pub fn load(conn: &Connection, now: i64) -> Result<IdemIndex, StoreError> {
        conn.execute(
            "DELETE FROM idempotency WHERE created_at < ?1",
            params![now - RETENTION_MS],
        )?;
        let mut stmt =
            conn.prepare("SELECT id, lane, key, created_at FROM idempotency ORDER BY id")?;
        let mut rows = stmt.query([])?;
        let mut inner = Inner {
            last_prune: now,
            ..Inner::default()
        };
        while let Some(r) = rows.next()? {
            let (id, lane, key, at): (i64, i64, String, i64) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            inner.rows.insert((lane, key.clone()), id);
            inner.order.push_back((at, id, lane, key));
        }
        Ok(IdemIndex {
            inner: Mutex::new(inner),
        })
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, StoreError> {
        self.inner
            .lock()
            .map_err(|_| StoreError::Corrupt("idempotency index poisoned".into()))
    }

    /// Whether an answer for `(lane, key)` is indexed (it may yet turn out to have been
    /// rolled back: `get` is the authority).
    pub fn contains(&self, lane: i64, key: &str) -> bool {
        self.lock()
            .map(|i| i.rows.contains_key(&(lane, key.to_string())))
            .unwrap_or(false)
    }

    /// The stored answer for `(lane, key)`, if any.
    pub fn get(
        &self,
        conn: &Connection,
        lane: i64,
        key: &str,
    ) -> Result<Option<StoredReply>, StoreError> {
        let Some(id) = self.lock()?.rows.get(&(lane, key.to_string())).copied() else {
            return Ok(None);
        };
        let row = conn
            .prepare_cached("SELECT lane, key, request_hash, status, member, response FROM idempotency WHERE id = ?1")?
            .query_row(params![id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    StoredReply { request_hash: r.get(2)?, status: r.get(3)?, member: r.get(4)?, response: r.get(5)? },
                ))
            })
            .optional()?;
        match row {
            Some((l, k, reply)) if l == lane && k == key => Ok(Some(reply)),
            // The append this entry pointed at was rolled back.
            _ => {
                self.lock()?.rows.remove(&(lane, key.to_string()));
                Ok(None)
            }
        }
    }

    /// Appends the answer for `(lane, key)` and indexes it; about once a minute also
    /// drops answers older than the retention, from the front of the log.
    pub fn put(
        &self,
        conn: &Connection,
        lane: i64,
        key: &str,
        reply: &StoredReply,
        at: i64,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT INTO idempotency (lane, key, request_hash, status, member, response, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            lane,
            key,
            &reply.request_hash[..],
            reply.status,
            reply.member.as_ref().map(|m| &m[..]),
            reply.response,
            at
        ])?;
        let id = conn.last_insert_rowid();
        let mut inner = self.lock()?;
        inner.rows.insert((lane, key.to_string()), id);
        inner.order.push_back((at, id, lane, key.to_string()));
        if at - inner.last_prune >= PRUNE_EVERY_MS {
            inner.last_prune = at;
            let mut upto = None;
            while inner.order.front().is_some_and(|f| f.0 < at - RETENTION_MS) {
                if let Some((_, old_id, l, k)) = inner.order.pop_front() {
                    if inner.rows.get(&(l, k.clone())) == Some(&old_id) {
                        inner.rows.remove(&(l, k));
                    }
                    upto = Some(old_id);
                }
            }
            if let Some(max) = upto {
                // Ids are in append order: a range delete on the primary key.
                conn.prepare_cached("DELETE FROM idempotency WHERE id <= ?1")?
                    .execute(params![max])?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("i.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        (dir, conn)
    }

    fn reply(b: u8) -> StoredReply {
        StoredReply {
            request_hash: [b; 32],
            status: 201,
            member: None,
            response: vec![b; 8],
        }
    }

    #[test]
    fn answers_survive_a_reload_and_expire_after_retention() {
        let (_d, conn) = db();
        let idx = IdemIndex::load(&conn, 0).unwrap_or_default();
        idx.put(&conn, 1, "old", &reply(1), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        idx.put(&conn, 1, "new", &reply(2), RETENTION_MS)
            .unwrap_or_else(|e| panic!("{e}"));
        let again = IdemIndex::load(&conn, RETENTION_MS + 1).unwrap_or_default();
        assert_eq!(again.get(&conn, 1, "new").ok().flatten(), Some(reply(2)));
        assert_eq!(again.get(&conn, 1, "old").ok().flatten(), None, "pruned");
        assert_eq!(
            again.get(&conn, 2, "new").ok().flatten(),
            None,
            "keys are per lane"
        );
    }

    #[test]
    fn a_running_edge_prunes_old_answers() {
        let (_d, conn) = db();
        let idx = IdemIndex::load(&conn, 0).unwrap_or_default();
        idx.put(&conn, 1, "old", &reply(1), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        idx.put(&conn, 1, "new", &reply(2), RETENTION_MS + PRUNE_EVERY_MS)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idx.get(&conn, 1, "old").ok().flatten(), None);
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM idempotency", [], |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(rows, 1, "the old row is deleted, not only forgotten");
    }

    #[test]
    fn an_entry_for_a_rolled_back_row_is_ignored_even_if_the_id_is_reused() {
        let (_d, conn) = db();
        let idx = IdemIndex::load(&conn, 0).unwrap_or_default();
        conn.execute_batch("BEGIN")
            .unwrap_or_else(|e| panic!("{e}"));
        idx.put(&conn, 1, "lost", &reply(1), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("ROLLBACK")
            .unwrap_or_else(|e| panic!("{e}"));
        idx.put(&conn, 1, "kept", &reply(2), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(idx.get(&conn, 1, "lost").ok().flatten(), None);
        assert_eq!(idx.get(&conn, 1, "kept").ok().flatten(), Some(reply(2)));
    }
}
