//! Who allows a claim of a limited entitlement (a once-only reward, a check-in, a
//! benefit use): the hub while it can be asked (it counts every store's claims of the
//! member, so a claim never passes its limit chain-wide), the entitlement's offline
//! policy while it cannot, and the store alone when it is not enrolled with a hub. Each
//! claim allowed is a `claim` fact in the transaction of what it rewards. The rules are
//! `patron_domain::claims`'; docs/claims.md has the offline worst case.

use patron_domain::Kind;
use patron_domain::claims::{ClaimKey, OfflinePolicy, offline_allows};
use patron_domain::fact::{Auth, ClaimRecord};
use patron_protocol::hub::{ClaimRelease, ClaimRequest};
use rusqlite::Connection;

use super::hub_port::HubCallError;
use super::redemption::acked_seq;
use super::{Core, Edge, EdgeError};
use crate::domain::clock::Millis;
use crate::store::claims::{self, ClaimRow};
use crate::store::facts::{self, NewFact};
use crate::store::{StoreError, WriteCtx, members};

/// What was settled about a claim before its transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// The hub counted it and holds it until the claim's fact arrives.
    Hub,
    /// The hub (or what this store knows) says the limit is reached.
    Refused,
    /// The hub could not be asked: the offline policy decides.
    Offline,
    /// The hub was asked and did not answer in time (it may have granted and held the
    /// claim): the offline policy decides, and a claim not taken is given back.
    Unanswered,
    /// No hub: this store's own count decides.
    Local,
}

/// A claim to settle: whose, which counter, the limit, what to do offline, and the id
/// its fact will carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The member as named by the request (any id of the person).
    pub member: [u8; 16],
    /// The counter.
    pub key: ClaimKey,
    /// Uses per period.
    pub limit: u32,
    /// Offline policy.
    pub offline: OfflinePolicy,
    /// The claim fact's transaction id (the hub's hold is keyed by it).
    pub id: [u8; 16],
}

impl Claim {
    /// A claim of `key` for `member`, under a fresh id.
    pub fn new(member: [u8; 16], key: ClaimKey, limit: u32, offline: OfflinePolicy) -> Claim {
        Claim {
            member,
            key,
            limit,
            offline,
            id: *uuid::Uuid::now_v7().as_bytes(),
        }
    }
}

/// A claim a transaction wants: whose, which counter, its limit, its offline policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The member (any id of the person).
    pub member: [u8; 16],
    /// The counter.
    pub key: ClaimKey,
    /// Uses per period.
    pub limit: u32,
    /// What a store allows offline.
    pub offline: OfflinePolicy,
}

/// The claims a sale's transaction may take, asked before it (the sale priced in a
/// reader first); a claim the transaction takes that was not asked (it priced
/// otherwise) is decided as `unasked` says: the offline policy, or the store alone
/// without a hub.
#[derive(Debug)]
pub struct Asks {
    asked: Vec<(Claim, Asked)>,
    unasked: Asked,
    taken: std::sync::Mutex<Vec<[u8; 16]>>,
    /// This store holds the sale's member's coupons (`Leases::holds_coupons`): it may
    /// take one issued elsewhere while it cannot reach the hub.
    coupons_leased: bool,
}

impl Asks {
    /// Nothing asked: every claim is decided as `unasked` says.
    pub fn none(unasked: Asked) -> Asks {
        Asks {
            asked: Vec::new(),
            unasked,
            taken: std::sync::Mutex::new(Vec::new()),
            coupons_leased: false,
        }
    }

    /// These asks, for a member whose coupons this store holds (or not).
    pub fn with_coupon_lease(self, leased: bool) -> Asks {
        Asks {
            coupons_leased: leased,
            ..self
        }
    }

    /// Whether this store holds the member's coupons.
    pub fn coupons_leased(&self) -> bool {
        self.coupons_leased
    }

    /// The claim `w` as asked, or a new one decided as `unasked`. An asked claim is
    /// decided under `w`'s offline policy: predicted before the sale queued, it did not
    /// know whether this store holds the member's coupons.
    fn claim_for(&self, w: Wanted) -> (Claim, Asked) {
        self.asked
            .iter()
            .find(|(c, _)| c.member == w.member && c.key == w.key)
            .map(|(c, a)| {
                (
                    Claim {
                        offline: w.offline,
                        ..c.clone()
                    },
                    *a,
                )
            })
            .unwrap_or_else(|| {
                (
                    Claim::new(w.member, w.key, w.limit, w.offline),
                    self.unasked,
                )
            })
    }

