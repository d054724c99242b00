//! Redemption authority, as the hub serves it: authorizations, leases and the overdraw
//! report over storage. The rules themselves (what is granted, what overdrew, the lease
//! policy) are [`crate::authority`]'s, pure and tested without SQL.

use patron_protocol::hub::{
    AuthorizeRequest, AuthorizeResponse, LeaseRequest, LeaseResponse, LeaseReturn, OverdrawReport,
    Reserved,
};
use patron_sync::stream::StreamAnswer;

pub use crate::authority::{FLAG_WINDOW_MS, LEASE_POLICY, overdraws};
use crate::authority::{HOLD_MS, decide};
pub use crate::recall::RECALL_WAIT;
use crate::service::{Hub, HubError};
use crate::store::{Hold, StoreRow};

/// A UUID from a request, in its canonical text form.
fn uuid_text(s: &str, what: &str) -> Result<String, HubError> {
    uuid::Uuid::parse_str(s)
        .map(|u| u.to_string())
        .map_err(|_| HubError::Invalid(format!("{what} is not a UUID")))
}

impl Hub {
    /// The member a request names (a UUID), as the hub counts them: the survivor if the
    /// member was merged (one phone registered twice), so holds, leases and balances
    /// cover every id of the person.
    fn member_root(&self, raw: &str) -> Result<String, HubError> {
        let member = uuid_text(raw, "member")?;
        Ok(self.store().root_member(&member)?)
    }

    /// Refuses an ask of `store` about `member` (a UUID) that the store neither
    /// registered nor served: it may not hold, lease or probe another store's member.
    pub(crate) fn check_serves(&self, store: &StoreRow, member: &str) -> Result<(), HubError> {
        let id = uuid::Uuid::parse_str(member)
            .map_err(|_| HubError::Invalid("member: not a UUID".into()))?;
        let (home, holds) = self.store().standing(&store.store_id, id.as_bytes())?;
        if crate::ingest::may_serve(&store.store_id, home.as_deref(), holds) {
            Ok(())
        } else {
            Err(HubError::NotServed)
        }
    }

    /// `POST /v1/leases`: a lease on part of the member's points for the asking store,
    /// or the reason there is none; and the member's coupons, which the store where the
    /// member was last identified online holds for use without the hub (the store that
    /// held them before is asked to let go through its stream).
    pub fn grant_lease(
        &self,
        store: &StoreRow,
        req: &LeaseRequest,
    ) -> Result<LeaseResponse, HubError> {
        self.check_serves(store, &req.member)?;
        let member = self.member_root(&req.member)?;
        let now = self.now();
        let policy = self.lease_policy();
        // The hub counts the coupons held as long as it counts a points lease: past the
        // store's own end of it, whatever the two clocks say.
        let coupons_until = now
            .saturating_add(policy.duration_ms)
            .saturating_add(policy.margin_ms);
        // In one transaction: what the member may spend now, less the points held for
        // authorized sales and every other store's lease, is leased under the policy;
        // leases that ran out are dropped on the way.
        // Read first: nothing may fail once the coupons have moved, or the store that
        // held them would never hear of it.
        let ids = self.store().person_ids(&member)?;
        let mut granted = None;
        let mut coupons_were = None;
        self.store().authority_tx(&mut |tx| {
            coupons_were = tx.take_coupons(&member, &store.store_id, coupons_until, now)?;
            if req.coupons_only {
                return Ok(());
            }
            let free = tx
                .balance(&member, now)?
                .saturating_sub(tx.held(&member, now)?);
            let grant = tx
                .rights(&member)?
                .grant(&store.store_id, free, policy, now);
            tx.drop_expired_leases(&member, now)?;
            if let Ok(lease) = &grant {
                tx.put_lease(&member, &store.store_id, lease)?;
            }
            granted = Some(grant);
            Ok(())
        })?;
        if let Some(before) = coupons_were {
            self.recalls.coupons_moved(&before, &ids);
            self.wake_stream(&before);
        }
        let answer = match granted {
            // The hub's end of the lease names it: one store and member never hold
            // two leases ending at the same millisecond.
            Some(Ok(l)) => LeaseResponse {
                points: l.points,
                duration_ms: policy.duration_ms,
                refused: None,
                lease: l.until,
                coupons_ms: policy.duration_ms,
            },
            Some(Err(why)) => LeaseResponse {
                points: 0,
                duration_ms: 0,
                refused: Some(why.to_string()),
                lease: 0,
                coupons_ms: policy.duration_ms,
            },
            None if req.coupons_only => LeaseResponse {
                points: 0,
                duration_ms: 0,
                refused: None,
                lease: 0,
                coupons_ms: policy.duration_ms,
            },
            None => {
                return Err(HubError::Store(crate::store::StoreError::Batch(
                    "the lease transaction did not run".into(),
                )));
            }
        };
        tracing::debug!(store = %store.store_id, points = answer.points, "lease");
        Ok(answer)
    }

    /// `POST /v1/leases/return`: the store gives its lease on the member back. With
    /// `spent` (a recall: the store stopped spending under it and gave it back before
    /// pushing every such spend), the lease keeps counting what was spent and has not
    /// arrived (`patron_sync::rights::Lease::given_back`); without, it is dropped.
    pub fn return_lease(&self, store: &StoreRow, req: &LeaseReturn) -> Result<bool, HubError> {
        let member = self.member_root(&req.member)?;
        if req.spent.is_some_and(|s| s < 0) {
            return Err(HubError::Invalid("spent must not be negative".into()));
        }
        // A return names the lease it gives back: a late or repeated one, or one sent
        // under another id of the person, never touches a later lease of the store.
        let had = match req.spent {
            None => self
                .store()
                .return_lease(&member, &store.store_id, req.lease)?,
            Some(spent) => {
                let mut had = false;
                self.store().authority_tx(&mut |tx| {
                    let mut rights = tx.rights(&member)?;
                    had = rights
                        .leases
                        .get(&store.store_id)
                        .is_some_and(|l| req.lease.is_none_or(|id| id == l.until));
                    if !had {
                        return Ok(());
                    }
                    rights.take_back(&store.store_id, spent);
                    match rights.leases.get(&store.store_id) {
                        Some(kept) => tx.put_lease(&member, &store.store_id, kept),
                        None => tx.drop_lease(&member, &store.store_id),
                    }
                })?;
                had
            }
        };
        self.recalls.lease_returned();
        Ok(had)
    }

