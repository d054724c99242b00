//! The schema migration runner both binaries use: an append-only list of SQL scripts
//! under `PRAGMA user_version`, one guard against a newer database, one backup before an
//! upgrade, one transaction for the whole upgrade.

use std::path::Path;

use rusqlite::{Connection, Transaction, TransactionBehavior, params};

/// Why a database could not be brought to this binary's schema.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database was written by a newer binary: refused, never downgraded.
    #[error("database schema {found} is newer than this binary's {supported}")]
    TooNew {
        /// Found.
        found: usize,
        /// Supported.
        supported: usize,
    },
    /// The upgrade left rows that break a foreign key (nothing was committed).
    #[error("{0} foreign key violations after the schema upgrade")]
    ForeignKeys(i64),
    /// SQLite said no (nothing was committed).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The caller's step inside the upgrade failed (nothing was committed).
    #[error("{0}")]
    Step(String),
}

/// Brings the database at `path` (open as `conn`) to `migrations.len()`: script `i`
/// takes the schema from version `i` to `i + 1`.
///
/// - A database newer than the list is refused ([`MigrateError::TooNew`]).
/// - Before upgrading a non-empty database, a copy is written beside it
///   (`<file>.v<found>.bak`, by `VACUUM INTO`), unless an earlier attempt left one: a
///   failed upgrade can be retried, and the first copy is the one taken before any.
/// - Every pending script and `after(tx, found)` run in one exclusive transaction with
///   foreign keys off (a script may rebuild a table others reference); foreign keys are
///   checked before the commit. A crash or an error leaves the old schema whole.
pub fn migrate(
    conn: &mut Connection,
    path: &Path,
    migrations: &[&str],
    after: impl FnOnce(&Transaction<'_>, usize) -> Result<(), String>,
) -> Result<(), MigrateError> {
    let found = conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))? as usize;
    let supported = migrations.len();
    if found > supported {
        return Err(MigrateError::TooNew { found, supported });
    }
    if found == supported {
        return Ok(());
    }
    if found > 0 {
        let backup = path.with_extension(format!("v{found}.bak"));
        if !backup.exists() {
            conn.execute("VACUUM INTO ?1", params![backup.to_string_lossy()])?;
        }
    }
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let upgraded = upgrade(conn, found, migrations, after);
    conn.pragma_update(None, "foreign_keys", "ON")?;
    upgraded
}

fn upgrade(
    conn: &mut Connection,
    found: usize,
    migrations: &[&str],
    after: impl FnOnce(&Transaction<'_>, usize) -> Result<(), String>,
) -> Result<(), MigrateError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    for (i, sql) in migrations.iter().enumerate().skip(found) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    after(&tx, found).map_err(MigrateError::Step)?;
    let violations: i64 =
        tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })?;
    if violations > 0 {
        return Err(MigrateError::ForeignKeys(violations));
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &[&str] = &[
        "CREATE TABLE a (id INTEGER PRIMARY KEY);",
        "CREATE TABLE b (id INTEGER PRIMARY KEY, a INTEGER REFERENCES a(id));",
        "INSERT INTO b (id, a) VALUES (1, 99);", // breaks the foreign key
    ];

    fn open(dir: &Path) -> Connection {
        let c = Connection::open(dir.join("db.sqlite")).unwrap_or_else(|e| panic!("{e}"));
        c.pragma_update(None, "foreign_keys", "ON")
            .unwrap_or_else(|e| panic!("{e}"));
        c
    }

    fn version(c: &Connection) -> i64 {
        c.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_failed_upgrade_leaves_the_old_schema_whole_and_can_be_retried() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("db.sqlite");
        let mut c = open(dir.path());
        migrate(&mut c, &path, &V[..1], |_, _| Ok(())).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(version(&c), 1);
        // Scripts 2 and 3 together break a foreign key: nothing of either stays.
        let e = migrate(&mut c, &path, V, |_, _| Ok(()));
        assert!(matches!(e, Err(MigrateError::ForeignKeys(1))), "{e:?}");
        assert_eq!(version(&c), 1);
        let b: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'b'",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b, 0, "script 2 rolled back with script 3");
        assert!(path.with_extension("v1.bak").exists());
        // A second attempt finds the backup of the first and does not fail on it.
        let e = migrate(&mut c, &path, &V[..2], |_, found| {
            (found == 1).then_some(()).ok_or("found".into())
        });
        assert!(e.is_ok(), "{e:?}");
        assert_eq!(version(&c), 2);
        let fk: i64 = c
            .pragma_query_value(None, "foreign_keys", |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(fk, 1, "foreign keys are on again");
        // Twice is a no-op; newer is refused.
        assert!(migrate(&mut c, &path, &V[..2], |_, _| Err("ran".into())).is_ok());
        assert!(matches!(
            migrate(&mut c, &path, &V[..1], |_, _| Ok(())),
            Err(MigrateError::TooNew {
                found: 2,
                supported: 1
            })
        ));
        // A failing step rolls its scripts back.
        let e = migrate(&mut c, &path, V, |_, _| Err("step".into()));
        assert!(matches!(e, Err(MigrateError::Step(_))), "{e:?}");
        assert_eq!(version(&c), 2);
    }
}
