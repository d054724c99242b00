//! The sync session, pure and transport-free: what a replica sends a peer, how it
//! judges what it receives, and how acknowledgements move its view of the peer.
//!
//! - A [`Fact`] is immutable, identified by `(origin, seq)`, sequences gap-free from 1.
//! - A [`Push`] carries [`Batch`]es, one per origin, of consecutive facts with a
//!   checksum. The receiver accepts a batch only if it continues that origin without a
//!   gap ([`VersionVector::check`]); otherwise it answers the next sequence it needs.
//!   Overlaps (redelivery) are skipped, so delivery at least once is applied exactly once.
//! - A [`PushAck`] gives, per origin, the highest contiguous sequence the receiver now
//!   holds. The sender pipelines: it sends the next batch before the previous one is
//!   acknowledged (what it *sent*), so loss and reordering do produce gaps, which the
//!   receiver refuses and the sender answers by rewinding. A resend starts from what
//!   was *acknowledged*, so a lost answer never leaves a sender believing a peer is up
//!   to date. If the sender forgets everything (restart), it starts from nothing and
//!   the receiver's "already held" answers bring it back up to date.
//! - A store may push only facts of its own origin; the hub relays every origin.

use std::collections::{BTreeMap, HashMap};

use patron_protocol::Origin;
use serde::{Deserialize, Serialize};

use crate::version_vector::{Accept, VersionVector};

/// Most facts in one batch: bounds memory and the work a bad peer can cause.
pub const MAX_BATCH: usize = 1_000;

/// One immutable fact as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// Where it was created.
    pub origin: Origin,
    /// Its gap-free sequence within the origin, from 1.
    pub seq: u64,
    /// The fact itself (JSON text; opaque to sync).
    pub body: String,
}

/// Consecutive facts of one origin. On the wire the origin is written once and the
/// sequences as the first one (see [`BatchWire`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "BatchWire", from = "BatchWire")]
pub struct Batch {
    /// The origin of every fact in it.
    pub origin: Origin,
    /// The facts, `seq` consecutive.
    pub facts: Vec<Fact>,
    /// [`checksum`] of `facts`: a truncated or altered batch is refused whole.
    pub checksum: u64,
}

/// A batch as it travels: the origin once, the first sequence, then each fact's body
/// as raw JSON. Per-fact origins and escaped bodies made up most of the bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchWire {
    /// The origin of every fact.
    pub origin: Origin,
    /// The first fact's sequence; the others follow consecutively.
    pub first: u64,
    /// The facts' bodies (JSON), in sequence order.
    pub bodies: Vec<RawBody>,
    /// The checksum over the facts as reconstructed.
    pub checksum: u64,
}

/// One fact body on the wire: JSON text sent as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawBody(#[serde(with = "patron_protocol::raw_json")] pub String);

impl From<Batch> for BatchWire {
    fn from(b: Batch) -> Self {
        // A batch whose facts are not consecutive cannot be written this way; it is sent
        // from its first sequence, and the checksum (over the real sequences) makes the
        // receiver refuse it whole.
        BatchWire {
            first: b.facts.first().map_or(0, |f| f.seq),
            origin: b.origin,
            bodies: b.facts.into_iter().map(|f| RawBody(f.body)).collect(),
            checksum: b.checksum,
        }
    }
}

impl From<BatchWire> for Batch {
    fn from(w: BatchWire) -> Self {
        let facts = w
            .bodies
            .into_iter()
            .enumerate()
            .map(|(i, b)| Fact {
                origin: w.origin.clone(),
                seq: w.first.saturating_add(i as u64),
                body: b.0,
            })
            .collect();
        Batch {
            origin: w.origin,
            facts,
            checksum: w.checksum,
        }
    }
}

/// What one node sends another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The sending node (authenticated by the transport).
    pub from: String,
    /// One batch per origin.
    pub batches: Vec<Batch>,
}

