//! Hybrid logical clock: wall time in ms plus a counter, so causally later events
//! always carry larger stamps even when wall clocks disagree, and stamps stay close to
//! real time. Profile fields are last-writer-wins registers under these stamps.

pub use patron_domain::hlc::Stamp;

/// What [`Hlc::observe`] saw in a remote stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Within the allowed skew.
    Ok,
    /// The remote clock ran ahead of ours by this many ms, more than allowed: the stamp
    /// was clamped to our wall time plus the allowance (the hub logs this).
    Clamped {
        /// How far ahead it was.
        ahead_ms: u64,
    },
}

/// A node's clock.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: String,
    last: (u64, u32),
    max_skew_ms: u64,
}

impl Hlc {
    /// A clock for `node` that refuses to follow remote clocks more than `max_skew_ms` ahead.
    pub fn new(node: impl Into<String>, max_skew_ms: u64) -> Self {
        Self {
            node: node.into(),
            last: (0, 0),
            max_skew_ms,
        }
    }

    /// A stamp for a local event at wall time `now`.
    pub fn tick(&mut self, now: u64) -> Stamp {
        self.last = if now > self.last.0 {
            (now, 0)
        } else {
            (self.last.0, self.last.1.saturating_add(1))
        };
        Stamp {
            wall: self.last.0,
            counter: self.last.1,
            node: self.node.clone(),
        }
    }

    /// Merges a remote stamp (received at wall time `now`) so later local stamps order
    /// after it. A stamp too far ahead of `now` is clamped rather than followed: one
    /// store with a wrong clock must not drag every replica into the future.
    pub fn observe(&mut self, remote: &Stamp, now: u64) -> Observed {
        let limit = now.saturating_add(self.max_skew_ms);
        let (wall, verdict) = if remote.wall > limit {
            (
                limit,
                Observed::Clamped {
                    ahead_ms: remote.wall - now,
                },
            )
        } else {
            (remote.wall, Observed::Ok)
        };
        let max_wall = self.last.0.max(wall).max(now);
        let counter = if max_wall == self.last.0 && max_wall == wall {
            self.last.1.max(remote.counter).saturating_add(1)
        } else if max_wall == self.last.0 {
            self.last.1.saturating_add(1)
        } else if max_wall == wall {
            remote.counter.saturating_add(1)
        } else {
            0
        };
        self.last = (max_wall, counter);
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_wall_clock_goes_back() {
        let mut c = Hlc::new("S001", 60_000);
        let a = c.tick(1_000);
        let b = c.tick(900);
        let d = c.tick(1_000);
        assert!(a < b && b < d);
    }

    #[test]
    fn observing_a_remote_stamp_orders_later_events_after_it() {
        let mut c = Hlc::new("S001", 60_000);
        let remote = Stamp {
            wall: 5_000,
            counter: 7,
            node: "S002".into(),
        };
        assert_eq!(c.observe(&remote, 4_000), Observed::Ok);
        let next = c.tick(4_100);
        assert!(next > remote);
    }

    #[test]
    fn a_clock_far_ahead_is_clamped_not_followed() {
        let mut hub = Hlc::new("hub", 60_000);
        let skewed = Stamp {
            wall: 10_000_000,
            counter: 0,
            node: "S003".into(),
        };
        assert_eq!(
            hub.observe(&skewed, 1_000),
            Observed::Clamped {
                ahead_ms: 9_999_000
            }
        );
        assert!(
            hub.tick(1_000).wall <= 61_000,
            "the hub's clock stays within the allowance"
        );
    }
}
