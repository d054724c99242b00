//! The hub's rules: registering and enrolling stores, authenticating them, and judging
//! what they push (with the sync core's one `judge`).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use patron_protocol::hub::{EnrollResponse, LedgerEntry, PushRequest, RefetchRequest, StoreStatus};
use patron_sync::docs::{HqDoc, carries_changes, decode_state, encode_state, ring_doc};
use patron_sync::session::{Batch, Judgement, Push, PushAck, Verdict, batch, judge};
use ring::rand::{SecureRandom, SystemRandom};
use std::collections::HashMap;

use crate::store::{HubStore, NewStore, StoreError, StoreRow};

/// The hub's node name in sync messages.
pub const HUB_NODE: &str = "hub";

/// What can go wrong in a hub operation.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No or a bad credential.
    #[error("unknown or missing store credential")]
    Unauthorized,
    /// A store pushed facts of another origin.
    #[error("store {store} may not push facts of origin {claimed}")]
    Forged {
        /// The authenticated store.
        store: String,
        /// The origin its facts claimed.
        claimed: String,
    },
    /// Enrollment refused.
    #[error("{0}")]
    Enrollment(&'static str),
    /// A store with this id exists.
    #[error("store {0} exists already")]
    Exists(String),
    /// Storage failed.
    #[error("storage: {0}")]
    Store(StoreError),
    /// The system could not produce random bytes.
    #[error("no randomness available")]
    Random,
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Enrollment(m) => HubError::Enrollment(m),
            StoreError::StoreExists(s) => HubError::Exists(s),
            other => HubError::Store(other),
        }
    }
}

/// The hub.
pub struct Hub {
    store: Arc<dyn HubStore>,
    ca_pem: String,
    ca_fingerprint: String,
    rng: SystemRandom,
    now: Box<dyn Fn() -> i64 + Send + Sync>,
    /// Automerge sync states of open sessions, by (document, store).
    doc_sessions: std::sync::Mutex<HashMap<(String, String), patron_sync::docs::State>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").finish_non_exhaustive()
    }
}

