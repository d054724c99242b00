//! The hub-to-store stream: each store follows, by cursor, the facts the hub holds for
//! the members it holds (written at other stores, or by the hub itself: merges).
//!
//! The cursor is the hub's ingest position (its global order) with the [`mark`] of the
//! fact at that position. The hub keeps, per store, which positions concern it (filled
//! at ingest, so a poll costs what it returns, not a scan of the chain's facts) and
//! forgets those the store has acknowledged. A cursor below that **horizon** (the
//! store's database restored from an older copy), beyond the hub's end, or whose fact
//! the hub no longer holds at that position (the hub's database restored from an older
//! copy, its positions handed out again) is answered [`StreamAnswer::MustRefetch`]: the
//! store fetches its members whole again and continues from `resume`.
//!
//! This module holds the wire messages, the hub's answer rule ([`serve`]) and the
//! store's side as a pure state machine ([`StreamCursor`]): the hub and the edge worker
//! run them, and the tests run them against a model.

use serde::{Deserialize, Serialize};

use crate::session::Fact;

/// Most positions a page carries.
pub const MAX_PAGE: usize = 1_000;

/// Longest a store may ask the hub to hold a poll open waiting for news (ms).
pub const MAX_WAIT_MS: u64 = 25_000;

/// `POST /v1/sync/stream`: the store's cursor, and members it no longer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRequest {
    /// Every position up to this one is applied at the store (0: nothing yet).
    pub after: u64,
    /// The mark of the fact at position `after` ([`mark`]; 0 with `after` 0). A hub
    /// that holds another fact there was restored from an older copy and handed the
    /// position out again.
    #[serde(default)]
    pub mark: u64,
    /// At most this many positions (capped at [`MAX_PAGE`]).
    #[serde(default)]
    pub max: usize,
    /// With nothing new, wait up to this long for news before answering (capped at
    /// [`MAX_WAIT_MS`]); 0 answers at once.
    #[serde(default)]
    pub wait_ms: u64,
    /// Members (UUIDs) whose facts came in a page up to `after` although the store no
    /// longer holds them (they left it): the hub stops sending them, unless the store
    /// fetched them again since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub release: Vec<String>,
}

/// A fact at its hub position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Streamed {
    /// The hub's ingest position.
    pub pos: u64,
    /// The fact.
    pub fact: Fact,
}

/// The hub's answer to a stream poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum StreamAnswer {
    /// Facts after the cursor, in position order.
    Page {
        /// The facts.
        facts: Vec<Streamed>,
        /// The cursor after applying the page.
        upto: u64,
        /// More wait after `upto`: poll again at once.
        more: bool,
        /// [`page_checksum`] of the page.
        checksum: u64,
        /// The mark of the fact at `upto`.
        mark: u64,
        /// Members (UUIDs) whose leases the hub asks this store to give back now:
        /// another store needs the points while this one is online. Not covered by the
        /// checksum: a lost recall only means the other store is refused.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        recall: Vec<String>,
        /// Members (UUIDs) whose coupons this store no longer holds for use without the
        /// hub: they were identified online at another store since. Not covered by the
        /// checksum: a lost one leaves this store's hold to end on its own.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        coupons_moved: Vec<String>,
        /// The keys of the members whose registration or re-key the page carries,
        /// under this store's keys ([`crate::pull::MemberKeys`]). Not covered by the
        /// checksum: TLS carries them whole, and a store that misses one asks again
        /// with the member's next fetch.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keys: Vec<crate::pull::MemberKeys>,
    },
    /// The cursor cannot be served: refetch the members held, continue from `resume`.
    MustRefetch {
        /// Where the store continues once it has refetched.
        resume: u64,
        /// The mark of the fact at `resume`.
        mark: u64,
    },
}

/// The mark of a fact: FNV-1a over its identity (origin and sequence), what a cursor
/// remembers of the fact at its position.
pub fn mark(f: &Fact) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in f
        .origin
        .node
        .as_bytes()
        .iter()
        .chain(f.origin.incarnation.as_bytes())
        .chain(&f.seq.to_le_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

/// FNV-1a over the cursor, its mark and each fact's position, identity and body.
pub fn page_checksum(facts: &[Streamed], upto: u64, mark: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&upto.to_le_bytes());
    eat(&mark.to_le_bytes());
    for s in facts {
        eat(&s.pos.to_le_bytes());
        eat(&crate::session::checksum(std::slice::from_ref(&s.fact)).to_le_bytes());
    }
    h
}

