//! Storage: the store's SQLite file. SQL lives here and nowhere else; no business rules.
//!
//! - one **writer** thread owns the only writing connection and commits requests in
//!   groups ([`writer`]): each request is answered only after the transaction holding
//!   it committed with `synchronous=FULL`, so an acknowledgement survives a power cut;
//! - a small pool of **readers** ([`readers`]) serves lookups and quotes from WAL
//!   snapshots without waiting for the writer;
//! - a **checkpointer** thread folds the WAL back into the database in the background,
//!   so no request pays for a checkpoint inside its commit.

pub mod adjustments;
pub mod claims;
pub mod coupons;
pub mod facts;
pub mod hq_docs;
pub mod idempotency;
pub mod incarnation;
pub mod lane_days;
pub mod lanes;
pub mod ledgers;
pub mod lookups;
pub mod member_codes;
pub mod members;
pub mod migrations;
pub mod readers;
pub mod receipts;
pub mod rules;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use crate::config::StorageConfig;
use patron_sqlite::connect::DbKey;
pub use readers::Readers;
pub use writer::{WriteCtx, Writer};

/// Storage failures. `NotFound` cases are `Option`s in the table modules, not errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer edge.
    #[error(
        "database schema version {found} is newer than this patron-edge supports ({supported}); \
         run the newer patron-edge or restore a backup"
    )]
    SchemaTooNew {
        /// `user_version` in the file.
        found: usize,
        /// The newest this binary knows.
        supported: usize,
    },
    /// The database belongs to another store.
    #[error("database belongs to store {found}, but this edge is configured as {configured}")]
    StoreMismatch {
        /// Store id in the file.
        found: String,
        /// Store id in the configuration.
        configured: String,
    },
    /// The writer thread stopped (the process is shutting down).
    #[error("the writer has stopped")]
    WriterGone,
    /// The commit of a group failed; nothing in it was written.
    #[error("commit failed: {0}")]
    CommitFailed(String),
    /// A stored JSON column did not parse.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// File system.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The database file name inside the data directory.
pub const DB_FILE: &str = "edge.sqlite";

/// How long a connection waits for a lock another holds.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// This node's identity as a fact origin.
#[derive(Debug, Clone)]
pub struct OwnOrigin {
    /// Row id in `origins`.
    pub id: i64,
    /// Store id.
    pub node: String,
    /// Incarnation of this database.
    pub incarnation: Uuid,
}

/// An open store: writer, readers and checkpointer.
pub struct Store {
    /// Group-committing writer.
    pub writer: Writer,
    /// Read-only connections.
    pub readers: Readers,
    /// This database's origin.
    pub origin: OwnOrigin,
    /// Path of the database file.
    pub path: PathBuf,
    /// The key it is encrypted under at rest.
    key: Option<Arc<DbKey>>,
    stop_checkpointer: Arc<AtomicBool>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_checkpointer.store(true, Ordering::Relaxed);
    }
}

/// Opens a connection with the settings every Patron database needs
/// (`patron_sqlite::connect`) and the edge's cache, to a database not encrypted (tests).
pub fn connect(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    connect_keyed(path, read_only, None)
}

/// [`connect`] to a database encrypted at rest under `key`.
pub fn connect_keyed(
    path: &Path,
    read_only: bool,
    key: Option<&DbKey>,
) -> Result<Connection, StoreError> {
    use patron_sqlite::connect::{Access, open_keyed};
    let access = if read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let conn = open_keyed(path, access, BUSY_TIMEOUT, key)?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// A connection to the database in `data_dir` for a command beside a running edge
/// (lanes, audits, tests that inspect a store): under the key derived from the keys in
/// `key_dir` (made there if the store has none and no database exists yet). A
/// database an older edge left in plaintext is opened as it is: only `serve` encrypts
/// one, when no other process has it open.
pub fn connect_at(
    data_dir: &Path,
    key_dir: &Path,
    read_only: bool,
) -> anyhow::Result<(PathBuf, Connection)> {
    let path = data_dir.join(DB_FILE);
    let key_file = key_dir.join(crate::keys::EDGE_KEY_FILE);
    if path.exists() && !key_file.exists() {
        anyhow::bail!(
            "{} is missing: this store's database is encrypted under it; restore it from the key backup",
            key_file.display()
        );
    }
    let key = crate::crypto::Vault::open_or_create(&key_file)?.database_key();
    let plaintext = patron_sqlite::connect::is_plaintext(&path)?;
    let conn = connect_keyed(&path, read_only, (!plaintext).then_some(&key))?;
    Ok((path, conn))
}

/// Brings the schema up to date; refuses a database newer than this binary.
/// Before upgrading an existing database it is copied with `VACUUM INTO`.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    use patron_sqlite::migrate::MigrateError;
    patron_sqlite::migrate::migrate(conn, path, migrations::MIGRATIONS, |tx, found| {
        // Schema 9 keeps each member's profile CRDT: built here, in the same
        // transaction, from the facts the store holds (SQL alone cannot fold them).
        if found > 0 && found < 9 {
            let n = members::rebuild_profiles(tx).map_err(|e| e.to_string())?;
            tracing::info!(members = n, "member profiles rebuilt from their facts");
        }
        Ok(())
    })
    .map_err(|e| match e {
        MigrateError::TooNew { found, supported } => StoreError::SchemaTooNew { found, supported },
        MigrateError::Sqlite(e) => StoreError::from(e),
        other => StoreError::Corrupt(other.to_string()),
    })
}

