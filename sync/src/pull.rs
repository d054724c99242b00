//! Pulls: how a store follows what the hub holds for it, by cursor, per replication set.
//!
//! The hub keeps, per replication set (e.g. the members a store holds), an ordered log
//! of operations: `Put` a fact into a group (a member), or `Drop` a whole group (the
//! member left the store's set). A store pulls pages after its cursor; each page ends in
//! a [`Checkpoint`] whose checksum covers the page, and the cursor moves only when the
//! page verifies, so a truncated or altered page is fetched again instead of half
//! applied.
//!
//! The hub compacts its log up to a **horizon**: below it, dropped groups and their
//! facts are gone from the log. A store whose cursor is from an earlier compaction
//! generation and older than the horizon could never learn about those drops and would keep (resurrect) what was removed, so it is
//! answered [`PullAnswer::MustRefetch`]: it empties the set and pulls again from 0.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::session::Fact;

/// A store asks the hub for a member it does not hold, by the phone's chain-wide blind
/// index (base64), in pages after hub position `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFetch {
    /// The phone's blind index under the chain's key (base64).
    pub phone_idx: String,
    /// Continue after this position (0: from the start).
    #[serde(default)]
    pub after: u64,
}

/// Every fact of the members registered under a phone, from every origin, in the order
/// the hub received them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchedMember {
    /// The facts (none: no member has that phone, or none after `after`).
    pub facts: Vec<Fact>,
    /// The hub position of the last fact sent (`after` if none): ask after it next time
    /// for what came since.
    pub upto: u64,
    /// Whether more facts follow after `upto`.
    pub more: bool,
}

/// One operation of a replication set's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A fact joins group `group`.
    Put {
        /// The group (a member id).
        group: String,
        /// The fact.
        fact: Fact,
    },
    /// Group `group` leaves the set with all its facts.
    Drop {
        /// The group.
        group: String,
    },
}

/// An operation at its log position (positions start at 1 and only grow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the set's log.
    pub pos: u64,
    /// The operation.
    pub op: Op,
}

/// The end of a page: where the cursor moves and the checksum of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The cursor after applying the page.
    pub cursor: u64,
    /// The log's compaction generation the cursor belongs to.
    pub generation: u64,
    /// [`page_checksum`] of the page's entries.
    pub checksum: u64,
}

/// The hub's answer to a pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PullAnswer {
    /// Entries after the cursor, and whether more follow.
    Page {
        /// The entries, in log order.
        entries: Vec<Entry>,
        /// Verifies the page and gives the next cursor.
        checkpoint: Checkpoint,
        /// More entries wait after this page.
        more: bool,
    },
    /// The cursor is older than the horizon: empty the set and pull from 0.
    MustRefetch {
        /// The horizon.
        horizon: u64,
    },
}

/// FNV-1a over the checkpoint's cursor and generation and each entry's position,
/// kind, group and fact: a damaged generation must not slip past `MustRefetch`.
pub fn page_checksum(entries: &[Entry], cursor: u64, generation: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&cursor.to_le_bytes());
    eat(&generation.to_le_bytes());
    for e in entries {
        eat(&e.pos.to_le_bytes());
        match &e.op {
            Op::Put { group, fact } => {
                eat(b"P");
                eat(&(group.len() as u64).to_le_bytes());
                eat(group.as_bytes());
                eat(&crate::session::checksum(std::slice::from_ref(fact)).to_le_bytes());
            }
            Op::Drop { group } => {
                eat(b"D");
                eat(&(group.len() as u64).to_le_bytes());
                eat(group.as_bytes());
            }
        }
    }
    h
}

/// The hub's side of one replication set.
#[derive(Debug, Clone, Default)]
pub struct SetLog {
    entries: Vec<Entry>,
    next: u64,
    horizon: u64,
    generation: u64,
}

