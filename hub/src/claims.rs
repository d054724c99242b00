//! Chain-wide claims of limited entitlements, as the hub serves them: a store that can
//! reach the hub asks before it gives a once-only reward, a check-in, a benefit use or
//! a limited offer, and the hub counts every store's claims of the member
//! ([`patron_domain::claims`] holds the rules, [`crate::authority::decide_claim`] the
//! decision; storage counts and holds in the authorizer's transactions). Claims made
//! offline arrive as facts; counters that passed their limit are in the overdraw report.

use patron_domain::claims::{ClaimKey, MAX_LIMIT};
use patron_protocol::hub::{ClaimRelease, ClaimRequest, ClaimResponse};

use crate::authority::{ClaimHold, HOLD_MS};
use crate::service::{Hub, HubError};
use crate::store::StoreRow;

impl Hub {
    /// `POST /v1/claims`: grants and holds the claim if the member's claims of the
    /// counter over every store (facts, holds of other asks, the store's unsynced)
    /// stay under the limit. Served in turn with redemptions: two stores claiming for
    /// one member at once never both get the last use.
    pub async fn authorize_claim(
        &self,
        store: &StoreRow,
        req: &ClaimRequest,
    ) -> Result<ClaimResponse, HubError> {
        let ask = self.claim_hold(store, req)?;
        let answer = self.store().authorize_claim(ask)?.wait().await?;
        tracing::debug!(store = %store.store_id, granted = answer.granted, "claim");
        Ok(answer)
    }

    /// `POST /v1/claims/release`: the store gives back a claim the hub granted that it
    /// did not record. Only the store's own hold goes; a claim whose fact arrived is
    /// counted by the fact, not the hold.
    pub fn release_claim(&self, store: &StoreRow, req: &ClaimRelease) -> Result<bool, HubError> {
        let claim = uuid::Uuid::parse_str(&req.claim)
            .map_err(|_| HubError::Invalid("claim is not a UUID".into()))?
            .to_string();
        Ok(self.store().drop_claim_hold(&claim, &store.store_id)?)
    }

    /// Checks a claim request: a member the store serves, a counter stores write, a
    /// limit in range; the store's unsynced claims count up to the limit.
    fn claim_hold(&self, store: &StoreRow, req: &ClaimRequest) -> Result<ClaimHold, HubError> {
        let uuid = |s: &str, what: &str| {
            uuid::Uuid::parse_str(s)
                .map(|u| u.to_string())
                .map_err(|_| HubError::Invalid(format!("{what} is not a UUID")))
        };
        let member = uuid(&req.member, "member")?;
        let claim = uuid(&req.claim, "claim")?;
        let key = ClaimKey {
            entitlement: req.entitlement.clone(),
            period: req.period.clone(),
        };
        key.validate()
            .map_err(|why| HubError::Invalid(why.to_string()))?;
        if req.limit == 0 || req.limit > MAX_LIMIT {
            return Err(HubError::Invalid(format!("limit must be 1-{MAX_LIMIT}")));
        }
        if req.unsynced < 0 {
            return Err(HubError::Invalid("unsynced must not be negative".into()));
        }
        self.check_serves(store, &member)?;
        let now = self.now();
        Ok(ClaimHold {
            member,
            claim,
            key,
            store: store.store_id.clone(),
            limit: req.limit,
            unsynced: req.unsynced.min(i64::from(req.limit)),
            now,
            until: now.saturating_add(HOLD_MS),
        })
    }
}

#[cfg(test)]
mod tests {
    use patron_protocol::hub::OverClaim;

    use super::*;
    use crate::testing::TestHub;

    const T0: i64 = 1_764_000_000_000;
    const MEMBER: &str = "0190a000-0000-7000-8000-000000000001";

