//! Recalling leases from online stores (issue 16, part 3). A store holding a lease on
//! a member's points keeps them for its own use while it is offline; while it is
//! online, another store's redemption that only those points would cover must not be
//! refused. The hub then asks the store back through its stream (the store is online
//! exactly when it holds a stream poll open), the store stops spending under the lease
//! and gives it back saying what it spent (`LeaseReturn::spent`), and the waiting
//! authorization decides again. What this module holds is in this process only, as the
//! stream's wake-ups are (a single-process limit: docs/hub.md).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an authorization waits for recalled leases to come back when the store
/// did not say how long it waits for the answer. The edge gives up on the hub after
/// `redemption.authorize_timeout_ms` (300 ms by default) and says so
/// (`AuthorizeRequest::budget_ms`); the hub waits at most half of that.
pub const RECALL_WAIT: Duration = Duration::from_millis(150);

/// The longest wait for recalled leases, whatever the store's budget.
const RECALL_WAIT_MAX: Duration = Duration::from_secs(2);

/// How long to wait for recalled leases, for an ask whose store waits `budget_ms` for
/// the answer (0: not said).
pub fn recall_wait(budget_ms: u64) -> Duration {
    if budget_ms == 0 {
        RECALL_WAIT
    } else {
        Duration::from_millis(budget_ms / 2).min(RECALL_WAIT_MAX)
    }
}

/// A store whose last stream poll ended less than this long ago still counts as online
/// (it is between two polls).
const BETWEEN_POLLS: Duration = Duration::from_secs(2);

/// Which stores are online, what is to be recalled from them, and a signal for every
/// lease given back.
#[derive(Debug)]
pub struct Recalls {
    /// Per store: stream polls open now, and when the last one ended.
    polls: Mutex<HashMap<String, (u32, Instant)>>,
    /// Per store: member ids whose leases it is asked to give back.
    pending: PerStore,
    /// Per store: member ids whose coupons it no longer holds (another store took them).
    coupons_moved: PerStore,
    /// Moves on whenever a store gives a lease back.
    returned: tokio::sync::watch::Sender<u64>,
    /// (store, member as asked) whose recall went unanswered, and when.
    unanswered: Mutex<HashMap<(String, String), Instant>>,
}

/// How long a store whose recall went unanswered is not waited for again for that
/// member (its lease is named in refusals meanwhile).
const UNANSWERED_FOR: Duration = Duration::from_secs(60);

impl Default for Recalls {
    fn default() -> Self {
        Recalls {
            polls: Mutex::default(),
            pending: Mutex::default(),
            coupons_moved: Mutex::default(),
            returned: tokio::sync::watch::Sender::new(0),
            unanswered: Mutex::default(),
        }
    }
}

/// Per store, member ids waiting for its stream.
type PerStore = Mutex<HashMap<String, BTreeSet<String>>>;

fn add(to: &PerStore, store: &str, ids: &[String]) {
    if let Ok(mut pending) = to.lock() {
        pending
            .entry(store.to_string())
            .or_default()
            .extend(ids.iter().cloned());
    }
}

fn take(from: &PerStore, store: &str) -> Vec<String> {
    from.lock()
        .ok()
        .and_then(|mut p| p.remove(store))
        .map(|s| s.into_iter().collect())
        .unwrap_or_default()
}

/// An open stream poll; the store stays online while it lives (and a little after).
#[derive(Debug)]
pub struct OpenPoll<'a> {
    recalls: &'a Recalls,
    store: String,
}

impl Drop for OpenPoll<'_> {
    fn drop(&mut self) {
        if let Ok(mut polls) = self.recalls.polls.lock()
            && let Some((open, last)) = polls.get_mut(&self.store)
        {
            *open = open.saturating_sub(1);
            *last = Instant::now();
        }
    }
}

