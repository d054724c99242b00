//! Enrollment: registering stores, redeeming their one-time tokens for credentials,
//! authenticating them, and agreeing the sync protocol with each.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use patron_protocol::hub::{EnrollResponse, MIN_PROTOCOL, Negotiated, PROTOCOL, StoreStatus};
use ring::rand::{SecureRandom, SystemRandom};

use crate::clock::Clock;
use crate::error::HubError;
use crate::ingest::HUB_NODE;
use crate::store::{HubStore, NewStore, StoreRow};

/// Stores joining the chain and proving who they are.
pub struct Enrollment {
    store: Arc<dyn HubStore>,
    ca_pem: String,
    ca_fingerprint: String,
    /// The chain's member keys, handed to stores at enrollment (base64).
    chain_keys: Option<String>,
    rng: SystemRandom,
    now: Clock,
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

/// The protocol for a store that speaks `asked` (absent: 1), or why it is refused.
pub fn negotiate(asked: Option<u32>) -> Result<Negotiated, HubError> {
    Negotiated::for_store(asked).ok_or(HubError::Protocol {
        asked: asked.unwrap_or(1),
        min: MIN_PROTOCOL,
        newest: PROTOCOL,
    })
}

impl Enrollment {
    /// Enrollment over `store`, handing out `ca_pem` (with its fingerprint).
    pub fn new(
        store: Arc<dyn HubStore>,
        ca_pem: String,
        ca_fingerprint: String,
        now: Clock,
    ) -> Self {
        Self {
            store,
            ca_pem,
            ca_fingerprint,
            chain_keys: None,
            rng: SystemRandom::new(),
            now,
        }
    }

    /// Hands `keys` (see [`crate::chain_keys`]) to every store that enrolls.
    pub fn set_chain_keys(&mut self, keys: String) {
        self.chain_keys = Some(keys);
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
    pub fn enroll(
        &self,
        secret: &str,
        store_id: &str,
        protocol: Option<u32>,
    ) -> Result<EnrollResponse, HubError> {
        // Before the token is spent: a store too old to sync must not use it up.
        let negotiated = negotiate(protocol)?;
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
            chain_keys: self.chain_keys.clone(),
            negotiated: Some(negotiated),
        })
    }

    /// The store holding this credential.
    pub fn authenticate(&self, credential: &str) -> Result<StoreRow, HubError> {
        self.store
            .store_by_credential(&secret_hash(credential))?
            .ok_or(HubError::Unauthorized)
    }

    /// Every store with its last sync, lag and pending count.
    pub fn stores(&self) -> Result<Vec<StoreStatus>, HubError> {
        Ok(self.store.list_stores((self.now)())?)
    }
}