    fn id(n: u128) -> String {
        uuid::Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0000 + n).to_string()
    }

    fn ask(entitlement: &str, claim: &str, limit: u32, unsynced: i64) -> ClaimRequest {
        ClaimRequest {
            member: MEMBER.into(),
            claim: claim.into(),
            entitlement: entitlement.into(),
            period: "2026-12-07".into(),
            limit,
            unsynced,
        }
    }

    fn claim(t: &TestHub, i: usize, req: &ClaimRequest) -> Result<ClaimResponse, HubError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
            .block_on(t.hub.authorize_claim(&t.rows[i], req))
    }

    /// The claim fact a store writes for `req` (or a release of it).
    fn fact(t: &TestHub, req: &ClaimRequest, auth: &str, release: bool) -> String {
        serde_json::json!({
            "kind": "claim", "at": t.time(), "member": req.member, "txn": req.claim,
            "body": {"entitlement": req.entitlement, "period": req.period,
                     "limit": req.limit, "auth": auth, "release": release},
        })
        .to_string()
    }

    fn over_claims(t: &TestHub) -> Vec<OverClaim> {
        t.hub
            .overdraw_report()
            .unwrap_or_else(|e| panic!("{e}"))
            .over_claims
    }

    #[test]
    fn a_claim_is_held_until_its_fact_arrives_and_then_counted_once() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        let first = ask("check_in", &id(1), 1, 0);
        let a = claim(&t, 0, &first).unwrap_or_else(|e| panic!("{e}"));
        assert!(a.granted && a.used == 0);
        // Held: the same member at the other store is refused before the fact arrives.
        let second = ask("check_in", &id(2), 1, 0);
        assert!(
            !claim(&t, 1, &second)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        // A retried ask of the held claim is granted again, by its store only.
        assert!(
            claim(&t, 0, &first)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        assert!(matches!(claim(&t, 1, &first), Err(HubError::Invalid(_))));
        // A release by another store does nothing; the store's own frees the use.
        let release = ClaimRelease { claim: id(9) };
        assert_eq!(t.hub.release_claim(&t.rows[0], &release).ok(), Some(false));
        let third = ask("check_in", &id(9), 1, 0);
        assert!(
            !claim(&t, 0, &third)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        let release = ClaimRelease {
            claim: first.claim.clone(),
        };
        assert_eq!(t.hub.release_claim(&t.rows[1], &release).ok(), Some(false));
        assert_eq!(t.hub.release_claim(&t.rows[0], &release).ok(), Some(true));
        assert!(
            claim(&t, 0, &third)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        let release = ClaimRelease {
            claim: third.claim.clone(),
        };
        assert_eq!(t.hub.release_claim(&t.rows[0], &release).ok(), Some(true));
        assert!(
            claim(&t, 0, &first)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        // The fact settles the hold: counted once, not as a hold and a fact.
        t.push_fact(0, fact(&t, &first, "hub", false));
        let b = claim(&t, 1, &second).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((b.granted, b.used), (false, 1));
        // Another counter of the member is its own.
        assert!(
            claim(&t, 1, &ask("share", &id(3), 3, 2))
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        assert!(
            !claim(&t, 1, &ask("share", &id(4), 3, 3))
                .unwrap_or_else(|e| panic!("{e}"))
                .granted,
            "the store's unsynced claims count"
        );
        assert!(over_claims(&t).is_empty());
        // A hold that lapses frees its use.
        let t2 = TestHub::new(T0, &["S001"]);
        t2.share_member(MEMBER);
        assert!(
            claim(&t2, 0, &first)
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        t2.set_time(T0 + crate::authority::HOLD_MS + 1);
        assert!(
            claim(&t2, 0, &ask("check_in", &id(5), 1, 0))
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
    }

    #[test]
    fn bad_asks_and_strangers_are_refused() {
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        t.share_member(MEMBER);
        let bad = [
            ClaimRequest {
                member: "x".into(),
                ..ask("check_in", &id(1), 1, 0)
            },
            ask("Check In", &id(1), 1, 0),
            ask("check_in", &id(1), 0, 0),
            ask("check_in", &id(1), 1001, 0),
            ask("check_in", &id(1), 1, -1),
            ClaimRequest {
                period: "yesterday's".into(),
                ..ask("check_in", &id(1), 1, 0)
            },
        ];
        for req in &bad {
            assert!(
                matches!(claim(&t, 0, req), Err(HubError::Invalid(_))),
                "{req:?}"
            );
        }
        // A member only S001 served: S002 may not count their claims.
        let stranger = ClaimRequest {
            member: id(77),
            ..ask("check_in", &id(1), 1, 0)
        };
        t.push_fact(
            0,
            fact(
                &t,
                &ClaimRequest {
                    claim: id(2),
                    ..stranger.clone()
                },
                "hub",
                false,
            ),
        );
        assert!(matches!(claim(&t, 1, &stranger), Err(HubError::NotServed)));
        assert!(claim(&t, 0, &stranger).is_ok());
    }

    /// 64 concurrent asks for one counter from four stores: exactly the limit granted.
    #[test]
    fn simultaneous_claims_at_several_stores_never_pass_the_limit() {
        let t = TestHub::new(T0, &["S001", "S002", "S003", "S004"]);
        t.share_member(MEMBER);
        let granted = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|s| {
            for lane in 0..16u128 {
                let (t, granted) = (&t, &granted);
                s.spawn(move || {
                    for k in 0..4u128 {
                        let req = ask("benefit:dry_cleaning", &id(100 + lane * 4 + k), 3, 0);
                        if claim(t, (lane % 4) as usize, &req)
                            .unwrap_or_else(|e| panic!("{e}"))
                            .granted
                        {
                            granted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(granted.into_inner(), 3);
    }

    #[test]
    fn offline_claims_past_the_limit_are_reported_and_a_release_clears_them() {
        let t = TestHub::new(T0, &["S001", "S002", "S003"]);
        t.share_member(MEMBER);
        let gift = |n| ClaimRequest {
            period: "once".into(),
            ..ask("upgrade:gold", &id(n), 1, 0)
        };
        t.push_fact(0, fact(&t, &gift(1), "offline", false));
        assert!(over_claims(&t).is_empty(), "one claim is within the limit");
        t.push_fact(1, fact(&t, &gift(2), "offline", false));
        t.push_fact(2, fact(&t, &gift(3), "offline", false));
        let report = over_claims(&t);
        assert_eq!(report.len(), 1, "one counter, reported once: {report:?}");
        assert_eq!(
            (report[0].claimed, report[0].limit, report[0].stores.clone()),
            (3, 1, vec!["S001".to_string(), "S002".into(), "S003".into()])
        );
        assert_eq!(report[0].member, MEMBER);
        // The hub refuses the next online claim: the counter is past its limit.
        assert!(
            !claim(&t, 0, &gift(4))
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        );
        // The same counter rebuilt from the facts reports the same.
        let before = over_claims(&t);
        t.hub
            .rebuild_projections()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(over_claims(&t), before);
        // Refunds took two of the gifts back: within the limit again.
        t.push_fact(1, fact(&t, &gift(2), "offline", true));
        assert_eq!(over_claims(&t)[0].claimed, 2);
        t.push_fact(2, fact(&t, &gift(3), "offline", true));
        assert!(over_claims(&t).is_empty());
    }

    /// The asking store's limit decides: one claim with limit 1 from another store does
    /// not close the counter for everyone (it only makes the over-claim report stricter).
    #[test]
    fn a_lower_limit_from_one_store_does_not_close_the_counter_for_the_others() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        t.push_fact(0, fact(&t, &ask("share", &id(1), 1, 0), "offline", false));
        let a = claim(&t, 1, &ask("share", &id(3), 3, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.granted, a.used, a.limit), (true, 1, 3));
        t.push_fact(1, fact(&t, &ask("share", &id(3), 3, 0), "hub", false));
        let report = over_claims(&t);
        assert_eq!(
            (report.len(), report.first().map(|o| (o.claimed, o.limit))),
            (1, Some((2, 1))),
            "judged against the smallest limit: {report:?}"
        );
    }

    /// A store's releases cancel only its own claims: releases of a counter it never
    /// claimed, or more releases than claims, give no one more uses.
    #[test]
    fn releases_cancel_only_the_releasing_store_s_own_claims() {
        let t = TestHub::new(T0, &["S001", "S002"]);
        t.share_member(MEMBER);
        let once = |n| ClaimRequest {
            period: "once".into(),
            ..ask("profile_completed", &id(n), 1, 0)
        };
        t.push_fact(0, fact(&t, &once(1), "hub", false));
        t.set_time(T0 + 1_000);
        for n in 10..15 {
            t.push_fact(1, fact(&t, &once(n), "offline", true));
        }
        let refused = |i: usize, n: u128| {
            !claim(&t, i, &once(n))
                .unwrap_or_else(|e| panic!("{e}"))
                .granted
        };
        assert!(refused(1, 20), "S002's releases do not cancel S001's claim");
        // S001 gives back its own claim once; its further releases count nothing.
        t.set_time(T0 + 2_000);
        t.push_fact(0, fact(&t, &once(1), "local", true));
        t.push_fact(0, fact(&t, &once(2), "local", true));
        t.set_time(T0 + 3_000);
        let a = claim(&t, 1, &once(21)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((a.granted, a.used), (true, 0));
        // S002's releases came before its claim: they are not banked against it.
        t.push_fact(1, fact(&t, &once(21), "hub", false));
        assert!(refused(0, 22));
    }

    /// A claim fact the hub cannot count (a limit past 1,000) is quarantined; the rest
    /// of the store's push is applied.
    #[test]
    fn a_claim_the_hub_cannot_count_is_quarantined_not_the_push() {
        let t = TestHub::new(T0, &["S001"]);
        t.share_member(MEMBER);
        t.push_fact(
            0,
            fact(&t, &ask("benefit:x", &id(1), 1_500, 0), "offline", false),
        );
        t.push_fact(
            0,
            fact(&t, &ask("benefit:x", &id(2), 2, 0), "offline", false),
        );
        let q = t.hub.quarantined(10).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].reason, crate::ingest::CLAIM_NOT_COUNTABLE);
        let a = claim(&t, 0, &ask("benefit:x", &id(3), 2, 0)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (a.granted, a.used),
            (true, 1),
            "only the countable claim counts"
        );
    }
}
