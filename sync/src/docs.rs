//! HQ-authored documents (rule sets now; tier rules, benefit catalogue and rings
//! follow the same way) as automerge documents: few, structured, edited by several HQ
//! people, synced to stores with automerge's sync protocol and a sync state persisted
//! per peer, so that a new change costs a small message rather than the document.
//!
//! One document per rollout ring (`ring:pilot`, `ring:all`): a store syncs the
//! documents of its ring, so a rule set reaches exactly the stores it targets. Stores
//! hold them read-only: the hub refuses a store's sync message that carries changes.
//!
//! Layout: `rule_sets: { <version>: <rule-set JSON> }` (a published version never
//! changes), `current: <version>` (the one in force for the ring) and `tier_rules`
//! (the tier thresholds, JSON).

use automerge::sync::{Message, SyncDoc};

/// An automerge sync state (one per document and peer).
pub use automerge::sync::State;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT, ReadDoc, Value};

/// Document errors.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Automerge refused the document or a message.
    #[error("automerge: {0}")]
    Automerge(String),
    /// A published rule-set version cannot change.
    #[error("rule set {0} is published already with other content")]
    Immutable(String),
}

fn am<E: std::fmt::Display>(e: E) -> DocError {
    DocError::Automerge(e.to_string())
}

/// The document id of a ring.
pub fn ring_doc(ring: &str) -> String {
    format!("ring:{ring}")
}

/// One HQ document.
#[derive(Debug, Clone)]
pub struct HqDoc {
    doc: AutoCommit,
}

impl Default for HqDoc {
    fn default() -> Self {
        Self::new()
    }
}

impl HqDoc {
    /// An empty document.
    pub fn new() -> Self {
        Self {
            doc: AutoCommit::new(),
        }
    }

    /// A document from its saved bytes.
    pub fn load(bytes: &[u8]) -> Result<Self, DocError> {
        Ok(Self {
            doc: AutoCommit::load(bytes).map_err(am)?,
        })
    }

