//! Checkpoints off the commit path: a background PASSIVE checkpointer, and a bound on
//! the WAL's size that the writer enforces between commits.

use std::os::raw::c_int;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::Connection;

/// Keeps a writer connection's WAL from growing without bound once its automatic
/// checkpoint is off.
///
/// Under sustained writes the background PASSIVE checkpoints never find a moment when
/// the WAL can wrap to its start, so it grows: in the edge's commit benchmark by 1.6 GB
/// in 20 s, with the kernel zeroing each freshly allocated block for the next frame
/// 30% of the writer's time (perf). Once the WAL holds `restart_at` pages, the writer
/// runs a RESTART checkpoint between two commits, after answering the first; the
/// PASSIVE checkpoints have already copied most frames, so it copies only the rest.
#[derive(Debug)]
pub struct WalBound {
    /// Pages in the WAL after the writer's last commit (from the WAL hook).
    pages: Arc<AtomicI64>,
    /// Restart once it holds this many.
    restart_at: i64,
    /// Size at which to try next (raised after a try a reader held up).
    next_try: AtomicI64,
    /// The writer's usual busy timeout, restored after each try.
    busy_timeout: Duration,
}

impl WalBound {
    /// A restart does not wait for a lock: the background checkpointer or a reader in
    /// the way makes it give up at once (sleeping in SQLite's busy handler, 1–25 ms at a
    /// time, showed as the p99 of the edge's commit benchmark) and try again a little
    /// later.
    const WAIT: Duration = Duration::ZERO;

    /// Turns off `writer`'s automatic checkpoint and watches its WAL; `restart_at` is
    /// in pages (at least 64), `busy_timeout` the writer's own.
    pub fn install(
        writer: &mut Connection,
        restart_at: u32,
        busy_timeout: Duration,
    ) -> rusqlite::Result<WalBound> {
        // The pragma installs SQLite's own WAL hook, so it must come before ours.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        let pages = Arc::new(AtomicI64::new(0));
        let seen = pages.clone();
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: c_int| {
            seen.store(i64::from(n), Ordering::Relaxed);
            Ok(())
        }))?;
        let restart_at = i64::from(restart_at.max(64));
        Ok(WalBound {
            pages,
            restart_at,
            next_try: AtomicI64::new(restart_at),
            busy_timeout,
        })
    }

    /// Pages in the WAL after the writer's last commit.
    pub fn pages(&self) -> i64 {
        self.pages.load(Ordering::Relaxed)
    }

    /// Whether the WAL has grown past the bound, so [`WalBound::after_commit`] has work
    /// (a writer whose connection is shared can skip taking its lock otherwise).
    pub fn due(&self) -> bool {
        self.pages() >= self.next_try.load(Ordering::Relaxed)
    }

    /// Called by the writer between commits (holding no transaction): restarts the WAL
    /// if it has grown past the bound.
    pub fn after_commit(&self, writer: &Connection) {
        if !self.due() {
            return;
        }
        let pages = self.pages();
        let restarted = writer.busy_timeout(Self::WAIT).and_then(|()| {
            writer.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::RESTART)
        });
        if let Err(e) = writer.busy_timeout(self.busy_timeout) {
            tracing::warn!(error = %e, "restoring the writer's busy timeout");
        }
        let next = match restarted {
            Ok(_) => self.restart_at,
            // Busy: try again once the WAL has grown by another eighth.
            Err(e) => {
                tracing::debug!(error = %e, pages, "wal restart gave up");
                pages.saturating_add(self.restart_at / 8)
            }
        };
        self.next_try.store(next, Ordering::Relaxed);
    }
}

/// Starts a thread that runs a PASSIVE checkpoint on `conn` (its own connection to the
/// database) every `every` until `stop` is set. PASSIVE never blocks the writer or
/// readers: it copies what it can, so no commit pays for a checkpoint.
pub fn spawn_checkpointer(
    conn: Connection,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "wal checkpoint failed");
                }
            }
        })?;
    Ok(())
}

/// Size of `db`'s WAL file in bytes (0 when there is none).
pub fn wal_file_len(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> Connection {
        let conn = Connection::open(path).unwrap_or_else(|e| panic!("{e}"));
        conn.pragma_update(None, "journal_mode", "WAL")
            .unwrap_or_else(|e| panic!("{e}"));
        // Tests measure the WAL's size, not durability.
        conn.pragma_update(None, "synchronous", "OFF")
            .unwrap_or_else(|e| panic!("{e}"));
        conn
    }

    fn table(conn: &Connection) {
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Writes `n` commits of one 4 KiB row each, calling the bound (if any) after each,
    /// while a reader opens a short read transaction every eighth commit; returns the
    /// largest WAL seen.
    fn wal_peak(bound: Option<u32>, n: usize) -> u64 {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.sqlite");
        let mut writer = open(&path);
        table(&writer);
        let bound = bound.map(|pages| {
            WalBound::install(&mut writer, pages, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{e}"))
        });
        if bound.is_none() {
            writer
                .pragma_update(None, "wal_autocheckpoint", 0)
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let reader = open(&path);
        let mut peak = 0;
        for i in 0..n {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(4096))", [])
                .unwrap_or_else(|e| panic!("{e}"));
            if let Some(b) = &bound {
                b.after_commit(&writer);
            }
            if i % 8 == 0 {
                let _: i64 = reader
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            peak = peak.max(wal_file_len(&path));
        }
        peak
    }

    #[test]
    fn the_bound_makes_the_wal_wrap_instead_of_growing() {
        // 2,000 commits of 2–3 pages each: ~20 MB of frames if the WAL never wraps.
        let unbounded = wal_peak(None, 2000);
        let bounded = wal_peak(Some(256), 2000);
        assert!(
            unbounded > 16 << 20,
            "unbounded WAL peaked at {unbounded} bytes"
        );
        // 256 pages are 1 MiB, plus the commit that crossed it.
        assert!(bounded < 2 << 20, "bounded WAL peaked at {bounded} bytes");
    }

    #[test]
    fn the_checkpointer_copies_the_wal_into_the_database() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.sqlite");
        let writer = open(&path);
        table(&writer);
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..200 {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(4096))", [])
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let db_len = || std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(db_len() < 100 * 4096, "nothing is checkpointed yet");
        let stop = Arc::new(AtomicBool::new(false));
        spawn_checkpointer(open(&path), Duration::from_millis(5), stop.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_len() < 200 * 4096 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.store(true, Ordering::Relaxed);
        assert!(db_len() >= 200 * 4096, "database holds {} bytes", db_len());
    }

    #[test]
    fn the_writer_commits_without_checkpointing_itself() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("t.sqlite");
        let mut writer = open(&path);
        let bound = WalBound::install(&mut writer, 100_000, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{e}"));
        table(&writer);
        for _ in 0..1500 {
            writer
                .execute("INSERT INTO t (v) VALUES (zeroblob(100))", [])
                .unwrap_or_else(|e| panic!("{e}"));
            bound.after_commit(&writer);
        }
        // SQLite's automatic checkpoint would have reset the count at 1,000 pages.
        assert!(bound.pages() >= 1500, "{} pages", bound.pages());
    }
}
