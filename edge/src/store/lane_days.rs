//! What each lane did each store day (`lane_days`), against the abuse limits.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::domain::limits::DayTotals;

/// The lane's totals on `day` (zero if it did nothing).
pub fn get(conn: &Connection, lane: i64, day: i64) -> Result<DayTotals, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT earned, redeemed, refund_fen, coupons, registrations FROM lane_days
              WHERE lane = ?1 AND day = ?2",
        )?
        .query_row(params![lane, day], |r| {
            Ok(DayTotals {
                earned: r.get(0)?,
                redeemed: r.get(1)?,
                refund_fen: r.get(2)?,
                coupons: r.get(3)?,
                registrations: r.get(4)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

/// Adds `d` to the lane's totals on `day`.
pub fn add(conn: &Connection, lane: i64, day: i64, d: DayTotals) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO lane_days (lane, day, earned, redeemed, refund_fen, coupons, registrations)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (lane, day) DO UPDATE SET
             earned = earned + excluded.earned, redeemed = redeemed + excluded.redeemed,
             refund_fen = refund_fen + excluded.refund_fen, coupons = coupons + excluded.coupons,
             registrations = registrations + excluded.registrations",
    )?
    .execute(params![
        lane,
        day,
        d.earned,
        d.redeemed,
        d.refund_fen,
        d.coupons,
        d.registrations
    ])?;
    Ok(())
}

/// What a lane's day counts besides its totals.
#[derive(Debug, Clone, Copy)]
pub enum Alert {
    /// An operation a limit turned away.
    Refused,
    /// An operation the store's manager did beyond a limit.
    Overridden,
}

/// Counts one `alert` for the lane's day.
pub fn count(conn: &Connection, lane: i64, day: i64, alert: Alert) -> Result<(), StoreError> {
    let sql = match alert {
        Alert::Refused => {
            "INSERT INTO lane_days (lane, day, refused) VALUES (?1, ?2, 1)
             ON CONFLICT (lane, day) DO UPDATE SET refused = refused + 1"
        }
        Alert::Overridden => {
            "INSERT INTO lane_days (lane, day, overridden) VALUES (?1, ?2, 1)
             ON CONFLICT (lane, day) DO UPDATE SET overridden = overridden + 1"
        }
    };
    conn.prepare_cached(sql)?.execute(params![lane, day])?;
    Ok(())
}

/// The latest store day the lane has a row for.
pub fn last_day(conn: &Connection, lane: i64) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT max(day) FROM lane_days WHERE lane = ?1")?
        .query_row(params![lane], |r| r.get(0))?)
}

/// Operations the limits turned away, and those the manager did beyond one, on `day`,
/// all lanes.
pub fn alerts_on(conn: &Connection, day: i64) -> Result<(i64, i64), StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT coalesce(sum(refused), 0), coalesce(sum(overridden), 0)
               FROM lane_days WHERE day = ?1",
        )?
        .query_row(params![day], |r| Ok((r.get(0)?, r.get(1)?)))?)
}
