//! Leases the hub grants this store on members' points (`patron_sync::rights`): asked
//! for in the background when a member is identified while the hub is reachable,
//! spent first by any redemption they cover (with or without the hub), and given back
//! once they can no longer be spent and their spends have reached the hub.
//!
//! Leases live in memory, measured on this process's monotonic clock from the instant
//! the store asked, so they end before the hub's copy whatever the wall clocks say. A
//! restart forgets them: the store then cannot spend them, and the hub counts them
//! until its own expiry (the points are locked for at most the lease's duration).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use patron_protocol::hub::{LeaseRequest, LeaseReturn};
use patron_sync::rights::HeldLease;
use tokio::sync::mpsc;

use super::Edge;
use super::hub_port::HubPort;

/// How often leases that can no longer be spent are given back.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(5);

/// A lease held here, with what is in progress on it.
#[derive(Debug)]
struct Local {
    lease: HeldLease,
    /// The hub's name for it (`LeaseResponse::lease`; 0 if the hub gave none).
    hub_id: i64,
    /// Sales spending under it (`auth: lease`) not settled yet: it is not given back
    /// while any is, so that what it says was spent under it is exact.
    spending: u32,
    /// Asks to the hub with part of it set aside, not answered yet. A spent-out lease
    /// waits for them (the hub may leave it points); a recalled one does not (the hub
    /// no longer lets them use it), but stays here until they settle, so that their
    /// settling never lands on a later lease.
    asking: u32,
    /// Given back to the hub while asks were in progress: dropped once they settle.
    gone: bool,
    /// Being given back: nothing more is spent under it.
    returning: bool,
    /// What redemptions spent under it (`auth: lease`, written or in progress), as
    /// opposed to what the hub took of it for the asks it decided.
    by_lease: i64,
    /// The hub asked for it back (another store needs the points): given back at
    /// once with `by_lease` (sales in progress under it included), whether the hub
    /// holds those spends yet or not. An ask in progress that set part of it aside
    /// cannot use it any more at the hub.
    recalled: bool,
    /// A give-back request is under way.
    sending: bool,
}

/// The leases this store holds, by member, on the process's monotonic clock.
#[derive(Debug)]
pub struct Leases {
    held: Mutex<HashMap<[u8; 16], Local>>,
    /// Members whose coupons this store holds (it is where they were last identified
    /// online), until when; and when the hub last said another store took them.
    coupons: Mutex<Coupons>,
    started: Instant,
    /// A recalled lease is ready to be given back.
    recalled: tokio::sync::Notify,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            held: Mutex::new(HashMap::new()),
            coupons: Mutex::new(Coupons::default()),
            started: Instant::now(),
            recalled: tokio::sync::Notify::new(),
        }
    }
}

/// The members whose coupons this store holds, on the monotonic clock.
#[derive(Debug, Default)]
struct Coupons {
    /// Until when, per member.
    held: HashMap<[u8; 16], i64>,
    /// When the hub last said another store took the member's coupons: a grant asked
    /// for before that may be the one the hub has taken back since.
    moved: HashMap<[u8; 16], i64>,
}

/// A lease to give back: its member, the hub's name for it, and for a recalled one
/// what was spent under it.
type GiveBack = ([u8; 16], i64, Option<i64>);

impl Leases {
    /// Milliseconds on the monotonic clock.
    fn now(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], Local>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends `points` of `member`'s lease if it covers them all; the caller settles.
    pub fn spend(&self, member: &[u8; 16], points: i64) -> bool {
        let now = self.now();
        self.lock().get_mut(member).is_some_and(|l| {
            let ok = !l.returning && l.lease.spend(points, now);
            if ok {
                l.spending += 1;
                l.by_lease += points;
            }
            ok
        })
    }

    /// Sets aside all that is left of `member`'s lease (for an ask to the hub, which
    /// may use part of it); the caller settles.
    pub fn take_rest(&self, member: &[u8; 16]) -> i64 {
        let now = self.now();
        match self.lock().get_mut(member) {
            Some(l) if !l.returning => {
                let left = l.lease.left(now);
                l.lease.spent += left;
                l.asking += 1;
                left
            }
            _ => 0,
        }
    }

