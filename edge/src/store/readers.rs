//! A small pool of read-only connections. WAL lets them read a consistent snapshot
//! while the writer commits; each read runs on tokio's blocking pool.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::StoreError;

/// Read-only connections.
pub struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens `n` read-only connections to `path`.
    pub fn open(
        path: &Path,
        n: usize,
        key: Option<&patron_sqlite::connect::DbKey>,
    ) -> Result<Readers, StoreError> {
        let conns = (0..n).map(|_| {
            let c = super::connect_keyed(path, true, key)?;
            c.pragma_update(None, "query_only", "ON")?;
            Ok(c)
        });
        let conns = conns.collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Readers {
            permits: Arc::new(Semaphore::new(conns.len())),
            idle: Arc::new(Mutex::new(conns)),
        })
    }

    /// Runs `f` on an idle connection.
    ///
    /// The connection goes back to the pool, and the permit is released, inside the
    /// blocking task: if the caller is dropped mid-read (a client hung up), the pool
    /// still gets its connection back.
    pub async fn read<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        let idle = self.idle.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = idle
                .lock()
                .map_err(|_| StoreError::Corrupt("reader pool poisoned".into()))?
                .pop()
                .ok_or_else(|| StoreError::Corrupt("reader pool empty".into()))?;
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&conn)));
            if let Ok(mut pool) = idle.lock() {
                pool.push(conn);
            }
            Ok::<_, StoreError>(r)
        })
        .await;
        match joined {
            Ok(Ok(Ok(r))) => r,
            Ok(Ok(Err(_panic))) => Err(E::from(StoreError::Corrupt("read panicked".into()))),
            Ok(Err(e)) => Err(E::from(e)),
            Err(_) => Err(E::from(StoreError::Corrupt("read task failed".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller dropped mid-read (a client hanging up) must not cost the pool a connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_reads_return_their_connection() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("r.sqlite");
        drop(super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}")));
        let readers = Arc::new(Readers::open(&path, 2, None).unwrap_or_else(|e| panic!("{e}")));
        for _ in 0..6 {
            let r = readers.clone();
            let task = tokio::spawn(async move {
                r.read(|_c| -> Result<(), StoreError> {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    Ok(())
                })
                .await
            });
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            task.abort();
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for _ in 0..4 {
            let ok = readers
                .read(|c| -> Result<i64, StoreError> {
                    Ok(c.query_row("SELECT 1", [], |r| r.get(0))?)
                })
                .await;
            assert_eq!(ok.ok(), Some(1));
        }
    }
}