    /// How the claim of `key` for `member` was settled before the transaction.
    pub(super) fn asked(&self, member: [u8; 16], key: &ClaimKey) -> Asked {
        self.asked
            .iter()
            .find(|(c, _)| c.member == member && c.key == *key)
            .map_or(self.unasked, |(_, a)| *a)
    }

    /// Whether the transaction would take the claim (nothing written).
    pub(super) fn allows(
        &self,
        core: &Core,
        conn: &Connection,
        w: Wanted,
    ) -> Result<bool, EdgeError> {
        let (claim, asked) = self.claim_for(w);
        Ok(core.decide_claim(conn, &claim, asked)?.is_some())
    }

    /// Takes the claim in the transaction (see [`Core::take_claim`]).
    pub(super) fn take(
        &self,
        core: &Core,
        ctx: &mut WriteCtx<'_>,
        w: Wanted,
        now: Millis,
    ) -> Result<Option<(Auth, i64)>, EdgeError> {
        let (claim, asked) = self.claim_for(w);
        let took = core.take_claim(ctx, &claim, asked, now)?;
        if took.is_some()
            && let Ok(mut t) = self.taken.lock()
        {
            t.push(claim.id);
        }
        Ok(took)
    }
}

impl Edge {
    /// How a claim not asked before its transaction is decided: by the offline policy
    /// when there is a hub, by the store alone when there is none.
    pub(super) fn unasked_claim(&self) -> Asked {
        if self.hub_authority().is_some() {
            Asked::Offline
        } else {
            Asked::Local
        }
    }

    /// Asks the hub for each of `claims` (one after the other: a sale takes one or
    /// two).
    pub(super) async fn ask_claims(&self, claims: Vec<Claim>) -> Result<Asks, EdgeError> {
        let mut asks = Asks::none(self.unasked_claim());
        for c in claims {
            let a = self.ask_claim(&c).await?;
            asks.asked.push((c, a));
        }
        Ok(asks)
    }

    /// After a sale's transaction (`ok`: it committed): the claims the hub granted
    /// that it did not take are given back.
    pub(super) fn settle_asks(&self, asks: &Asks, ok: bool) {
        let taken = asks.taken.lock().map(|t| t.clone()).unwrap_or_default();
        for (c, a) in &asks.asked {
            self.settle_claim(c, *a, ok && taken.contains(&c.id));
        }
    }

    /// Settles what can be settled of `claim` before its transaction: asks the hub if
    /// there is one and it is reachable (refused at once if this store already counts
    /// the limit); an unanswered ask leaves it to the offline policy.
    pub(super) async fn ask_claim(&self, claim: &Claim) -> Result<Asked, EdgeError> {
        let Some(hub) = self.hub_authority() else {
            return Ok(Asked::Local);
        };
        if !self.sync_status.lock().is_ok_and(|s| s.reachable) {
            return Ok(Asked::Offline);
        }
        let core = self.core.clone();
        let (member, key) = (claim.member, claim.key.clone());
        let known = self
            .store
            .readers
            .read(move |c| core.known_claims(c, &member, &key))
            .await?;
        if known.used >= i64::from(claim.limit) {
            return Ok(Asked::Refused);
        }
        let req = ClaimRequest {
            member: uuid::Uuid::from_bytes(claim.member).to_string(),
            claim: uuid::Uuid::from_bytes(claim.id).to_string(),
            entitlement: claim.key.entitlement.clone(),
            period: claim.key.period.clone(),
            limit: claim.limit,
            // Only its offline claims: those the hub granted it counts already.
            unsynced: known.offline_unsynced,
        };
        match tokio::time::timeout(hub.timeout, hub.client.claim(&req)).await {
            Ok(Ok(a)) if a.granted => Ok(Asked::Hub),
            Ok(Ok(_)) => Ok(Asked::Refused),
            // The hub answered with an error (a member it says this store does not
            // serve, a claim id it holds for another store): it is reachable, and it
            // granted nothing; the offline policy decides this claim.
            Ok(Err(HubCallError::Refused { status, message })) => {
                tracing::warn!(status, %message, "the hub refused to count a claim: the offline policy applies");
                Ok(Asked::Offline)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "claim authorization failed: the offline policy applies");
                self.hub_failed();
                Ok(Asked::Unanswered)
            }
            Err(_) => {
                tracing::warn!("claim authorization timed out: the offline policy applies");
                self.hub_failed();
                Ok(Asked::Unanswered)
            }
        }
    }
}