    /// `POST /v1/redeem/authorize`: grants and holds the points if the member's balance
    /// over every store's facts, plus what the asking store has not synced yet, less the
    /// points held for other sales and by leases, plus what the store set aside of its
    /// own lease, covers them (see `decide`).
    pub fn authorize(
        &self,
        store: &StoreRow,
        req: &AuthorizeRequest,
    ) -> Result<AuthorizeResponse, HubError> {
        let answer = self.queue_authorization(store, req)?.wait_blocking()?;
        tracing::debug!(store = %store.store_id, granted = answer.granted, "redemption authorization");
        Ok(answer)
    }

    /// [`Hub::authorize`] for async callers: no thread waits while the authorizer
    /// commits (a blocking thread per waiting ask made the tail of every request
    /// depend on how many threads the OS had to schedule).
    ///
    /// A refusal that only leases of online stores stand in the way of recalls those
    /// leases (see [`crate::recall`]) and decides again as they come back, for up to
    /// half the time the store waits ([`RECALL_WAIT`] if it did not say): while every store is online, the member's chain balance is what
    /// counts, whichever store happens to hold a lease.
    pub async fn authorize_async(
        &self,
        store: &StoreRow,
        req: &AuthorizeRequest,
    ) -> Result<AuthorizeResponse, HubError> {
        // The wait for recalls counts from the ask's arrival: the store's budget
        // covers all of it.
        let deadline = tokio::time::Instant::now() + crate::recall::recall_wait(req.budget_ms);
        let first = self.queue_authorization(store, req)?.wait().await?;
        let answer = match self.recallable(store, req, &first) {
            Some(from) => self.recall_and_decide(store, req, &from, deadline).await?,
            None => first,
        };
        tracing::debug!(store = %store.store_id, granted = answer.granted, "redemption authorization");
        Ok(answer)
    }

    /// The online stores to recall leases from so that a refused ask would be granted,
    /// if recalling them would cover it.
    fn recallable(
        &self,
        store: &StoreRow,
        req: &AuthorizeRequest,
        answer: &AuthorizeResponse,
    ) -> Option<Vec<String>> {
        if answer.granted {
            return None;
        }
        let short = req.points.saturating_sub(answer.available);
        let online: Vec<&Reserved> = answer
            .reserved
            .iter()
            .filter(|r| {
                r.store != store.store_id
                    && self.recalls.online(&r.store)
                    && !self.recalls.unanswered(&r.store, &req.member)
            })
            .collect();
        let covers = online
            .iter()
            .map(|r| r.points)
            .fold(0i64, i64::saturating_add)
            >= short;
        covers.then(|| online.into_iter().map(|r| r.store.clone()).collect())
    }

    /// Asks `from` for their leases on the member back, and decides again each time a
    /// lease comes back, until the ask is granted, nothing online stands in its way, or
    /// the wait is over ([`crate::recall::recall_wait`]; the last decision is the
    /// answer).
    async fn recall_and_decide(
        &self,
        store: &StoreRow,
        req: &AuthorizeRequest,
        from: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<AuthorizeResponse, HubError> {
        let root = self.member_root(&req.member)?;
        let ids = self.store().person_ids(&root)?;
        let mut returned = self.recalls.watch_returns();
        returned.borrow_and_update();
        for s in from {
            self.recalls.ask(s, &ids);
            self.wake_stream(s);
        }
        tracing::debug!(stores = from.len(), "leases recalled for an authorization");
        loop {
            let waited = tokio::time::timeout_at(deadline, returned.changed()).await;
            let answer = self.queue_authorization(store, req)?.wait().await?;
            if waited.is_err() {
                // A store that did not give its lease back in time (it no longer knows
                // the lease after a restart, or lost its network mid-poll) is not
                // waited for again for this member for a while.
                for r in &answer.reserved {
                    if from.contains(&r.store) {
                        self.recalls.went_unanswered(&r.store, &req.member);
                    }
                }
                return Ok(answer);
            }
            if answer.granted || self.recallable(store, req, &answer).is_none() {
                return Ok(answer);
            }
            returned.borrow_and_update();
        }
    }

    /// The stream's answer to `store`, with the leases asked back from it.
    pub(crate) fn with_recalls(&self, store: &str, mut answer: StreamAnswer) -> StreamAnswer {
        if let StreamAnswer::Page {
            recall,
            coupons_moved,
            ..
        } = &mut answer
        {
            *recall = self.recalls.take(store);
            *coupons_moved = self.recalls.take_coupons_moved(store);
        }
        answer
    }

    /// Checks an authorization and queues it for the authorizer's next transaction.
    fn queue_authorization(
        &self,
        store: &StoreRow,
        req: &AuthorizeRequest,
    ) -> Result<crate::store::PendingAnswer, HubError> {
        let member = uuid_text(&req.member, "member")?;
        let txn = uuid_text(&req.txn, "txn")?;
        if req.points <= 0 {
            return Err(HubError::Invalid("points must be positive".into()));
        }
        self.check_serves(store, &member)?;
        let now = self.now();
        let hold = Hold {
            member,
            txn,
            store: store.store_id.clone(),
            points: req.points,
            // The hub cannot see what the store has not pushed: its claim counts up to
            // a bound (a negative claim only lowers what it may take).
            unsynced: req.unsynced.min(self.max_unsynced),
            lease_left: req.lease_left.max(0),
            now,
            until: now.saturating_add(HOLD_MS),
        };
        Ok(self.store().authorize(hold, decide)?)
    }

    /// Every recorded overdraw and flagged member. Overdraws are judged behind the
    /// ingest cursor; the report first judges every spend the hub holds, so it is
    /// never behind a push that was acknowledged.
    pub fn overdraw_report(&self) -> Result<OverdrawReport, HubError> {
        crate::projections::catch_up(&self.overdraws_projection(), crate::projections::STEP)?;
        Ok(self.store().overdraw_report()?)
    }
}

#[cfg(test)]
mod tests {
    use patron_protocol::Origin;
    use patron_protocol::hub::{PushRequest, SyncReport};
    use patron_sync::session::{Fact, Push, batch};