/// The receiver's verdict on one batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Applied (possibly after skipping an overlap): the receiver now holds up to `high`.
    Applied {
        /// The origin.
        origin: Origin,
        /// Highest contiguous sequence now held.
        high: u64,
    },
    /// Nothing new: the receiver already holds up to `high`.
    AlreadyHeld {
        /// The origin.
        origin: Origin,
        /// Highest contiguous sequence held.
        high: u64,
    },
    /// The batch starts after a hole: resend from `expected`.
    Gap {
        /// The origin.
        origin: Origin,
        /// The next sequence needed.
        expected: u64,
    },
    /// Refused, nothing applied: malformed, truncated, oversized or forged.
    Refused {
        /// The origin claimed.
        origin: Origin,
        /// Why.
        reason: String,
    },
}

/// The receiver's answer to a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAck {
    /// The answering node.
    pub from: String,
    /// One verdict per batch, in order.
    pub verdicts: Vec<Verdict>,
    /// Members of the pushed facts that the receiver merged into another member (the
    /// same phone registered twice): the pusher fetches the survivor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<Merged>,
}

/// A member merged into the one registered first under the same phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merged {
    /// The merged-away member (UUID).
    pub loser: String,
    /// The member it is now part of.
    pub survivor: String,
}

/// FNV-1a over every fact's identity and body. It detects truncation and corruption in
/// transit (integrity against an attacker is the transport's job: TLS).
pub fn checksum(facts: &[Fact]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for f in facts {
        eat(f.origin.node.as_bytes());
        eat(f.origin.incarnation.as_bytes());
        eat(&f.seq.to_le_bytes());
        eat(&(f.body.len() as u64).to_le_bytes());
        eat(f.body.as_bytes());
    }
    h
}

/// Makes a batch with its checksum.
pub fn batch(origin: Origin, facts: Vec<Fact>) -> Batch {
    let checksum = checksum(&facts);
    Batch {
        origin,
        facts,
        checksum,
    }
}

/// What a receiver should do with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Refuse it whole, applying nothing.
    Refuse(&'static str),
    /// Everything in it is held already: acknowledge, apply nothing.
    AlreadyHeld,
    /// It starts after a hole: ask for `expected` onwards.
    Gap {
        /// The next sequence the receiver needs.
        expected: u64,
    },
    /// Apply `facts[skip..]`; the receiver then holds up to `high`.
    Apply {
        /// Leading facts already held (a redelivery overlap).
        skip: usize,
        /// Highest contiguous sequence held after applying.
        high: u64,
    },
}

/// Judges batch `b` received from node `from` by node `me`, which holds `origin` up to
/// `high`. `hub`: the receiver is the hub, where a store may push only its own facts.
/// Every receiver (the in-memory replica, the hub's database) decides with this one
/// function, so the simulation tests exercise the rules the hub runs.
pub fn judge(hub: bool, me: &str, from: &str, high: u64, b: &Batch) -> Judgement {
    if b.facts.is_empty() || b.facts.len() > MAX_BATCH {
        return Judgement::Refuse("a batch holds 1 to 1000 facts");
    }
    if hub && b.origin.node != from {
        return Judgement::Refuse("a store may push only its own facts");
    }
    if b.origin.node == me {
        return Judgement::Refuse("facts of this node's own origin come only from itself");
    }
    if b.checksum != checksum(&b.facts) {
        return Judgement::Refuse("checksum mismatch: truncated or altered in transit");
    }
    let first = b.facts[0].seq;
    let consecutive = b
        .facts
        .iter()
        .enumerate()
        .all(|(i, f)| f.origin == b.origin && Some(f.seq) == first.checked_add(i as u64));
    if first == 0 || !consecutive {
        return Judgement::Refuse(
            "facts must be of the batch's origin with consecutive sequences from 1",
        );
    }
    let Some(last) = first.checked_add(b.facts.len() as u64 - 1) else {
        return Judgement::Refuse("sequence out of range");
    };
    let mut vv = VersionVector::new();
    vv.advance(&b.origin, high);
    match vv.check(&b.origin, first, last) {
        Accept::AlreadyHeld => Judgement::AlreadyHeld,
        Accept::Gap { expected } => Judgement::Gap { expected },
        Accept::Continue { skip } => Judgement::Apply {
            skip: skip as usize,
            high: last,
        },
    }
}