/// Builds a page with its checksum.
pub fn page(facts: Vec<Streamed>, upto: u64, more: bool, mark: u64) -> StreamAnswer {
    let checksum = page_checksum(&facts, upto, mark);
    StreamAnswer::Page {
        facts,
        upto,
        more,
        checksum,
        mark,
        recall: Vec::new(),
        coupons_moved: Vec::new(),
        keys: Vec::new(),
    }
}

/// Where the hub stands for one store's poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSide {
    /// Positions up to here were forgotten for the store (it acknowledged them).
    pub horizon: u64,
    /// The hub's last position.
    pub end: u64,
    /// The mark of the fact at the end (0: no facts).
    pub end_mark: u64,
    /// The mark of the fact the hub holds at the store's cursor (0: none there).
    pub mark_at_cursor: u64,
}

/// The hub's side: answers a poll after `after` from what it holds for the store —
/// the positions after it that concern the store (at most a page, `more` if others
/// follow) — and where the hub stands. A cursor whose fact the hub no longer holds at
/// its position (the hub was restored from an older copy and handed the position out
/// again), below the horizon (the store's database restored from an older copy) or
/// beyond the end cannot be served: the store refetches and resumes at the end.
pub fn serve(
    after: u64,
    mark: u64,
    hub: &HubSide,
    facts: Vec<Streamed>,
    more: bool,
) -> StreamAnswer {
    // Mark 0: a cursor stored before marks existed; its position is taken on trust.
    let moved = after > 0 && mark != 0 && mark != hub.mark_at_cursor;
    if moved || after < hub.horizon || after > hub.end {
        return StreamAnswer::MustRefetch {
            resume: hub.end,
            mark: hub.end_mark,
        };
    }
    // With more to come the page ends at its last fact; without, nothing up to the end
    // concerns the store, and the cursor skips the rest of the chain's positions.
    let (upto, mark) = match (more, facts.last()) {
        (true, Some(last)) => (last.pos, self::mark(&last.fact)),
        _ => (hub.end, hub.end_mark),
    };
    page(facts, upto, more, mark)
}

/// Why an answer is not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The checksum does not match: truncated or altered in transit.
    #[error("a stream page was damaged in transit")]
    Damaged,
    /// The page does not continue the cursor (positions at or before it, out of
    /// order, or a cursor that moves back).
    #[error("a stream page does not continue the cursor")]
    OutOfOrder,
}

/// What the store does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<'a> {
    /// Store these facts and move the cursor to `upto` (with its mark) in the same
    /// transaction; `more`: poll again at once.
    Apply {
        /// The facts.
        facts: &'a [Streamed],
        /// The new cursor.
        upto: u64,
        /// More wait.
        more: bool,
        /// The mark of the fact at `upto`.
        mark: u64,
    },
    /// Fetch every member held again, and move the cursor to `resume` (in the same
    /// transaction that marks the refetch due).
    Refetch {
        /// The new cursor.
        resume: u64,
        /// The mark of the fact at `resume`.
        mark: u64,
    },
}

/// The store's side: where it is in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamCursor {
    /// Every position up to this one is applied.
    pub after: u64,
    /// The mark of the fact at `after` (0 with `after` 0).
    pub mark: u64,
}