    use super::*;
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;
    const MEMBER: &str = "0190a000-0000-7000-8000-000000000001";

    struct Chain {
        t: TestHub,
        seqs: std::sync::Mutex<Vec<u64>>,
    }

    /// A ledger entry moving `earn`/`spend` points of `member`, as a store syncs it.
    fn points_entry(member: &str, txn: &str, earn: i64, spend: i64, auth: &str, at: i64) -> String {
        use patron_domain::{Entry, Header, Kind};
        let uuid = |s: &str| uuid::Uuid::parse_str(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let (kind, body) = if spend > 0 {
            (
                Kind::Redemption,
                serde_json::json!({ "reason": "test", "auth": auth }),
            )
        } else {
            (
                Kind::Purchase,
                serde_json::json!({ "receipt_id": txn, "subtotal": 0, "total": 0 }),
            )
        };
        Entry::from_parts(
            Header {
                at,
                member: Some(uuid(member)),
                txn: uuid(txn),
                earn,
                expires_at: if earn > 0 { T0 + 1_000_000_000 } else { 0 },
                spend,
                ..Default::default()
            },
            kind,
            body.to_string(),
        )
        .and_then(|e| e.to_json())
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stores sharing [`MEMBER`]: registered at the first, fetched by the others.
    fn chain(stores: &[&str]) -> Chain {
        let t = TestHub::new(T0, stores);
        t.share_member(MEMBER);
        Chain {
            t,
            seqs: std::sync::Mutex::new(vec![0; stores.len()]),
        }
    }

    impl Chain {
        /// Store `i` syncs one fact moving `earn`/`spend` points of the member.
        fn sync(&self, i: usize, txn: &str, earn: i64, spend: i64, auth: &str) {
            self.sync_body(
                i,
                points_entry(MEMBER, txn, earn, spend, auth, self.t.time()),
            );
        }

        /// Store `i` syncs one fact with this body.
        fn sync_body(&self, i: usize, body: String) {
            let row = &self.t.rows[i];
            let seq = {
                let mut s = self.seqs.lock().unwrap_or_else(|p| p.into_inner());
                s[i] += 1;
                s[i]
            };
            let origin = Origin {
                node: row.store_id.clone(),
                incarnation: uuid::Uuid::from_u128(7),
            };
            let fact = Fact {
                origin: origin.clone(),
                seq,
                body,
            };
            let req = PushRequest {
                report: SyncReport {
                    origin: Some(origin.clone()),
                    last_seq: seq,
                    ..Default::default()
                },
                push: Push {
                    from: row.store_id.clone(),
                    batches: vec![batch(origin, vec![fact])],
                },
            };
            self.t.hub.push(row, req).unwrap_or_else(|e| panic!("{e}"));
        }

        fn ask(&self, i: usize, txn: &str, points: i64, unsynced: i64) -> AuthorizeResponse {
            self.t
                .hub
                .authorize(
                    &self.t.rows[i],
                    &AuthorizeRequest {
                        member: MEMBER.into(),
                        txn: txn.into(),
                        points,
                        unsynced,
                        lease_left: 0,
                        budget_ms: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        }
    }

    fn txn(n: u128) -> String {
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
    }

    #[test]
    fn held_points_are_not_granted_twice_until_the_sale_settles_or_the_hold_lapses() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 1000, 0, "");
        // S001 is granted 700; S002 asking for 400 at the same time is refused: only 300
        // are left once the 700 are held.
        assert!(c.ask(0, &txn(2), 700, 0).granted);
        let r = c.ask(1, &txn(3), 400, 0);
        assert_eq!((r.granted, r.available), (false, 300));
        // Asking again for the same sale is granted again, not held twice.
        assert!(c.ask(0, &txn(2), 700, 0).granted);
        assert!(c.ask(1, &txn(4), 300, 0).granted);
        assert_eq!(c.ask(1, &txn(5), 1, 0).available, 0);
        // S001's sale arrives and settles its hold: the balance carries it now.
        c.sync(0, &txn(2), 0, 700, "hub");
        assert_eq!(c.ask(1, &txn(5), 1, 0).available, 0);
        // S002's sale never comes: its hold lapses and the 300 are free again.
        c.t.set_time(T0 + HOLD_MS + 1);
        assert_eq!(c.ask(1, &txn(6), 300, 0).available, 300);
        // Points a store earned but has not synced count for that store.
        let r = c.ask(0, &txn(7), 100, 100);
        assert_eq!(
            (r.granted, r.available),
            (true, 100),
            "300 held for txn 6 + 100 unsynced"
        );
        let report = c.t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.overdraws.is_empty() && report.flags.is_empty(),
            "{report:?}"
        );
    }

    fn lease(c: &Chain, i: usize) -> LeaseResponse {
        c.t.hub
            .grant_lease(
                &c.t.rows[i],
                &LeaseRequest {
                    member: MEMBER.into(),
                    coupons_only: false,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn ask_async(
        c: &Chain,
        i: usize,
        txn: &str,
        points: i64,
        lease_left: i64,
    ) -> AuthorizeResponse {
        c.t.hub
            .authorize_async(
                &c.t.rows[i],
                &AuthorizeRequest {
                    member: MEMBER.into(),
                    txn: txn.into(),
                    points,
                    unsynced: 0,
                    lease_left,
                    budget_ms: 2_000,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Store `i` as its stream would see a recall: it gives its lease back, having
    /// spent `spent` under it (not synced yet), as soon as the hub asks.
    async fn answer_recall(c: &Chain, i: usize, spent: i64) {
        let store = &c.t.rows[i];
        while c.t.hub.recalls.take(&store.store_id).is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        let req = LeaseReturn {
            member: MEMBER.into(),
            spent: Some(spent),
            lease: None,
        };
        assert!(
            c.t.hub
                .return_lease(store, &req)
                .unwrap_or_else(|e| panic!("{e}"))
        );
    }

    /// Issue 18, part 2: the store where the member was last identified online holds
    /// their coupons; the one that held them before is told to let go (its points lease
    /// stays), whether the new holder asked for points too or only for the coupons, and
    /// a store asking again is not.
    #[test]
    fn the_last_store_to_ask_holds_the_coupons_and_the_one_before_lets_go() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 50, 0, "");
        let ask = |i: usize, coupons_only| {
            c.t.hub
                .grant_lease(
                    &c.t.rows[i],
                    &LeaseRequest {
                        member: MEMBER.into(),
                        coupons_only,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let policy = c.t.hub.lease_policy();
        let first = ask(0, false);
        assert_eq!(
            (first.points, first.coupons_ms),
            (0, policy.duration_ms),
            "too few points to lease; the coupons are held all the same"
        );
        assert!(ask(0, false).coupons_ms > 0);
        // S001 now holds a points lease too (half of 1,000): it stays where it is when
        // the coupons move.
        c.sync(0, &txn(2), 950, 0, "");
        assert_eq!(ask(0, false).points, 500);
        let moved = |store| c.t.hub.recalls.take_coupons_moved(store);
        assert!(moved("S001").is_empty(), "asking again");
        let second = ask(1, true);
        assert_eq!((second.points, second.refused), (0, None));
        assert_eq!(moved("S001"), vec![MEMBER.to_string()]);
        assert!(moved("S002").is_empty());
        assert!(
            c.t.hub.recalls.take("S001").is_empty(),
            "a points lease stays where it is"
        );
        // Once S002's hold has ended, S001 taking the coupons tells S002 nothing.
        c.t.set_time(T0 + policy.duration_ms + policy.margin_ms + 1);
        ask(0, true);
        assert!(moved("S002").is_empty());
    }

    /// Issue 16, part 3: a lease held by an online store is recalled for another
    /// store's redemption that the chain balance covers; the recalled lease keeps
    /// counting the spends made under it that have not arrived, and nothing of it can
    /// be used any more by an ask the store sent before the recall.
    #[tokio::test]
    async fn a_lease_of_an_online_store_is_recalled_and_keeps_only_its_spends_in_transit() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 1000, 0, "");
        assert_eq!(lease(&c, 0).points, 500);
        assert_eq!(lease(&c, 1).points, 250);
        // S001 offline (no stream poll): S002's 800 are refused at once, and the answer
        // names what S001 holds.
        let r = ask_async(&c, 1, &txn(2), 800, 250).await;
        assert!(!r.granted, "{r:?}");
        assert_eq!(r.available, 500, "250 free and S002's own 250");
        assert_eq!(
            r.reserved,
            vec![Reserved {
                store: "S001".into(),
                points: 500
            }]
        );
        // S001 online: its lease is recalled; it had spent 100 under it, not synced.
        let _poll = c.t.hub.recalls.poll_open("S001");
        let t3 = txn(3);
        let (r, ()) = tokio::join!(ask_async(&c, 1, &t3, 800, 250), answer_recall(&c, 0, 100));
        assert!(r.granted, "{r:?}");
        assert_eq!(r.lease_used, 150, "650 free, then 150 of S002's lease");
        // S001's ask sent before the recall, with 400 of its lease set aside: the
        // lease is gone, and its 100 unsynced spends stay taken. 1,000 - 800 held -
        // 100 on their way - 100 left of S002's lease: nothing.
        let r = ask_async(&c, 0, &txn(4), 100, 400).await;
        assert!(!r.granted, "{r:?}");
        assert_eq!(r.available, 0, "{r:?}");
        // The spends arrive: credited, the given-back lease is used up, and a new one
        // may be granted once there are points.
        c.sync(0, &txn(5), 0, 100, "lease");
        c.sync(1, &txn(3), 0, 800, "hub");
        c.sync(0, &txn(6), 400, 0, "");
        assert_eq!(
            lease(&c, 0).points,
            200,
            "half of the 500 balance less S002's 100"
        );
        let report = c.t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert!(report.overdraws.is_empty(), "{report:?}");
    }

    /// One step of the ledger property test.
    #[derive(Debug, Clone)]
    enum LedgerOp {
        /// Store, time offset (a negative one makes the fact late), points, lot
        /// lifetime (ms).
        Earn(usize, i64, i64, i64),
        /// Store, time offset, points.
        Spend(usize, i64, i64),
        /// Store, time offset, which earlier earn, points taken back.
        Reverse(usize, i64, usize, i64),
        /// The hub's clock moves on (lots expire).
        Pass(i64),
    }

    fn ledger_op() -> impl proptest::strategy::Strategy<Value = LedgerOp> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3usize, -20_000..1_000i64, 1..500i64, prop_oneof![Just(1_000_000_000i64), 10_000..200_000i64])
                .prop_map(|(s, d, p, l)| LedgerOp::Earn(s, d, p, l)),
            3 => (0..3usize, -20_000..1_000i64, 1..400i64).prop_map(|(s, d, p)| LedgerOp::Spend(s, d, p)),
            1 => (0..3usize, -20_000..1_000i64, 0..64usize, 1..300i64)
                .prop_map(|(s, d, w, p)| LedgerOp::Reverse(s, d, w, p)),
            1 => (1..100_000i64).prop_map(LedgerOp::Pass),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(40))]

        /// Issue 16, part 1 at the hub: the balance the authorizer reads from the
        /// member's ledger snapshot (folded forward, or derived again after a late fact)
        /// is what the derivation over every movement gives, after every fact, with
        /// facts of three stores arriving out of time order, lots expiring and
        /// reversals of earlier lots (sealed ones among them).
        #[test]
        fn the_ledger_snapshot_gives_what_the_derivation_gives(ops in proptest::collection::vec(ledger_op(), 1..120)) {
            use patron_domain::{Entry, Header, Kind};
            let c = chain(&["S001", "S002", "S003"]);
            let member = uuid::Uuid::parse_str(MEMBER).unwrap_or_else(|e| panic!("{e}"));
            let mut earns: Vec<uuid::Uuid> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                let now = c.t.time();
                let t = uuid::Uuid::parse_str(&txn(n as u128 + 1)).unwrap_or_else(|e| panic!("{e}"));
                let fact = |i: usize, header: Header, kind: Kind, body: serde_json::Value| {
                    let e = Entry::from_parts(header, kind, body.to_string())
                        .and_then(|e| e.to_json())
                        .unwrap_or_else(|e| panic!("{e}"));
                    c.sync_body(i, e);
                };
                match op {
                    LedgerOp::Earn(i, d, p, life) => {
                        earns.push(t);
                        fact(i, Header { at: now + d, member: Some(member), txn: t, earn: p,
                                         expires_at: now + d + life, ..Default::default() },
                             Kind::Purchase, serde_json::json!({"receipt_id": t.to_string(), "subtotal": 0, "total": 0}));
                    }
                    LedgerOp::Spend(i, d, p) => fact(i, Header { at: now + d, member: Some(member), txn: t, spend: p,
                                                                  ..Default::default() },
                                                      Kind::Redemption, serde_json::json!({"reason": "test", "auth": "hub"})),
                    LedgerOp::Reverse(i, d, w, p) => {
                        if let Some(lot) = earns.get(w % earns.len().max(1)).copied() {
                            fact(i, Header { at: now + d, member: Some(member), txn: t, reverse: p,
                                             reverse_lot: Some(lot), ..Default::default() },
                                 Kind::Refund, serde_json::json!({"receipt_id": lot.to_string(), "per_line": [1], "gross": 0, "amount": 0}));
                        }
                    }
                    LedgerOp::Pass(dt) => c.t.set_time(now + dt),
                }
                let now = c.t.time();
                let mut movements: Vec<_> = c.t.hub.store().movements(MEMBER)
                    .unwrap_or_else(|e| panic!("{e}")).into_iter().map(|(m, _)| m).collect();
                let want = crate::authority::spendable(&mut movements, now);
                let mut got = None;
                c.t.hub.store().authority_tx(&mut |tx| {
                    got = Some(tx.balance(MEMBER, now)?);
                    Ok(())
                }).unwrap_or_else(|e| panic!("{e}"));
                proptest::prop_assert_eq!(got, Some(want), "after step {}", n);
            }
        }
    }

    /// A return names its lease: a late or repeated return of an earlier lease does
    /// not give back the store's later one.
    #[test]
    fn a_return_gives_back_only_the_lease_it_names() {
        let c = chain(&["S001"]);
        c.sync(0, &txn(1), 1000, 0, "");
        let give_back = |lease: i64| {
            c.t.hub
                .return_lease(
                    &c.t.rows[0],
                    &LeaseReturn {
                        member: MEMBER.into(),
                        spent: None,
                        lease: Some(lease),
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let first = lease(&c, 0);
        assert_eq!(first.points, 500);
        assert!(give_back(first.lease));
        c.t.set_time(T0 + 1);
        let second = lease(&c, 0);
        assert_ne!(second.lease, first.lease);
        assert!(!give_back(first.lease), "the first lease is gone already");
        let r = c.ask(0, &txn(2), 1000, 0);
        assert_eq!(
            r.available, 500,
            "the second lease still holds its 500: {r:?}"
        );
        assert!(give_back(second.lease));
    }

    /// The hub's lease share and duration are its operator's to set.
    #[test]
    fn the_lease_policy_is_configurable() {
        let mut t = TestHub::new(T0, &["S001"]);
        t.hub = t.hub.with_lease_policy(patron_sync::rights::LeasePolicy {
            share_permille: 250,
            duration_ms: 3_600_000,
            ..LEASE_POLICY
        });
        let c = Chain {
            t,
            seqs: std::sync::Mutex::new(vec![0]),
        };
        c.sync(0, &txn(1), 1000, 0, "");
        let l = lease(&c, 0);
        assert_eq!((l.points, l.duration_ms), (250, 3_600_000), "{l:?}");
    }

    #[test]
    fn a_lease_takes_its_points_from_other_stores_until_spent_returned_or_run_out() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 1000, 0, "");
        // S002 identifies the member while online: half of what is free.
        assert_eq!(lease(&c, 1).points, 500);
        assert_eq!(
            lease(&c, 1).refused.as_deref(),
            Some("the store holds a lease on this member already")
        );
        // Online at S001, the hub no longer lets those 500 go.
        assert_eq!(c.ask(0, &txn(2), 600, 0).available, 500);
        assert!(c.ask(0, &txn(3), 500, 0).granted);
        // What a store could get without holding anything (asks for more than there is).
        let probe = |i: usize, n: u128| c.ask(i, &txn(n), 1_000_000, 0).available;
        // S002 asking online gets nothing more: the rest is its own lease.
        assert_eq!(probe(1, 4), 0);
        // S002 spent 300 under its lease while offline; the fact arrives.
        c.sync(1, &txn(5), 0, 300, "lease");
        assert_eq!(probe(0, 6), 1000 - 300 - 500 - 200);
        // S002 gives the lease back: its 200 unspent are free again.
        c.t.hub
            .return_lease(
                &c.t.rows[1],
                &LeaseReturn {
                    member: MEMBER.into(),
                    spent: None,
                    lease: None,
                },
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(probe(0, 7), 200);
        // A new lease for S002: half of the 200 free.
        assert_eq!(lease(&c, 1).points, 100);
        assert_eq!(probe(0, 8), 100);
        // Unreturned, it stops counting at the hub's expiry (4 h + 10 min); S001's hold
        // of 500 lapsed long before.
        c.t.set_time(T0 + LEASE_POLICY.duration_ms + LEASE_POLICY.margin_ms + 1);
        assert_eq!(probe(0, 9), 700);
        // Too little left to lease: refused, nothing recorded.
        c.sync(0, &txn(10), 0, 650, "hub");
        assert_eq!(lease(&c, 1).points, 0);
        assert_eq!(probe(0, 11), 50);
    }

    /// A store asking for more than its lease covers gets the member's free points first,
    /// then what it set aside of its own lease; the lease shrinks by what was used.
    #[test]
    fn a_store_asking_beyond_its_lease_uses_free_points_then_its_lease() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 2000, 0, "");
        assert_eq!(lease(&c, 0).points, 1000);
        let ask = |n: u128, points: i64, lease_left: i64| {
            c.t.hub
                .authorize(
                    &c.t.rows[0],
                    &AuthorizeRequest {
                        member: MEMBER.into(),
                        txn: txn(n),
                        points,
                        unsynced: 0,
                        lease_left,
                        budget_ms: 0,
                    },
                )
                .unwrap_or_else(|e| panic!("{e}"))
        };
        // The store spent 300 of its lease offline, not yet synced: it sets aside 700.
        let a = ask(2, 1500, 700);
        assert_eq!(
            (a.granted, a.available, a.lease_used),
            (true, 1000 + 700, 500)
        );
        // The lease is 500 points now; S002 sees the member's free points only.
        let probe = c.ask(1, &txn(3), 1_000_000, 0);
        assert_eq!(probe.available, 2000 - 1500 - 500);
        // Setting nothing aside, the store gets only what is free (nothing).
        let a = ask(4, 1, 0);
        assert_eq!((a.granted, a.available, a.lease_used), (false, 0, 0));
        // The 300 spent under the lease arrive: the lease has 200 left.
        c.sync(0, &txn(5), 0, 300, "lease");
        let a = ask(6, 250, 200);
        assert_eq!(
            (a.granted, a.lease_used),
            (false, 0),
            "200 is all the lease has"
        );
    }

    /// Concurrent asks are committed in shared transactions (group commit); each must
    /// still see the holds decided before it, so no point is granted twice.
    #[test]
    fn concurrent_asks_from_many_lanes_never_grant_more_than_the_balance() {
        let c = chain(&["S001", "S002", "S003", "S004"]);
        c.sync(0, &txn(1), 1000, 0, "");
        let granted = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for lane in 0..32u128 {
                let (c, granted) = (&c, &granted);
                s.spawn(move || {
                    for k in 0..4u128 {
                        if c.ask((lane % 4) as usize, &txn(100 + lane * 4 + k), 30, 0)
                            .granted
                        {
                            granted.fetch_add(30, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        // 128 asks of 30 against 1,000 points: exactly 33 fit.
        assert_eq!(granted.into_inner(), 990);
        assert_eq!(c.ask(0, &txn(999), 10, 0).available, 10);
    }

    /// An ask that fails (here: a member with a damaged fact row: a 2-byte transaction id) is answered
    /// with its own error; the asks committed in the same group are not.
    #[test]
    fn one_failing_ask_does_not_fail_the_others_in_its_group() {
        let c = chain(&["S001", "S002"]);
        c.sync(0, &txn(1), 10_000, 0, "");
        const DAMAGED: &str = "0190a000-0000-7000-8000-0000000000ff";
        let raw = rusqlite::Connection::open(c.t.db_path()).unwrap_or_else(|e| panic!("{e}"));
        raw.execute(
            "INSERT INTO facts (origin, seq, body, received_at, kind, at, member, txn, earn,
                                expires_at, available_at, spend, reverse, qual_spend, qual_at)
             SELECT origin, 999, body, received_at, kind, at, unhex(replace(?1, '-', '')),
                    x'0102', 5, expires_at, 0, 0, 0, 0, 0
               FROM facts LIMIT 1",
            [DAMAGED],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let (ok, failed) = (
            std::sync::atomic::AtomicI64::new(0),
            std::sync::atomic::AtomicI64::new(0),
        );
        std::thread::scope(|s| {
            for lane in 0..16u128 {
                let (c, ok, failed) = (&c, &ok, &failed);
                s.spawn(move || {
                    for k in 0..8u128 {
                        let member = if (lane + k) % 2 == 0 { MEMBER } else { DAMAGED };
                        let r = c.t.hub.authorize(
                            &c.t.rows[(lane % 2) as usize],
                            &AuthorizeRequest {
                                member: member.into(),
                                txn: txn(1000 + lane * 8 + k),
                                points: 10,
                                unsynced: 0,
                                lease_left: 0,
                                budget_ms: 0,
                            },
                        );
                        match (member == MEMBER, r) {
                            (true, Ok(a)) if a.granted => {
                                ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                            }
                            (false, Err(_)) => {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                            }
                            (m, r) => panic!("member ok {m}: {r:?}"),
                        };
                    }
                });
            }
        });
        assert_eq!((ok.into_inner(), failed.into_inner()), (64, 64));
        // Every granted ask holds its points: 64 × 10 of 10,000.
        assert_eq!(c.ask(0, &txn(5000), 1, 0).available, 10_000 - 640);
    }

    #[test]
    fn offline_spends_at_two_stores_overdraw_into_a_debt_and_flag_the_member() {
        let c = chain(&["S001", "S002", "S003"]);
        c.sync(0, &txn(1), 500, 0, "");
        // While the hub is away, S002 and S003 each let the member redeem 400 offline.
        c.t.set_time(T0 + 60_000);
        c.sync(1, &txn(2), 0, 400, "offline");
        c.t.set_time(T0 + 120_000);
        c.sync(2, &txn(3), 0, 400, "offline");
        let report = c.t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.overdraws.len(), 1, "{report:?}");
        let o = &report.overdraws[0];
        assert_eq!((o.store.as_str(), o.points, o.offline), ("S003", 300, true));
        assert_eq!(report.flags.len(), 1);
        let f = &report.flags[0];
        assert_eq!(
            (f.first_store.as_str(), f.second_store.as_str()),
            ("S002", "S003")
        );
        // The debt is repaid first by the next earnings, and nothing is available meanwhile.
        assert_eq!(c.ask(0, &txn(4), 1, 0).available, -300);
        c.sync(0, &txn(5), 350, 0, "");
        assert_eq!(c.ask(0, &txn(6), 50, 0).available, 50);
        // A redemption an hour and more after the others flags nobody.
        c.t.set_time(T0 + 120_000 + FLAG_WINDOW_MS + 1);
        c.sync(1, &txn(7), 0, 10, "offline");
        let report = c.t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.flags.len(), 1, "{report:?}");
    }

    #[test]
    fn overdraws_are_judged_behind_the_push_and_a_rebuild_finds_the_same() {
        let c = chain(&["S001", "S002", "S003"]);
        c.sync(0, &txn(1), 500, 0, "");
        c.t.set_time(T0 + 60_000);
        c.sync(1, &txn(2), 0, 400, "offline");
        c.sync(2, &txn(3), 0, 400, "offline");
        // The pushes were acknowledged without reading the spender's history: storage
        // holds no overdraw until the projection steps.
        let stored = c.t.hub.store().overdraw_report();
        let stored = stored.unwrap_or_else(|e| panic!("{e}"));
        assert!(stored.overdraws.is_empty(), "{stored:?}");
        let positions = c.t.hub.projections().unwrap_or_else(|e| panic!("{e}"));
        let judge = positions.iter().find(|p| p.name == "overdraws");
        assert!(judge.is_some_and(|p| p.position < p.end), "{positions:?}");
        // The report catches the judgement up first.
        let report = c.t.hub.overdraw_report().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.overdraws.len(), 1, "{report:?}");
        assert_eq!(report.overdraws[0].points, 300);
        // Judged again from the whole log: the same overdraw, once.
        c.t.hub.rebuild_behind().unwrap_or_else(|e| panic!("{e}"));
        let again = c.t.hub.store().overdraw_report();
        assert_eq!(again.unwrap_or_else(|e| panic!("{e}")), report);
    }

    /// Deterministic simulation of three stores and the hub under partitions (issue 5,
    /// test 6b). Stores earn and redeem for three members; a store cut off from the hub
    /// redeems under the floor limit `F` per member per offline period (until the hub
    /// acknowledges it) and a cap `C`; one that reaches the hub asks it; any store
    /// refuses more than its own view of the balance: its own facts and what other stores
    /// did as of its last fetch of the member (a lookup while the hub was reachable; a
    /// push teaches it nothing). Reachable, a store pushes most sales at once. The hub
    /// is the real one. After every step no member is overdrawn by more than `F` × the
    /// (store, offline period) pairs in which they redeemed offline, plus the
    /// hub-authorized spends whose holds lapsed (`HOLD_MS`) before their facts arrived,
    /// nor any store past `C`; after healing, the hub holds exactly the
    /// facts created (no point created or destroyed), authorizes exactly the balance,
    /// and lists every overdrawn member. With the floor limit switched off the bound
    /// must break, so the check is known to bite.
    fn overdraw_simulation(seed: u64, floor_limit: bool) -> Result<(), String> {
        const F: i64 = 100;
        const C: i64 = 450;
        const STEPS: usize = 120;
        const MEMBERS: usize = 3;
        struct Rng(u64);
        impl Rng {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
            fn below(&mut self, n: u64) -> u64 {
                self.next() % n
            }
        }
        #[derive(Default)]
        struct Store {
            online: bool,
            seq: u64,
            queue: Vec<Fact>,
            /// Earns less spends of this store's own facts, synced or not.
            own: [i64; MEMBERS],
            /// Earns less spends of other stores' facts, as the hub had them when this
            /// store last fetched the member (a lookup while the hub was reachable).
            foreign: [i64; MEMBERS],
            /// Unsynced earns less unsynced offline spends (what it tells the hub).
            unsynced_for_hub: [i64; MEMBERS],
            offline_used: [i64; MEMBERS],
            /// Whether the member redeemed offline here in the current offline period.
            in_period: [bool; MEMBERS],
            cap_used: i64,
        }
        let stores = ["S001", "S002", "S003"];
        let c = chain(&stores);
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut st: Vec<Store> = stores
            .iter()
            .map(|_| Store {
                online: true,
                ..Default::default()
            })
            .collect();
        let member = |m: usize| {
            uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_1000 + m as u128).to_string()
        };
        for m in 0..MEMBERS {
            c.t.share_member(&member(m));
        }
        let mut created = [(0i64, 0i64); MEMBERS];
        let mut held = [(0i64, 0i64); MEMBERS];
        // Net points of each store's facts the hub holds, per member.
        let mut held_by = [[0i64; MEMBERS]; 3];
        // (Store, offline period) pairs in which the member redeemed offline.
        let mut periods = [0i64; MEMBERS];
        let mut n_txn = 0u128;
        // Hub-authorized spends not yet pushed: (store, member, points, authorized at,
        // hold lapsed). A hold lapses after HOLD_MS; its points are then free at the hub.
        let mut holds: Vec<(usize, usize, i64, i64, bool)> = Vec::new();
        let mut lapsed = [0i64; MEMBERS];
        let mut t = T0;
        let ask = |i: usize, member: &str, txn: &str, points: i64, unsynced: i64| {
            c.t.hub
                .authorize(
                    &c.t.rows[i],
                    &AuthorizeRequest {
                        member: member.into(),
                        txn: txn.into(),
                        points,
                        unsynced,
                        lease_left: 0,
                        budget_ms: 0,
                    },
                )
                .map_err(|e| e.to_string())
        };
        let fact = |s: &mut Store,
                    i: usize,
                    m: usize,
                    txn: &str,
                    earn: i64,
                    spend: i64,
                    auth: &str,
                    at: i64| {
            s.seq += 1;
            s.queue.push(Fact {
                origin: Origin {
                    node: stores[i].into(),
                    incarnation: uuid::Uuid::from_u128(7),
                },
                seq: s.seq,
                body: points_entry(&member(m), txn, earn, spend, auth, at),
            });
        };
        let sync = |s: &mut Store,
                    i: usize,
                    held: &mut [(i64, i64); MEMBERS],
                    held_by: &mut [[i64; MEMBERS]; 3]|
         -> Result<(), String> {
            if !s.queue.is_empty() {
                let facts = std::mem::take(&mut s.queue);
                let origin = facts[0].origin.clone();
                for f in &facts {
                    let e = patron_domain::Entry::parse(&f.body).map_err(|e| e.to_string())?;
                    let m = (0..MEMBERS)
                        .find(|m| e.member.map(|x| x.to_string()) == Some(member(*m)))
                        .ok_or("member")?;
                    held[m].0 += e.earn;
                    held[m].1 += e.spend;
                    held_by[i][m] += e.earn - e.spend;
                }
                let req = PushRequest {
                    report: SyncReport {
                        origin: Some(origin.clone()),
                        last_seq: s.seq,
                        ..Default::default()
                    },
                    push: Push {
                        from: stores[i].into(),
                        batches: vec![batch(origin, facts)],
                    },
                };
                let ack = c.t.hub.push(&c.t.rows[i], req).map_err(|e| e.to_string())?;
                if !matches!(&ack.verdicts[..], [patron_sync::Verdict::Applied { .. }]) {
                    return Err(format!("push not applied: {ack:?}"));
                }
            }
            // The hub acknowledged it: the offline period ends. The store learns
            // nothing of other stores' facts from a push.
            s.offline_used = [0; MEMBERS];
            s.in_period = [false; MEMBERS];
            s.unsynced_for_hub = [0; MEMBERS];
            Ok(())
        };
        let refresh = |s: &mut Store, i: usize, m: usize, held_by: &[[i64; MEMBERS]; 3]| {
            s.foreign[m] = (0..3).filter(|j| *j != i).map(|j| held_by[j][m]).sum();
        };
        for step in 0..STEPS {
            t += 1 + rng.below(60_000) as i64;
            c.t.set_time(t);
            let i = rng.below(stores.len() as u64) as usize;
            let m = rng.below(MEMBERS as u64) as usize;
            n_txn += 1;
            let txn = uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0001_0000 + n_txn)
                .to_string();
            match rng.below(10) {
                0 | 1 => st[i].online = !st[i].online,
                2 | 3 => {
                    let amount = 1 + rng.below(150) as i64;
                    fact(&mut st[i], i, m, &txn, amount, 0, "", t);
                    created[m].0 += amount;
                    st[i].own[m] += amount;
                    st[i].unsynced_for_hub[m] += amount;
                    // Reachable, the edge pushes a sale ~20 ms after it commits.
                    if st[i].online && rng.below(4) > 0 {
                        sync(&mut st[i], i, &mut held, &mut held_by)?;
                        holds.retain(|h| h.0 != i);
                    }
                }
                4..=7 => {
                    let s = &mut st[i];
                    // A lookup while the hub is reachable fetches what other stores did.
                    if s.online && rng.below(2) == 0 {
                        refresh(s, i, m, &held_by);
                    }
                    // Members spend most of what the store shows them.
                    let view = s.own[m] + s.foreign[m];
                    let p = 1 + rng.below(view.clamp(1, 400) as u64) as i64;
                    if p > view {
                        continue; // the store's own view refuses it
                    }
                    let auth = if s.online {
                        let r = ask(i, &member(m), &txn, p, s.unsynced_for_hub[m])?;
                        if !r.granted {
                            continue;
                        }
                        "hub"
                    } else {
                        let fits =
                            (!floor_limit || s.offline_used[m] + p <= F) && s.cap_used + p <= C;
                        if !fits {
                            continue;
                        }
                        s.offline_used[m] += p;
                        s.cap_used += p;
                        s.unsynced_for_hub[m] -= p;
                        if !s.in_period[m] {
                            s.in_period[m] = true;
                            periods[m] += 1;
                        }
                        "offline"
                    };
                    fact(s, i, m, &txn, 0, p, auth, t);
                    if auth == "hub" {
                        holds.push((i, m, p, t, false));
                    }
                    created[m].1 += p;
                    s.own[m] -= p;
                    if s.online && rng.below(4) > 0 {
                        sync(&mut st[i], i, &mut held, &mut held_by)?;
                        holds.retain(|h| h.0 != i);
                    }
                }
                _ if st[i].online => {
                    sync(&mut st[i], i, &mut held, &mut held_by)?;
                    holds.retain(|h| h.0 != i);
                }
                _ => {}
            }
            for h in holds.iter_mut().filter(|h| !h.4 && t >= h.3 + HOLD_MS) {
                h.4 = true;
                lapsed[h.1] += h.2;
            }
            for (m, (earned, spent)) in created.iter().enumerate() {
                let bound = F * periods[m] + lapsed[m];
                if spent - earned > bound {
                    return Err(format!(
                        "seed {seed} step {step}: member {m} overdrawn by {} > F × {} offline periods + {} of lapsed holds",
                        spent - earned,
                        periods[m],
                        lapsed[m]
                    ));
                }
            }
            if let Some(s) = st.iter().find(|s| s.cap_used > C) {
                return Err(format!(
                    "seed {seed} step {step}: a store redeemed {} offline > C",
                    s.cap_used
                ));
            }
        }
        // Heal: every store reaches the hub and pushes what it has.
        for (i, s) in st.iter_mut().enumerate() {
            s.online = true;
            sync(s, i, &mut held, &mut held_by)?;
        }
        let report = c.t.hub.overdraw_report().map_err(|e| e.to_string())?;
        for (m, (earned, spent)) in created.iter().enumerate() {
            if held[m] != created[m] {
                return Err(format!(
                    "seed {seed}: member {m}: hub holds {:?}, created {:?}",
                    held[m], created[m]
                ));
            }
            let hub =
                c.t.hub
                    .store()
                    .movements(&member(m))
                    .map_err(|e| e.to_string())?;
            let (e, sp) = hub
                .iter()
                .fold((0, 0), |(e, sp), (mv, _)| (e + mv.earn, sp + mv.spend));
            if (e, sp) != (*earned, *spent) {
                return Err(format!(
                    "seed {seed}: member {m}: hub movements {e}/{sp}, created {earned}/{spent}"
                ));
            }
            n_txn += 1;
            let probe = uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0002_0000 + n_txn)
                .to_string();
            let available = ask(0, &member(m), &probe, 1_000_000, 0)?.available;
            if available != earned - spent {
                return Err(format!(
                    "seed {seed}: member {m}: hub authorizes {available}, balance {}",
                    earned - spent
                ));
            }
            // Listed also when a spend once ran ahead of an earning it came before in
            // time (later earnings repaid it): every member still owing must be.
            let listed = report.overdraws.iter().any(|o| o.member == member(m));
            if earned < spent && !listed {
                return Err(format!(
                    "seed {seed}: member {m} owes {} but is not listed",
                    spent - earned
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn partitions_never_overdraw_past_the_floor_limit_bound_nor_lose_points() {
        const SEEDS: u64 = 120;
        for seed in 1..=SEEDS {
            if let Err(e) = overdraw_simulation(seed, true) {
                panic!("{e}");
            }
        }
        let caught = (1..=SEEDS).find_map(|seed| overdraw_simulation(seed, false).err());
        assert!(
            caught.as_deref().is_some_and(|e| e.contains("overdrawn")),
            "without the floor limit the overdraw bound must break in some run: {caught:?}"
        );
    }
}
