//! Who allows a redemption: the hub when it is reachable (it sees every store's
//! redemptions in order, so it never lets a member overdraw), the offline floor limit
//! when it is not, and the edge itself when it is not enrolled with a hub at all (one
//! store, nothing to double-spend against). See docs/redemption.md.

use std::sync::Arc;
use std::time::Duration;

use patron_protocol::hub::{AuthorizeRequest, AuthorizeResponse};
use rusqlite::{Connection, params};

use super::hub_port::HubPort;
use super::{Core, Edge, EdgeError};
use crate::domain::clock::Millis;
use crate::store::{StoreError, meta_get};

/// Who allowed a redemption (recorded with it, and in the fact's body as `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// The edge is not enrolled with a hub: its own balance is the whole truth.
    Local,
    /// The hub authorized it and holds the points until the sale's fact arrives.
    Hub,
    /// The hub did not answer in time: allowed under the offline floor limit.
    Offline,
    /// Spent under the lease this store holds on the member's points.
    Lease,
}

impl Authority {
    /// The label stored and synced.
    pub fn label(self) -> &'static str {
        match self {
            Authority::Local => "local",
            Authority::Hub => "hub",
            Authority::Offline => "offline",
            Authority::Lease => "lease",
        }
    }
}

impl From<Authority> for patron_domain::fact::Auth {
    fn from(a: Authority) -> Self {
        use patron_domain::fact::Auth;
        match a {
            Authority::Local => Auth::Local,
            Authority::Hub => Auth::Hub,
            Authority::Offline => Auth::Offline,
            Authority::Lease => Auth::Lease,
        }
    }
}

/// The hub, as the redemption authority sees it.
pub struct HubAuthority {
    /// The hub, called with the authorization timeout.
    pub client: Arc<dyn HubPort>,
    /// How long to wait for an answer.
    pub timeout: Duration,
    /// Client for member fetches (a longer timeout: a member's whole history).
    pub fetcher: Arc<dyn HubPort>,
    /// How long a lookup waits for a member fetch.
    pub fetch_timeout: Duration,
}

impl Edge {
    /// Makes the hub the redemption authority (called once enrolled and syncing).
    pub fn set_hub_authority(&self, a: HubAuthority) {
        if let Ok(mut slot) = self.authority.write() {
            *slot = Some(Arc::new(a));
        }
    }

    /// The authority for a redemption not put to the hub: the offline limits if there
    /// is a hub, the edge alone if there is none.
    pub(super) fn unasked_authority(&self) -> Authority {
        if self.hub_authority().is_some() {
            Authority::Offline
        } else {
            Authority::Local
        }
    }

    /// A call to the hub failed or timed out: until the sync worker next reaches it,
    /// the store acts offline (registrations are provisional, redemptions go to the
    /// offline limits without waiting on the hub).
    pub(super) fn hub_failed(&self) {
        if let Ok(mut s) = self.sync_status.lock() {
            s.reachable = false;
        }
    }

    pub(super) fn hub_authority(&self) -> Option<Arc<HubAuthority>> {
        self.authority.read().ok().and_then(|a| a.clone())
    }

    /// Asks the hub whether `member` may spend `points` in sale `txn`. A refusal is
    /// `InsufficientPoints` with the hub's figure; no answer within the timeout (or a
    /// hub known to be unreachable) means the offline floor limit decides, in the
    /// sale's transaction.
    pub(super) async fn authorize_redemption(
        &self,
        member: [u8; 16],
        txn: [u8; 16],
        points: i64,
    ) -> Result<Authority, EdgeError> {
        if points <= 0 {
            return Ok(Authority::Local);
        }
        let Some(hub) = self.hub_authority() else {
            return Ok(Authority::Local);
        };
        // Points under this store's lease are spent here, hub or no hub (the hub counts
        // them as taken): no round trip, no floor limit.
        if self.leases.spend(&member, points) {
            return Ok(Authority::Lease);
        }
        // Otherwise the hub decides, with what is left of the lease set aside for it
        // (it may take the part the member's free points do not cover).
        let lease_left = self.leases.take_rest(&member);
        let asked = self.ask_hub(&hub, member, txn, points, lease_left).await;
        // What the hub took of the lease goes; the rest comes back. If the hub's answer
        // is unknown (timeout, error), all of it stays spent: the hub may have taken it.
        let unused = match &asked {
            Ok((_, Some(used))) => lease_left - used,
            Ok((_, None)) => 0,
            Err(_) => lease_left,
        };
        self.leases.settle(&member, unused);
        asked.map(|(auth, _)| auth)
    }