impl Edge {
    /// After the claim's transaction: a claim the hub granted (or may have: it did not
    /// answer in time) that was not recorded (the transaction failed, or the policy or
    /// the store's count refused it by then) is given back, so it does not count for the member until its hold lapses. Best
    /// effort, in the background: unanswered, the hold lapses.
    pub(super) fn settle_claim(&self, claim: &Claim, asked: Asked, taken: bool) {
        if !matches!(asked, Asked::Hub | Asked::Unanswered) || taken {
            return;
        }
        let Some(hub) = self.hub_authority() else {
            return;
        };
        let req = ClaimRelease {
            claim: uuid::Uuid::from_bytes(claim.id).to_string(),
        };
        tokio::spawn(async move {
            let given = tokio::time::timeout(hub.timeout, hub.client.release_claim(&req)).await;
            if !matches!(given, Ok(Ok(_))) {
                tracing::warn!("a claim the hub holds was not given back: it lapses");
            }
        });
    }
}

impl Core {
    /// What this store knows of the person's counter, and its own claims of it the hub
    /// has not acknowledged.
    fn known_claims(
        &self,
        conn: &Connection,
        member: &[u8; 16],
        key: &ClaimKey,
    ) -> Result<patron_domain::claims::Known, StoreError> {
        let ids = members::alias_set(conn, member)?;
        let incarnation = self.origin_label.split_once('/').map_or("", |(_, i)| i);
        let acked = acked_seq(conn, incarnation)?;
        claims::known(conn, &ids, key, self.origin_id, acked)
    }

    /// In the transaction of what the claim rewards: whether it passes (by `asked`,
    /// and what this store counts now), and if so its `claim` fact, under the person's
    /// surviving id, and the uses this store then counts. `None`: the limit is reached.
    pub(super) fn take_claim(
        &self,
        ctx: &mut WriteCtx<'_>,
        claim: &Claim,
        asked: Asked,
        now: Millis,
    ) -> Result<Option<(Auth, i64)>, EdgeError> {
        let Some((auth, used)) = self.decide_claim(ctx.conn, claim, asked)? else {
            return Ok(None);
        };
        self.write_claim(ctx, claim, auth, false, now)?;
        Ok(Some((auth, used + 1)))
    }

    /// Who allows the claim now, by `asked` and what this store counts (the uses it
    /// counts before it); `None`: no one.
    fn decide_claim(
        &self,
        conn: &Connection,
        claim: &Claim,
        asked: Asked,
    ) -> Result<Option<(Auth, i64)>, EdgeError> {
        let known = self.known_claims(conn, &claim.member, &claim.key)?;
        let within = known.used < i64::from(claim.limit);
        let auth = match asked {
            Asked::Hub if within => Some(Auth::Hub),
            Asked::Local if within => Some(Auth::Local),
            Asked::Offline | Asked::Unanswered
                if offline_allows(claim.offline, claim.limit, known) =>
            {
                Some(Auth::Offline)
            }
            _ => None,
        };
        Ok(auth.map(|a| (a, known.used)))
    }

    /// Uses of the person's counter this store knows of.
    pub(super) fn claims_used(
        &self,
        conn: &Connection,
        member: &[u8; 16],
        key: &ClaimKey,
    ) -> Result<i64, StoreError> {
        Ok(self.known_claims(conn, member, key)?.used)
    }

    /// Gives back one use of the person's counter (a refund took back what it
    /// rewarded), if the store counts one; whether it did.
    pub(super) fn release_claim(
        &self,
        ctx: &mut WriteCtx<'_>,
        member: &[u8; 16],
        key: ClaimKey,
        limit: u32,
        now: Millis,
    ) -> Result<bool, EdgeError> {
        let known = self.known_claims(ctx.conn, member, &key)?;
        if known.used <= 0 {
            return Ok(false);
        }
        // A release needs no one's leave: it only lowers the counter.
        let claim = Claim::new(*member, key, limit, OfflinePolicy::Local);
        self.write_claim(ctx, &claim, Auth::Local, true, now)?;
        Ok(true)
    }