/// Sets a `meta` value (inside the caller's transaction).
pub fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Removes a `meta` value (inside the caller's transaction).
pub fn meta_delete(conn: &Connection, key: &str) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM meta WHERE key = ?1")?
        .execute(params![key])?;
    Ok(())
}

/// A `meta` value.
pub fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
            r.get(0)
        })
        .optional()?)
}

/// The local id of origin (`node`, `incarnation`), recorded if new (facts fetched from
/// the hub carry other stores' origins).
pub fn origin_id(conn: &Connection, node: &str, incarnation: &str) -> Result<i64, StoreError> {
    conn.prepare_cached(
        "INSERT INTO origins (node, incarnation) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
    )?
    .execute(params![node, incarnation])?;
    Ok(conn
        .prepare_cached("SELECT id FROM origins WHERE node = ?1 AND incarnation = ?2")?
        .query_row(params![node, incarnation], |r| r.get(0))?)
}

/// Establishes (first start) or checks (later starts) which store this database is.
fn ensure_origin(conn: &Connection, store_id: &str) -> Result<OwnOrigin, StoreError> {
    match meta_get(conn, "store_id")? {
        Some(found) if found != store_id => {
            return Err(StoreError::StoreMismatch {
                found,
                configured: store_id.to_string(),
            });
        }
        Some(_) => {}
        None => {
            let incarnation = Uuid::now_v7();
            conn.execute(
                "INSERT INTO origins (node, incarnation) VALUES (?1, ?2)",
                params![store_id, incarnation.to_string()],
            )?;
            let id = conn.last_insert_rowid();
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('store_id', ?1)",
                params![store_id],
            )?;
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('origin_id', ?1)",
                params![id.to_string()],
            )?;
        }
    }
    let id: i64 = meta_get(conn, "origin_id")?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| StoreError::Corrupt("meta.origin_id".into()))?;
    let (node, inc): (String, String) = conn.query_row(
        "SELECT node, incarnation FROM origins WHERE id = ?1",
        params![id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let incarnation =
        Uuid::parse_str(&inc).map_err(|_| StoreError::Corrupt("origins.incarnation".into()))?;
    Ok(OwnOrigin {
        id,
        node,
        incarnation,
    })
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` for `store_id`, not
    /// encrypted (tests).
    pub fn open(data_dir: &Path, store_id: &str, cfg: &StorageConfig) -> Result<Store, StoreError> {
        Store::open_keyed(data_dir, store_id, cfg, None)
    }

    /// Opens (creating if needed) the database in `data_dir` for `store_id`, encrypted
    /// at rest under `key`. A plaintext database an older edge left is encrypted first,
    /// whole, before anything else opens it.
    pub fn open_keyed(
        data_dir: &Path,
        store_id: &str,
        cfg: &StorageConfig,
        key: Option<Arc<DbKey>>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        if let Some(k) = &key {
            if patron_sqlite::connect::is_plaintext(&path)? {
                tracing::info!("encrypting the database at rest (once)");
                patron_sqlite::connect::encrypt_in_place(&path, k)?;
            }
            // The copies older upgrades left (`edge.v<n>.bak`) hold the same data.
            for entry in std::fs::read_dir(data_dir)? {
                let old = entry?.path();
                let name = old.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if name.starts_with("edge.v")
                    && name.ends_with(".bak")
                    && patron_sqlite::connect::is_plaintext(&old)?
                {
                    tracing::info!(file = name, "encrypting an upgrade's backup copy");
                    patron_sqlite::connect::encrypt_in_place(&old, k)?;
                }
            }
        }
        let mut conn = connect_keyed(&path, false, key.as_deref())?;
        migrate(&mut conn, &path)?;
        let origin = ensure_origin(&conn, store_id)?;
        let origin = incarnation::check(&conn, data_dir, origin)?;
        let last_seq = facts::last_seq(&conn, origin.id)?;
        // Checkpoints run on their own thread; a commit never pays for one (the writer
        // turns the automatic checkpoint off).
        // The writer's savepoint journals stay in memory without `temp_store=MEMORY`:
        // each request of a group commit runs in its own savepoint, and the build sets
        // the sub-journal's spill threshold to 512 KiB (`.cargo/config.toml`), kept as one
        // allocation. `temp_store=MEMORY` would instead grow it 1 KiB at a time, and the
        // default 64 KiB threshold spilled a sale that issues a coupon to a temporary
        // file, a pwrite per page. The journal is emptied when each savepoint is released.
        let writer = Writer::spawn(
            conn,
            origin.id,
            last_seq + 1,
            cfg.max_batch,
            cfg.wal_restart_pages,
        )?;
        let readers = Readers::open(&path, cfg.read_connections, key.as_deref())?;
        let stop = Arc::new(AtomicBool::new(false));
        patron_sqlite::wal::spawn_checkpointer(
            connect_keyed(&path, false, key.as_deref())?,
            Duration::from_millis(cfg.checkpoint_interval_ms.max(10)),
            stop.clone(),
        )?;
        Ok(Store {
            writer,
            readers,
            origin,
            path,
            key,
            stop_checkpointer: stop,
        })
    }

    /// Whether the database is encrypted at rest.
    pub fn encrypted(&self) -> bool {
        self.key.is_some()
    }

    /// Another connection to this store's database (under its key).
    pub fn connect(&self, read_only: bool) -> Result<Connection, StoreError> {
        connect_keyed(&self.path, read_only, self.key.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(DB_FILE);
        let mut conn = connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or(-1);
        assert_eq!(v as usize, migrations::SCHEMA_VERSION);
    }

    #[test]
    fn a_newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(DB_FILE);
        let mut conn = connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        conn.pragma_update(None, "user_version", 99)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = migrate(&mut conn, &path).err();
        assert!(
            matches!(err, Some(StoreError::SchemaTooNew { found: 99, .. })),
            "{err:?}"
        );
    }

    /// An older edge's plaintext database is encrypted in place at the first keyed
    /// open, keeping every row.
    #[test]
    fn a_plaintext_database_is_encrypted_once_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = StorageConfig::default();
        let path = dir.path().join(DB_FILE);
        {
            let store = Store::open(dir.path(), "S001", &cfg).unwrap_or_else(|e| panic!("{e}"));
            let c = store.connect(false).unwrap_or_else(|e| panic!("{e}"));
            meta_set(&c, "kept", "yes").unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(patron_sqlite::connect::is_plaintext(&path).unwrap_or(false));
        let key = Arc::new(DbKey::new([3; 32]));
        let store = Store::open_keyed(dir.path(), "S001", &cfg, Some(key.clone()))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!patron_sqlite::connect::is_plaintext(&path).unwrap_or(true));
        let c = store.connect(true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta_get(&c, "kept").ok().flatten().as_deref(), Some("yes"));
        drop((c, store));
        // Opened again under its key: as it was, not encrypted twice.
        let store = Store::open_keyed(dir.path(), "S001", &cfg, Some(key))
            .unwrap_or_else(|e| panic!("{e}"));
        let c = store.connect(true).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta_get(&c, "kept").ok().flatten().as_deref(), Some("yes"));
    }

    #[test]
    fn a_database_of_another_store_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = StorageConfig::default();
        drop(Store::open(dir.path(), "S001", &cfg).unwrap_or_else(|e| panic!("{e}")));
        let err = Store::open(dir.path(), "S002", &cfg).err();
        assert!(
            matches!(err, Some(StoreError::StoreMismatch { .. })),
            "{err:?}"
        );
    }

    /// Largest WAL file seen while 3,000 concurrent requests each write ~2 pages, a
    /// reader keeps reading and the checkpointer runs every 20 ms.
    async fn wal_peak_under_load(wal_restart_pages: u32) -> u64 {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let cfg = StorageConfig {
            wal_restart_pages,
            checkpoint_interval_ms: 20,
            ..StorageConfig::default()
        };
        let store = Store::open(dir.path(), "S001", &cfg).unwrap_or_else(|e| panic!("{e}"));
        let wal = dir.path().join(format!("{DB_FILE}-wal"));
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (r, done) = (connect(&store.path, true), done.clone());
            std::thread::spawn(move || {
                let r = r.unwrap_or_else(|e| panic!("{e}"));
                while !done.load(Ordering::Relaxed) {
                    let _: i64 = r
                        .query_row("SELECT count(*) FROM meta", [], |x| x.get(0))
                        .unwrap_or_else(|e| panic!("{e}"));
                }
            })
        };
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let w = store.writer.clone();
                tokio::spawn(async move {
                    for i in 0..47 {
                        w.write(move |ctx| -> Result<usize, StoreError> {
                            Ok(ctx.conn.execute(
                                "INSERT INTO meta (key, value) VALUES (?1, hex(randomblob(3000)))",
                                params![format!("k{t}-{i}")],
                            )?)
                        })
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    }
                })
            })
            .collect();
        let mut peak = 0;
        for t in tasks {
            t.await.unwrap_or_else(|e| panic!("{e}"));
            peak = peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        done.store(true, Ordering::Relaxed);
        reader.join().unwrap_or_else(|_| panic!("reader panicked"));
        peak.max(std::fs::metadata(&wal).map_or(0, |m| m.len()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_keeps_the_wal_bounded_under_sustained_writes() {
        // ~3,000 requests of ~2 pages each grow a WAL that never wraps to ~25 MB;
        // restarting past 256 pages (1 MB) must keep it to a few MB.
        let peak = wal_peak_under_load(256).await;
        assert!(peak < 6 * 1024 * 1024, "WAL peaked at {peak} bytes");
    }
}
