//! Manual points adjustments at the front desk under the two-person rule
//! (`patron_domain::adjustment`): small ones apply at once, larger ones wait until a
//! manager other than the maker approves them. Each applied adjustment is an
//! `adjustment` fact: points added are a lot of their own, points taken are spent
//! FIFO and never more than the member's balance here.

use patron_domain::Kind;
use patron_domain::adjustment;
use patron_protocol::service::{AdjustPoints, Adjustment, PendingAdjustments};
use patron_protocol::{MemberId, Points, TransactionId};

use super::{Core, Edge, EdgeError, Idem, Lane, Reply, Role, Seal, balance, invalid};
use crate::domain::clock::Millis;
use crate::domain::limits::DayTotals;
use crate::store::WriteCtx;
use crate::store::adjustments::{self, AdjustmentRow};
use crate::store::facts::{self, NewFact};

/// Most pending adjustments one list shows.
const MAX_LISTED: usize = 200;

impl Edge {
    /// `POST /v1/members/{id}/adjustments`: 201 applied, or 202 waiting for a manager.
    pub async fn adjust(
        &self,
        idem: Idem,
        lane: &Lane,
        member: MemberId,
        req: AdjustPoints,
    ) -> Result<Reply, EdgeError> {
        adjustment::check(req.points, &req.reason, req.reference.as_deref()).map_err(invalid)?;
        let core = self.core.clone();
        let actor = lane.actor();
        let maker = (lane.id, lane.name.clone());
        let written = self
            .store
            .writer
            .write(move |ctx| {
                let now = core.now();
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    let idb = *member.as_bytes();
                    if core.shown_row(ctx.conn, &idb)?.is_none() {
                        return Err(EdgeError::MemberNotFound);
                    }
                    let mut row = AdjustmentRow {
                        id: *TransactionId::new_v7().as_bytes(),
                        member: idb,
                        points: req.points,
                        reason: req.reason.clone(),
                        reference: req.reference.clone(),
                        maker_lane: maker.0,
                        maker_name: maker.1.clone(),
                        status: "pending".into(),
                        checker_lane: None,
                        checker_name: None,
                        created_at: now,
                        decided_at: None,
                    };
                    // Decided in the transaction: the maker's earlier adjustments today
                    // count (concurrent requests see each other).
                    let today = adjustments::unapproved_since(
                        ctx.conn,
                        maker.0,
                        core.cal.start_of_day(now),
                    )?;
                    let waits = adjustment::needs_approval(
                        req.points,
                        core.cfg.member_service.approve_adjustments_above,
                        today,
                    );
                    let mut after = None;
                    if !waits {
                        after = Some(core.apply_adjustment(ctx, &row, None, actor, now)?);
                        row.status = "applied".into();
                        row.decided_at = Some(now);
                    }
                    adjustments::insert(ctx.conn, &row)?;
                    let status = if waits { 202 } else { 201 };
                    Ok((status, core.adjustment_view(&row, after), Seal::Store))
                })
            })
            .await;
        self.note_refusal(actor, written).await
    }

    /// `POST /v1/adjustments/{id}/approve` (`approve`) or `/reject`: a manager other
    /// than the maker decides a pending adjustment. Deciding it again the same way, by
    /// the same manager, answers as the first time did.
    pub async fn decide_adjustment(
        &self,
        lane: &Lane,
        id: TransactionId,
        approve: bool,
    ) -> Result<Adjustment, EdgeError> {
        let core = self.core.clone();
        let actor = lane.actor();
        let checker = (lane.id, lane.name.clone(), lane.role == Role::Admin);
        let decided = self
            .store
            .writer
            .write(move |ctx| {
                let now = core.now();
                let row = adjustments::get(ctx.conn, id.as_bytes())?
                    .ok_or_else(|| EdgeError::NotFound("no adjustment with this id".into()))?;
                // The member may have been erased since it was asked for.
                if core.shown_row(ctx.conn, &row.member)?.is_none() {
                    return Err(EdgeError::MemberNotFound);
                }
                adjustment::may_decide(row.maker_lane, checker.0, checker.2)
                    .map_err(|e| EdgeError::Forbidden(e.into()))?;
                let wanted = if approve { "applied" } else { "rejected" };
                if row.status != "pending" {
                    if row.status == wanted && row.checker_lane == Some(checker.0) {
                        return Ok(core.adjustment_view(&row, None));
                    }
                    return Err(EdgeError::Conflict(format!(
                        "this adjustment was {} already",
                        row.status
                    )));
                }
                let after = if approve {
                    Some(core.apply_adjustment(ctx, &row, Some(&checker.1), actor, now)?)
                } else {
                    None
                };
                if !adjustments::decide(ctx.conn, &row.id, wanted, (checker.0, &checker.1), now)? {
                    return Err(EdgeError::Conflict(
                        "this adjustment was decided already".into(),
                    ));
                }
                let row = AdjustmentRow {
                    status: wanted.into(),
                    checker_lane: Some(checker.0),
                    checker_name: Some(checker.1.clone()),
                    decided_at: Some(now),
                    ..row
                };
                Ok(core.adjustment_view(&row, after))
            })
            .await;
        self.note_refusal(actor, decided).await
    }

    /// `GET /v1/adjustments`: what waits for a manager, oldest first (managers only).
    pub async fn pending_adjustments(&self, lane: &Lane) -> Result<PendingAdjustments, EdgeError> {
        if lane.role != Role::Admin {
            return Err(EdgeError::Forbidden(
                "only a manager sees the adjustments waiting for approval".into(),
            ));
        }
        let core = self.core.clone();
        self.store
            .readers
            .read(move |conn| {
                Ok(PendingAdjustments {
                    adjustments: adjustments::pending(conn, MAX_LISTED)?
                        .iter()
                        .map(|r| core.adjustment_view(r, None))
                        .collect(),
                })
            })
            .await
    }
}

