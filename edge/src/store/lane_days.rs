//! What each lane did each store day (`lane_days`), against the abuse limits.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::domain::limits::DayTotals;

/// The lane's totals on `day` (zero if it did nothing).
pub fn get(conn: &Connection, lane: i64, day: i64) -> Result<DayTotals, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT earned, redeemed, refund_fen, coupons, registrations, sales FROM lane_days
              WHERE lane = ?1 AND day = ?2",
        )?
        .query_row(params![lane, day], totals)
        .optional()?
        .unwrap_or_default())
}

/// Adds `d` to the lane's totals on `day`.
pub fn add(conn: &Connection, lane: i64, day: i64, d: DayTotals) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO lane_days (lane, day, earned, redeemed, refund_fen, coupons, registrations, sales)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (lane, day) DO UPDATE SET
             earned = earned + excluded.earned, redeemed = redeemed + excluded.redeemed,
             refund_fen = refund_fen + excluded.refund_fen, coupons = coupons + excluded.coupons,
             registrations = registrations + excluded.registrations, sales = sales + excluded.sales",
    )?
    .execute(params![
        lane,
        day,
        d.earned,
        d.redeemed,
        d.refund_fen,
        d.coupons,
        d.registrations,
        d.sales
    ])?;
    Ok(())
}

fn totals(r: &rusqlite::Row<'_>) -> rusqlite::Result<DayTotals> {
    Ok(DayTotals {
        earned: r.get(0)?,
        redeemed: r.get(1)?,
        refund_fen: r.get(2)?,
        coupons: r.get(3)?,
        registrations: r.get(4)?,
        sales: r.get(5)?,
    })
}

/// A lane's day, as the anomaly scan reads it.
#[derive(Debug, Clone)]
pub struct LaneDay {
    /// The lane's row id.
    pub lane: i64,
    /// Its name.
    pub name: String,
    /// What it did.
    pub totals: DayTotals,
}

/// Every lane (a store has tens) with what it did on `day` (zeros if nothing): a lane
/// that only looks members up writes no `lane_days` row.
pub fn lanes_on(conn: &Connection, day: i64) -> Result<Vec<LaneDay>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT coalesce(d.earned, 0), coalesce(d.redeemed, 0), coalesce(d.refund_fen, 0),
                coalesce(d.coupons, 0), coalesce(d.registrations, 0), coalesce(d.sales, 0),
                n.id, n.name
           FROM lanes n LEFT JOIN lane_days d ON d.lane = n.id AND d.day = ?1 ORDER BY n.id",
    )?;
    let rows = stmt.query_map(params![day], |r| {
        Ok(LaneDay {
            totals: totals(r)?,
            lane: r.get(6)?,
            name: r.get(7)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Points the lane earned on each day it has a row for in `from..to` (days it did
/// nothing have no row, and are not usual days).
pub fn earned_between(
    conn: &Connection,
    lane: i64,
    from: i64,
    to: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT earned FROM lane_days WHERE lane = ?1 AND day >= ?2 AND day < ?3",
    )?;
    let rows = stmt.query_map(params![lane, from, to], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Notes that `kind` was raised for the lane's day; false if it already was.
pub fn raise(conn: &Connection, lane: i64, day: i64, kind: &str) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("INSERT OR IGNORE INTO lane_alerts (lane, day, kind) VALUES (?1, ?2, ?3)")?
        .execute(params![lane, day, kind])?;
    Ok(n == 1)
}

/// Anomalies raised on `day`, all lanes.
pub fn raised_on(conn: &Connection, day: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT count(*) FROM lane_alerts WHERE day = ?1")?
        .query_row(params![day], |r| r.get(0))?)
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
