//! Opening a connection with the settings every Patron database needs, the same at the
//! edge and the hub: WAL, `synchronous=FULL` (a commit survives power loss), foreign
//! keys on, a bounded WAL file, and a busy timeout. Each binary adds its own tuning
//! (cache size, temp store) after.
//!
//! A database may be encrypted at rest under a [`DbKey`] (SQLCipher: every page, of the
//! database and of its WAL, AES-256 with an HMAC, under a raw 256-bit key with no
//! passphrase derivation). [`encrypt_in_place`] turns a plaintext database into an
//! encrypted one, whole or not at all.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use zeroize::Zeroizing;

/// A database's encryption key.
pub struct DbKey(Zeroizing<[u8; 32]>);

impl DbKey {
    /// The key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> DbKey {
        DbKey(Zeroizing::new(bytes))
    }

    /// The key as SQLCipher takes a raw key: `x'<64 hex digits>'`.
    fn raw(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("x'{}'", hex::encode(&self.0[..])))
    }
}

impl std::fmt::Debug for DbKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DbKey(<redacted>)")
    }
}

/// The first 16 bytes of every plaintext SQLite database.
const PLAINTEXT_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether `path` holds a plaintext SQLite database (an encrypted one starts with its
/// random salt); `false` for a missing or empty file.
pub fn is_plaintext(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let mut head = [0u8; 16];
    match f.read_exact(&mut head) {
        Ok(()) => Ok(&head == PLAINTEXT_HEADER),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Encrypts the plaintext database at `path` under `key`: written whole beside it
/// (`<file>.encrypting`), synced, then renamed over it. A crash before the rename
/// leaves the plaintext database as it was (the next attempt starts again); after it,
/// the encrypted one. No other connection may be open on `path`.
pub fn encrypt_in_place(path: &Path, key: &DbKey) -> rusqlite::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".encrypting");
    let tmp = PathBuf::from(tmp);
    let fail = |e: std::io::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    for stale in [tmp.clone(), wal_of(&tmp, "-wal"), wal_of(&tmp, "-shm")] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
    }
    cipher_ready()?;
    {
        let plain = Connection::open(path)?;
        // Every committed page into the file, and no other process in it: one that is
        // (a command beside) would keep writing to the file this replaces.
        let busy: i64 = plain.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(fail(std::io::Error::other(
                "the database is in use by another process: stop it and start again",
            )));
        }
        let version: i64 = plain.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let target = tmp
            .to_str()
            .ok_or_else(|| fail(std::io::Error::other("the database path is not UTF-8")))?;
        plain.execute(
            "ATTACH DATABASE ?1 AS encrypted KEY ?2",
            params![target, &*key.raw()],
        )?;
        plain.query_row("SELECT sqlcipher_export('encrypted')", [], |_| Ok(()))?;
        // sqlcipher_export copies the schema and the rows, not the schema version.
        plain.pragma_update(Some("encrypted"), "user_version", version)?;
        plain.execute("DETACH DATABASE encrypted", [])?;
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)?;
    for stale in [wal_of(path, "-wal"), wal_of(path, "-shm")] {
        match std::fs::remove_file(&stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)?;
    }
    Ok(())
}

/// Waits until SQLCipher is set up in this process, setting it up if no thread has.
///
/// SQLite marks itself initialized and only then runs SQLCipher's set-up, outside its
/// own lock: a connection opened on another thread in between finds SQLite ready and
/// its key refused ("An error occurred with PRAGMA key or rekey"). SQLCipher's set-up
/// holds SQLite's main mutex until it is ready to take keys, and returns at once once
/// it was, so calling it here either waits for the thread running it or runs it. (It
/// registers `sqlcipher_export` just after releasing that mutex: an [`encrypt_in_place`]
/// racing the process's very first connection on another thread could still find the
/// function missing. It then fails whole, and the next start encrypts.)
#[allow(unsafe_code)]
fn cipher_ready() -> rusqlite::Result<()> {
    unsafe extern "C" {
        /// SQLCipher's process set-up (`SQLITE_EXTRA_INIT`); idempotent.
        fn sqlcipher_extra_init(arg: *const std::ffi::c_char) -> std::ffi::c_int;
    }
    // SAFETY: both are SQLite's own thread-safe set-up calls, made with no arguments
    // (`sqlcipher_extra_init` ignores its pointer).
    let rc = unsafe {
        match rusqlite::ffi::sqlite3_initialize() {
            rusqlite::ffi::SQLITE_OK => sqlcipher_extra_init(std::ptr::null()),
            rc => rc,
        }
    };
    match rc {
        rusqlite::ffi::SQLITE_OK => Ok(()),
        rc => Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rc),
            Some("SQLCipher could not set itself up".into()),
        )),
    }
}

