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
    /// The member keys each store was handed at enrollment (base64; with
    /// [`TestHub::with_keys`] only).
    pub keys: Vec<Option<String>>,
    _dir: tempfile::TempDir,
}

impl TestHub {
    /// A hub at time `t0` with `stores` enrolled.
    pub fn new(t0: i64, stores: &[&str]) -> TestHub {
        Self::build(t0, stores, false)
    }

    /// Like [`TestHub::new`], with the hub holding member keys: each store is handed
    /// keys of its own at enrollment.
    pub fn with_keys(t0: i64, stores: &[&str]) -> TestHub {
        Self::build(t0, stores, true)
    }

    fn build(t0: i64, stores: &[&str], keyed: bool) -> TestHub {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let clock = Arc::new(AtomicI64::new(t0));
        let c = clock.clone();
        let mut hub = Hub::with_clock(
            store,
            String::new(),
            "x".into(),
            Box::new(move || c.load(Ordering::SeqCst)),
        );
        if keyed {
            crate::chain_keys::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
            let ring =
                crate::keyring::Keyring::load(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
            hub = hub.with_keyring(Arc::new(ring));
        }
        let mut rows = Vec::new();
        let mut keys = Vec::new();
        for s in stores {
            let token = hub
                .enrollment
                .add_store(s, s, "all", crate::enrollment::TOKEN_VALID_MS)
                .unwrap_or_else(|e| panic!("{e}"));
            let secret = token.rsplit_once('.').map(|x| x.0).unwrap_or_default();
            let enrolled = hub
                .enrollment
                .enroll(secret, s, None, None)
                .unwrap_or_else(|e| panic!("{e}"));
            keys.push(enrolled.store_keys);
            rows.push(StoreRow {
                store_id: (*s).into(),
                name: (*s).into(),
                ring: "all".into(),
                revoked: false,
                member_keys: keyed.then_some(1),
                keys_offered: keyed.then_some(1),
            });
        }
        TestHub {
            hub,
            clock,
            rows,
            keys,
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

    /// The phone's index under the chain's key (with [`TestHub::with_keys`]): what a
    /// store that held the chain's key could have computed.
    pub fn chain_index(&self, phone: &str) -> String {
        crate::keyring::Keyring::load(self._dir.path(), false)
            .unwrap_or_else(|e| panic!("{e}"))
            .chain_index(phone)
    }

    /// The clock's time.
    pub fn time(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Store `i` pushes one fact with this body, next in its own log (incarnation 7).
    pub fn push_fact(&self, i: usize, body: String) {
        use patron_protocol::Origin;
        use patron_protocol::hub::{PushRequest, SyncReport};
        use patron_sync::session::{Fact, Push, batch};
        let row = &self.rows[i];
        let origin = Origin {
            node: row.store_id.clone(),
            incarnation: uuid::Uuid::from_u128(7),
        };
        let seq = self
            .hub
            .store()
            .high(&origin)
            .unwrap_or_else(|e| panic!("{e}"))
            + 1;
        let req = PushRequest {
            report: SyncReport {
                origin: Some(origin.clone()),
                last_seq: seq,
                ..Default::default()
            },
            push: Push {
                from: row.store_id.clone(),
                batches: vec![batch(origin.clone(), vec![Fact { origin, seq, body }])],
            },
        };
        self.hub.push(row, req).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Registers `member` (a UUID) at the first store, under a phone index of its own
    /// and an incarnation no test uses (so the tests' sequences are untouched), and has
    /// every other store fetch them by that phone: each store may then write the
    /// member's facts, as the hub allows a store that served a member.
    pub fn share_member(&self, member: &str) {
        use base64::Engine;
        use patron_protocol::Origin;
        use patron_protocol::hub::{PushRequest, SyncReport};
        use patron_sync::session::{Fact, Push, batch};
        let digest = ring::digest::digest(&ring::digest::SHA256, member.as_bytes());
        let idx = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
        let origin = Origin {
            node: self.rows[0].store_id.clone(),
            incarnation: uuid::Uuid::from_u128(0x5a5a_0000 + u128::from(digest.as_ref()[0])),
        };
        let body = serde_json::json!({
            "kind": "member_registered", "at": self.time(), "member": member,
            "txn": uuid::Uuid::now_v7().to_string(), "body": { "phone_idx": idx },
        })
        .to_string();
        let high = self
            .hub
            .store()
            .high(&origin)
            .unwrap_or_else(|e| panic!("{e}"));
        let fact = Fact {
            origin: origin.clone(),
            seq: high + 1,
            body,
        };
        let req = PushRequest {
            report: SyncReport::default(),
            push: Push {
                from: self.rows[0].store_id.clone(),
                batches: vec![batch(origin, vec![fact])],
            },
        };
        self.hub
            .push(&self.rows[0], req)
            .unwrap_or_else(|e| panic!("{e}"));
        for row in &self.rows[1..] {
            self.hub
                .directory
                .fetch_member(
                    row,
                    &patron_sync::pull::MemberFetch {
                        phone_idx: idx.clone(),
                        phone: None,
                        after: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// `member`'s balance as the hub derives it now (debts taken off).
    pub fn balance(&self, member: &str) -> i64 {
        let mut got = 0;
        self.hub
            .store()
            .authority_tx(&mut |tx| {
                got = tx.balance(member, self.time())?;
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        got
    }

    /// The kinds of the facts streamed to `store` (the first 100), in stream order.
    pub fn streamed(&self, store: &str) -> Vec<String> {
        let read = self
            .hub
            .store()
            .stream(store, 0, 100)
            .unwrap_or_else(|e| panic!("{e}"));
        read.facts
            .iter()
            .filter_map(|(_, f)| patron_domain::Entry::parse(&f.body).ok())
            .map(|e| e.kind().to_string())
            .collect()
    }
}
