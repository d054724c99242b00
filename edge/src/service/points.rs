//! Points outside a sale: standalone redemptions and behaviour events.

use patron_domain::Kind;
use patron_protocol::pos::{
    EventRequest, EventResponse, EventType, RedemptionRequest, RedemptionResponse,
};
use patron_protocol::{MemberId, Points, TransactionId};
use serde_json::json;

use super::{Actor, Edge, EdgeError, Idem, Reply, Seal, balance, invalid, require_member};
use crate::domain::limits::DayTotals;
use crate::domain::validate;
use crate::store::facts::{self, NewFact};
use crate::store::members;

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
                        l.redemption(day, points)
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
        let core = self.core.clone();
        let written = self
            .store
            .writer
            .write(move |ctx| {
                // Read in commit order (see `Edge::commit`).
                let now = core.now();
                let expires_at = core.lot_expiry(now);
                core.idempotent(ctx, idem.as_ref(), now, |ctx| {
                    let idb = *member.as_bytes();
                    let row = core
                        .shown_row(ctx.conn, &idb)?
                        .ok_or(EdgeError::MemberNotFound)?;
                    let today = validate::format_date(core.cal.date(now));
                    let ev = &core.cfg.events;
                    let (points, refused) = match req.kind {
                        EventType::CheckIn => {
                            if members::claim(ctx.conn, &idb, "check_in", &today)? {
                                (ev.check_in, None)
                            } else {
                                (0, Some("already checked in today"))
                            }
                        }
                        EventType::Share => {
                            let n = members::count_claims(
                                ctx.conn,
                                &idb,
                                "share",
                                &format!("{today}#"),
                            )?;
                            if n >= i64::from(ev.share_daily_limit) {
                                (0, Some("daily share limit reached"))
                            } else {
                                members::claim(
                                    ctx.conn,
                                    &idb,
                                    "share",
                                    &format!("{today}#{}", n + 1),
                                )?;
                                (ev.share, None)
                            }
                        }
                        EventType::ProfileCompleted => {
                            if row.name_enc.is_none() || row.birthday_enc.is_none() {
                                return Err(EdgeError::Invalid(
                                    "the profile is not complete: name and birthday are needed"
                                        .into(),
                                ));
                            }
                            // Once per member, whichever of a merged member's ids asks.
                            let root = members::alias_set(ctx.conn, &idb)?
                                .first()
                                .copied()
                                .unwrap_or(idb);
                            if members::claim(ctx.conn, &root, "profile_completed", "once")? {
                                (ev.profile_completed, None)
                            } else {
                                (0, Some("profile completion was already rewarded"))
                            }
                        }
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
        self.note_refusal(actor, written).await
    }
}