impl Core {
    /// Writes the adjustment's fact in `ctx`; the member's balance after. Points taken
    /// are at most the member's balance here; points added count against the lane's
    /// daily earning limit like any other credit.
    fn apply_adjustment(
        &self,
        ctx: &mut WriteCtx<'_>,
        row: &AdjustmentRow,
        approved_by: Option<&str>,
        actor: super::Actor,
        now: Millis,
    ) -> Result<Points, EdgeError> {
        let (_, state) = self.load_state(ctx.conn, &row.member, now)?;
        let points = row.points;
        if points < 0 && -points > state.points.balance() {
            return Err(EdgeError::InsufficientPoints {
                available: state.points.balance(),
                requested: -points,
            });
        }
        if points > 0 {
            let earned = DayTotals {
                earned: points,
                ..DayTotals::default()
            };
            self.within_limits(ctx.conn, actor, now, earned, |l, day| l.event(day, points))?;
        }
        let body = serde_json::to_string(&patron_domain::fact::AdjustmentRecord {
            reason: row.reason.clone(),
            reference: row.reference.clone(),
            made_by: row.maker_name.clone(),
            approved_by: approved_by.map(str::to_string),
        })
        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))?;
        let base = NewFact::new(Kind::Adjustment, now, Some(row.member), row.id, body);
        let fact = if points > 0 {
            NewFact {
                earn: points,
                expires_at: self.lot_expiry(now),
                ..base
            }
        } else {
            NewFact {
                spend: -points,
                ..base
            }
        };
        facts::append(ctx, &fact)?;
        let (_, after) = self.load_state(ctx.conn, &row.member, now)?;
        Ok(balance(&after))
    }

    fn adjustment_view(&self, r: &AdjustmentRow, balance_after: Option<Points>) -> Adjustment {
        Adjustment {
            adjustment_id: uuid::Uuid::from_bytes(r.id).to_string(),
            member_id: MemberId::from_bytes(r.member),
            points: Points(r.points),
            reason: r.reason.clone(),
            reference: r.reference.clone(),
            status: r.status.clone(),
            requested_by: r.maker_name.clone(),
            decided_by: r.checker_name.clone(),
            created_at: self.cal.rfc3339(r.created_at),
            balance_after,
        }
    }
}