/// A replica's durable ledger: every fact it holds, contiguous per origin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    facts: BTreeMap<Origin, Vec<Fact>>,
}

impl Ledger {
    /// Highest contiguous sequence held per origin.
    pub fn known(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        for (o, f) in &self.facts {
            vv.advance(o, f.len() as u64);
        }
        vv
    }

    /// Facts of `origin` after `after`, at most `max`.
    pub fn read(&self, origin: &Origin, after: u64, max: usize) -> Vec<Fact> {
        self.facts.get(origin).map_or_else(Vec::new, |f| {
            f.iter().skip(after as usize).take(max).cloned().collect()
        })
    }

    /// Appends facts that continue `origin` exactly (the caller has checked).
    fn extend(&mut self, origin: &Origin, facts: &[Fact]) {
        self.facts
            .entry(origin.clone())
            .or_default()
            .extend_from_slice(facts);
    }

    /// Every fact, in (origin, seq) order.
    pub fn all(&self) -> impl Iterator<Item = &Fact> {
        self.facts.values().flatten()
    }

    /// Number of facts held.
    pub fn len(&self) -> usize {
        self.facts.values().map(Vec::len).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The role of a replica in the star: stores push their own facts; the hub relays all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A store; pushes only facts of `origin`.
    Store {
        /// This store's origin (node + incarnation).
        origin: Origin,
    },
    /// The hub.
    Hub,
}

/// One replica's sync state: its ledger and what it believes each peer holds.
#[derive(Debug, Clone)]
pub struct Replica {
    /// The node name (store id or `hub`).
    pub name: String,
    /// Store or hub.
    pub role: Role,
    /// Durable: survives restarts.
    pub ledger: Ledger,
    /// Volatile: per peer, what it acknowledged and what was sent to it. Lost on
    /// restart, rebuilt from acks.
    peers: HashMap<String, PeerView>,
    /// Test-only mutation: accept batches across gaps (the convergence tests must catch it).
    pub broken_gap_check: bool,
}

impl Replica {
    /// A replica with an empty ledger.
    pub fn new(name: impl Into<String>, role: Role) -> Self {
        Self {
            name: name.into(),
            role,
            ledger: Ledger::default(),
            peers: HashMap::new(),
            broken_gap_check: false,
        }
    }

    /// Creates a local fact (stores only); returns its sequence.
    pub fn create(&mut self, body: String) -> Option<u64> {
        let Role::Store { origin } = &self.role else {
            return None;
        };
        let origin = origin.clone();
        let seq = self.ledger.known().get(&origin) + 1;
        self.ledger.extend(
            &origin,
            &[Fact {
                origin: origin.clone(),
                seq,
                body,
            }],
        );
        Some(seq)
    }

    /// Forgets what peers hold (a process restart); the ledger is durable and stays.
    pub fn restart(&mut self) {
        self.peers.clear();
    }

    /// What to send `peer` now: per origin this replica may send, the facts after what
    /// was already sent (pipelining) or, with `resend`, after what the peer
    /// acknowledged. `None` if there is nothing beyond that.
    pub fn push_for(&mut self, peer: &str, max_batch: usize, resend: bool) -> Option<Push> {
        let view = self.peers.entry(peer.to_string()).or_default();
        let theirs = if resend {
            view.acked.clone()
        } else {
            view.sent.clone()
        };
        let mine = self.ledger.known();
        let batches: Vec<Batch> = mine
            .iter()
            .filter(|(o, _)| match &self.role {
                Role::Store { origin } => *o == origin,
                Role::Hub => o.node != peer,
            })
            .filter(|(o, high)| *high > theirs.get(o))
            .map(|(o, _)| {
                batch(
                    o.clone(),
                    self.ledger.read(o, theirs.get(o), max_batch.min(MAX_BATCH)),
                )
            })
            .collect();
        for b in &batches {
            if let Some(last) = b.facts.last() {
                view.sent.set(&b.origin, last.seq);
            }
        }
        if batches.is_empty() {
            None
        } else {
            Some(Push {
                from: self.name.clone(),
                batches,
            })
        }
    }

