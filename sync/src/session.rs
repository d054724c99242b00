//! The sync session's wire shapes and the receiver's rule, pure and transport-free.
//!
//! - A [`Fact`] is immutable, identified by `(origin, seq)`, sequences gap-free from 1.
//! - A [`Push`] carries [`Batch`]es, one per origin, of consecutive facts with a
//!   checksum. The receiver ([`judge`], then `receiver::settle`) accepts a batch only if
//!   it continues that origin without a gap ([`VersionVector::check`]); otherwise it
//!   answers the next sequence it needs. Overlaps (redelivery) are skipped, so delivery
//!   at least once is applied exactly once.
//! - A [`PushAck`] gives, per origin, the highest contiguous sequence the receiver now
//!   holds; the sender (`sender::Sender`) counts as acknowledged only what its push
//!   showed, rewinds on a gap, and resumes from its persisted acknowledgement after a
//!   restart.
//! - A store may push only facts of its own origin.

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
/// The hub's ingest decides with these functions ([`check`] before its writer,
/// [`place`] inside it), and so does the simulation (`tests/simulation.rs`): it
/// exercises the rule the hub runs.
pub fn judge(hub: bool, me: &str, from: &str, high: u64, b: &Batch) -> Judgement {
    match check(hub, me, from, b) {
        Err(why) => Judgement::Refuse(why),
        Ok(()) => place(high, b),
    }
}

/// What a receiver can judge of a batch without what it holds: its size, its
/// origin, its checksum and the shape of its sequences. The hub runs it while parsing
/// a push, off its writer; `Err` says why the batch is refused.
pub fn check(hub: bool, me: &str, from: &str, b: &Batch) -> Result<(), &'static str> {
    if b.facts.is_empty() || b.facts.len() > MAX_BATCH {
        return Err("a batch holds 1 to 1000 facts");
    }
    if hub && b.origin.node != from {
        return Err("a store may push only its own facts");
    }
    if b.origin.node == me {
        return Err("facts of this node's own origin come only from itself");
    }
    if b.checksum != checksum(&b.facts) {
        return Err("checksum mismatch: truncated or altered in transit");
    }
    let first = b.facts[0].seq;
    let consecutive = b
        .facts
        .iter()
        .enumerate()
        .all(|(i, f)| f.origin == b.origin && Some(f.seq) == first.checked_add(i as u64));
    if first == 0 || !consecutive {
        return Err("facts must be of the batch's origin with consecutive sequences from 1");
    }
    Ok(())
}

/// Where a batch that passed [`check`] falls against the receiver's `high` for its
/// origin: already held, after a gap, or to apply (past what is held).
pub fn place(high: u64, b: &Batch) -> Judgement {
    let Some(first) = b.facts.first().map(|f| f.seq) else {
        return Judgement::Refuse("a batch holds 1 to 1000 facts");
    };
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

    /// The hub's judgement of `b` from store `from`, holding its origin up to `high`.
    fn hub(from: &str, high: u64, b: &Batch) -> Judgement {
        judge(true, "hub", from, high, b)
    }

    #[test]
    fn the_hub_refuses_forged_truncated_malformed_and_oversized_batches() {
        let refused = |j: Judgement| matches!(j, Judgement::Refuse(_));
        assert!(
            refused(hub("S002", 0, &batch(o("S001"), facts("S001", 1, 3)))),
            "forged origin"
        );
        let mut cut = batch(o("S001"), facts("S001", 1, 3));
        cut.facts.pop();
        assert!(refused(hub("S001", 0, &cut)), "truncated");
        assert!(refused(hub("S001", 0, &batch(o("S001"), vec![]))), "empty");
        let mut holes = facts("S001", 1, 3);
        holes.remove(1);
        assert!(
            refused(hub("S001", 0, &batch(o("S001"), holes))),
            "not consecutive"
        );
        assert!(
            refused(hub("S001", 0, &batch(o("S001"), facts("S001", 1, 1_001)))),
            "oversized"
        );
        assert!(
            refused(judge(
                false,
                "S001",
                "hub",
                0,
                &batch(o("S001"), facts("S001", 1, 2))
            )),
            "a node's own origin from elsewhere"
        );
        assert_eq!(
            hub("S001", 0, &batch(o("S001"), facts("S001", 1, 3))),
            Judgement::Apply { skip: 0, high: 3 }
        );
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
        let j = hub("S001", 0, &cut);
        assert!(matches!(j, Judgement::Refuse(_)), "{j:?}");
        // A batch with a hole cannot be written as consecutive facts unnoticed.
        let mut holes = facts("S001", 1, 3);
        holes.remove(1);
        let holed: Batch = serde_json::from_str(
            &serde_json::to_string(&batch(o("S001"), holes)).unwrap_or_default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let j = hub("S001", 0, &holed);
        assert!(matches!(j, Judgement::Refuse(_)), "{j:?}");
    }

    #[test]
    fn gaps_are_answered_and_replays_change_nothing() {
        let b = |from, to| batch(o("S001"), facts("S001", from, to));
        assert_eq!(hub("S001", 0, &b(4, 6)), Judgement::Gap { expected: 1 });
        assert_eq!(
            hub("S001", 0, &b(1, 5)),
            Judgement::Apply { skip: 0, high: 5 }
        );
        assert_eq!(hub("S001", 5, &b(1, 5)), Judgement::AlreadyHeld);
        assert_eq!(
            hub("S001", 5, &b(3, 7)),
            Judgement::Apply { skip: 3, high: 7 }
        );
        assert_eq!(hub("S001", 5, &b(7, 8)), Judgement::Gap { expected: 6 });
    }
}
