//! Group commit: one thread, one writing connection, many requests per fsync.
//!
//! Requests queue closures. The writer takes the first, then everything else already
//! queued (up to `max_batch`), runs them in one `BEGIN IMMEDIATE` transaction — each
//! inside its own savepoint, so a request that fails leaves no partial write — and
//! commits once. Only after that commit returned (WAL fsynced, `synchronous=FULL`) does
//! any request in the group get its answer. No timer waits for company: while one
//! group is fsyncing, the next one queues up by itself.
//!
//! Fact sequences are handed out here, inside the transaction: a request that rolls
//! back returns its numbers, and a failed commit returns the whole group's, so the
//! sequence of each origin stays gap-free on disk.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;

use patron_sqlite::wal::WalBound;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// What a request's closure sees: the connection inside the open transaction and the
/// origin's sequence counter.
pub struct WriteCtx<'a> {
    /// The writing connection; a transaction is open.
    pub conn: &'a Connection,
    /// This node's origin id (row id in `origins`).
    pub origin: i64,
    next_seq: &'a mut i64,
}

impl WriteCtx<'_> {
    /// The next gap-free sequence number of this node's origin.
    pub fn next_seq(&mut self) -> i64 {
        let s = *self.next_seq;
        *self.next_seq += 1;
        s
    }
}

trait Job: Send {
    /// Runs the request; `true` if it succeeded (its writes stay).
    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool;
    /// Delivers the answer once the group's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), &str>);
}

struct FnJob<F, R, E> {
    f: Option<F>,
    out: Option<Result<R, E>>,
    reply: oneshot::Sender<Result<R, E>>,
}

impl<F, R, E> Job for FnJob<F, R, E>
where
    F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send,
    R: Send,
    E: From<StoreError> + Send,
{
    fn run(&mut self, ctx: &mut WriteCtx<'_>) -> bool {
        let Some(f) = self.f.take() else { return false };
        let out = f(ctx);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, committed: Result<(), &str>) {
        let out = match (committed, self.out) {
            // A failed request wrote nothing; its own error stands either way.
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(r))) => Ok(r),
            (Err(msg), Some(Ok(_))) => Err(StoreError::CommitFailed(msg.to_string()).into()),
            (_, None) => Err(StoreError::CommitFailed("request panicked".into()).into()),
        };
        // The requester may have gone away (client disconnected); the write stands.
        let _ = self.reply.send(out);
    }
}

/// Handle for queueing writes; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Box<dyn Job>>,
    facts_committed: std::sync::Arc<tokio::sync::Notify>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    ///
    /// Once the WAL holds `wal_restart_pages` pages, the writer runs a RESTART checkpoint
    /// between two group commits (after answering the first), so the WAL wraps to its
    /// start instead of growing (see [`WalBound`]).
    pub fn spawn(
        mut conn: Connection,
        origin: i64,
        next_seq: i64,
        max_batch: usize,
        wal_restart_pages: u32,
    ) -> Result<Writer, StoreError> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let facts_committed = std::sync::Arc::new(tokio::sync::Notify::new());
        let notify = facts_committed.clone();
        let wal = WalBound::install(&mut conn, wal_restart_pages, super::BUSY_TIMEOUT)?;
        std::thread::Builder::new()
            .name("patron-writer".into())
            .spawn(move || {
                writer_loop(conn, rx, origin, next_seq, max_batch.max(1), &notify, &wal)
            })?;
        Ok(Writer {
            tx,
            facts_committed,
        })
    }

    /// Signalled after every commit that wrote facts of this node (the sync client
    /// waits on it to push soon after a sale).
    pub fn facts_committed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.facts_committed.clone()
    }

    /// Runs `f` inside a group-committed transaction; resolves after the durable commit.
    ///
    /// If `f` returns an error, its writes are rolled back and the error is returned.
    pub async fn write<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&mut WriteCtx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let job: Box<dyn Job> = Box::new(FnJob {
            f: Some(f),
            out: None,
            reply,
        });
        self.tx
            .send(job)
            .map_err(|_| E::from(StoreError::WriterGone))?;
        rx.await.map_err(|_| E::from(StoreError::WriterGone))?
    }
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn Job>>,
    origin: i64,
    mut next_seq: i64,
    max_batch: usize,
    facts_committed: &tokio::sync::Notify,
    wal: &WalBound,
) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let seq_at_start = next_seq;
        let committed = run_group(&conn, &mut batch, origin, &mut next_seq);
        if committed.is_err() {
            next_seq = seq_at_start;
        } else if next_seq > seq_at_start {
            facts_committed.notify_one();
        }
        let msg = committed.as_ref().err().map(|e| e.to_string());
        if let Some(m) = &msg {
            tracing::error!(error = %m, jobs = batch.len(), "group commit failed");
        }
        for job in batch.drain(..) {
            job.finish(match &msg {
                None => Ok(()),
                Some(m) => Err(m.as_str()),
            });
        }
        wal.after_commit(&conn);
    }
}