    /// Judges and applies a push. Every batch is validated on its own; a refused batch
    /// applies nothing and does not stop the others.
    pub fn receive(&mut self, push: &Push) -> PushAck {
        let verdicts = push
            .batches
            .iter()
            .map(|b| self.receive_batch(&push.from, b))
            .collect();
        PushAck {
            from: self.name.clone(),
            verdicts,
            merged: Vec::new(),
        }
    }

    fn receive_batch(&mut self, from: &str, b: &Batch) -> Verdict {
        let hub = matches!(self.role, Role::Hub);
        let high = self.ledger.known().get(&b.origin);
        match judge(hub, &self.name, from, high, b) {
            Judgement::Refuse(reason) => Verdict::Refused {
                origin: b.origin.clone(),
                reason: reason.to_string(),
            },
            Judgement::AlreadyHeld => Verdict::AlreadyHeld {
                origin: b.origin.clone(),
                high,
            },
            Judgement::Gap { expected } if !self.broken_gap_check => Verdict::Gap {
                origin: b.origin.clone(),
                expected,
            },
            Judgement::Gap { .. } => {
                // The mutation the tests must catch: take the batch anyway, leaving a hole.
                self.ledger.extend(&b.origin, &b.facts);
                Verdict::Applied {
                    origin: b.origin.clone(),
                    high: self.ledger.known().get(&b.origin),
                }
            }
            Judgement::Apply { skip, high } => {
                self.ledger.extend(&b.origin, &b.facts[skip..]);
                Verdict::Applied {
                    origin: b.origin.clone(),
                    high,
                }
            }
        }
    }

    /// Learns from a peer's answer what it holds now.
    pub fn on_ack(&mut self, ack: &PushAck) {
        let view = self.peers.entry(ack.from.clone()).or_default();
        for v in &ack.verdicts {
            match v {
                Verdict::Applied { origin, high } | Verdict::AlreadyHeld { origin, high } => {
                    view.acked.advance(origin, *high);
                    view.sent.advance(origin, *high);
                }
                // The peer holds everything before the hole: send again from there.
                Verdict::Gap { origin, expected } => {
                    let held = expected.saturating_sub(1);
                    view.acked.advance(origin, held);
                    view.sent.set(origin, held.max(view.acked.get(origin)));
                }
                // A refused batch (e.g. truncated in transit) is sent again from what
                // was acknowledged.
                Verdict::Refused { origin, .. } => {
                    let acked = view.acked.get(origin);
                    view.sent.set(origin, acked);
                }
            }
        }
    }
}

/// What a replica believes of one peer.
#[derive(Debug, Clone, Default)]
struct PeerView {
    /// Acknowledged by the peer: certain.
    acked: VersionVector,
    /// Sent to the peer, acknowledged or not: optimistic, for pipelining.
    sent: VersionVector,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(n: &str) -> Origin {
        Origin {
            node: n.into(),
            incarnation: Default::default(),
        }
    }

    fn facts(n: &str, from: u64, to: u64) -> Vec<Fact> {
        (from..=to)
            .map(|seq| Fact {
                origin: o(n),
                seq,
                body: seq.to_string(),
            })
            .collect()
    }

    fn push(from: &str, b: Batch) -> Push {
        Push {
            from: from.into(),
            batches: vec![b],
        }
    }

    #[test]
    fn the_hub_refuses_forged_truncated_malformed_and_oversized_batches() {
        let mut hub = Replica::new("hub", Role::Hub);
        let refused = |a: &PushAck| matches!(a.verdicts[0], Verdict::Refused { .. });
        assert!(
            refused(&hub.receive(&push("S002", batch(o("S001"), facts("S001", 1, 3))))),
            "forged origin"
        );
        let mut cut = batch(o("S001"), facts("S001", 1, 3));
        cut.facts.pop();
        assert!(refused(&hub.receive(&push("S001", cut))), "truncated");
        assert!(
            refused(&hub.receive(&push("S001", batch(o("S001"), vec![])))),
            "empty"
        );
        let mut holes = facts("S001", 1, 3);
        holes.remove(1);
        assert!(
            refused(&hub.receive(&push("S001", batch(o("S001"), holes)))),
            "not consecutive"
        );
        assert!(
            refused(&hub.receive(&push("S001", batch(o("S001"), facts("S001", 1, 1_001))))),
            "oversized"
        );
        assert!(hub.ledger.is_empty(), "nothing was applied");
    }