    /// The document's bytes, for storage.
    pub fn save(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    fn str_at(&self, obj: &automerge::ObjId, key: &str) -> Option<String> {
        match self.doc.get(obj, key).ok()?? {
            (Value::Scalar(s), _) => s.as_str().map(str::to_string),
            _ => None,
        }
    }

    fn rule_sets(&self) -> Option<automerge::ObjId> {
        match self.doc.get(ROOT, "rule_sets").ok()?? {
            (Value::Object(ObjType::Map), id) => Some(id),
            _ => None,
        }
    }

    /// Publishes rule set `version` (its JSON) and puts it in force.
    pub fn publish_rule_set(&mut self, version: &str, json: &str) -> Result<(), DocError> {
        let sets = match self.rule_sets() {
            Some(id) => id,
            None => self
                .doc
                .put_object(ROOT, "rule_sets", ObjType::Map)
                .map_err(am)?,
        };
        match self.str_at(&sets, version) {
            Some(existing) if existing != json => {
                return Err(DocError::Immutable(version.to_string()));
            }
            Some(_) => {}
            None => {
                self.doc.put(&sets, version, json).map_err(am)?;
            }
        }
        self.doc.put(ROOT, "current", version).map_err(am)?;
        // One publication, one change: the history HQ audits.
        self.doc.commit();
        Ok(())
    }

    /// The rule set in force: `(version, JSON)`.
    pub fn current_rule_set(&self) -> Option<(String, String)> {
        let version = self.str_at(&ROOT, "current")?;
        let json = self.str_at(&self.rule_sets()?, &version)?;
        Some((version, json))
    }

    /// Publishes tier rules (JSON) for the ring; the latest publication is in force.
    pub fn publish_tier_rules(&mut self, json: &str) -> Result<(), DocError> {
        self.doc.put(ROOT, "tier_rules", json).map_err(am)?;
        self.doc.commit();
        Ok(())
    }

    /// The tier rules in force (JSON), if HQ published any.
    pub fn tier_rules(&self) -> Option<String> {
        self.str_at(&ROOT, "tier_rules")
    }

    /// Publishes points settings (JSON) for the ring; the latest publication is in force.
    pub fn publish_points_rules(&mut self, json: &str) -> Result<(), DocError> {
        self.doc.put(ROOT, "points_rules", json).map_err(am)?;
        self.doc.commit();
        Ok(())
    }

    /// The points settings in force (JSON), if HQ published any.
    pub fn points_rules(&self) -> Option<String> {
        self.str_at(&ROOT, "points_rules")
    }

    /// The next message for the peer whose state is `state` (None: nothing to say).
    pub fn generate(&mut self, state: &mut State) -> Option<Vec<u8>> {
        self.doc
            .sync()
            .generate_sync_message(state)
            .map(Message::encode)
    }

    /// Applies a peer's message.
    pub fn receive(&mut self, state: &mut State, message: &[u8]) -> Result<(), DocError> {
        let m = Message::decode(message).map_err(am)?;
        self.doc.sync().receive_sync_message(state, m).map_err(am)
    }
}

/// Whether a sync message carries changes (a store's may not: stores are read-only).
pub fn carries_changes(message: &[u8]) -> Result<bool, DocError> {
    Ok(!Message::decode(message).map_err(am)?.changes.is_empty())
}

/// A persisted sync state.
pub fn encode_state(s: &State) -> Vec<u8> {
    s.encode()
}

/// A sync state from its bytes (a fresh one if none).
pub fn decode_state(bytes: Option<&[u8]>) -> Result<State, DocError> {
    match bytes {
        Some(b) => State::decode(b).map_err(am),
        None => Ok(State::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one sync session between two documents until both are quiet; returns the
    /// bytes exchanged. Each side keeps its state in memory for the session and persists
    /// it at the end, as the hub and the edge do; the next session starts from the
    /// persisted bytes.
    fn sync(
        hub: &mut HqDoc,
        hub_state: &mut Vec<u8>,
        store: &mut HqDoc,
        store_state: &mut Vec<u8>,
    ) -> usize {
        let mut hs = decode_state(Some(hub_state)).unwrap_or_else(|e| panic!("{e}"));
        let mut ss = decode_state(Some(store_state)).unwrap_or_else(|e| panic!("{e}"));
        let mut bytes = 0;
        let mut quiet = false;
        for _ in 0..20 {
            let to_hub = store.generate(&mut ss);
            if let Some(m) = &to_hub {
                bytes += m.len();
                assert!(
                    !carries_changes(m).unwrap_or(true),
                    "a store sends no changes"
                );
                hub.receive(&mut hs, m).unwrap_or_else(|e| panic!("{e}"));
            }
            let to_store = hub.generate(&mut hs);
            if let Some(m) = &to_store {
                bytes += m.len();
                store.receive(&mut ss, m).unwrap_or_else(|e| panic!("{e}"));
            }
            if to_hub.is_none() && to_store.is_none() {
                quiet = true;
                break;
            }
        }
        assert!(quiet, "the session ends");
        *hub_state = encode_state(&hs);
        *store_state = encode_state(&ss);
        bytes
    }

    fn big_rule_set(n: usize) -> String {
        let rules: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"id":"r{i}","label":"rule {i}","type":"order_reduction","threshold":20000,"off":3000}}"#))
            .collect();
        format!(r#"{{"version":"v{n}","rules":[{}]}}"#, rules.join(","))
    }

    #[test]
    fn a_store_receives_the_rule_set_and_later_changes_cost_little() {
        let mut hub = HqDoc::new();
        // A season of publications: the document's history.
        for v in 0..30 {
            hub.publish_rule_set(&format!("v{v}"), &big_rule_set(20 + v))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut hs = encode_state(&State::new());
        let mut ss = encode_state(&State::new());
        let mut store = HqDoc::new();
        let first = sync(&mut hub, &mut hs, &mut store, &mut ss);
        assert_eq!(store.current_rule_set(), hub.current_rule_set());
        // The store's copy survives a restart.
        let mut store = HqDoc::load(&store.save()).unwrap_or_else(|e| panic!("{e}"));
        // One more publication costs a small message with the persisted states.
        let next = r#"{"version":"v30","rules":[]}"#;
        hub.publish_rule_set("v30", next)
            .unwrap_or_else(|e| panic!("{e}"));
        let second = sync(&mut hub, &mut hs, &mut store, &mut ss);
        assert_eq!(
            store.current_rule_set(),
            Some(("v30".to_string(), next.to_string()))
        );
        eprintln!("first sync {first} bytes, the next publication {second} bytes");
        assert!(
            second * 4 < first,
            "persisted state: {second} bytes after {first}"
        );
    }

    #[test]
    fn a_published_version_never_changes() {
        let mut d = HqDoc::new();
        d.publish_rule_set("v1", "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            d.publish_rule_set("v1", r#"{"x":1}"#),
            Err(DocError::Immutable(_))
        ));
        d.publish_rule_set("v1", "{}")
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_message_with_changes_is_recognised() {
        let mut a = HqDoc::new();
        a.publish_rule_set("v1", "{}")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut b = HqDoc::new();
        let mut sa = State::new();
        let mut sb = State::new();
        // b announces itself; a answers with its changes.
        let hello = b.generate(&mut sb).unwrap_or_default();
        a.receive(&mut sa, &hello).unwrap_or_else(|e| panic!("{e}"));
        let reply = a.generate(&mut sa).unwrap_or_default();
        assert!(carries_changes(&reply).unwrap_or(false));
        assert!(!carries_changes(&hello).unwrap_or(true));
    }
}