/// Runs one cached statement without parameters (transaction control). Cached so the
/// per-request SAVEPOINT/RELEASE are not parsed again for every request.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn run_group(
    conn: &Connection,
    batch: &mut [Box<dyn Job>],
    origin: i64,
    next_seq: &mut i64,
) -> Result<(), rusqlite::Error> {
    exec(conn, "BEGIN IMMEDIATE")?;
    let result = (|| {
        for job in batch.iter_mut() {
            exec(conn, "SAVEPOINT job")?;
            let seq_before = *next_seq;
            let mut ctx = WriteCtx {
                conn,
                origin,
                next_seq,
            };
            let ok = catch_unwind(AssertUnwindSafe(|| job.run(&mut ctx))).unwrap_or(false);
            if ok {
                exec(conn, "RELEASE job")?;
            } else {
                exec(conn, "ROLLBACK TO job")?;
                exec(conn, "RELEASE job")?;
                *next_seq = seq_before;
            }
        }
        exec(conn, "COMMIT")
    })();
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::params;

    fn writer(dir: &std::path::Path) -> Writer {
        let conn =
            super::super::connect(&dir.join("w.sqlite"), false).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("CREATE TABLE t (seq INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap_or_else(|e| panic!("{e}"));
        Writer::spawn(conn, 1, 1, 64, 4096).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_request_leaves_no_write_and_no_sequence_gap() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = writer(dir.path());
        let mut handles = Vec::new();
        for i in 0..200 {
            let w = w.clone();
            handles.push(tokio::spawn(async move {
                w.write(move |ctx| -> Result<i64, StoreError> {
                    let s = ctx.next_seq();
                    ctx.conn
                        .execute("INSERT INTO t (seq, v) VALUES (?1, 'x')", params![s])?;
                    if i % 3 == 0 {
                        // Fails after writing: the savepoint must undo the insert.
                        ctx.conn.execute(
                            "INSERT INTO t (seq, v) VALUES (?1, NULL)",
                            params![s + 100_000],
                        )?;
                    }
                    Ok(s)
                })
                .await
            }));
        }
        let mut ok = Vec::new();
        for h in handles {
            if let Ok(Ok(s)) = h.await {
                ok.push(s);
            }
        }
        ok.sort();
        let expected: Vec<i64> = (1..=ok.len() as i64).collect();
        assert_eq!(ok, expected, "acknowledged sequences are exactly 1..=n");
        let count = w
            .write(|ctx| -> Result<i64, StoreError> {
                Ok(ctx
                    .conn
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
            })
            .await
            .unwrap_or(-1);
        assert_eq!(
            count as usize,
            ok.len(),
            "no partial write from failed requests"
        );
        assert_eq!(ok.len(), 200 - 67);
    }

    #[tokio::test]
    async fn a_panicking_request_is_contained() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = writer(dir.path());
        let r = w
            .write(|_ctx| -> Result<(), StoreError> {
                panic!("boom");
            })
            .await;
        assert!(r.is_err());
        let r = w
            .write(|ctx| -> Result<usize, StoreError> {
                Ok(ctx
                    .conn
                    .execute("INSERT INTO t (seq, v) VALUES (1, 'y')", [])?)
            })
            .await;
        assert_eq!(r.ok(), Some(1), "the writer survives a panicking request");
    }
}