    #[test]
    fn batches_travel_compactly_and_damage_on_the_wire_is_refused() {
        let b = batch(o("S001"), facts("S001", 7, 9));
        let wire = serde_json::to_string(&b).unwrap_or_default();
        assert_eq!(
            wire.matches("S001").count(),
            1,
            "origin written once: {wire}"
        );
        let back: Batch = serde_json::from_str(&wire).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, b);
        // A body lost in transit shifts nothing silently: the checksum refuses it.
        let cut = wire.replacen("[7,8,9]", "[7,9]", 1);
        assert_ne!(cut, wire);
        let cut: Batch = serde_json::from_str(&cut).unwrap_or_else(|e| panic!("{e}"));
        let mut hub = Replica::new("hub", Role::Hub);
        let ack = hub.receive(&push("S001", cut));
        assert!(
            matches!(ack.verdicts[0], Verdict::Refused { .. }),
            "{ack:?}"
        );
        // A batch with a hole cannot be written as consecutive facts unnoticed.
        let mut holes = facts("S001", 1, 3);
        holes.remove(1);
        let holed: Batch = serde_json::from_str(
            &serde_json::to_string(&batch(o("S001"), holes)).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ack = hub.receive(&push("S001", holed));
        assert!(
            matches!(ack.verdicts[0], Verdict::Refused { .. }),
            "{ack:?}"
        );
        assert!(hub.ledger.is_empty());
    }

    #[test]
    fn gaps_are_answered_and_replays_change_nothing() {
        let mut hub = Replica::new("hub", Role::Hub);
        let ack = hub.receive(&push("S001", batch(o("S001"), facts("S001", 4, 6))));
        assert_eq!(
            ack.verdicts[0],
            Verdict::Gap {
                origin: o("S001"),
                expected: 1
            }
        );
        let ack = hub.receive(&push("S001", batch(o("S001"), facts("S001", 1, 5))));
        assert_eq!(
            ack.verdicts[0],
            Verdict::Applied {
                origin: o("S001"),
                high: 5
            }
        );
        let again = hub.receive(&push("S001", batch(o("S001"), facts("S001", 1, 5))));
        assert_eq!(
            again.verdicts[0],
            Verdict::AlreadyHeld {
                origin: o("S001"),
                high: 5
            }
        );
        let overlap = hub.receive(&push("S001", batch(o("S001"), facts("S001", 3, 7))));
        assert_eq!(
            overlap.verdicts[0],
            Verdict::Applied {
                origin: o("S001"),
                high: 7
            }
        );
        assert_eq!(hub.ledger.len(), 7);
    }

    #[test]
    fn a_sender_rewinds_on_a_gap_and_resends_from_what_was_acknowledged() {
        let mut s = Replica::new("S001", Role::Store { origin: o("S001") });
        for i in 0..6 {
            s.create(i.to_string());
        }
        let first = s
            .push_for("hub", 3, false)
            .map(|p| p.batches[0].facts.len());
        assert_eq!(first, Some(3));
        let second = s
            .push_for("hub", 3, false)
            .map(|p| p.batches[0].facts[0].seq);
        assert_eq!(second, Some(4), "pipelined after what was sent");
        assert!(s.push_for("hub", 3, false).is_none(), "everything sent");
        let resend = s
            .push_for("hub", 10, true)
            .map(|p| p.batches[0].facts[0].seq);
        assert_eq!(
            resend,
            Some(1),
            "a resend starts from the acknowledged point"
        );
        s.on_ack(&PushAck {
            merged: Vec::new(),
            from: "hub".into(),
            verdicts: vec![Verdict::Gap {
                origin: o("S001"),
                expected: 3,
            }],
        });
        let after_gap = s
            .push_for("hub", 10, false)
            .map(|p| p.batches[0].facts[0].seq);
        assert_eq!(after_gap, Some(3));
    }
}
