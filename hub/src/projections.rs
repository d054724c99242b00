//! Projections behind the ingest cursor. The facts' ingest order (`facts.id` in the
//! SQLite backend) is a global cursor; a projection here keeps its own position in it
//! and folds what follows, in steps, off the push path: a push is acknowledged once its
//! facts and the projections kept inside the ingest transaction (registrations, merges,
//! profiles, holds, leases, the stream) are durable, and these follow within a step. Each step writes its rows and its position in one transaction, so a crash
//! loses nothing and folds nothing twice; each can be emptied and folded again from
//! the whole log (`patron-hub rebuild`), which must give what the steps gave (tested).
//! Analytics, segments, campaign results and notifications are the projections that
//! come next; [`crate::activity`] and the overdraw judgement are the first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::store::{HubStore, Step, StoreError};

/// Facts a step folds at most: big enough that a member's row is written once for
/// many of their facts, small enough that the writer is held for milliseconds.
pub const STEP: usize = 5_000;

/// Least time between the starts of two rounds of steps. Each step is a write
/// transaction on the hub's one writer, with its own commit and sync, whatever its
/// size: woken by every ingest commit, the runner took the writer as often as ingest
/// did, and pushes waited for it (8% of the writer's time under the ingest benchmark).
/// Under load the facts of several ingest commits are folded in one step; an idle hub
/// still folds a lone push at once.
const SETTLE: Duration = Duration::from_millis(50);

/// A projection behind the cursor.
pub trait Behind: Send + Sync {
    /// Its name, as `projections` rows and `/v1/projections` show it.
    fn name(&self) -> &'static str;

    /// Folds at most `max` facts after its position.
    fn step(&self, max: usize) -> Result<Step, StoreError>;
}

/// Members' activity ([`crate::activity`]).
pub struct ActivityProjection(pub Arc<dyn HubStore>);

impl ActivityProjection {
    /// One step of at most `max` facts (tests step in small sizes).
    #[cfg(test)]
    pub(crate) fn step_at_most(&self, max: usize) -> Step {
        self.step(max).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Behind for ActivityProjection {
    fn name(&self) -> &'static str {
        crate::activity::ACTIVITY
    }

    fn step(&self, max: usize) -> Result<Step, StoreError> {
        self.0.step_activity(max, crate::activity::fold)
    }
}

/// Overdrawing spends ([`crate::authority::overdraws`]), judged behind the cursor: a
/// push does not wait for its spenders' histories to be read, and the report catches
/// this up before it answers.
pub struct OverdrawsProjection {
    /// The hub's storage.
    pub store: Arc<dyn HubStore>,
    /// The hub's clock.
    pub now: Clock,
}

impl Behind for OverdrawsProjection {
    fn name(&self) -> &'static str {
        crate::authority::OVERDRAWS
    }

    fn step(&self, max: usize) -> Result<Step, StoreError> {
        let (step, recorded) =
            self.store
                .step_overdraws(max, crate::authority::overdraws, (self.now)())?;
        if recorded > 0 {
            tracing::warn!(overdraws = recorded, "redemptions overdrew");
        }
        Ok(step)
    }
}

/// Every projection behind the cursor, over `store`.
pub fn all(store: Arc<dyn HubStore>, now: Clock) -> Vec<Arc<dyn Behind>> {
    vec![
        Arc::new(ActivityProjection(store.clone())),
        Arc::new(OverdrawsProjection { store, now }),
    ]
}

/// Steps `p` until it reaches the end of the log as its last step saw it; the sum of
/// its steps.
pub fn catch_up(p: &dyn Behind, max: usize) -> Result<Step, StoreError> {
    let mut total = Step::default();
    loop {
        let s = p.step(max)?;
        total.folded += s.folded;
        total.unreadable += s.unreadable;
        total.position = s.position;
        total.end = s.end;
        // A step that wrote nothing and did not move (a reset raced it) tries again;
        // one that reached the end it read is done.
        if s.position >= s.end {
            return Ok(total);
        }
    }
}

/// Empties `p` and folds the whole log again.
pub fn rebuild(store: &dyn HubStore, p: &dyn Behind) -> Result<Step, StoreError> {
    store.reset_projection(p.name())?;
    catch_up(p, STEP)
}

/// Wakes the runner when a push committed facts (cheap to clone and to call).
#[derive(Clone, Default)]
pub struct Waker(Arc<(Mutex<bool>, Condvar)>);

impl Waker {
    /// New facts are in.
    pub fn wake(&self) {
        let (flag, cv) = &*self.0;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    /// Waits until woken or `timeout` passes; clears the wake-up.
    fn wait(&self, timeout: Duration) {
        let (flag, cv) = &*self.0;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        let (mut guard, _) = cv
            .wait_timeout_while(guard, timeout, |woken| !*woken)
            .unwrap_or_else(|p| p.into_inner());
        *guard = false;
    }
}

/// The thread that keeps the projections caught up.
pub struct Runner {
    stop: Arc<AtomicBool>,
    waker: Waker,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    /// Starts a thread that catches every projection up whenever `waker` is woken, and
    /// at least every `idle` (facts written by another process, a missed wake-up).
    pub fn spawn(
        projections: Vec<Arc<dyn Behind>>,
        waker: Waker,
        idle: Duration,
    ) -> std::io::Result<Runner> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, waker) = (stop.clone(), waker.clone());
            std::thread::Builder::new()
                .name("hub-projections".into())
                .spawn(move || {
                    let mut last = None::<std::time::Instant>;
                    while !stop.load(Ordering::SeqCst) {
                        if let Some(wait) = last.and_then(|l| SETTLE.checked_sub(l.elapsed())) {
                            std::thread::sleep(wait);
                            if stop.load(Ordering::SeqCst) {
                                break;
                            }
                        }
                        last = Some(std::time::Instant::now());
                        for p in &projections {
                            if let Err(e) = catch_up(p.as_ref(), STEP) {
                                // Retried at the next wake-up: the position did not move.
                                tracing::error!(projection = p.name(), error = %e, "a projection step failed");
                            }
                        }
                        waker.wait(idle);
                    }
                })?
        };
        Ok(Runner {
            stop,
            waker,
            thread: Some(thread),
        })
    }

    /// Stops the thread after its current step.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake();
    }
}