    /// Ends one `take_rest`, giving `unused` points back to the lease.
    pub fn settle(&self, member: &[u8; 16], unused: i64) {
        self.settle_with(member, unused, false);
    }

    /// Ends one `spend`, giving `unused` points back to the lease (the sale was not
    /// written).
    pub fn settle_spend(&self, member: &[u8; 16], unused: i64) {
        self.settle_with(member, unused, true);
    }

    fn settle_with(&self, member: &[u8; 16], unused: i64, spend: bool) {
        let mut held = self.lock();
        let Some(l) = held.get_mut(member) else {
            return;
        };
        let unused = unused.max(0);
        l.lease.spent = (l.lease.spent - unused).max(0);
        if spend {
            l.spending = l.spending.saturating_sub(1);
            l.by_lease = (l.by_lease - unused).max(0);
            if l.recalled && l.spending == 0 {
                self.recalled.notify_one();
            }
        } else {
            l.asking = l.asking.saturating_sub(1);
        }
        if l.gone && l.spending == 0 && l.asking == 0 {
            held.remove(member);
        }
    }

    /// Holds `member`'s coupons for `duration_ms` from `asked` (on this clock), unless
    /// the hub said since the ask that another store took them: the grant may be the
    /// one it took back (holding nothing then only refuses a coupon offline).
    fn hold_coupons(&self, member: [u8; 16], asked: i64, duration_ms: i64) {
        let now = self.now();
        let mut c = self.coupons_lock();
        c.held.retain(|_, until| now < *until);
        c.moved
            .retain(|_, at| now.saturating_sub(*at) < duration_ms.max(0));
        if c.moved.get(&member).is_some_and(|at| *at >= asked) {
            return;
        }
        c.held.insert(member, asked.saturating_add(duration_ms));
    }

    /// Whether this store holds `member`'s coupons now: it may take them while it
    /// cannot reach the hub.
    pub fn holds_coupons(&self, member: &[u8; 16]) -> bool {
        let now = self.now();
        self.coupons_lock()
            .held
            .get(member)
            .is_some_and(|u| now < *u)
    }

    /// Members whose coupons this store holds now (for `/healthz`).
    pub fn coupons_count(&self) -> usize {
        let now = self.now();
        self.coupons_lock()
            .held
            .values()
            .filter(|u| now < **u)
            .count()
    }

