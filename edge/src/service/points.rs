//! Points outside a sale: standalone redemptions and behaviour events.

use patron_domain::Kind;
use patron_domain::claims::ClaimKey;
use patron_protocol::pos::{
    EventRequest, EventResponse, EventType, RedemptionRequest, RedemptionResponse,
};
use patron_protocol::{MemberId, Points, TransactionId};
use serde_json::json;

use super::claims::{Asked, Claim};
use super::{Actor, Edge, EdgeError, Idem, Reply, Seal, balance, invalid, require_member};
use crate::domain::limits::DayTotals;
use crate::domain::validate;
use crate::store::facts::{self, NewFact};
use crate::store::member_codes;
use crate::store::members::{self, MemberRow};
use patron_domain::member_code::Checked;

/// Whether `code` can prove `member` present: the member's own (or, after a merge, the
/// person's), and not used before at this store.
fn check_member_code(
    conn: &rusqlite::Connection,
    member: &[u8; 16],
    code: &Checked,
) -> Result<(), EdgeError> {
    let theirs = *code.member.as_bytes() == *member
        || members::alias_set(conn, member)?.contains(code.member.as_bytes());
    if !theirs {
        return Err(EdgeError::MemberCode(
            "this member code is another member's".into(),
        ));
    }
    if member_codes::used(conn, &code.id)? {
        return Err(code_used());
    }
    Ok(())
}

/// Records `code` as used, in the redemption's transaction: two redemptions can never
/// both take it.
fn take_member_code(
    conn: &rusqlite::Connection,
    code: &Checked,
    now: i64,
) -> Result<(), EdgeError> {
    let expires_at = i64::try_from(code.expires_ms).unwrap_or(i64::MAX);
    if !member_codes::use_once(conn, &code.id, expires_at, now)? {
        return Err(code_used());
    }
    Ok(())
}

fn code_used() -> EdgeError {
    EdgeError::MemberCode(
        "this member code was used already; ask the member to show a fresh one".into(),
    )
}

