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
use crate::keyring::CHAIN;
use crate::store::{HubStore, NewStore, StoreRow};

/// Stores joining the chain and proving who they are.
pub struct Enrollment {
    store: Arc<dyn HubStore>,
    ca_pem: String,
    ca_fingerprint: String,
    /// The member keys, from which each enrolling store gets its own.
    keyring: Option<Arc<crate::keyring::Keyring>>,
    /// Certifies the stores' POS API keys at enrollment.
    lan_ca: Option<Arc<crate::tls::LanCa>>,
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

/// How long an enrollment token works unless HQ says otherwise.
pub const TOKEN_VALID_MS: i64 = 24 * 60 * 60 * 1000;

/// `valid_ms` if it is a sane token lifetime (a minute to 30 days).
fn token_validity(valid_ms: i64) -> Result<i64, HubError> {
    if (60_000..=30 * 24 * 60 * 60 * 1000).contains(&valid_ms) {
        Ok(valid_ms)
    } else {
        Err(HubError::Invalid(
            "an enrollment token is valid for a minute to 30 days".into(),
        ))
    }
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
            keyring: None,
            lan_ca: None,
            rng: SystemRandom::new(),
            now,
        }
    }

    /// Hands every store that enrolls its member keys from `ring`.
    pub fn set_keyring(&mut self, ring: Arc<crate::keyring::Keyring>) {
        self.keyring = Some(ring);
    }

    /// Certifies with `ca` the POS API key of every store that enrolls and asks.
    pub fn set_lan_ca(&mut self, ca: Arc<crate::tls::LanCa>) {
        self.lan_ca = Some(ca);
    }

    /// 32 random bytes, base64url, after a prefix that says what the secret is for
    /// (and keeps it from starting with `-`, which a command line would take for a flag).
    fn secret(&self, prefix: &str) -> Result<String, HubError> {
        let mut b = [0u8; 32];
        self.rng.fill(&mut b).map_err(|_| HubError::Random)?;
        Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(b)))
    }

    /// Registers a store and returns its one-time enrollment token:
    /// `<secret>.<sha-256 of the hub CA>` (the edge pins the CA by that fingerprint),
    /// valid for `valid_ms`.
    pub fn add_store(
        &self,
        store_id: &str,
        name: &str,
        ring: &str,
        valid_ms: i64,
    ) -> Result<String, HubError> {
        if !valid_store_id(store_id) {
            return Err(HubError::Invalid(
                "store id: 1–16 of A-Z a-z 0-9 - _ (and not `hub`)".into(),
            ));
        }
        if name.trim().is_empty() || ring.trim().is_empty() {
            return Err(HubError::Invalid("name and ring must not be empty".into()));
        }
        let valid_ms = token_validity(valid_ms)?;
        let secret = self.secret("pe_")?;
        let now = (self.now)();
        self.store.add_store(&NewStore {
            store_id,
            name: name.trim(),
            ring: ring.trim(),
            enroll_hash: secret_hash(&secret),
            enroll_expires_at: now.saturating_add(valid_ms),
            now,
        })?;
        Ok(format!("{secret}.{}", self.ca_fingerprint))
    }

    /// A new one-time enrollment token for a registered store, valid for `valid_ms`
    /// (the one outstanding, if any, stops working). With `rotate`, the store's
    /// current credential stops working at once: it syncs again once enrolled with
    /// the new token (its data stays; `patron-edge enroll` only replaces the link).
    pub fn issue_token(
        &self,
        store_id: &str,
        valid_ms: i64,
        rotate: bool,
    ) -> Result<String, HubError> {
        let valid_ms = token_validity(valid_ms)?;
        let secret = self.secret("pe_")?;
        let expires = (self.now)().saturating_add(valid_ms);
        self.store
            .issue_enrollment(store_id, &secret_hash(&secret), expires, rotate)?;
        if rotate {
            tracing::warn!(store = %store_id, "store credential rotated: the old one is refused");
        }
        Ok(format!("{secret}.{}", self.ca_fingerprint))
    }

    /// Cancels a store's outstanding enrollment token; whether it had one.
    pub fn cancel_token(&self, store_id: &str) -> Result<bool, HubError> {
        Ok(self.store.cancel_enrollment(store_id)?)
    }

    /// Rotates a store's member keys (`patron-hub store rotate-keys`): the hub offers
    /// it the next generation with its next push; the store re-wraps what it holds in
    /// the background and reports when it holds them (docs/keys.md). A store holding
    /// the chain's keys moves to keys of its own. The generation offered.
    pub fn rotate_keys(&self, store_id: &str) -> Result<u32, HubError> {
        if self.keyring.is_none() {
            return Err(HubError::Invalid("this hub holds no member keys".into()));
        }
        let g = self.store.offer_keys(store_id)?.ok_or_else(|| {
            HubError::Invalid(format!(
                "{store_id}: no such enrolled, unrevoked store holding member keys"
            ))
        })?;
        tracing::warn!(store = %store_id, generation = g, "store member keys rotated");
        Ok(g)
    }

    /// The keys to offer `store` with a push answer: the generation HQ rotated it to,
    /// while the store reports holding an older one.
    pub fn keys_to_offer(
        &self,
        store: &StoreRow,
        reported: Option<u32>,
    ) -> Option<patron_protocol::hub::OfferedKeys> {
        let ring = self.keyring.as_ref()?;
        let offered = store.keys_offered?;
        let held = reported.or(store.member_keys)?;
        (offered > held).then(|| patron_protocol::hub::OfferedKeys {
            generation: offered,
            keys: ring.handout(&store.store_id, offered),
        })
    }

    /// Revokes a store: from now on its credential is refused, what it pushes is kept
    /// in quarantine for review, and it cannot enroll again. Whether it was not yet.
    pub fn revoke(&self, store_id: &str) -> Result<bool, HubError> {
        let done = self.store.revoke_store(store_id, (self.now)())?;
        if done {
            tracing::warn!(store = %store_id, "store revoked");
        }
        Ok(done)
    }

    /// Redeems an enrollment secret: the store gets its credential and the CA to pin.
    pub fn enroll(
        &self,
        secret: &str,
        store_id: &str,
        protocol: Option<u32>,
        lan_csr: Option<&str>,
    ) -> Result<EnrollResponse, HubError> {
        // Before the token is spent: a store too old to sync, or whose certificate
        // request is refused, must not use it up.
        let negotiated = negotiate(protocol)?;
        let lan_certificate = match (&self.lan_ca, lan_csr) {
            (Some(ca), Some(csr)) if valid_store_id(store_id) => Some(
                ca.issue(store_id, csr)
                    .map_err(|e| HubError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        let credential = self.secret("ps_")?;
        let row = self.store.enroll(
            &secret_hash(secret),
            store_id,
            &secret_hash(&credential),
            self.keyring.as_ref().map(|_| 1),
            (self.now)(),
        )?;
        tracing::info!(store = %row.store_id, ring = %row.ring, "store enrolled");
        // A store enrolled again keeps the keys it holds (its members are wrapped under
        // them): the chain's at a store enrolled before keys were per store, else its
        // own generation. A rotation offered since comes with its next push.
        let handout = self
            .keyring
            .as_ref()
            .zip(row.member_keys)
            .map(|(k, g)| (g, k.handout(&row.store_id, g)));
        let (chain_keys, store_keys) = match handout {
            Some((CHAIN, keys)) => (Some(keys), None),
            Some((_, keys)) => (None, Some(keys)),
            None => (None, None),
        };
        Ok(EnrollResponse {
            store_id: row.store_id,
            credential,
            ring: row.ring,
            ca_pem: self.ca_pem.clone(),
            chain_keys,
            store_keys,
            negotiated: Some(negotiated),
            lan_certificate,
            member_code_key: self.keyring.as_ref().map(|k| k.member_code_key()),
        })
    }

    /// The store holding this credential; a revoked store is refused.
    pub fn authenticate(&self, credential: &str) -> Result<StoreRow, HubError> {
        let row = self.authenticate_revoked_too(credential)?;
        if row.revoked {
            return Err(HubError::Revoked(row.store_id));
        }
        Ok(row)
    }

    /// The store holding this credential, revoked or not (a revoked store's push is
    /// kept in quarantine before it is refused).
    pub fn authenticate_revoked_too(&self, credential: &str) -> Result<StoreRow, HubError> {
        self.store
            .store_by_credential(&secret_hash(credential))?
            .ok_or(HubError::Unauthorized)
    }

    /// Every store with its last sync, lag and pending count.
    pub fn stores(&self) -> Result<Vec<StoreStatus>, HubError> {
        Ok(self.store.list_stores((self.now)())?)
    }

    /// How many stores there are, and how many are enrolled.
    pub fn store_counts(&self) -> Result<(u64, u64), HubError> {
        Ok(self.store.store_counts()?)
    }
}