    /// Puts a redemption to the hub: the authority, and what the hub took of the lease
    /// (None: unknown, the hub did not answer).
    async fn ask_hub(
        &self,
        hub: &HubAuthority,
        member: [u8; 16],
        txn: [u8; 16],
        points: i64,
        lease_left: i64,
    ) -> Result<(Authority, Option<i64>), EdgeError> {
        let reachable = self.sync_status.lock().is_ok_and(|s| s.reachable);
        if !reachable {
            return Ok((Authority::Offline, Some(0)));
        }
        let core = self.core.clone();
        let origin = self.store.origin.id;
        let inc = self.store.origin.incarnation.to_string();
        let unsynced = self
            .store
            .readers
            .read(move |c| unsynced_points(c, &core, origin, &inc, &member))
            .await?;
        let req = AuthorizeRequest {
            member: uuid::Uuid::from_bytes(member).to_string(),
            txn: uuid::Uuid::from_bytes(txn).to_string(),
            points,
            unsynced,
            lease_left,
            budget_ms: u64::try_from(hub.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match tokio::time::timeout(hub.timeout, hub.client.authorize(&req)).await {
            Ok(Ok(a)) if a.granted => Ok((Authority::Hub, Some(a.lease_used.clamp(0, lease_left)))),
            Ok(Ok(a)) => Err(refusal(a, points)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "redemption authorization failed: offline limits apply");
                self.hub_failed();
                Ok((Authority::Offline, None))
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = hub.timeout.as_millis() as u64,
                    "redemption authorization timed out: offline limits apply"
                );
                self.hub_failed();
                Ok((Authority::Offline, None))
            }
        }
    }
}

impl Core {
    /// In the spending fact's transaction: enforces the offline limits for an offline
    /// redemption and records who allowed it.
    pub(super) fn record_redemption(
        &self,
        ctx: &crate::store::WriteCtx<'_>,
        member: &[u8; 16],
        seq: i64,
        points: i64,
        auth: Authority,
        now: Millis,
    ) -> Result<(), EdgeError> {
        if points <= 0 {
            return Ok(());
        }
        let (conn, origin) = (ctx.conn, ctx.origin);
        let incarnation = self.origin_label.split_once('/').map_or("", |(_, i)| i);
        // Not before the hub has the registration, whoever allows it: the hub would
        // judge a member it does not know by this store's unsynced points alone.
        if auth != Authority::Local {
            let acked = acked_seq(conn, incarnation)?;
            let registered = crate::store::members::provisional_seq(conn, member, origin)?;
            if registered.is_some_and(|seq| seq > acked) {
                return Err(EdgeError::ProvisionalMember { requested: points });
            }
        }
        if auth == Authority::Offline {
            let r = &self.cfg.redemption;
            let acked = acked_seq(conn, incarnation)?;
            // Every id of a merged member draws on one floor limit.
            let mut member_used = 0;
            for id in crate::store::members::alias_set(conn, member)? {
                member_used += offline_unacked(conn, &id, acked)?;
            }
            let day_start = self.start_of_day(now);
            let store_used: i64 = conn
                .prepare_cached(
                    "SELECT coalesce(sum(points), 0) FROM redemptions WHERE at >= ?1 AND auth = 'offline'",
                )
                .and_then(|mut s| s.query_row(params![day_start], |r| r.get(0)))
                .map_err(StoreError::from)?;
            let member_left = (r.offline_floor_points - member_used).max(0);
            let store_left = (r.offline_daily_cap_points - store_used).max(0);
            if points > member_left || points > store_left {
                return Err(EdgeError::OfflineLimitExceeded {
                    requested: points,
                    member_left,
                    store_left,
                });
            }
        }
        conn.prepare_cached(
            "INSERT INTO redemptions (seq, member, points, at, auth) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .and_then(|mut s| s.execute(params![seq, &member[..], points, now, auth.label()]))
        .map_err(StoreError::from)?;
        Ok(())
    }

    fn start_of_day(&self, now: Millis) -> Millis {
        let today = self.cal.date(now);
        today
            .previous_day()
            .map_or(0, |d| self.cal.end_of_day(d).saturating_add(1))
    }
}

/// Points `member` redeemed here offline that the hub has not acknowledged yet.
fn offline_unacked(conn: &Connection, member: &[u8; 16], acked: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(points), 0) FROM redemptions
              WHERE member = ?1 AND seq > ?2 AND auth = 'offline'",
        )?
        .query_row(params![&member[..], acked], |r| r.get(0))?)
}

