//! The pushing side of sync as a pure state machine: what a store sends next and what
//! the hub's answer teaches it. The edge's sync worker runs it against the hub over
//! HTTPS, persisting `acked` after each change; the simulation (`tests/simulation.rs`)
//! runs the same code against the hub's receiving rules over a faulty network.

use patron_protocol::Origin;

use crate::session::Verdict;

/// What to push next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The facts after `after`, at most `max`.
    Facts {
        /// The acknowledged position.
        after: u64,
        /// Most facts.
        max: usize,
    },
    /// Up to date: the last fact again, as a probe. A hub restored from an older copy
    /// answers with a gap, and the store resends what it lost.
    Probe {
        /// The last fact's sequence.
        seq: u64,
    },
    /// Nothing written yet: a heartbeat with no facts.
    Nothing,
}

/// What an answer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything written is acknowledged.
    UpToDate,
    /// More to send now (progress, or a rewind after a gap).
    More,
    /// The answer moved nothing: back off rather than spin.
    NoProgress,
    /// The hub refused a batch (a person must look).
    Refused(String),
    /// The hub holds more of this origin than the store wrote: the store's database is
    /// an older copy. Pushing on would reuse sequence numbers; sync stops.
    HubAhead {
        /// What the hub holds.
        hub_high: u64,
    },
}

/// The store's side of sync for one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// The origin pushed (this store's node and database incarnation).
    pub origin: Origin,
    /// Highest sequence the hub acknowledged (persisted by the caller when it changes).
    pub acked: u64,
}

impl Sender {
    /// A sender that resumes from a persisted acknowledgement.
    pub fn new(origin: Origin, acked: u64) -> Self {
        Self { origin, acked }
    }

    /// What to push when the store has written up to `last`, `batch` facts at most.
    pub fn next(&self, last: u64, batch: usize) -> Next {
        if self.acked < last {
            Next::Facts {
                after: self.acked,
                max: batch.max(1),
            }
        } else if last > 0 {
            Next::Probe { seq: last }
        } else {
            Next::Nothing
        }
    }

    /// Learns from the verdicts on a push whose facts went up to `sent_to` (the
    /// acknowledged position if none were sent), the store having written up to `last`.
    /// Only what the push showed the hub counts as acknowledged: facts beyond it, even
    /// under numbers the hub holds, were never compared with the hub's (after a restore
    /// they may be other facts). A gap rewinds to what the hub holds, even behind an
    /// earlier acknowledgement (a hub restored from an older copy).
    pub fn on_ack(&mut self, verdicts: &[Verdict], sent_to: u64, last: u64) -> Outcome {
        let sent_to = sent_to.max(self.acked);
        let mut acked = self.acked;
        let mut hub_high = 0;
        let mut refused = None;
        for v in verdicts {
            match v {
                Verdict::Applied { origin, high } | Verdict::AlreadyHeld { origin, high }
                    if *origin == self.origin =>
                {
                    hub_high = hub_high.max(*high);
                    acked = acked.max((*high).min(sent_to));
                }
                Verdict::Gap { origin, expected } if *origin == self.origin => {
                    acked = expected.saturating_sub(1);
                }
                Verdict::Refused { reason, .. } => refused = Some(reason.clone()),
                _ => {}
            }
        }
        if hub_high > last {
            return Outcome::HubAhead { hub_high };
        }
        let moved = acked != self.acked;
        self.acked = acked;
        if let Some(r) = refused {
            return Outcome::Refused(r);
        }
        if self.acked >= last {
            Outcome::UpToDate
        } else if moved {
            Outcome::More
        } else {
            Outcome::NoProgress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o() -> Origin {
        Origin {
            node: "S001".into(),
            incarnation: Default::default(),
        }
    }

    fn applied(high: u64) -> Verdict {
        Verdict::Applied { origin: o(), high }
    }

    #[test]
    fn a_sender_sends_what_is_unacknowledged_then_probes() {
        let mut s = Sender::new(o(), 0);
        assert_eq!(s.next(0, 10), Next::Nothing);
        assert_eq!(s.next(5, 3), Next::Facts { after: 0, max: 3 });
        assert_eq!(s.on_ack(&[applied(3)], 3, 5), Outcome::More);
        assert_eq!(s.next(5, 3), Next::Facts { after: 3, max: 3 });
        assert_eq!(s.on_ack(&[applied(5)], 5, 5), Outcome::UpToDate);
        assert_eq!(s.next(5, 3), Next::Probe { seq: 5 });
    }

    /// The hub may say it holds more than this push showed it (an earlier copy of the
    /// store sent other facts under those numbers): only what was shown is acknowledged.
    #[test]
    fn only_what_the_push_showed_is_acknowledged() {
        let mut s = Sender::new(o(), 2);
        assert_eq!(s.on_ack(&[applied(9)], 4, 9), Outcome::More);
        assert_eq!(s.acked, 4);
    }

    #[test]
    fn a_gap_rewinds_even_behind_an_earlier_acknowledgement() {
        let mut s = Sender::new(o(), 8);
        let gap = Verdict::Gap {
            origin: o(),
            expected: 3,
        };
        assert_eq!(s.on_ack(&[gap], 9, 9), Outcome::More);
        assert_eq!(s.acked, 2);
    }

    #[test]
    fn a_hub_ahead_of_the_store_stops_sync_and_refusals_say_why() {
        let mut s = Sender::new(o(), 3);
        assert_eq!(
            s.on_ack(&[applied(7)], 3, 5),
            Outcome::HubAhead { hub_high: 7 }
        );
        assert_eq!(s.acked, 3, "nothing learned from an answer that cannot be");
        let refused = Verdict::Refused {
            origin: o(),
            reason: "no".into(),
        };
        assert_eq!(s.on_ack(&[refused], 4, 5), Outcome::Refused("no".into()));
        assert_eq!(s.on_ack(&[], 4, 5), Outcome::NoProgress);
    }
}
