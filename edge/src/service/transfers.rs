//! Points sent from one member to another of the chain. The sender's spend is
//! authorized like a redemption (by the hub, or under this store's lease on their
//! points) and is refused while the hub cannot be reached; the receiver's points are a
//! lot of their own. Both sides are facts of one transaction. Limits: points per
//! transfer and per sender per calendar month (`[member_service]`), counted over every
//! store's transfers this store holds.

use patron_domain::Kind;
use patron_domain::fact::{Auth, TransferRecord};
use patron_protocol::service::{Transfer, TransferPoints};
use patron_protocol::{MemberId, Points, TransactionId};

use super::{Actor, Authority, Core, Edge, EdgeError, Idem, Reply, Seal, balance, invalid};
use crate::domain::clock::Millis;
use crate::domain::limits::{self, DayTotals};
use crate::domain::validate;
use crate::store::facts::{self, NewFact};
use crate::store::members;

impl Edge {
    /// `POST /v1/members/{id}/transfers`.
    pub async fn transfer(
        &self,
        idem: Idem,
        actor: Actor,
        from: MemberId,
        req: TransferPoints,
    ) -> Result<Reply, EdgeError> {
        let points = validate::points_amount(req.points, "points").map_err(invalid)?;
        let to = req.to_member_id;
        let core = self.core.clone();
        let replay = core.is_replay(&idem);
        if !replay {
            // What would refuse the transfer here is checked before the hub holds the
            // sender's points (a hold for a refused transfer keeps them for 10 minutes).
            let c = core.clone();
            let pre = self
                .store
                .readers
                .read(move |conn| {
                    c.transfer_allowed(conn, &from, &to, points, c.now())
                        .map(|_| ())
                })
                .await;
            self.note_refusal(actor, pre).await?;
            if self.hub_authority().is_some() && !self.sync_status.lock().is_ok_and(|s| s.reachable)
            {
                return Err(hub_unreachable());
            }
        }
        let id = TransactionId::new_v7();
        let auth = if replay {
            self.unasked_authority()
        } else {
            self.authorize_redemption(*from.as_bytes(), *id.as_bytes(), points)
                .await?
        };
        let written = self
            .store
            .writer
            .write(move |ctx| {
                let now = core.now();
                core.idempotent(ctx, Some(&idem), now, |ctx| {
                    // Offline, a transfer is refused (a presumed replay that was not one
                    // included): the hub alone knows the sender's points chain-wide.
                    if auth == Authority::Offline {
                        return Err(hub_unreachable());
                    }
                    let available = core.transfer_allowed(ctx.conn, &from, &to, points, now)?;
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
                    // No member code proves the sender is here: the standalone
                    // redemption limit holds, as for a redemption without one.
                    core.within_limits(ctx.conn, actor, now, spent, |l, day| {
                        l.redemption(day, points, false)
                    })?;
                    let (f, t) = (*from.as_bytes(), *to.as_bytes());
                    let record = |auth: Option<Auth>| {
                        serde_json::to_string(&TransferRecord {
                            transfer_id: uuid::Uuid::from_bytes(*id.as_bytes()),
                            from: hex::encode(f),
                            to: hex::encode(t),
                            auth,
                        })
                        .map_err(|e| crate::store::StoreError::Corrupt(e.to_string()))
                    };
                    let sent = NewFact {
                        spend: points,
                        ..NewFact::new(
                            Kind::Transfer,
                            now,
                            Some(f),
                            *id.as_bytes(),
                            record(Some(auth.into()))?,
                        )
                    };
                    let seq = facts::append(ctx, &sent)?;
                    core.record_redemption(ctx, &f, seq, points, auth, now)?;
                    let received = NewFact {
                        earn: points,
                        expires_at: core.lot_expiry(now),
                        ..NewFact::new(
                            Kind::Transfer,
                            now,
                            Some(t),
                            *TransactionId::new_v7().as_bytes(),
                            record(None)?,
                        )
                    };
                    facts::append(ctx, &received)?;
                    let (_, after) = core.load_state(ctx.conn, &f, now)?;
                    Ok((
                        201,
                        Transfer {
                            transfer_id: uuid::Uuid::from_bytes(*id.as_bytes()).to_string(),
                            points: Points(points),
                            balance_after: balance(&after),
                        },
                        Seal::Store,
                    ))
                })
            })
            .await;
        self.settle_lease(from.as_bytes(), auth, points, &written);
        self.note_refusal(actor, written).await
    }
}

impl Core {
    /// Whether `from` may send `points` to `to` at `now`: two members held here, not one
    /// person, within the limits. The sender's balance here.
    fn transfer_allowed(
        &self,
        conn: &rusqlite::Connection,
        from: &MemberId,
        to: &MemberId,
        points: i64,
        now: Millis,
    ) -> Result<i64, EdgeError> {
        let (f, t) = (from.as_bytes(), to.as_bytes());
        if self.shown_row(conn, f)?.is_none() {
            return Err(EdgeError::MemberNotFound);
        }
        if self.shown_row(conn, t)?.is_none() {
            return Err(EdgeError::NotFound(
                "no receiving member with this id here: look them up by phone first".into(),
            ));
        }
        let senders = members::alias_set(conn, f)?;
        if senders.contains(t) {
            return Err(invalid("a member cannot send points to themselves".into()));
        }
        let month = self.start_of_month(now);
        let mut used = 0;
        for id in &senders {
            used += facts::transferred_since(conn, id, month)?;
        }
        let ms = &self.cfg.member_service;
        limits::transfer(
            ms.transfer_max_points,
            ms.transfer_monthly_points,
            used,
            points,
        )
        .map_err(EdgeError::LimitExceeded)?;
        let (_, state) = self.load_state(conn, f, now)?;
        Ok(state.points.balance())
    }

    /// The first instant of the local calendar month of `now`.
    fn start_of_month(&self, now: Millis) -> Millis {
        let d = self.cal.date(now);
        let first = d.replace_day(1).unwrap_or(d);
        first
            .previous_day()
            .map_or(0, |p| self.cal.end_of_day(p).saturating_add(1))
    }
}

fn hub_unreachable() -> EdgeError {
    EdgeError::HubUnreachable(
        "points transfers need the hub, which cannot be reached now: try again later".into(),
    )
}
