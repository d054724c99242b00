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
use crate::hub::client::HubClient;

/// How often leases that can no longer be spent are given back.
const GIVE_BACK_EVERY: Duration = Duration::from_secs(5);

/// The leases this store holds, by member, on the process's monotonic clock.
#[derive(Debug)]
pub struct Leases {
    held: Mutex<HashMap<[u8; 16], HeldLease>>,
    started: Instant,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            held: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }
}

impl Leases {
    /// Milliseconds on the monotonic clock.
    fn now(&self) -> i64 {
        i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 16], HeldLease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends `points` of `member`'s lease if it covers them all.
    pub fn spend(&self, member: &[u8; 16], points: i64) -> bool {
        let now = self.now();
        self.lock()
            .get_mut(member)
            .is_some_and(|l| l.spend(points, now))
    }

    /// Gives back `points` spent for a sale that was then not recorded.
    pub fn unspend(&self, member: &[u8; 16], points: i64) {
        if let Some(l) = self.lock().get_mut(member) {
            l.spent = (l.spent - points).max(0);
        }
    }

    /// Leases held (for `/healthz`).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn holds(&self, member: &[u8; 16]) -> bool {
        self.lock().contains_key(member)
    }

    fn spent_out(&self) -> Vec<[u8; 16]> {
        let now = self.now();
        self.lock()
            .iter()
            .filter(|(_, l)| l.left(now) == 0)
            .map(|(m, _)| *m)
            .collect()
    }
}

impl Edge {
    /// After a sale that spent `points` of `member`'s lease: a sale that was not
    /// recorded gives them back to the lease. (A recorded sale that redeemed fewer than
    /// asked keeps them spent: the lease errs on the side of spending less.)
    pub(super) fn settle_lease<T>(
        &self,
        member: &[u8; 16],
        auth: super::Authority,
        points: i64,
        written: &Result<T, super::EdgeError>,
    ) {
        if auth == super::Authority::Lease && written.is_err() {
            self.leases.unspend(member, points);
        }
    }

    /// A member was identified here: ask the hub for a lease in the background.
    pub(super) fn identified(&self, member: [u8; 16]) {
        if let Ok(Some(tx)) = self.lease_asks.lock().map(|t| t.clone()) {
            // Full or closed: this identification asks nothing; the next one may.
            let _ = tx.try_send(member);
        }
    }
}

/// Starts the task that asks for and gives back leases (an enrolled edge with leases
/// on).
pub fn spawn(edge: Arc<Edge>, client: HubClient) {
    let (tx, rx) = mpsc::channel(256);
    if let Ok(mut slot) = edge.lease_asks.lock() {
        *slot = Some(tx);
    }
    tokio::spawn(run(edge, client, rx));
}

async fn run(edge: Arc<Edge>, client: HubClient, mut asks: mpsc::Receiver<[u8; 16]>) {
    let mut tick = tokio::time::interval(GIVE_BACK_EVERY);
    loop {
        tokio::select! {
            m = asks.recv() => match m {
                Some(m) => ask(&edge, &client, m).await,
                None => return,
            },
            _ = tick.tick() => give_back(&edge, &client).await,
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

async fn ask(edge: &Edge, client: &HubClient, member: [u8; 16]) {
    if edge.leases.holds(&member) || !caught_up(edge).await {
        return;
    }
    let asked = edge.leases.now();
    let req = LeaseRequest {
        member: uuid::Uuid::from_bytes(member).to_string(),
    };
    match client.lease(&req).await {
        Ok(r) if r.points > 0 => {
            edge.leases
                .lock()
                .insert(member, HeldLease::new(r.points, asked, r.duration_ms));
            tracing::debug!(points = r.points, "lease granted");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "no lease"),
    }
}

async fn give_back(edge: &Edge, client: &HubClient) {
    let done = edge.leases.spent_out();
    if done.is_empty() || !caught_up(edge).await {
        return;
    }
    for m in done {
        let req = LeaseReturn {
            member: uuid::Uuid::from_bytes(m).to_string(),
        };
        if client.return_lease(&req).await.is_ok() {
            edge.leases.lock().remove(&m);
        }
    }
}