fn wal_of(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

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
    open_keyed(path, access, busy, None)
}

/// [`open`], for a database encrypted under `key` (created encrypted if missing). A
/// wrong key fails here, as SQLite's `NotADatabase`.
pub fn open_keyed(
    path: &Path,
    access: Access,
    busy: Duration,
    key: Option<&DbKey>,
) -> rusqlite::Result<Connection> {
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
    if key.is_some() {
        cipher_ready()?;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    if let Some(key) = key {
        // The key goes first: nothing may read a page before it.
        conn.pragma_update(None, "key", &*key.raw())?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))?;
    }
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

    /// A database encrypted under a key: no plaintext header, no row's text in the
    /// file or its WAL, unreadable without the key or under another; and a plaintext
    /// database encrypted in place keeps its rows and schema version.
    #[test]
    fn an_encrypted_database_reads_only_under_its_key() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let busy = Duration::from_secs(1);
        let key = DbKey::new([7; 32]);
        let path = dir.path().join("e.sqlite");
        let w = open_keyed(&path, Access::ReadWrite, busy, Some(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        w.execute_batch("CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('receipt-R1-4999')")
            .unwrap_or_else(|e| panic!("{e}"));
        let bytes = |p: &Path| std::fs::read(p).unwrap_or_default();
        let holds = |b: &[u8], s: &[u8]| b.windows(s.len()).any(|w| w == s);
        for f in [path.clone(), wal_of(&path, "-wal")] {
            assert!(!holds(&bytes(&f), b"receipt-R1-4999"), "{}", f.display());
            assert!(!holds(&bytes(&f), b"CREATE TABLE"), "{}", f.display());
        }
        assert!(!is_plaintext(&path).unwrap_or(true));
        // The copy `migrate` takes before an upgrade (`VACUUM INTO`) is encrypted too.
        let bak = dir.path().join("e.sqlite.bak");
        w.execute("VACUUM INTO ?1", [bak.to_str().unwrap_or_default()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(bak.exists() && !is_plaintext(&bak).unwrap_or(true));
        assert!(!holds(&bytes(&bak), b"receipt-R1-4999"));
        let r =
            open_keyed(&path, Access::ReadOnly, busy, Some(&key)).unwrap_or_else(|e| panic!("{e}"));
        let x: String = r
            .query_row("SELECT x FROM t", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x, "receipt-R1-4999");
        drop((w, r));
        let read =
            |c: Connection| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0));
        assert!(
            open(&path, Access::ReadOnly, busy).and_then(read).is_err(),
            "no key"
        );
        let other = DbKey::new([8; 32]);
        assert!(open_keyed(&path, Access::ReadOnly, busy, Some(&other)).is_err());

        let plain = dir.path().join("p.sqlite");
        let c = open(&plain, Access::ReadWrite, busy).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch(
            "CREATE TABLE t (x TEXT); INSERT INTO t VALUES ('kept'); PRAGMA user_version = 12",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        drop(c);
        assert!(is_plaintext(&plain).unwrap_or(false));
        encrypt_in_place(&plain, &key).unwrap_or_else(|e| panic!("{e}"));
        assert!(!is_plaintext(&plain).unwrap_or(true));
        assert!(!holds(&bytes(&plain), b"kept"));
        let c = open_keyed(&plain, Access::ReadWrite, busy, Some(&key))
            .unwrap_or_else(|e| panic!("{e}"));
        let (x, v): (String, i64) = c
            .query_row(
                "SELECT x, (SELECT user_version FROM pragma_user_version) FROM t",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((x.as_str(), v), ("kept", 12));
        let journal: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap_or_default();
        assert_eq!(journal, "wal");
    }

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
