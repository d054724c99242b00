//! The abuse limits applied in the transaction of each operation they bound, and the
//! alert when one refuses.

use rusqlite::Connection;

use super::{Core, Edge, EdgeError, Lane, Role};
use crate::domain::clock::Millis;
use crate::domain::limits::{DayTotals, Exceeded, Limits};
use crate::store::lane_days::{self, Alert};

/// Who does an operation, as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    /// The lane's row id.
    pub lane: i64,
    /// Its role: an `admin` lane (the store's manager) is counted but not limited.
    pub role: Role,
}

impl Actor {
    /// The store's manager on lane 1 (tests): counted, not limited.
    #[cfg(test)]
    pub(crate) fn manager() -> Actor {
        Actor {
            lane: 1,
            role: Role::Admin,
        }
    }
}

impl Lane {
    /// The lane as the limits see it.
    pub fn actor(&self) -> Actor {
        Actor {
            lane: self.id,
            role: self.role,
        }
    }
}

/// The alert in the log, with the limit's figures (no member, no personal data).
fn alert(actor: Actor, e: &Exceeded, what: &str) {
    tracing::warn!(
        lane = actor.lane,
        limit = e.limit,
        allowed = e.allowed,
        used = e.used,
        asked = e.asked,
        "alert: {what}"
    );
}

impl Core {
    /// The store-local day of `at`, as `lane_days` keys it.
    pub(super) fn store_day(&self, at: Millis) -> i64 {
        i64::from(self.cal.date(at).to_julian_day())
    }

    /// The lane's store day at `at` (never before its last) and what it did on it.
    fn lane_day(
        &self,
        conn: &Connection,
        actor: Actor,
        at: Millis,
    ) -> Result<(i64, DayTotals), EdgeError> {
        let day = self
            .store_day(at)
            .max(lane_days::last_day(conn, actor.lane)?.unwrap_or(i64::MIN));
        Ok((day, lane_days::get(conn, actor.lane, day)?))
    }

    /// [`Core::within_limits`] without counting anything: whether `check` would refuse
    /// `actor` now. For refusing before the hub is asked to hold points (a hold for an
    /// operation refused here would keep the member's points from the chain until it
    /// lapses); the operation's own transaction checks again.
    pub(super) fn limits_allow(
        &self,
        conn: &Connection,
        actor: Actor,
        at: Millis,
        check: impl FnOnce(&Limits, DayTotals) -> Result<(), Exceeded>,
    ) -> Result<(), EdgeError> {
        let (_, before) = self.lane_day(conn, actor, at)?;
        match check(&self.cfg.limits, before) {
            Err(e) if actor.role != Role::Admin => Err(EdgeError::LimitExceeded(e)),
            _ => Ok(()),
        }
    }

    /// Checks `check` against what `actor` did today, then counts `add`; in the
    /// operation's transaction, so the limit holds under concurrent lanes and restarts.
    /// "Today" never goes back for a lane: a clock set back does not reopen a day. The
    /// store's manager is not refused, but what it does beyond a limit is counted and
    /// logged.
    pub(super) fn within_limits(
        &self,
        conn: &Connection,
        actor: Actor,
        at: Millis,
        add: DayTotals,
        check: impl FnOnce(&Limits, DayTotals) -> Result<(), Exceeded>,
    ) -> Result<(), EdgeError> {
        let (day, before) = self.lane_day(conn, actor, at)?;
        if let Err(e) = check(&self.cfg.limits, before) {
            if actor.role != Role::Admin {
                return Err(EdgeError::LimitExceeded(e));
            }
            alert(actor, &e, "the store's manager went beyond an abuse limit");
            lane_days::count(conn, actor.lane, day, Alert::Overridden)?;
        }
        Ok(lane_days::add(conn, actor.lane, day, add)?)
    }
}

impl Edge {
    /// Passes `r` on; when a limit refused it, counts the refusal for the lane (what
    /// `/healthz` reports) and raises the alert in the log.
    pub(super) async fn note_refusal<T>(
        &self,
        actor: Actor,
        r: Result<T, EdgeError>,
    ) -> Result<T, EdgeError> {
        if let Err(EdgeError::LimitExceeded(e)) = &r {
            alert(actor, e, "an abuse limit refused an operation");
            let core = self.core.clone();
            let counted = self
                .store
                .writer
                .write(move |ctx| {
                    let day = core.store_day(core.now());
                    lane_days::count(ctx.conn, actor.lane, day, Alert::Refused)
                        .map_err(EdgeError::from)
                })
                .await;
            if let Err(err) = counted {
                tracing::error!(error = %err, "counting a refused operation");
            }
        }
        r
    }

    /// Operations the limits refused today, those the manager did beyond one, and the
    /// anomalies raised, all lanes; -1 each if they cannot be read (health must answer
    /// regardless).
    pub(super) async fn alerts_today(&self) -> (i64, i64, i64) {
        let core = self.core.clone();
        let read = self
            .store
            .readers
            .read(move |conn| {
                let day = core.store_day(core.now());
                let (refused, overridden) = lane_days::alerts_on(conn, day)?;
                Ok::<_, EdgeError>((refused, overridden, lane_days::raised_on(conn, day)?))
            })
            .await;
        read.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading today's alerts");
            (-1, -1, -1)
        })
    }
}