impl Recalls {
    /// A stream poll of `store` opened; it counts until the guard is dropped.
    pub fn poll_open(&self, store: &str) -> OpenPoll<'_> {
        if let Ok(mut polls) = self.polls.lock() {
            polls
                .entry(store.to_string())
                .and_modify(|(open, _)| *open += 1)
                .or_insert((1, Instant::now()));
        }
        OpenPoll {
            recalls: self,
            store: store.to_string(),
        }
    }

    /// Whether `store` holds a stream poll open, or held one a moment ago.
    pub fn online(&self, store: &str) -> bool {
        self.polls.lock().is_ok_and(|polls| {
            polls
                .get(store)
                .is_some_and(|(open, last)| *open > 0 || last.elapsed() < BETWEEN_POLLS)
        })
    }

    /// Asks `store` to give back its lease on the person with these `ids`.
    pub fn ask(&self, store: &str, ids: &[String]) {
        add(&self.pending, store, ids);
    }

    /// Takes what `store` is asked to give back (for its stream's next answer).
    pub fn take(&self, store: &str) -> Vec<String> {
        take(&self.pending, store)
    }

    /// Tells `store` it no longer holds the coupons of the person with these `ids`.
    pub fn coupons_moved(&self, store: &str, ids: &[String]) {
        add(&self.coupons_moved, store, ids);
    }

    /// Takes the members whose coupons `store` no longer holds (for its stream's next
    /// answer).
    pub fn take_coupons_moved(&self, store: &str) -> Vec<String> {
        take(&self.coupons_moved, store)
    }

    /// `store` did not give its lease on `member` back within an ask's wait.
    pub fn went_unanswered(&self, store: &str, member: &str) {
        if let Ok(mut u) = self.unanswered.lock() {
            u.retain(|_, at| at.elapsed() < UNANSWERED_FOR);
            u.insert((store.to_string(), member.to_string()), Instant::now());
        }
    }

    /// Whether a recall of `store`'s lease on `member` went unanswered lately.
    pub fn unanswered(&self, store: &str, member: &str) -> bool {
        self.unanswered.lock().is_ok_and(|u| {
            u.get(&(store.to_string(), member.to_string()))
                .is_some_and(|at| at.elapsed() < UNANSWERED_FOR)
        })
    }

    /// A store gave a lease back: waiting authorizations look again.
    pub fn lease_returned(&self) {
        self.returned.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Watches leases given back (subscribe before recalling, so none is missed).
    pub fn watch_returns(&self) -> tokio::sync::watch::Receiver<u64> {
        self.returned.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_is_online_while_it_polls_and_a_moment_after() {
        let r = Recalls::default();
        assert!(!r.online("S001"), "never polled");
        let a = r.poll_open("S001");
        let b = r.poll_open("S001");
        drop(a);
        assert!(r.online("S001"), "one poll still open");
        drop(b);
        assert!(r.online("S001"), "between two polls");
        if let Ok(mut polls) = r.polls.lock()
            && let Some((_, last)) = polls.get_mut("S001")
        {
            *last = Instant::now() - BETWEEN_POLLS - Duration::from_millis(1);
        }
        assert!(!r.online("S001"), "no poll for longer than the grace");
        assert!(!r.online("S002"));
    }

    #[test]
    fn the_wait_is_half_the_store_budget_within_bounds() {
        assert_eq!(recall_wait(0), RECALL_WAIT);
        assert_eq!(recall_wait(300), Duration::from_millis(150));
        assert_eq!(recall_wait(1), Duration::ZERO);
        assert_eq!(recall_wait(60_000), RECALL_WAIT_MAX);
    }

    #[test]
    fn recalls_are_taken_once_per_store() {
        let r = Recalls::default();
        r.ask("S001", &["m1".into(), "m2".into()]);
        r.ask("S001", &["m1".into()]);
        r.ask("S002", &["m3".into()]);
        assert_eq!(r.take("S001"), vec!["m1".to_string(), "m2".to_string()]);
        assert!(r.take("S001").is_empty());
        assert_eq!(r.take("S002"), vec!["m3".to_string()]);
    }
}