impl StreamCursor {
    /// Judges an answer to a poll made at this cursor. The caller applies the step
    /// durably and then calls [`StreamCursor::advance`].
    pub fn judge<'a>(&self, answer: &'a StreamAnswer) -> Result<Step<'a>, StreamError> {
        match answer {
            StreamAnswer::MustRefetch { resume, mark } => Ok(Step::Refetch {
                resume: *resume,
                mark: *mark,
            }),
            StreamAnswer::Page {
                facts,
                upto,
                more,
                checksum,
                mark,
                ..
            } => {
                if page_checksum(facts, *upto, *mark) != *checksum {
                    return Err(StreamError::Damaged);
                }
                let mut last = self.after;
                for s in facts {
                    if s.pos <= last {
                        return Err(StreamError::OutOfOrder);
                    }
                    last = s.pos;
                }
                if *upto < last {
                    return Err(StreamError::OutOfOrder);
                }
                Ok(Step::Apply {
                    facts,
                    upto: *upto,
                    more: *more,
                    mark: *mark,
                })
            }
        }
    }

    /// The cursor after a step was applied.
    pub fn advance(&mut self, step: &Step<'_>) {
        (self.after, self.mark) = match step {
            Step::Apply { upto, mark, .. } => (*upto, *mark),
            Step::Refetch { resume, mark } => (*resume, *mark),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_protocol::Origin;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn fact(n: u64) -> Fact {
        Fact {
            origin: Origin {
                node: "S002".into(),
                incarnation: Default::default(),
            },
            seq: n,
            body: format!("{{\"n\":{n}}}"),
        }
    }

    /// The hub as the stream sees it: facts of members by position, holdings, and the
    /// horizon below which it forgot what concerned the store.
    #[derive(Clone, Default)]
    struct Model {
        /// position → (member, fact)
        log: BTreeMap<u64, (u8, Fact)>,
        held: BTreeSet<u8>,
        horizon: u64,
    }

    impl Model {
        fn new() -> Self {
            Self {
                held: [0u8, 1].into_iter().collect(),
                ..Default::default()
            }
        }

        fn end(&self) -> u64 {
            self.log.keys().next_back().copied().unwrap_or(0)
        }

        fn mark_at(&self, pos: u64) -> u64 {
            self.log.get(&pos).map_or(0, |(_, f)| mark(f))
        }

        /// `ignore_mark`: the mutant hub that never checks the cursor's fact.
        fn poll(&self, cursor: &StreamCursor, max: usize, ignore_mark: bool) -> StreamAnswer {
            let mine: Vec<Streamed> = self
                .log
                // What the store acknowledged is forgotten.
                .range(cursor.after.max(self.horizon) + 1..)
                .filter(|(_, (m, _))| self.held.contains(m))
                .map(|(p, (_, f))| Streamed {
                    pos: *p,
                    fact: f.clone(),
                })
                .collect();
            let more = mine.len() > max;
            let facts: Vec<Streamed> = mine.into_iter().take(max).collect();
            let hub = HubSide {
                horizon: self.horizon,
                end: self.end(),
                end_mark: self.mark_at(self.end()),
                mark_at_cursor: if ignore_mark {
                    cursor.mark
                } else {
                    self.mark_at(cursor.after)
                },
            };
            serve(cursor.after, cursor.mark, &hub, facts, more)
        }

        /// A refetch: everything of the held members (facts by sequence).
        fn whole(&self) -> BTreeSet<u64> {
            self.log
                .values()
                .filter(|(m, _)| self.held.contains(m))
                .map(|(_, f)| f.seq)
                .collect()
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ingest(u8),
        Poll(usize),
        Damage,
        Reorder,
        /// The store's database restored: the cursor and what came after it are lost.
        Restore,
        /// The hub forgets what the store acknowledged.
        Compact,
        /// A copy of the hub's database is taken.
        HubBackup,
        /// The hub's database comes back from the copy.
        HubRestore,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0u8..4).prop_map(Op::Ingest),
            3 => (1usize..4).prop_map(Op::Poll),
            1 => Just(Op::Damage),
            1 => Just(Op::Reorder),
            1 => Just(Op::Restore),
            1 => Just(Op::Compact),
            1 => Just(Op::HubBackup),
            1 => Just(Op::HubRestore),
        ]
    }

    /// The mutants the runner can put in.
    #[derive(Clone, Copy, Default)]
    struct Mutants {
        skip_refetch: bool,
        ignore_mark: bool,
    }

    /// The store: cursor and what it stored, through [`StreamCursor`] only. The
    /// `skip_refetch` mutant moves on after a must-refetch without fetching anything.
    fn apply(
        cursor: &mut StreamCursor,
        held: &mut BTreeSet<u64>,
        hub: &Model,
        a: &StreamAnswer,
        m: Mutants,
    ) {
        let Ok(step) = cursor.judge(a) else { return };
        match &step {
            Step::Apply { facts, .. } => held.extend(facts.iter().map(|s| s.fact.seq)),
            Step::Refetch { .. } if m.skip_refetch => {}
            Step::Refetch { .. } => held.extend(hub.whole()),
        }
        cursor.advance(&step);
    }

    /// Runs the ops, then polls to the end; (what the store holds, what it must hold,
    /// what it may hold besides: facts the hub lost to its own restore).
    #[allow(clippy::type_complexity)]
    fn run(
        ops: &[Op],
        m: Mutants,
    ) -> Result<(BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>), TestCaseError> {
        let mut hub = Model::new();
        let mut hub_copy = hub.clone();
        let mut lost = BTreeSet::new();
        let mut cursor = StreamCursor::default();
        let mut held: BTreeSet<u64> = BTreeSet::new();
        let mut backup = (cursor.clone(), held.clone());
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Ingest(member) => {
                    seq += 1;
                    // Positions of other stores' facts (member 3) concern no one here.
                    let pos = hub.end() + 1;
                    hub.log.insert(pos, (*member, fact(seq)));
                }
                Op::Poll(n) => {
                    let a = hub.poll(&cursor, *n, m.ignore_mark);
                    apply(&mut cursor, &mut held, &hub, &a, m);
                    if cursor.after % 3 == 0 {
                        backup = (cursor.clone(), held.clone());
                    }
                }
                Op::Damage => {
                    if let StreamAnswer::Page {
                        mut facts,
                        upto,
                        more,
                        checksum,
                        mark,
                        ..
                    } = hub.poll(&cursor, 3, m.ignore_mark)
                        && !facts.is_empty()
                    {
                        facts.pop();
                        let damaged = StreamAnswer::Page {
                            facts,
                            upto,
                            more,
                            checksum,
                            mark,
                            recall: Vec::new(),
                            coupons_moved: Vec::new(),
                            keys: Vec::new(),
                        };
                        prop_assert_eq!(cursor.judge(&damaged), Err(StreamError::Damaged));
                    }
                }
                Op::Reorder => {
                    if let StreamAnswer::Page {
                        mut facts,
                        upto,
                        more,
                        mark,
                        ..
                    } = hub.poll(&cursor, 3, m.ignore_mark)
                        && facts.len() > 1
                    {
                        facts.swap(0, 1);
                        let reordered = page(facts, upto, more, mark);
                        prop_assert_eq!(cursor.judge(&reordered), Err(StreamError::OutOfOrder));
                    }
                }
                Op::Restore => (cursor, held) = backup.clone(),
                Op::Compact => {
                    // The store's report names its cursor and mark; a cursor whose fact
                    // the hub does not hold there forgets nothing.
                    if cursor.after > 0 && hub.mark_at(cursor.after) == cursor.mark {
                        hub.horizon = hub.horizon.max(cursor.after);
                    }
                }
                Op::HubBackup => hub_copy = hub.clone(),
                Op::HubRestore => {
                    lost.extend(hub.whole().difference(&hub_copy.whole()).copied());
                    hub = hub_copy.clone();
                }
            }
        }
        for _ in 0..1_000 {
            let a = hub.poll(&cursor, 2, m.ignore_mark);
            let more = matches!(
                a,
                StreamAnswer::Page { more: true, .. } | StreamAnswer::MustRefetch { .. }
            );
            apply(&mut cursor, &mut held, &hub, &a, m);
            if !more {
                break;
            }
        }
        Ok((held, hub.whole(), lost))
    }

    /// Every fact of its members the hub holds is at the store; nothing else is, but
    /// facts the hub itself lost to a restore.
    fn complete(r: (BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>)) -> Result<(), String> {
        let (held, whole, lost) = r;
        let missing: Vec<_> = whole.difference(&held).collect();
        let extra: Vec<_> = held
            .difference(&whole)
            .filter(|s| !lost.contains(s))
            .collect();
        if missing.is_empty() && extra.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}, extra {extra:?}"))
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Whatever is lost, damaged, reordered or restored — at the store or at the
        /// hub — a store that polls to the end holds every fact of its members the hub
        /// holds, and nothing else but what the hub lost.
        #[test]
        fn a_store_ends_with_every_fact_of_its_members(ops in proptest::collection::vec(op(), 0..60)) {
            let r = complete(run(&ops, Mutants::default())?);
            prop_assert!(r.is_ok(), "{:?}", r);
        }
    }

    /// A store that moves on after a must-refetch without fetching (a mutant) ends
    /// short after a restore below the horizon; the real one ends whole.
    #[test]
    fn a_store_skipping_the_refetch_is_caught() {
        // Two facts applied (cursor 2; the last copy of the store is from cursor 0),
        // acknowledged and forgotten by the hub, then the store comes back from the copy.
        let ops = [
            Op::Ingest(0),
            Op::Ingest(0),
            Op::Poll(5),
            Op::Compact,
            Op::Restore,
        ];
        let real = run(&ops, Mutants::default()).map_err(|e| e.to_string());
        assert_eq!(real.map(complete), Ok(Ok(())));
        let skip = Mutants {
            skip_refetch: true,
            ..Mutants::default()
        };
        let mutant = run(&ops, skip).map_err(|e| e.to_string());
        assert!(
            matches!(mutant.map(complete), Ok(Err(_))),
            "the mutant lost nothing"
        );
    }

    /// A hub restored from an older copy hands its positions out again; a cursor from
    /// before the restore names a fact the hub no longer holds at that position and
    /// must refetch. A hub that does not check the mark (a mutant) serves it from its
    /// old position and the store misses the facts at the reused positions.
    #[test]
    fn a_cursor_from_before_a_hub_restore_is_caught() {
        let ops = [
            Op::HubBackup,
            Op::Ingest(0),
            Op::Ingest(0),
            Op::Poll(5),
            Op::HubRestore,
            Op::Ingest(0),
            Op::Ingest(1),
            Op::Ingest(0),
        ];
        let real = run(&ops, Mutants::default()).map_err(|e| e.to_string());
        assert_eq!(real.map(complete), Ok(Ok(())));
        let ignore = Mutants {
            ignore_mark: true,
            ..Mutants::default()
        };
        let mutant = run(&ops, ignore).map_err(|e| e.to_string());
        assert!(
            matches!(mutant.map(complete), Ok(Err(_))),
            "the mutant lost nothing"
        );
    }

    #[test]
    fn a_page_that_moves_the_cursor_back_is_refused() {
        let c = StreamCursor { after: 10, mark: 0 };
        let back = page(Vec::new(), 5, false, 1);
        assert_eq!(c.judge(&back), Err(StreamError::OutOfOrder));
        let stale = page(
            vec![Streamed {
                pos: 10,
                fact: fact(10),
            }],
            12,
            false,
            1,
        );
        assert_eq!(c.judge(&stale), Err(StreamError::OutOfOrder));
        let ok = page(
            vec![Streamed {
                pos: 11,
                fact: fact(11),
            }],
            12,
            false,
            1,
        );
        assert!(matches!(c.judge(&ok), Ok(Step::Apply { upto: 12, .. })));
        // The mark is covered by the checksum.
        let StreamAnswer::Page {
            facts,
            upto,
            more,
            checksum,
            ..
        } = ok
        else {
            panic!("a page")
        };
        let swapped = StreamAnswer::Page {
            facts,
            upto,
            more,
            checksum,
            mark: 2,
            recall: Vec::new(),
            coupons_moved: Vec::new(),
            keys: Vec::new(),
        };
        assert_eq!(c.judge(&swapped), Err(StreamError::Damaged));
    }

    #[test]
    fn answers_keep_their_wire_shape() {
        let a = StreamAnswer::MustRefetch { resume: 7, mark: 9 };
        assert_eq!(
            serde_json::to_string(&a).ok().as_deref(),
            Some(r#"{"answer":"must_refetch","resume":7,"mark":9}"#)
        );
        let r: StreamRequest = serde_json::from_str(r#"{"after":3}"#).unwrap_or_default();
        assert_eq!((r.after, r.mark, r.wait_ms), (3, 0, 0));
    }
}
