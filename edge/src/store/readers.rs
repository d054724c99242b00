//! A small pool of read-only connections. WAL lets them read a consistent snapshot
//! while the writer commits; each read runs on tokio's blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;
use tokio::sync::Semaphore;

use super::{StoreError, connect};

/// Read-only connections.
pub struct Readers {
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl Readers {
    /// Opens `n` read-only connections to `path`.
    pub fn open(path: &Path, n: usize) -> Result<Readers, StoreError> {
        let conns = (0..n).map(|_| {
            let c = connect(path, true)?;
            c.pragma_update(None, "query_only", "ON")?;
            Ok(c)
        });
        let conns = conns.collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Readers {
            permits: Semaphore::new(conns.len()),
            idle: Mutex::new(conns),
        })
    }

    /// Runs `f` on an idle connection.
    pub async fn read<F, R, E>(&self, f: F) -> Result<R, E>
    where
        F: FnOnce(&Connection) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?;
        let conn = self
            .idle
            .lock()
            .map_err(|_| E::from(StoreError::Corrupt("reader pool poisoned".into())))?
            .pop()
            .ok_or_else(|| E::from(StoreError::Corrupt("reader pool empty".into())))?;
        let joined = tokio::task::spawn_blocking(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&conn)));
            (conn, r)
        })
        .await;
        match joined {
            Ok((conn, r)) => {
                if let Ok(mut idle) = self.idle.lock() {
                    idle.push(conn);
                }
                r.map_err(|_| E::from(StoreError::Corrupt("read panicked".into())))?
            }
            Err(_) => Err(E::from(StoreError::Corrupt("read task failed".into()))),
        }
    }
}