/// The highest own sequence the hub acknowledged in this incarnation.
pub(super) fn acked_seq(conn: &Connection, incarnation: &str) -> Result<i64, StoreError> {
    Ok(meta_get(conn, super::sync::ACKED_KEY)?
        .and_then(|v| {
            let (i, s) = v.split_once(':')?;
            (i == incarnation).then(|| s.parse().ok()).flatten()
        })
        .unwrap_or(0))
}

/// What this store's facts the hub has not acknowledged add to a member's balance:
/// redeemable earnings less reversals and offline redemptions (redemptions the hub
/// authorized are held there already).
fn unsynced_points(
    conn: &Connection,
    core: &Core,
    origin: i64,
    incarnation: &str,
    member: &[u8; 16],
) -> Result<i64, EdgeError> {
    let acked = acked_seq(conn, incarnation)?;
    let now = core.now();
    let gained: i64 = conn
        .prepare_cached(concat!(
            "SELECT coalesce(sum(CASE WHEN available_at <= ?4 THEN earn ELSE 0 END) - sum(reverse), 0)
               FROM facts WHERE ",
            crate::store::facts::ledger_where!(),
            " AND origin = ?2 AND seq > ?3"
        ))
        .and_then(|mut s| s.query_row(params![&member[..], origin, acked, now], |r| r.get(0)))
        .map_err(StoreError::from)?;
    Ok(gained - offline_unacked(conn, member, acked)?)
}

