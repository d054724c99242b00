//! Per-origin highest contiguous sequence, with gap detection.

use std::collections::BTreeMap;

use patron_protocol::Origin;
use serde::{Deserialize, Serialize};

/// What a replica knows: for each origin, the highest sequence it holds with no gap
/// below it. Sequences start at 1.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    seen: BTreeMap<Origin, u64>,
}

/// The verdict on a batch `first..=last` from one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The batch continues the origin; apply `skip` leading facts as already held, then
    /// the rest.
    Continue {
        /// How many leading facts of the batch are already held (a redelivery overlap).
        skip: u64,
    },
    /// Everything in the batch is already held: acknowledge, apply nothing.
    AlreadyHeld,
    /// The batch starts after a hole; ask the sender to resend from `expected`.
    Gap {
        /// The next sequence this replica needs.
        expected: u64,
    },
}

impl VersionVector {
    /// An empty vector: nothing known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest contiguous sequence held from `origin` (0 if none).
    pub fn get(&self, origin: &Origin) -> u64 {
        self.seen.get(origin).copied().unwrap_or(0)
    }

    /// Judges a batch holding sequences `first..=last` from `origin`.
    pub fn check(&self, origin: &Origin, first: u64, last: u64) -> Accept {
        let have = self.get(origin);
        if last <= have {
            Accept::AlreadyHeld
        } else if first > have + 1 {
            Accept::Gap { expected: have + 1 }
        } else {
            Accept::Continue {
                skip: have + 1 - first,
            }
        }
    }

    /// Records that `origin` is now held up to `last`; never moves backwards.
    pub fn advance(&mut self, origin: &Origin, last: u64) {
        let entry = self.seen.entry(origin.clone()).or_insert(0);
        if last > *entry {
            *entry = last;
        }
    }

    /// Sets what is known of `origin`, even backwards (a sender's belief about a peer
    /// that answered with a gap). A replica's own knowledge only ever uses [`advance`].
    ///
    /// [`advance`]: VersionVector::advance
    pub fn set(&mut self, origin: &Origin, seq: u64) {
        self.seen.insert(origin.clone(), seq);
    }

    /// Iterates over `(origin, highest contiguous seq)`.
    pub fn iter(&self) -> impl Iterator<Item = (&Origin, u64)> {
        self.seen.iter().map(|(o, s)| (o, *s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(n: &str) -> Origin {
        Origin {
            node: n.into(),
            incarnation: Default::default(),
        }
    }

    #[test]
    fn contiguous_batches_are_accepted_and_gaps_refused() {
        let s1 = origin("S001");
        let mut vv = VersionVector::new();
        assert_eq!(vv.check(&s1, 1, 10), Accept::Continue { skip: 0 });
        vv.advance(&s1, 10);
        assert_eq!(vv.check(&s1, 12, 20), Accept::Gap { expected: 11 });
        assert_eq!(vv.check(&s1, 5, 15), Accept::Continue { skip: 6 });
        assert_eq!(vv.check(&s1, 3, 10), Accept::AlreadyHeld);
        vv.advance(&s1, 4);
        assert_eq!(vv.get(&s1), 10, "a vector never moves backwards");
    }

    #[test]
    fn origins_are_independent() {
        let mut vv = VersionVector::new();
        vv.advance(&origin("S001"), 3);
        assert_eq!(vv.get(&origin("S002")), 0);
        assert_eq!(vv.check(&origin("S002"), 2, 2), Accept::Gap { expected: 1 });
    }
}
