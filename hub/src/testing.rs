//! A hub for unit tests: a temporary SQLite store, a clock the test moves, and
//! enrolled stores.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::service::Hub;
use crate::store::StoreRow;
use crate::store::sqlite::SqliteStore;

/// A hub with enrolled stores (ring `all`) and a settable clock.
pub(crate) struct TestHub {
    pub hub: Hub,
    pub clock: Arc<AtomicI64>,
    /// The stores, in the order given.
    pub rows: Vec<StoreRow>,
    _dir: tempfile::TempDir,
}

impl TestHub {
    /// A hub at time `t0` with `stores` enrolled.
    pub fn new(t0: i64, stores: &[&str]) -> TestHub {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let clock = Arc::new(AtomicI64::new(t0));
        let c = clock.clone();
        let hub = Hub::with_clock(
            store,
            String::new(),
            "x".into(),
            Box::new(move || c.load(Ordering::SeqCst)),
        );
        let mut rows = Vec::new();
        for s in stores {
            let token = hub
                .enrollment
                .add_store(s, s, "all")
                .unwrap_or_else(|e| panic!("{e}"));
            let secret = token.rsplit_once('.').map(|x| x.0).unwrap_or_default();
            hub.enrollment
                .enroll(secret, s, None)
                .unwrap_or_else(|e| panic!("{e}"));
            rows.push(StoreRow {
                store_id: (*s).into(),
                name: (*s).into(),
                ring: "all".into(),
            });
        }
        TestHub {
            hub,
            clock,
            rows,
            _dir: dir,
        }
    }

    /// Moves the clock to `t`.
    pub fn set_time(&self, t: i64) {
        self.clock.store(t, Ordering::SeqCst);
    }

    /// The hub's database file (for tests that damage it on purpose).
    pub fn db_path(&self) -> std::path::PathBuf {
        self._dir.path().join(crate::store::sqlite::DB_FILE)
    }

    /// The clock's time.
    pub fn time(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }
}