/// The error for a redemption the hub refused. Points leased to other stores for
/// their offline use (which the hub could not recall: those stores are offline, or did
/// not answer in time) are named only when the member's points would cover the
/// redemption without them; otherwise the member simply has too few, counted over the
/// whole chain, so the answer does not depend on which store happens to hold a lease.
fn refusal(a: AuthorizeResponse, requested: i64) -> EdgeError {
    let reserved = a
        .reserved
        .iter()
        .map(|r| r.points)
        .fold(0i64, i64::saturating_add);
    let available = a.available.max(0);
    if available.saturating_add(reserved) >= requested && reserved > 0 {
        EdgeError::ReservedElsewhere {
            available,
            requested,
            reserved,
            reserved_at: a.reserved,
        }
    } else {
        EdgeError::InsufficientPoints {
            available: available.saturating_add(reserved),
            requested,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use patron_protocol::hub::{
        AuthorizeResponse, LeaseRequest, LeaseResponse, LeaseReturn, LeaseReturned,
    };
    use patron_sync::pull::{FetchedMember, MemberFetch};

    use super::*;
    use crate::service::hub_port::{HubCall, HubCallError};

    /// A hub that answers authorizations as told and records what it was asked.
    #[derive(Default)]
    struct FakeHub {
        answer: Mutex<Option<Result<AuthorizeResponse, HubCallError>>>,
        asked: Mutex<Vec<AuthorizeRequest>>,
    }

    impl FakeHub {
        fn answers(&self, a: Result<AuthorizeResponse, HubCallError>) {
            if let Ok(mut slot) = self.answer.lock() {
                *slot = Some(a);
            }
        }
    }

    fn nothing<T: Send + 'static>() -> HubCall<'static, T> {
        Box::pin(async { Err(HubCallError::Unreachable("fake".into())) })
    }

    impl HubPort for FakeHub {
        fn authorize<'a>(&'a self, req: &'a AuthorizeRequest) -> HubCall<'a, AuthorizeResponse> {
            if let Ok(mut asked) = self.asked.lock() {
                asked.push(req.clone());
            }
            let answer = self.answer.lock().ok().and_then(|a| a.clone());
            Box::pin(async move {
                answer.unwrap_or_else(|| Err(HubCallError::Unreachable("no answer".into())))
            })
        }
        fn claim<'a>(
            &'a self,
            _: &'a patron_protocol::hub::ClaimRequest,
        ) -> HubCall<'a, patron_protocol::hub::ClaimResponse> {
            nothing()
        }
        fn release_claim<'a>(
            &'a self,
            _: &'a patron_protocol::hub::ClaimRelease,
        ) -> HubCall<'a, patron_protocol::hub::ClaimReleased> {
            nothing()
        }
        fn lease<'a>(&'a self, _: &'a LeaseRequest) -> HubCall<'a, LeaseResponse> {
            nothing()
        }
        fn reserve_stock<'a>(
            &'a self,
            _: &'a patron_protocol::hub::StockRequest,
        ) -> HubCall<'a, patron_protocol::hub::StockResponse> {
            nothing()
        }
        fn release_stock<'a>(
            &'a self,
            _: &'a patron_protocol::hub::StockRelease,
        ) -> HubCall<'a, patron_protocol::hub::StockReleased> {
            nothing()
        }
        fn return_lease<'a>(&'a self, _: &'a LeaseReturn) -> HubCall<'a, LeaseReturned> {
            nothing()
        }
        fn fetch_member<'a>(&'a self, _: &'a MemberFetch) -> HubCall<'a, FetchedMember> {
            nothing()
        }
    }

    /// Through the port, with a fake hub: the hub's grant makes the hub the authority,
    /// its refusal is the member's insufficient points with the hub's figure, and its
    /// silence falls back to the offline limits and marks the hub unreachable.
    #[tokio::test]
    async fn the_hubs_answer_decides_a_redemption_and_its_silence_falls_back_offline() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _clock) = Edge::for_test("S001", dir.path(), 1_764_000_000_000);
        let member = edge.test_member("13800000123", None).await;
        let member = *uuid::Uuid::parse_str(&member)
            .unwrap_or_else(|e| panic!("{e}"))
            .as_bytes();
        let hub = Arc::new(FakeHub::default());
        edge.set_hub_authority(HubAuthority {
            client: hub.clone(),
            timeout: Duration::from_millis(500),
            fetcher: hub.clone(),
            fetch_timeout: Duration::from_millis(500),
        });
        let reachable = |r: bool| {
            if let Ok(mut s) = edge.sync_status.lock() {
                s.reachable = r;
            }
        };
        reachable(true);
        hub.answers(Ok(AuthorizeResponse {
            granted: true,
            available: 1_000,
            lease_used: 0,
            reserved: Vec::new(),
        }));
        let auth = edge.authorize_redemption(member, [1; 16], 300).await;
        assert_eq!(auth.ok(), Some(Authority::Hub));
        let asked = hub.asked.lock().map(|a| a.clone()).unwrap_or_default();
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].points, 300);
        assert_eq!(asked[0].member, uuid::Uuid::from_bytes(member).to_string());
        hub.answers(Ok(AuthorizeResponse {
            granted: false,
            available: 120,
            lease_used: 0,
            reserved: Vec::new(),
        }));
        let refused = edge.authorize_redemption(member, [2; 16], 300).await;
        assert!(
            matches!(
                refused,
                Err(EdgeError::InsufficientPoints {
                    available: 120,
                    requested: 300
                })
            ),
            "{refused:?}"
        );
        hub.answers(Err(HubCallError::Unreachable("down".into())));
        let offline = edge.authorize_redemption(member, [3; 16], 300).await;
        assert_eq!(offline.ok(), Some(Authority::Offline));
        assert_eq!(
            edge.sync_status.lock().map(|s| s.reachable).ok(),
            Some(false),
            "a failed call marks the hub unreachable"
        );
    }
}
