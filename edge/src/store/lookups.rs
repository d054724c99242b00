//! The record of member lookups (`member_lookups`), for the privacy audit.

use rusqlite::{Connection, params};

use super::StoreError;

/// One recorded lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupRow {
    /// When (ms since the epoch).
    pub at: i64,
    /// The lane's name.
    pub lane: String,
    /// The member found (16 bytes), or None if the lookup found nobody.
    pub member: Option<Vec<u8>>,
    /// `phone`, `id`, `register` (a registration, or one refused as the phone's
    /// member exists) or `update` (a profile change answered with the member).
    pub via: String,
    /// `sale` or `service`.
    pub purpose: String,
    /// `masked` or `full`.
    pub shown: String,
}

/// Records a lookup.
pub fn record(
    conn: &Connection,
    at: i64,
    lane: i64,
    member: Option<&[u8; 16]>,
    via: &str,
    purpose: &str,
    shown: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO member_lookups (at, lane, member, via, purpose, shown)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        at,
        lane,
        member.map(|m| &m[..]),
        via,
        purpose,
        shown
    ])?;
    Ok(())
}

/// Lookups of members (by phone or id) `lane` made from `since` on.
pub fn count_since(conn: &Connection, lane: i64, since: i64) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM member_lookups
              WHERE lane = ?1 AND at >= ?2 AND via IN ('phone', 'id')",
        )?
        .query_row(params![lane, since], |r| r.get(0))?)
}

/// The newest `limit` lookups, of `member` only when given, newest first.
pub fn recent(
    conn: &Connection,
    member: Option<&[u8; 16]>,
    limit: u32,
) -> Result<Vec<LookupRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.at, n.name, l.member, l.via, l.purpose, l.shown
           FROM member_lookups l JOIN lanes n ON n.id = l.lane
          WHERE ?1 IS NULL OR l.member = ?1
          ORDER BY l.id DESC LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![member.map(|m| &m[..]), limit], |r| {
            Ok(LookupRow {
                at: r.get(0)?,
                lane: r.get(1)?,
                member: r.get(2)?,
                via: r.get(3)?,
                purpose: r.get(4)?,
                shown: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