impl Edge {
    /// `POST /v1/members/{id}/redemptions`.
    pub async fn redeem(
        &self,
        idem: Idem,
        actor: Actor,
        member: MemberId,
        req: RedemptionRequest,
    ) -> Result<Reply, EdgeError> {
        let points = validate::points_amount(req.points, "points").map_err(invalid)?;
        let reason = validate::reason(&req.reason).map_err(invalid)?;
        let core = self.core.clone();
        // A retry is answered from its first attempt, whose code may have expired since:
        // it is not checked again. Should the retry not be one after all (its first
        // attempt rolled back), it goes on without the code, under the threshold.
        let present = match (&req.member_code, core.is_replay(&idem)) {
            (Some(code), false) => Some(
                core.member_codes
                    .check(code, core.now())
                    .map_err(|e| EdgeError::MemberCode(e.to_string()))?,
            ),
            _ => None,
        };
        // What would refuse the redemption here is checked before the hub is asked to
        // hold the points: a hold for a redemption refused here would keep them from the
        // member at every store until it lapses (10 minutes). The transaction below
        // checks again, for good.
        if !core.is_replay(&idem) {
            let (c, code) = (core.clone(), present.clone());
            let idb = *member.as_bytes();
            let pre = self
                .store
                .readers
                .read(move |conn| {
                    require_member(conn, &idb)?;
                    if let Some(code) = &code {
                        check_member_code(conn, &idb, code)?;
                    }
                    c.limits_allow(conn, actor, c.now(), |l, day| {
                        l.redemption(day, points, code.is_some())
                    })
                })
                .await;
            self.note_refusal(actor, pre).await?;
        }
        let id = TransactionId::new_v7();
        // A presumed replay is not authorized again; should it not be one after all
        // (its first attempt rolled back), the offline limits bound it.
        let auth = if core.is_replay(&idem) {
            self.unasked_authority()
        } else {
            self.authorize_redemption(*member.as_bytes(), *id.as_bytes(), points)
                .await?
        };
        let written = self
            .store
            .writer
            .write(move |ctx| {
                // Read in commit order (see `Edge::commit`).
                let now = core.now();
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let idb = *member.as_bytes();
                    require_member(ctx.conn, &idb)?;
                    if let Some(code) = &present {
                        check_member_code(ctx.conn, &idb, code)?;
                        take_member_code(ctx.conn, code, now)?;
                    }
                    let (_, state) = core.load_state(ctx.conn, &idb, now)?;
                    let available = state.points.balance();
                    if points > available {
                        return Err(EdgeError::InsufficientPoints {
                            available,
                            requested: points,
                        });
                    }
                    let spent = DayTotals {
                        redeemed: points,
                        ..DayTotals::default()
                    };
                    core.within_limits(ctx.conn, actor, now, spent, |l, day| {
                        l.redemption(day, points, present.is_some())
                    })?;
                    let fact = NewFact {
                        spend: points,
                        ..NewFact::new(
                            Kind::Redemption,
                            now,
                            Some(idb),
                            *id.as_bytes(),
                            json!({ "reason": reason, "auth": auth.label() }).to_string(),
                        )
                    };
                    let seq = facts::append(ctx, &fact)?;
                    core.record_redemption(ctx, &idb, seq, points, auth, now)?;
                    // The fact is in the member's ledger snapshot: read it back.
                    let (_, after) = core.load_state(ctx.conn, &idb, now)?;
                    Ok((
                        201,
                        RedemptionResponse {
                            redemption_id: id,
                            balance_after: balance(&after),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        self.settle_lease(member.as_bytes(), auth, points, &written);
        self.note_refusal(actor, written).await
    }

    /// `POST /v1/members/{id}/events`: awards what the rules give, within their limits.
    /// Answers 201 when points were awarded and 200 (with a reason) when a limit was
    /// already reached, so a POS can tell the two apart without parsing text.
    pub async fn event(
        &self,
        idem: Option<Idem>,
        actor: Actor,
        member: MemberId,
        req: EventRequest,
    ) -> Result<Reply, EdgeError> {
        let reference = req
            .reference
            .as_deref()
            .map(|r| validate::sku(r, "ref"))
            .transpose()
            .map_err(invalid)?;
        let idb = *member.as_bytes();
        let ev = &self.core.cfg.events;
        let today = validate::format_date(self.core.cal.date(self.core.now()));
        let (key, limit, reward, refusal) = match req.kind {
            EventType::CheckIn => (
                ClaimKey::check_in(&today),
                1,
                ev.check_in,
                "already checked in today",
            ),
            EventType::Share => (
                ClaimKey::share(&today),
                ev.share_daily_limit,
                ev.share,
                "daily share limit reached",
            ),
            EventType::ProfileCompleted => {
                // Checked before the hub is asked: a claim the hub holds for a request
                // that then fails would count for the member until the hold lapses.
                let core = self.core.clone();
                let row = self
                    .store
                    .readers
                    .read(move |c| core.shown_row(c, &idb))
                    .await?
                    .ok_or(EdgeError::MemberNotFound)?;
                profile_complete(&row)?;
                (
                    ClaimKey::profile_completed(),
                    1,
                    ev.profile_completed,
                    "profile completion was already rewarded",
                )
            }
        };
        let claim = Claim::new(idb, key, limit, ev.offline_claims);
        // A presumed replay is answered from its first attempt and asks nothing; should
        // it not be one after all, the offline policy bounds it.
        let asked = match idem.as_ref() {
            _ if limit == 0 => Asked::Refused,
            Some(i) if self.core.is_replay(i) => Asked::Offline,
            _ => self.ask_claim(&claim).await?,
        };
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let took = taken.clone();
        let core = self.core.clone();
        let to_take = claim.clone();
        let written = self
            .store
            .writer
            .write(move |ctx| {
                // Read in commit order (see `Edge::commit`).
                let now = core.now();
                let expires_at = core.lot_expiry(now);
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    let row = core
                        .shown_row(ctx.conn, &idb)?
                        .ok_or(EdgeError::MemberNotFound)?;
                    if req.kind == EventType::ProfileCompleted {
                        profile_complete(&row)?;
                    }
                    let (points, refused) = match core.take_claim(ctx, &to_take, asked, now)? {
                        Some(_) => {
                            took.store(true, std::sync::atomic::Ordering::Relaxed);
                            (reward, None)
                        }
                        None => (0, Some(refusal)),
                    };
                    if points > 0 {
                        let earned = DayTotals {
                            earned: points,
                            ..DayTotals::default()
                        };
                        core.within_limits(ctx.conn, actor, now, earned, |l, day| {
                            l.event(day, points)
                        })?;
                        let txn = TransactionId::new_v7();
                        let fact = NewFact {
                            earn: points,
                            expires_at,
                            ..NewFact::new(
                                Kind::Event,
                                now,
                                Some(idb),
                                *txn.as_bytes(),
                                json!({ "type": req.kind.as_str(), "ref": reference }).to_string(),
                            )
                        };
                        facts::append(ctx, &fact)?;
                    }
                    let (_, after) = core.load_state(ctx.conn, &idb, now)?;
                    let status = if refused.is_some() { 200 } else { 201 };
                    Ok((
                        status,
                        EventResponse {
                            points_awarded: Points(points),
                            balance_after: balance(&after),
                            reason: refused.map(String::from),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        let taken = written.is_ok() && taken.load(std::sync::atomic::Ordering::Relaxed);
        self.settle_claim(&claim, asked, taken);
        self.note_refusal(actor, written).await
    }
}

/// A profile is complete with a name and a birthday.
fn profile_complete(row: &MemberRow) -> Result<(), EdgeError> {
    if row.name_enc.is_none() || row.birthday_enc.is_none() {
        return Err(EdgeError::Invalid(
            "the profile is not complete: name and birthday are needed".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    use super::*;
    use crate::service::Role;
    use crate::service::lanes::add_lane;
    use patron_domain::member_code;

    /// 2026-12-01 12:00 +08:00.
    const T0: i64 = 1_796_097_600_000;

    /// Issue 17, part 4: a lane redeems above the standalone threshold only with the
    /// member's own, unexpired code, genuinely the hub's, and each code once.
    #[tokio::test]
    async fn a_member_code_lets_a_lane_redeem_above_the_threshold_once() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, clock) = Edge::for_test("S001", dir.path(), T0);
        let hub = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
        let token =
            add_lane(&edge.core.cfg, "lane-1", Role::Pos).unwrap_or_else(|e| panic!("{e:#}"));
        let lane = edge
            .authenticate(&token)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("lane"));
        let (a, b) = (
            edge.test_member("13800000095", None).await,
            edge.test_member("13800000096", None).await,
        );
        let (a, b): (MemberId, MemberId) = (
            a.parse().unwrap_or_else(|e| panic!("{e:?}")),
            b.parse().unwrap_or_else(|e| panic!("{e:?}")),
        );
        // Points to spend: a manager's sale of ¥20,000 (20,000 points by default).
        edge.commit(
            Idem {
                lane: 1,
                key: "sale".into(),
                request_hash: [0; 32],
            },
            Actor::manager(),
            serde_json::from_value(serde_json::json!({"member_id": a, "receipt_id": "R-1",
                "lines": [{"sku": "A", "qty": 1, "unit_price": 2_000_000}]}))
            .unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let redeem = |key: &str, code: Option<String>| {
            let req = RedemptionRequest {
                points: 6_000,
                reason: "gift:KETTLE".into(),
                member_code: code,
            };
            let idem = Idem {
                lane: lane.id,
                key: key.into(),
                request_hash: [0; 32],
            };
            let (edge, actor) = (edge.clone(), lane.actor());
            async move { edge.redeem(idem, actor, a, req).await }
        };
        let code_of = |who: MemberId, key: &Ed25519KeyPair, expires_s: u64| {
            member_code::sign(key, &who.0, expires_s)
        };
        let in_two_minutes = (T0 + 120_000) as u64;
        let good = code_of(a, &hub, in_two_minutes);
        let refused = |r: Result<Reply, EdgeError>| match r {
            Err(EdgeError::MemberCode(why)) => why,
            Err(EdgeError::LimitExceeded(e)) => format!("limit {}", e.limit),
            Err(e) => panic!("unexpected {e}"),
            Ok(r) => panic!("redeemed: {}", String::from_utf8_lossy(&r.body)),
        };
        // 6,000 points is above the 5,000 a lane may redeem outside a sale alone.
        assert_eq!(
            refused(redeem("r0", None).await),
            "limit standalone_redemption_points"
        );
        // The store has not got the hub's key yet: no code can be checked.
        assert!(refused(redeem("r1", Some(good.clone())).await).contains("cannot check"));
        edge.core
            .member_codes
            .take(&base64::engine::general_purpose::STANDARD.encode(hub.public_key().as_ref()))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let forger =
            Ed25519KeyPair::from_seed_unchecked(&[8; 32]).unwrap_or_else(|e| panic!("{e}"));
        for (key, code, why) in [
            (
                "r2",
                code_of(a, &forger, in_two_minutes),
                "not issued by the chain",
            ),
            ("r3", code_of(b, &hub, in_two_minutes), "another member's"),
            ("r4", code_of(a, &hub, T0 as u64), "expired"),
            ("r5", "13800000095".to_string(), "not a member code"),
        ] {
            assert!(
                refused(redeem(key, Some(code)).await).contains(why),
                "{key}"
            );
        }
        let ok = redeem("r6", Some(good.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.status, 201);
        // A retry of the same request answers the same; the code on a new request is spent.
        let again = redeem("r6", Some(good.clone()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.body, ok.body);
        assert!(refused(redeem("r7", Some(good.clone())).await).contains("used already"));
        // A retry after the code expired still gets its answer, not a refusal that would
        // send the cashier to redeem again.
        clock.store(T0 + 600_000, std::sync::atomic::Ordering::SeqCst);
        let late = redeem("r6", Some(good))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(late.body, ok.body);
        let balance = edge
            .member(a)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .points
            .balance
            .0;
        assert_eq!(balance, 20_000 - 6_000, "one redemption went through");
    }
}