impl SetLog {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            entries: Vec::new(),
            next: 1,
            horizon: 0,
            generation: 0,
        }
    }

    /// Appends an operation; returns its position.
    pub fn push(&mut self, op: Op) -> u64 {
        let pos = self.next;
        self.next += 1;
        self.entries.push(Entry { pos, op });
        pos
    }

    /// Compacts everything up to the current end: dropped groups and their facts leave
    /// the log. Cursors older than the new horizon must refetch.
    pub fn compact(&mut self) {
        let mut dropped_at: BTreeMap<&str, u64> = BTreeMap::new();
        for e in &self.entries {
            if let Op::Drop { group } = &e.op {
                dropped_at.insert(group, e.pos);
            }
        }
        let keep: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| match &e.op {
                Op::Drop { .. } => false,
                Op::Put { group, .. } => dropped_at.get(group.as_str()).is_none_or(|d| e.pos > *d),
            })
            .cloned()
            .collect();
        self.entries = keep;
        self.horizon = self.next - 1;
        self.generation += 1;
    }

    /// The horizon: positions at or below it were compacted.
    pub fn horizon(&self) -> u64 {
        self.horizon
    }

    /// Answers a pull after `cursor` (of compaction `generation`), at most `max` entries.
    pub fn pull(&self, cursor: u64, generation: u64, max: usize) -> PullAnswer {
        // A cursor from before the last compaction that had not reached its horizon may
        // have missed drops that compaction erased. A fresh store (cursor 0), or one
        // reading the compacted log (current generation), missed nothing.
        if cursor != 0 && generation < self.generation && cursor < self.horizon {
            return PullAnswer::MustRefetch {
                horizon: self.horizon,
            };
        }
        let after: Vec<Entry> = self
            .entries
            .iter()
            .filter(|e| e.pos > cursor)
            .take(max.max(1))
            .cloned()
            .collect();
        let more = self
            .entries
            .iter()
            .filter(|e| e.pos > cursor)
            .nth(after.len())
            .is_some();
        // A page that holds nothing new still moves a fresh cursor past compacted positions.
        let to = after.last().map_or(
            if more {
                cursor
            } else {
                cursor.max(self.next - 1)
            },
            |e| e.pos,
        );
        let cursor = if more { to } else { to.max(self.next - 1) };
        PullAnswer::Page {
            checkpoint: Checkpoint {
                cursor,
                generation: self.generation,
                checksum: page_checksum(&after, cursor, self.generation),
            },
            entries: after,
            more,
        }
    }

    /// The set's current content: group → facts.
    pub fn content(&self) -> BTreeMap<String, Vec<Fact>> {
        let mut out: BTreeMap<String, Vec<Fact>> = BTreeMap::new();
        for e in &self.entries {
            match &e.op {
                Op::Put { group, fact } => out.entry(group.clone()).or_default().push(fact.clone()),
                Op::Drop { group } => {
                    out.remove(group);
                }
            }
        }
        out
    }
}

/// Why a page was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The checksum does not match: truncated or altered in transit.
    Damaged,
    /// The page does not continue this replica's cursor.
    OutOfOrder,
}

/// A store's side of one replication set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetReplica {
    /// Position pulled up to.
    pub cursor: u64,
    /// The compaction generation of `cursor`.
    pub generation: u64,
    /// What it holds: group → facts.
    pub content: BTreeMap<String, Vec<Fact>>,
    /// Test-only mutation: ignore must-refetch answers (the tests must catch it).
    pub broken_ignores_refetch: bool,
}

