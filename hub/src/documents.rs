//! HQ documents: rule sets and chain-wide settings, published to a ring's automerge
//! document once they pass the validation the edges load them with, and each store's
//! read-only sync of them.

use std::collections::HashMap;
use std::sync::Arc;

use patron_domain::settings::PointsRules;
use patron_domain::tiers::TierRules;
use patron_sync::docs::{HqDoc, carries_changes, decode_state, encode_state, ring_doc};

use crate::clock::Clock;
use crate::error::HubError;
use crate::store::{HubStore, StoreRow};

/// HQ's documents.
pub struct HqDocuments {
    store: Arc<dyn HubStore>,
    now: Clock,
    /// Automerge sync states of open sessions, by (document, store). In this process
    /// only (a single-process limit: docs/hub.md).
    doc_sessions: std::sync::Mutex<HashMap<(String, String), patron_sync::docs::State>>,
}

impl HqDocuments {
    /// HQ documents over `store`.
    pub fn new(store: Arc<dyn HubStore>, now: Clock) -> Self {
        Self {
            store,
            now,
            doc_sessions: Default::default(),
        }
    }

    /// An HQ document as stored (a new, empty one if none).
    fn doc(&self, id: &str) -> Result<HqDoc, HubError> {
        match self.store.load_doc(id)? {
            Some(b) => HqDoc::load(&b).map_err(|e| HubError::Invalid(e.to_string())),
            None => Ok(HqDoc::new()),
        }
    }

    /// Publishes a rule set to `ring` and puts it in force there, once it passes the
    /// validation the edges load it with.
    pub fn publish_rule_set(&self, ring: &str, json: &str) -> Result<String, HubError> {
        // The schema and validation the edges load it with: a set they would refuse is
        // never published.
        let version = patron_domain::rules::RuleSet::parse(json.as_bytes())
            .map_err(HubError::Invalid)?
            .set
            .version;
        if ring.trim().is_empty() {
            return Err(HubError::Invalid("ring must not be empty".into()));
        }
        let id = ring_doc(ring.trim());
        let mut doc = self.doc(&id)?;
        doc.publish_rule_set(&version, json)
            .map_err(|e| HubError::Invalid(e.to_string()))?;
        self.store.save_doc(&id, &doc.save(), (self.now)())?;
        tracing::info!(ring, %version, "rule set published");
        Ok(version)
    }

    /// Publishes tier thresholds to `ring`.
    pub fn publish_tier_rules(&self, ring: &str, json: &str) -> Result<(), HubError> {
        self.publish_setting(
            ring,
            json,
            "tier rules",
            TierRules::validate,
            HqDoc::publish_tier_rules,
        )
    }

    /// Publishes points settings (earn and redeem rates, expiry) to `ring`: every store
    /// of the ring shows the same numbers for the same facts.
    pub fn publish_points_rules(&self, ring: &str, json: &str) -> Result<(), HubError> {
        self.publish_setting(
            ring,
            json,
            "points settings",
            PointsRules::validate,
            HqDoc::publish_points_rules,
        )
    }

    /// Publishes a chain-wide setting to `ring`'s document: parsed strictly (every field,
    /// no unknown one), validated as the edges validate it, stored in canonical form.
    fn publish_setting<T: serde::de::DeserializeOwned + serde::Serialize>(
        &self,
        ring: &str,
        json: &str,
        what: &str,
        validate: fn(&T) -> Result<(), String>,
        put: fn(&mut HqDoc, &str) -> Result<(), patron_sync::docs::DocError>,
    ) -> Result<(), HubError> {
        let t: T =
            serde_json::from_str(json).map_err(|e| HubError::Invalid(format!("{what}: {e}")))?;
        validate(&t).map_err(HubError::Invalid)?;
        if ring.trim().is_empty() {
            return Err(HubError::Invalid("ring must not be empty".into()));
        }
        let id = ring_doc(ring.trim());
        let mut doc = self.doc(&id)?;
        let canonical = serde_json::to_string(&t).map_err(|e| HubError::Invalid(e.to_string()))?;
        put(&mut doc, &canonical).map_err(|e| HubError::Invalid(e.to_string()))?;
        self.store.save_doc(&id, &doc.save(), (self.now)())?;
        tracing::info!(ring, what, "published");
        Ok(())
    }

    /// One step of a store's sync of an HQ document: applies its message (which may
    /// carry no changes: stores hold HQ documents read-only) and returns the answer.
    /// The sync state stays in memory for the session and is persisted after each step.
    pub fn doc_sync(
        &self,
        store: &StoreRow,
        doc_id: &str,
        message: Option<&[u8]>,
        fresh: bool,
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
        let mut doc = self.doc(doc_id)?;
        let key = (doc_id.to_string(), store.store_id.clone());
        let mut sessions = self.doc_sessions.lock().unwrap_or_else(|p| p.into_inner());
        if fresh {
            sessions.remove(&key);
        }
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
}