    fn coupons_lock(&self) -> std::sync::MutexGuard<'_, Coupons> {
        self.coupons.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This store no longer holds the coupons of these member ids (they were identified
    /// online at another store since).
    pub fn coupons_moved(&self, ids: &[[u8; 16]]) {
        let now = self.now();
        let mut c = self.coupons_lock();
        for id in ids {
            c.held.remove(id);
            c.moved.insert(*id, now);
        }
    }

    /// The hub asks for the leases on these member ids back: nothing more is spent
    /// under them, and each is given back at once. Whether this store held any.
    pub fn recall(&self, ids: &[[u8; 16]]) -> bool {
        let mut any = false;
        let mut held = self.lock();
        for id in ids {
            if let Some(l) = held.get_mut(id) {
                l.returning = true;
                l.recalled = true;
                any = true;
            }
        }
        if any {
            self.recalled.notify_one();
        }
        any
    }

    /// Leases held (for `/healthz`).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// The members this store holds leases for.
    pub fn members(&self) -> Vec<[u8; 16]> {
        self.lock().keys().copied().collect()
    }

    /// Whether this store holds a lease on `member`'s points.
    pub fn holds(&self, member: &[u8; 16]) -> bool {
        self.lock().contains_key(member)
    }

    fn insert(&self, member: [u8; 16], lease: HeldLease, hub_id: i64) {
        self.lock().insert(
            member,
            Local {
                lease,
                hub_id,
                spending: 0,
                asking: 0,
                gone: false,
                returning: false,
                by_lease: 0,
                recalled: false,
                sending: false,
            },
        );
    }

    /// Marks the leases to give back now and lists them, recalled ones first: those
    /// recalled, once no sale under them is in progress, and those that can no longer
    /// be spent and have nothing in progress.
    fn start_returning(&self) -> Vec<GiveBack> {
        let now = self.now();
        let mut held = self.lock();
        let mut out: Vec<GiveBack> = held
            .iter_mut()
            .filter(|(_, l)| !l.sending && !l.gone)
            .filter_map(|(m, l)| {
                let spent = if l.recalled && l.spending == 0 {
                    Some(l.by_lease)
                } else if !l.recalled
                    && !l.returning
                    && l.spending == 0
                    && l.asking == 0
                    && l.lease.left(now) == 0
                {
                    None
                } else {
                    return None;
                };
                l.returning = true;
                l.sending = true;
                Some((*m, l.hub_id, spent))
            })
            .collect();
        out.sort_by_key(|(_, _, spent)| spent.is_none());
        out
    }

    /// The hub took `member`'s lease back (or not: `returned` false keeps it; a
    /// recalled one stays unspendable and is offered again).
    fn finish_returning(&self, member: &[u8; 16], returned: bool) {
        let mut held = self.lock();
        let Some(l) = held.get_mut(member) else {
            return;
        };
        if !returned {
            l.sending = false;
            l.returning = l.recalled;
        } else if l.spending == 0 && l.asking == 0 {
            held.remove(member);
        } else {
            l.gone = true;
        }
    }
}

impl Edge {
    /// After a sale that spent `points` of `member`'s lease: a sale that was not
    /// recorded (or was a replay) gives them back to the lease. (A recorded sale that redeemed fewer than
    /// asked keeps them spent: the lease errs on the side of spending less.)
    pub(super) fn settle_lease(
        &self,
        member: &[u8; 16],
        auth: super::Authority,
        points: i64,
        written: &Result<super::Reply, super::EdgeError>,
    ) {
        if auth == super::Authority::Lease {
            // A refused sale, or a replay of an earlier answer, spent nothing now.
            let spent = written.as_ref().is_ok_and(|r| !r.replayed);
            self.leases
                .settle_spend(member, if spent { 0 } else { points });
        }
    }

    /// The hub asks for the leases on these members (UUIDs, every id of each person)
    /// back: see [`Leases::recall`].
    pub fn recall_leases(&self, ids: &[String]) {
        if self.leases.recall(&member_ids(ids)) {
            tracing::debug!("the hub recalled a lease");
        }
    }

    /// The hub says these members (UUIDs) were identified online at another store
    /// since: their coupons are no longer held here.
    pub fn coupons_moved(&self, ids: &[String]) {
        self.leases.coupons_moved(&member_ids(ids));
    }