impl SetReplica {
    /// Applies an answer; `Ok(true)` if more entries wait.
    pub fn apply(&mut self, answer: &PullAnswer) -> Result<bool, PullError> {
        match answer {
            PullAnswer::MustRefetch { .. } if self.broken_ignores_refetch => Ok(false),
            PullAnswer::MustRefetch { .. } => {
                self.cursor = 0;
                self.generation = 0;
                self.content.clear();
                Ok(true)
            }
            PullAnswer::Page {
                entries,
                checkpoint,
                more,
            } => {
                if page_checksum(entries, checkpoint.cursor, checkpoint.generation)
                    != checkpoint.checksum
                {
                    return Err(PullError::Damaged);
                }
                if entries.first().is_some_and(|e| e.pos <= self.cursor)
                    || checkpoint.cursor < self.cursor
                {
                    return Err(PullError::OutOfOrder);
                }
                for e in entries {
                    match &e.op {
                        Op::Put { group, fact } => {
                            let g = self.content.entry(group.clone()).or_default();
                            if !g.contains(fact) {
                                g.push(fact.clone());
                            }
                        }
                        Op::Drop { group } => {
                            self.content.remove(group);
                        }
                    }
                }
                self.cursor = checkpoint.cursor;
                self.generation = checkpoint.generation;
                Ok(*more)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_protocol::Origin;
    use proptest::prelude::*;

    fn fact(seq: u64) -> Fact {
        Fact {
            origin: Origin {
                node: "hub".into(),
                incarnation: Default::default(),
            },
            seq,
            body: seq.to_string(),
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8),
        Drop(u8),
        Compact,
        Pull(usize),
        Damage,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u8..6).prop_map(Step::Put),
            1 => (0u8..6).prop_map(Step::Drop),
            1 => Just(Step::Compact),
            2 => (1usize..5).prop_map(Step::Pull),
            1 => Just(Step::Damage),
        ]
    }

    /// Runs the steps, then pulls to the end; returns (hub content, replica content).
    fn run(
        steps: &[Step],
        broken: bool,
    ) -> (BTreeMap<String, Vec<Fact>>, BTreeMap<String, Vec<Fact>>) {
        let mut hub = SetLog::new();
        let mut store = SetReplica {
            broken_ignores_refetch: broken,
            ..Default::default()
        };
        let mut seq = 0;
        for s in steps {
            match s {
                Step::Put(g) => {
                    seq += 1;
                    hub.push(Op::Put {
                        group: format!("m{g}"),
                        fact: fact(seq),
                    });
                }
                Step::Drop(g) => {
                    hub.push(Op::Drop {
                        group: format!("m{g}"),
                    });
                }
                Step::Compact => hub.compact(),
                Step::Pull(n) => {
                    let _ = store.apply(&hub.pull(store.cursor, store.generation, *n));
                }
                Step::Damage => {
                    // A page truncated in transit is refused and changes nothing.
                    if let PullAnswer::Page {
                        mut entries,
                        checkpoint,
                        more,
                    } = hub.pull(store.cursor, store.generation, 3)
                        && entries.len() > 1
                    {
                        entries.pop();
                        let before = store.clone();
                        let r = store.apply(&PullAnswer::Page {
                            entries,
                            checkpoint,
                            more,
                        });
                        assert_eq!(r, Err(PullError::Damaged));
                        assert_eq!(store, before);
                    }
                }
            }
        }
        for _ in 0..10_000 {
            match store.apply(&hub.pull(store.cursor, store.generation, 2)) {
                Ok(true) => {}
                _ => break,
            }
        }
        (hub.content(), store.content)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn a_store_ends_with_exactly_the_sets_content(steps in proptest::collection::vec(step(), 0..60)) {
            let (hub, store) = run(&steps, false);
            prop_assert_eq!(store, hub);
        }
    }

    /// Ignoring must-refetch resurrects dropped members: the property above must see it.
    #[test]
    fn ignoring_must_refetch_is_caught() {
        let steps = [
            Step::Put(1),
            Step::Put(2),
            Step::Pull(10),
            Step::Put(3),
            Step::Drop(1),
            Step::Compact,
        ];
        let (hub, store) = run(&steps, true);
        assert_ne!(store, hub, "the mutant kept a dropped member");
        let (hub, store) = run(&steps, false);
        assert_eq!(store, hub);
    }

    #[test]
    fn a_cursor_older_than_the_horizon_must_refetch() {
        let mut hub = SetLog::new();
        hub.push(Op::Put {
            group: "a".into(),
            fact: fact(1),
        });
        hub.push(Op::Put {
            group: "b".into(),
            fact: fact(2),
        });
        hub.push(Op::Drop { group: "a".into() });
        hub.compact();
        assert_eq!(hub.pull(1, 0, 10), PullAnswer::MustRefetch { horizon: 3 });
        assert!(matches!(hub.pull(0, 0, 10), PullAnswer::Page { .. }));
        // Reading the compacted log part-way is not stale.
        assert!(matches!(hub.pull(1, 1, 10), PullAnswer::Page { .. }));
        assert!(
            matches!(hub.pull(3, 0, 10), PullAnswer::Page { ref entries, .. } if entries.is_empty())
        );
    }
}