/// SHA-256 of a secret, as stored.
pub fn secret_hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Store ids: 1–16 of `A-Z a-z 0-9 - _`, as the edge accepts them.
pub fn valid_store_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 16
        && id != HUB_NODE
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The current time in unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Hub {
    /// A hub over `store`, handing out `ca_pem` (with its fingerprint) at enrollment.
    pub fn new(store: Arc<dyn HubStore>, ca_pem: String, ca_fingerprint: String) -> Self {
        Self {
            store,
            ca_pem,
            ca_fingerprint,
            rng: SystemRandom::new(),
            now: Box::new(now_millis),
            doc_sessions: Default::default(),
        }
    }

    /// 32 random bytes, base64url, after a prefix that says what the secret is for
    /// (and keeps it from starting with `-`, which a command line would take for a flag).
    fn secret(&self, prefix: &str) -> Result<String, HubError> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).map_err(|_| HubError::Random)?;
        Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b)))
    }

    /// Registers a store and returns its one-time enrollment token:
    /// `<secret>.<sha-256 of the hub CA>` (the edge pins the CA by that fingerprint).
    pub fn add_store(&self, store_id: &str, name: &str, ring: &str) -> Result<String, HubError> {
        if !valid_store_id(store_id) {
            return Err(HubError::Invalid(
                "store id: 1–16 of A-Z a-z 0-9 - _ (and not `hub`)".into(),
            ));
        }
        if name.trim().is_empty() || ring.trim().is_empty() {
            return Err(HubError::Invalid("name and ring must not be empty".into()));
        }
        let secret = self.secret("pe_")?;
        self.store.add_store(&NewStore {
            store_id,
            name: name.trim(),
            ring: ring.trim(),
            enroll_hash: secret_hash(&secret),
            now: (self.now)(),
        })?;
        Ok(format!("{secret}.{}", self.ca_fingerprint))
    }

    /// Redeems an enrollment secret: the store gets its credential and the CA to pin.
    pub fn enroll(&self, secret: &str, store_id: &str) -> Result<EnrollResponse, HubError> {
        let credential = self.secret("ps_")?;
        let row = self.store.enroll(
            &secret_hash(secret),
            store_id,
            &secret_hash(&credential),
            (self.now)(),
        )?;
        tracing::info!(store = %row.store_id, ring = %row.ring, "store enrolled");
        Ok(EnrollResponse {
            store_id: row.store_id,
            credential,
            ring: row.ring,
            ca_pem: self.ca_pem.clone(),
        })
    }

    /// The store holding this credential.
    pub fn authenticate(&self, credential: &str) -> Result<StoreRow, HubError> {
        self.store
            .store_by_credential(&secret_hash(credential))?
            .ok_or(HubError::Unauthorized)
    }

    /// Applies a store's push. A batch of any origin but the store's own refuses the
    /// whole push (nothing applied) and is logged; otherwise every batch is judged on
    /// its own and the valid ones are applied in one transaction.
    pub fn push(&self, store: &StoreRow, req: &PushRequest<Push>) -> Result<PushAck, HubError> {
        let sid = &store.store_id;
        if let Some(b) = req.push.batches.iter().find(|b| b.origin.node != *sid) {
            tracing::warn!(store = %sid, claimed = %b.origin, "forged origin refused");
            return Err(HubError::Forged {
                store: sid.clone(),
                claimed: b.origin.to_string(),
            });
        }
        if let Some(o) = &req.report.origin
            && o.node != *sid
        {
            return Err(HubError::Forged {
                store: sid.clone(),
                claimed: o.to_string(),
            });
        }
        let decide = |high: u64, b: &patron_sync::Batch| match judge(true, HUB_NODE, sid, high, b) {
            // What the hub keeps must be readable later (analytics, refetch): a fact
            // whose body is not a ledger entry refuses its batch whole.
            Judgement::Apply { skip, .. }
                if b.facts[skip..]
                    .iter()
                    .any(|f| serde_json::from_str::<LedgerEntry>(&f.body).is_err()) =>
            {
                Judgement::Refuse("a fact body is not a ledger entry")
            }
            j => j,
        };
        let done = self
            .store
            .ingest(sid, &req.report, &req.push.batches, &decide, (self.now)())?;
        let verdicts = req
            .push
            .batches
            .iter()
            .zip(done)
            .map(|(b, i)| {
                let origin = b.origin.clone();
                match i.judgement {
                    Judgement::Refuse(reason) => {
                        tracing::warn!(store = %sid, origin = %origin, reason, "batch refused");
                        Verdict::Refused {
                            origin,
                            reason: reason.to_string(),
                        }
                    }
                    Judgement::AlreadyHeld => Verdict::AlreadyHeld {
                        origin,
                        high: i.high,
                    },
                    Judgement::Gap { expected } => Verdict::Gap { origin, expected },
                    Judgement::Apply { .. } => Verdict::Applied {
                        origin,
                        high: i.high,
                    },
                }
            })
            .collect();
        Ok(PushAck {
            from: HUB_NODE.into(),
            verdicts,
        })
    }

    /// Facts of one of `store`'s own origins after `after`, with the hub's high for it.
    pub fn refetch(
        &self,
        store: &StoreRow,
        req: &RefetchRequest,
    ) -> Result<(Batch, u64), HubError> {
        if req.origin.node != store.store_id {
            tracing::warn!(store = %store.store_id, claimed = %req.origin, "refetch of a foreign origin refused");
            return Err(HubError::Forged {
                store: store.store_id.clone(),
                claimed: req.origin.to_string(),
            });
        }
        let max = req.max.clamp(1, patron_sync::session::MAX_BATCH);
        let facts = self.store.read(&req.origin, req.after, max)?;
        let high = self.store.high(&req.origin)?;
        Ok((batch(req.origin.clone(), facts), high))
    }

    /// Publishes a rule set (JSON with a `version`) to `ring` and puts it in force there.
    pub fn publish_rule_set(&self, ring: &str, json: &str) -> Result<String, HubError> {
        let v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| HubError::Invalid(format!("rule set: {e}")))?;
        let version = v["version"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| HubError::Invalid("a rule set needs a \"version\"".into()))?
            .to_string();
        if ring.trim().is_empty() {
            return Err(HubError::Invalid("ring must not be empty".into()));
        }
        let id = ring_doc(ring.trim());
        let mut doc = match self.store.load_doc(&id)? {
            Some(b) => HqDoc::load(&b).map_err(|e| HubError::Invalid(e.to_string()))?,
            None => HqDoc::new(),
        };
        doc.publish_rule_set(&version, json)
            .map_err(|e| HubError::Invalid(e.to_string()))?;
        self.store.save_doc(&id, &doc.save(), (self.now)())?;
        tracing::info!(ring, %version, "rule set published");
        Ok(version)
    }

    /// One step of a store's sync of an HQ document: applies its message (which may
    /// carry no changes: stores hold HQ documents read-only) and returns the answer.
    /// The sync state stays in memory for the session and is persisted after each step.
    pub fn doc_sync(
        &self,
        store: &StoreRow,
        doc_id: &str,
        message: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, HubError> {
        if doc_id != ring_doc(&store.ring) && doc_id != ring_doc("all") {
            return Err(HubError::Forged {
                store: store.store_id.clone(),
                claimed: format!("document {doc_id}"),
            });
        }
        if let Some(m) = message
            && carries_changes(m).map_err(|e| HubError::Invalid(e.to_string()))?
        {
            tracing::warn!(store = %store.store_id, doc = doc_id, "a store tried to change an HQ document");
            return Err(HubError::Forged {
                store: store.store_id.clone(),
                claimed: format!("changes to {doc_id} (stores hold HQ documents read-only)"),
            });
        }
        let mut doc = match self.store.load_doc(doc_id)? {
            Some(b) => HqDoc::load(&b).map_err(|e| HubError::Invalid(e.to_string()))?,
            None => HqDoc::new(),
        };
        let key = (doc_id.to_string(), store.store_id.clone());
        let mut sessions = self.doc_sessions.lock().unwrap_or_else(|p| p.into_inner());
        let state = match sessions.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let persisted = self.store.load_doc_state(doc_id, &store.store_id)?;
                v.insert(
                    decode_state(persisted.as_deref())
                        .map_err(|e| HubError::Invalid(e.to_string()))?,
                )
            }
        };
        if let Some(m) = message {
            doc.receive(state, m)
                .map_err(|e| HubError::Invalid(e.to_string()))?;
        }
        let answer = doc.generate(state);
        self.store
            .save_doc_state(doc_id, &store.store_id, &encode_state(state))?;
        Ok(answer)
    }

    /// Every store with its last sync, lag and pending count.
    pub fn stores(&self) -> Result<Vec<StoreStatus>, HubError> {
        Ok(self.store.list_stores((self.now)())?)
    }
}