    fn write_claim(
        &self,
        ctx: &mut WriteCtx<'_>,
        claim: &Claim,
        auth: Auth,
        release: bool,
        now: Millis,
    ) -> Result<(), EdgeError> {
        let root = members::alias_set(ctx.conn, &claim.member)?
            .first()
            .copied()
            .unwrap_or(claim.member);
        let body = serde_json::to_string(&ClaimRecord {
            entitlement: claim.key.entitlement.clone(),
            period: claim.key.period.clone(),
            limit: claim.limit,
            auth,
            release,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let seq = facts::append(
            ctx,
            &NewFact::new(Kind::Claim, now, Some(root), claim.id, body),
        )?;
        claims::record(
            ctx.conn,
            &ClaimRow {
                origin: ctx.origin,
                seq,
                member: root,
                key: claim.key.clone(),
                units: if release { -1 } else { 1 },
                offline: auth == Auth::Offline,
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use patron_protocol::MemberId;
    use patron_protocol::hub::{
        AuthorizeRequest, AuthorizeResponse, ClaimReleased, ClaimResponse, LeaseRequest,
        LeaseResponse, LeaseReturn, LeaseReturned,
    };
    use patron_protocol::pos::{EventRequest, EventType};
    use patron_sync::pull::{FetchedMember, MemberFetch};

    use super::*;
    use crate::service::Actor;
    use crate::service::hub_port::{HubCall, HubCallError, HubPort};
    use crate::service::redemption::HubAuthority;

    /// 2026-12-01 12:00 +08:00.
    const T0: i64 = 1_796_097_600_000;

    /// A hub that answers claims as told (`None`: unreachable) and records what it was
    /// asked and given back.
    #[derive(Default)]
    struct FakeHub {
        grant: Mutex<Option<bool>>,
        asked: Mutex<Vec<ClaimRequest>>,
        released: Mutex<Vec<String>>,
    }

    fn never<T: Send + 'static>() -> HubCall<'static, T> {
        Box::pin(async { Err(HubCallError::Unreachable("fake".into())) })
    }

    impl HubPort for FakeHub {
        fn authorize<'a>(&'a self, _: &'a AuthorizeRequest) -> HubCall<'a, AuthorizeResponse> {
            never()
        }
        fn claim<'a>(&'a self, req: &'a ClaimRequest) -> HubCall<'a, ClaimResponse> {
            self.asked
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req.clone());
            let grant = *self.grant.lock().unwrap_or_else(|p| p.into_inner());
            let limit = req.limit;
            Box::pin(async move {
                match grant {
                    Some(granted) => Ok(ClaimResponse {
                        granted,
                        used: 0,
                        limit,
                    }),
                    None => Err(HubCallError::Unreachable("down".into())),
                }
            })
        }
        fn release_claim<'a>(&'a self, req: &'a ClaimRelease) -> HubCall<'a, ClaimReleased> {
            self.released
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(req.claim.clone());
            Box::pin(async { Ok(ClaimReleased { released: true }) })
        }
        fn lease<'a>(&'a self, _: &'a LeaseRequest) -> HubCall<'a, LeaseResponse> {
            never()
        }
        fn reserve_stock<'a>(
            &'a self,
            _: &'a patron_protocol::hub::StockRequest,
        ) -> HubCall<'a, patron_protocol::hub::StockResponse> {
            never()
        }
        fn release_stock<'a>(
            &'a self,
            _: &'a patron_protocol::hub::StockRelease,
        ) -> HubCall<'a, patron_protocol::hub::StockReleased> {
            never()
        }
        fn return_lease<'a>(&'a self, _: &'a LeaseReturn) -> HubCall<'a, LeaseReturned> {
            never()
        }
        fn fetch_member<'a>(&'a self, _: &'a MemberFetch) -> HubCall<'a, FetchedMember> {
            never()
        }
    }

    struct Setup {
        edge: Arc<Edge>,
        hub: Arc<FakeHub>,
        member: MemberId,
        _dir: tempfile::TempDir,
    }