    /// A member was identified here: ask the hub for a lease in the background.
    pub(super) fn identified(&self, member: [u8; 16]) {
        if let Ok(Some(tx)) = self.lease_asks.lock().map(|t| t.clone()) {
            // Full or closed: this identification asks nothing; the next one may.
            let _ = tx.try_send(member);
        }
    }
}

/// Member ids the hub named (UUIDs; one that does not parse names no member here).
fn member_ids(ids: &[String]) -> Vec<[u8; 16]> {
    ids.iter()
        .filter_map(|s| uuid::Uuid::parse_str(s).ok())
        .map(|u| *u.as_bytes())
        .collect()
}

/// Starts the task that asks for and gives back leases (an enrolled edge with leases
/// on).
pub fn spawn(edge: Arc<Edge>, client: Arc<dyn HubPort>) {
    let (tx, rx) = mpsc::channel(256);
    if let Ok(mut slot) = edge.lease_asks.lock() {
        *slot = Some(tx);
    }
    tokio::spawn(run(edge, client, rx));
}

async fn run(edge: Arc<Edge>, client: Arc<dyn HubPort>, mut asks: mpsc::Receiver<[u8; 16]>) {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    loop {
        tokio::select! {
            m = asks.recv() => match m {
                Some(m) => ask(&edge, client.as_ref(), m).await,
                None => return,
            },
            _ = tick.tick() => give_back(&edge, client.as_ref()).await,
            () = edge.leases.recalled.notified() => give_back(&edge, client.as_ref()).await,
        }
    }
}

/// Whether the hub is reachable and holds every fact of this store: a lease is asked
/// for, and given back, only then (the hub credits a spend to the lease its store holds
/// when the spend arrives).
async fn caught_up(edge: &Edge) -> bool {
    let reachable = edge.sync_status.lock().is_ok_and(|s| s.reachable);
    reachable && edge.health().await.is_ok_and(|h| h.hub.pending_facts == 0)
}

async fn ask(edge: &Edge, client: &dyn HubPort, member: [u8; 16]) {
    let points_held = edge.leases.holds(&member);
    if (points_held && edge.leases.holds_coupons(&member)) || !caught_up(edge).await {
        return;
    }
    let asked = edge.leases.now();
    let req = LeaseRequest {
        member: uuid::Uuid::from_bytes(member).to_string(),
        // A second points lease would replace the one held at the hub, not here.
        coupons_only: points_held,
    };
    match client.lease(&req).await {
        Ok(r) => {
            if r.coupons_ms > 0 {
                edge.leases.hold_coupons(member, asked, r.coupons_ms);
            }
            if r.points > 0 && !points_held {
                edge.leases.insert(
                    member,
                    HeldLease::new(r.points, asked, r.duration_ms),
                    r.lease,
                );
                tracing::debug!(points = r.points, "lease granted");
            }
        }
        Err(e) => tracing::debug!(error = %e, "no lease"),
    }
}

async fn give_back(edge: &Edge, client: &dyn HubPort) {
    // Marked first: a sale still in progress keeps its lease, and none can start under
    // a marked one; only then is "the hub holds every fact" checked. A recalled lease
    // does not wait for that: it says what was spent under it, and the hub keeps
    // counting what has not arrived.
    let done = edge.leases.start_returning();
    if done.is_empty() {
        return;
    }
    // Recalled ones first (another store is waiting), without waiting for the check.
    let mut ready = None;
    for (m, hub_id, spent) in done {
        let may = match spent {
            Some(_) => true,
            None => {
                if ready.is_none() {
                    ready = Some(caught_up(edge).await);
                }
                ready == Some(true)
            }
        };
        let returned = may && {
            let req = LeaseReturn {
                member: uuid::Uuid::from_bytes(m).to_string(),
                spent,
                lease: (hub_id != 0).then_some(hub_id),
            };
            client.return_lease(&req).await.is_ok()
        };
        if spent.is_some() {
            tracing::debug!(returned, "recalled lease given back");
        }
        edge.leases.finish_returning(&m, returned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coupons_are_held_until_their_end_or_another_store_takes_them() {
        let l = Leases::default();
        let (m, other) = ([3u8; 16], [4u8; 16]);
        l.hold_coupons(m, l.now(), 3_600_000);
        l.hold_coupons(other, l.now() - 10, 5);
        assert!(l.holds_coupons(&m));
        assert!(!l.holds_coupons(&other), "ended");
        assert_eq!(l.coupons_count(), 1);
        l.insert(m, HeldLease::new(100, l.now(), 3_600_000), 7);
        let asked = l.now();
        l.coupons_moved(&[m]);
        assert!(!l.holds_coupons(&m), "moved");
        assert!(l.spend(&m, 100), "the points lease stays");
        // The answer to an ask sent before the hub said they moved holds nothing: it
        // may be the grant the hub took back. One asked after holds.
        l.hold_coupons(m, asked, 3_600_000);
        assert!(!l.holds_coupons(&m));
        std::thread::sleep(std::time::Duration::from_millis(2));
        l.hold_coupons(m, l.now(), 3_600_000);
        assert!(l.holds_coupons(&m));
        assert_eq!(l.coupons_count(), 1);
    }

    #[test]
    fn a_lease_with_a_sale_in_progress_is_not_given_back() {
        let l = Leases::default();
        let m = [7u8; 16];
        l.insert(m, HeldLease::new(100, l.now(), 3_600_000), 7);
        assert!(l.spend(&m, 100));
        assert!(!l.spend(&m, 1), "spent out");
        assert!(l.start_returning().is_empty(), "the sale is not settled");
        // The sale failed: its points come back, and the lease is usable again.
        l.settle_spend(&m, 100);
        assert!(l.start_returning().is_empty(), "100 left");
        assert!(l.spend(&m, 100));
        l.settle_spend(&m, 0);
        assert_eq!(l.start_returning(), vec![(m, 7, None)]);
        assert!(
            !l.spend(&m, 0) && l.take_rest(&m) == 0,
            "nothing under a lease being given back"
        );
        l.finish_returning(&m, false);
        assert_eq!(l.start_returning(), vec![(m, 7, None)]);
        l.finish_returning(&m, true);
        assert_eq!(l.count(), 0);
    }

    #[test]
    fn a_recalled_lease_stops_spending_and_goes_back_with_what_was_spent_under_it() {
        let l = Leases::default();
        let (m, other) = ([9u8; 16], [10u8; 16]);
        l.insert(m, HeldLease::new(1000, l.now(), 3_600_000), 7);
        assert!(l.spend(&m, 300));
        // An ask to the hub took 200 of the rest; it is not spent "under the lease".
        assert_eq!(l.take_rest(&m), 700);
        l.settle(&m, 500);
        assert!(!l.recall(&[other]), "no lease on that member here");
        assert!(l.recall(&[other, m]));
        assert!(
            !l.spend(&m, 1) && l.take_rest(&m) == 0,
            "recalled: nothing more"
        );
        assert!(
            l.start_returning().is_empty(),
            "the 300 sale is in progress: what it spends is not known yet"
        );
        l.settle_spend(&m, 0);
        assert_eq!(l.start_returning(), vec![(m, 7, Some(300))]);
        assert!(l.start_returning().is_empty(), "one give-back at a time");
        // The hub did not answer: still not spendable, offered again.
        l.finish_returning(&m, false);
        assert!(!l.spend(&m, 1));
        assert_eq!(l.start_returning(), vec![(m, 7, Some(300))]);
        l.finish_returning(&m, true);
        assert_eq!(l.count(), 0);
    }

    #[test]
    fn a_recalled_lease_goes_back_during_an_ask_and_stays_until_the_ask_settles() {
        let l = Leases::default();
        let m = [12u8; 16];
        l.insert(m, HeldLease::new(1000, l.now(), 3_600_000), 7);
        assert_eq!(l.take_rest(&m), 1000, "an ask to the hub in progress");
        l.recall(&[m]);
        // Not waiting for the ask (the hub may be waiting for this very lease).
        assert_eq!(l.start_returning(), vec![(m, 7, Some(0))]);
        l.finish_returning(&m, true);
        assert!(
            l.holds(&m),
            "kept until the ask settles: no new lease meanwhile"
        );
        l.settle(&m, 1000);
        assert!(!l.holds(&m), "the ask settled: gone");
    }

    #[test]
    fn a_sale_not_written_under_a_lease_is_not_counted_as_spent_under_it() {
        let l = Leases::default();
        let m = [11u8; 16];
        l.insert(m, HeldLease::new(1000, l.now(), 3_600_000), 7);
        assert!(l.spend(&m, 400));
        assert!(l.spend(&m, 100));
        l.settle_spend(&m, 400);
        l.settle_spend(&m, 0);
        l.recall(&[m]);
        assert_eq!(l.start_returning(), vec![(m, 7, Some(100))]);
    }

    #[test]
    fn an_ask_to_the_hub_sets_the_rest_aside_and_gets_back_what_it_did_not_use() {
        let l = Leases::default();
        let m = [8u8; 16];
        l.insert(m, HeldLease::new(1000, l.now(), 3_600_000), 7);
        assert!(l.spend(&m, 300));
        assert_eq!(l.take_rest(&m), 700);
        assert!(!l.spend(&m, 1), "set aside while the hub decides");
        // The hub used 500 of the 700.
        l.settle(&m, 200);
        assert!(l.spend(&m, 200));
        assert!(!l.spend(&m, 1));
        assert!(
            l.start_returning().is_empty(),
            "the 300 sale is still in progress"
        );
        l.settle_spend(&m, 0);
        assert!(
            l.start_returning().is_empty(),
            "the 200 sale is still in progress"
        );
        l.settle_spend(&m, 0);
        assert_eq!(l.start_returning(), vec![(m, 7, None)]);
    }
}
