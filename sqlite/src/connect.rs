//! Opening a connection with the settings every Patron database needs, the same at the
//! edge and the hub: WAL, `synchronous=FULL` (a commit survives power loss), foreign
//! keys on, a bounded WAL file, and a busy timeout. Each binary adds its own tuning
//! (cache size, temp store) after.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// How a connection is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads and writes; creates the file if missing.
    ReadWrite,
    /// Reads only (`query_only`): a reader beside the one writer.
    ReadOnly,
}

/// The WAL file is truncated to this after a checkpoint that emptied it.
pub const JOURNAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens `path` for `access` with the durable settings; waits up to `busy` for another
/// connection's lock.
pub fn open(path: &Path, access: Access, busy: Duration) -> rusqlite::Result<Connection> {
    let flags = match access {
        Access::ReadWrite => {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        }
        Access::ReadOnly => {
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI
        }
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    if access == Access::ReadWrite {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: the WAL is synced at every commit, so an acknowledged commit survives
        // power loss (NORMAL would lose the last ones).
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)?;
    } else {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_is_durable_and_a_reader_cannot_write() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.sqlite");
        let w = open(&path, Access::ReadWrite, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        let get = |c: &Connection, p: &str| -> String {
            c.query_row(&format!("PRAGMA {p}"), [], |r| {
                r.get::<_, rusqlite::types::Value>(0)
            })
            .map(|v| format!("{v:?}"))
            .unwrap_or_default()
        };
        assert_eq!(get(&w, "journal_mode"), "Text(\"wal\")");
        assert_eq!(get(&w, "synchronous"), "Integer(2)", "FULL");
        assert_eq!(get(&w, "foreign_keys"), "Integer(1)");
        w.execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap_or_else(|e| panic!("{e}"));
        let r =
            open(&path, Access::ReadOnly, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
        assert!(r.execute_batch("INSERT INTO t VALUES (1)").is_err());
        assert_eq!(get(&r, "foreign_keys"), "Integer(1)");
    }
}