    async fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _clock) = Edge::for_test("S001", dir.path(), T0);
        let member = edge
            .test_member("13800000123", None)
            .await
            .parse()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let hub = Arc::new(FakeHub::default());
        edge.set_hub_authority(HubAuthority {
            client: hub.clone(),
            timeout: Duration::from_millis(500),
            fetcher: hub.clone(),
            fetch_timeout: Duration::from_millis(500),
        });
        Setup {
            edge,
            hub,
            member,
            _dir: dir,
        }
    }

    impl Setup {
        fn hub_answers(&self, grant: Option<bool>) {
            *self.hub.grant.lock().unwrap_or_else(|p| p.into_inner()) = grant;
            if let Ok(mut s) = self.edge.sync_status.lock() {
                s.reachable = true;
            }
        }

        async fn check_in(&self) -> (u16, serde_json::Value) {
            let reply = self
                .edge
                .event(
                    None,
                    Actor::manager(),
                    self.member,
                    EventRequest {
                        kind: EventType::CheckIn,
                        reference: None,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let body = serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}"));
            (reply.status, body)
        }

        /// The claim facts this store wrote: (entitlement, period, auth, release).
        async fn claim_facts(&self) -> Vec<ClaimRecord> {
            let facts = self
                .edge
                .outbox(0, 1_000)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            facts
                .iter()
                .filter_map(|f| match patron_domain::Entry::parse(&f.body) {
                    Ok(e) => match e.detail {
                        patron_domain::Detail::Claim(c) => Some(c),
                        _ => None,
                    },
                    Err(_) => None,
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn the_hub_decides_a_claim_while_it_answers() {
        let s = setup().await;
        s.hub_answers(Some(false));
        let (status, body) = s.check_in().await;
        assert_eq!(status, 200, "refused by the hub: {body}");
        assert_eq!(body["points_awarded"], 0);
        assert!(s.claim_facts().await.is_empty());
        s.hub_answers(Some(true));
        let (status, body) = s.check_in().await;
        assert_eq!((status, body["points_awarded"].as_i64()), (201, Some(5)));
        let facts = s.claim_facts().await;
        assert_eq!(facts.len(), 1);
        assert_eq!(
            (
                facts[0].entitlement.as_str(),
                facts[0].period.as_str(),
                facts[0].auth,
                facts[0].limit
            ),
            ("check_in", "2026-12-01", Auth::Hub, 1)
        );
        // Counted here now: the next check-in is refused without asking the hub.
        let asked = s.hub.asked.lock().map(|a| a.len()).unwrap_or(0);
        assert_eq!(s.check_in().await.0, 200);
        assert_eq!(s.hub.asked.lock().map(|a| a.len()).unwrap_or(0), asked);
    }

    #[tokio::test]
    async fn offline_a_counter_is_claimed_once_per_offline_period() {
        let s = setup().await;
        // Shares: three a day, but offline one per offline period.
        let share = |s: &Setup| {
            let (edge, member) = (s.edge.clone(), s.member);
            async move {
                edge.event(
                    None,
                    Actor::manager(),
                    member,
                    EventRequest {
                        kind: EventType::Share,
                        reference: None,
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .status
            }
        };
        s.hub_answers(None);
        assert_eq!(
            share(&s).await,
            201,
            "the hub did not answer: the policy allows one"
        );
        assert_eq!(
            share(&s).await,
            200,
            "a second offline claim waits for the hub"
        );
        let facts = s.claim_facts().await;
        assert_eq!(facts.len(), 1);
        assert_eq!(facts[0].auth, Auth::Offline);
        // Once the hub has the claim (acknowledged), another offline period may claim.
        let last = s
            .edge
            .last_own_seq()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.edge
            .set_hub_acked(last)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(share(&s).await, 201);
        // The hub answering again decides; the store's unsynced claim goes with the ask.
        s.hub_answers(Some(true));
        assert_eq!(share(&s).await, 201);
        let asked = s.hub.asked.lock().map(|a| a.clone()).unwrap_or_default();
        let last_ask = asked.last().unwrap_or_else(|| panic!("asked"));
        assert_eq!((last_ask.unsynced, last_ask.limit), (1, 3));
        // Three of three: refused here without asking.
        assert_eq!(share(&s).await, 200);
        assert_eq!(
            s.hub.asked.lock().map(|a| a.len()).unwrap_or(0),
            asked.len()
        );
    }

    #[tokio::test]
    async fn a_claim_the_hub_granted_that_was_not_recorded_is_given_back() {
        let s = setup().await;
        s.hub_answers(Some(true));
        // The hub grants a check-in of a member this store does not hold; the
        // transaction then refuses (404), and the hold goes back to the hub.
        let stranger: MemberId = "0190a000-0000-7000-8000-0000000000aa"
            .parse()
            .unwrap_or_else(|e| panic!("{e:?}"));
        let failed = s
            .edge
            .event(
                None,
                Actor::manager(),
                stranger,
                EventRequest {
                    kind: EventType::CheckIn,
                    reference: None,
                },
            )
            .await;
        assert!(
            matches!(failed, Err(EdgeError::MemberNotFound)),
            "{failed:?}"
        );
        let asked = s.hub.asked.lock().map(|a| a.clone()).unwrap_or_default();
        assert_eq!(asked.len(), 1);
        for _ in 0..100 {
            if !s.hub.released.lock().map(|r| r.is_empty()).unwrap_or(true) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let released = s.hub.released.lock().map(|r| r.clone()).unwrap_or_default();
        assert_eq!(released, vec![asked[0].claim.clone()]);
        // A claim recorded, or not the hub's, is not given back.
        assert_eq!(s.check_in().await.0, 201);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(s.hub.released.lock().map(|r| r.len()).unwrap_or(0), 1);
    }
}
