//! A member's ledger for the front desk: purchases, refunds, every points movement
//! with a running total, coupons given, and lots that expired, newest first, a page at
//! a time. Derived from the member's facts (every id merged into them) by
//! `patron_domain::points::statement`, so the running total ends where the member card's
//! balance and pending points do.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use patron_domain::points::{Movement, canonical_order, statement};
use patron_domain::{Detail, Kind};
use patron_protocol::service::{LedgerEntry, MAX_LEDGER_PAGE, MemberLedger};
use patron_protocol::{Fen, MemberId, Points};

use super::{Edge, EdgeError, invalid};
use crate::store::facts::{self, StatementFact};
use crate::store::members;

/// Entries a page holds unless the caller says otherwise.
pub const DEFAULT_PAGE: usize = 50;

/// Where a ledger line sorts: time, then the fact's origin and sequence (an expiry,
/// dated at the first instant its lots were gone, sorts before facts of that instant,
/// as it was applied before them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    at: i64,
    origin: String,
    seq: i64,
}

impl Position {
    fn cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}_{}_{}", self.at, self.seq, self.origin))
    }

    fn parse(cursor: &str) -> Result<Position, EdgeError> {
        let bad = || invalid("before must be a next_before value of an earlier page".into());
        let text = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let text = String::from_utf8(text).map_err(|_| bad())?;
        let mut parts = text.splitn(3, '_');
        let (Some(at), Some(seq), Some(origin)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        Ok(Position {
            at: at.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            origin: origin.to_string(),
        })
    }
}

/// What a page asks for.
#[derive(Debug, Clone, Default)]
pub struct LedgerQuery {
    /// Entries on the page (1–[`MAX_LEDGER_PAGE`]; default [`DEFAULT_PAGE`]).
    pub limit: Option<usize>,
    /// Only entries before this cursor (a `next_before` of the page before).
    pub before: Option<String>,
}

impl Edge {
    /// `GET /v1/members/{id}/ledger`.
    pub async fn member_ledger(
        &self,
        id: MemberId,
        q: LedgerQuery,
    ) -> Result<MemberLedger, EdgeError> {
        let limit = q.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_LEDGER_PAGE).contains(&limit) {
            return Err(invalid(format!("limit must be 1-{MAX_LEDGER_PAGE}")));
        }
        let before = q.before.as_deref().map(Position::parse).transpose()?;
        let core = self.core.clone();
        self.store
            .readers
            .read(move |conn| {
                let now = core.now();
                let m = id.as_bytes();
                if core.shown_row(conn, m)?.is_none() {
                    return Err(EdgeError::MemberNotFound);
                }
                let mut rows = Vec::new();
                for id in members::alias_set(conn, m)? {
                    rows.extend(facts::for_statement(conn, &id)?);
                }
                let (_, state) = core.load_state(conn, m, now)?;
                // Facts that move no points (a purchase without any) still get a line.
                // The rows are put in the statement's order first (positions are
                // unique), so a line's movement index is its row's.
                rows.sort_by(|a, b| canonical_order(&a.fact.movement(), &b.fact.movement()));
                let mut movements: Vec<Movement> = rows.iter().map(|r| r.fact.movement()).collect();
                let lines = statement(&mut movements, now);
                let mut entries = Vec::with_capacity(limit);
                let mut next_before = None;
                for line in lines.iter().rev() {
                    let fact = line.movement.and_then(|i| rows.get(i));
                    let pos = match fact {
                        Some(f) => Position {
                            at: f.fact.at,
                            origin: f.fact.origin.to_string(),
                            seq: f.fact.seq,
                        },
                        None => Position {
                            at: line.at,
                            origin: String::new(),
                            seq: 0,
                        },
                    };
                    if before.as_ref().is_some_and(|b| pos >= *b) {
                        continue;
                    }
                    if entries.len() == limit {
                        next_before = Some(
                            entries
                                .last()
                                .map(|(p, _): &(Position, LedgerEntry)| p.cursor())
                                .unwrap_or_default(),
                        );
                        break;
                    }
                    let mut e = LedgerEntry {
                        at: core.cal.rfc3339(line.at),
                        kind: "expired".into(),
                        store: String::new(),
                        points: Points(line.change),
                        balance_after: Points(line.held),
                        receipt_id: None,
                        amount: None,
                        coupon: None,
                        note: None,
                    };
                    if let Some(f) = fact {
                        describe(&mut e, f);
                    }
                    entries.push((pos, e));
                }
                Ok(MemberLedger {
                    member_id: id,
                    balance: Points(state.points.balance()),
                    pending: Points(state.points.pending()),
                    entries: entries.into_iter().map(|(_, e)| e).collect(),
                    next_before,
                })
            })
            .await
    }
}

/// Fills in what the fact's details say: the store, the receipt and money, coupons, a
/// short note. Details that no longer parse leave the line as it is.
fn describe(e: &mut LedgerEntry, f: &StatementFact) {
    e.kind = f.kind.clone();
    e.store = f
        .fact
        .origin
        .split_once('/')
        .map_or(&*f.fact.origin, |(node, _)| node)
        .to_string();
    let Some(detail) = Kind::parse(&f.kind).and_then(|k| Detail::parse_held(k, &f.body).ok())
    else {
        return;
    };
    match detail {
        Detail::Purchase(s) => {
            e.receipt_id = Some(s.receipt_id);
            e.amount = Some(Fen(s.total));
            e.coupon = (!s.coupons_used.is_empty()).then(|| s.coupons_used.join(","));
        }
        Detail::Refund(r) => {
            e.receipt_id = Some(r.receipt_id);
            e.amount = Some(Fen(-r.amount));
        }
        Detail::Redemption(r) => e.note = Some(r.reason),
        Detail::Event(ev) => e.note = Some(ev.kind),
        Detail::CouponIssued(c) => {
            e.coupon = Some(c.code);
            e.note = Some(c.label);
        }
        Detail::UpgradeGift(g) => e.note = Some(g.tier),
        Detail::GiftWithdrawn(g) => e.note = Some(g.tier),
        Detail::ReferralReward(r) => e.note = Some(r.event),
        Detail::Adjustment(a) => e.note = Some(a.reason),
        // The other member of a transfer: the receiver on the sender's side.
        Detail::Transfer(t) => {
            let other = if f.fact.spend > 0 { t.to } else { t.from };
            e.note = hex::decode(other)
                .ok()
                .and_then(|b| uuid::Uuid::from_slice(&b).ok())
                .map(|u| format!("{}:{u}", if f.fact.spend > 0 { "to" } else { "from" }));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_junk_is_a_clear_error() {
        let p = Position {
            at: 1_796_523_490_000,
            origin: "S_01/0190a000-0000-7000-8000-000000000001".into(),
            seq: 42,
        };
        assert_eq!(Position::parse(&p.cursor()).ok(), Some(p));
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("12_x_S001"),
            &URL_SAFE_NO_PAD.encode("12"),
        ] {
            assert!(
                matches!(Position::parse(bad), Err(EdgeError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
