//! The points ledger as lots.
//!
//! A member's balance is *derived*: a pure function of the member's points movements
//! and the evaluation time, so every replica holding the same movements shows the same
//! number whatever order they arrived in. Movements are applied in `(at, origin, seq)`
//! order:
//!
//! - an **earn** credits a lot that expires at its `expires_at` (inclusive); if the
//!   member owes points (a debt), the earn repays the debt first;
//! - a **spend** consumes the lots that expire first (FIFO by expiry);
//! - a **reversal** takes back points from one named lot (a refund of the sale that
//!   earned them); whatever that lot no longer holds comes from the other lots, FIFO,
//!   and whatever the balance cannot cover becomes a debt;
//! - a lot whose `expires_at` is before the movement's (or the evaluation's) time is
//!   gone: nobody needs to write an "expire" fact.

use std::cmp::Ordering;
use std::sync::Arc;

/// Unix time in milliseconds.
pub type Millis = i64;

/// Identifies the lot an earn created: the id of the transaction that earned it.
pub type LotKey = [u8; 16];

/// One points movement of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// When it happened (ms).
    pub at: Millis,
    /// Origin of the fact, for a total order among facts at the same millisecond.
    pub origin: Arc<str>,
    /// Sequence of the fact within its origin.
    pub seq: i64,
    /// The transaction; an earn's lot is keyed by it.
    pub txn: LotKey,
    /// Points credited as a new lot.
    pub earn: i64,
    /// Expiry of that lot.
    pub expires_at: Millis,
    /// When that lot becomes redeemable (the end of a return window; ≤ `at` if at once).
    pub available_at: Millis,
    /// Points consumed FIFO.
    pub spend: i64,
    /// Points taken back from `reverse_lot`.
    pub reverse: i64,
    /// The lot a reversal targets.
    pub reverse_lot: Option<LotKey>,
}

/// A lot with points left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot {
    /// The earning transaction.
    pub key: LotKey,
    /// Points left in it.
    pub remaining: i64,
    /// Last instant it can be used.
    pub expires_at: Millis,
    /// First instant it can be spent.
    pub available_at: Millis,
}

/// The derived state of a member's points at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PointsState {
    /// Unexpired lots with points left, soonest expiry first.
    pub lots: Vec<Lot>,
    /// Points owed (reversals or overdraws the balance could not cover).
    pub debt: i64,
    /// Points that expired unused, in total.
    pub expired: i64,
    /// What each expired lot still held when it expired: a later reversal of that lot
    /// (a refund of the sale that earned it) takes from here first, so points lost to
    /// expiry are not taken from the member a second time.
    pub expired_lots: Vec<(LotKey, i64)>,
    /// The evaluation time: lots not yet available then are pending.
    pub now: Millis,
}

impl PointsState {
    /// Available balance: redeemable lots minus debt (negative while a debt exceeds them).
    pub fn balance(&self) -> i64 {
        self.lots
            .iter()
            .filter(|l| l.available_at <= self.now)
            .map(|l| l.remaining)
            .sum::<i64>()
            - self.debt
    }

    /// Points earned but not yet redeemable.
    pub fn pending(&self) -> i64 {
        self.lots
            .iter()
            .filter(|l| l.available_at > self.now)
            .map(|l| l.remaining)
            .sum()
    }

    /// Lots expiring at or before `until`, summed per expiry instant.
    pub fn expiring_by(&self, until: Millis) -> Vec<(Millis, i64)> {
        let mut out: Vec<(Millis, i64)> = Vec::new();
        for lot in self.lots.iter().filter(|l| l.expires_at <= until) {
            match out.last_mut() {
                Some((at, n)) if *at == lot.expires_at => *n += lot.remaining,
                _ => out.push((lot.expires_at, lot.remaining)),
            }
        }
        out
    }

    /// Applies `m`, the next movement in canonical order (lots expired by its time go
    /// first); returns the points of its spend that the balance could not cover (now
    /// a debt).
    pub fn apply(&mut self, m: &Movement) -> i64 {
        self.expire(m.at);
        if m.reverse > 0 {
            self.reverse(m.reverse_lot, m.reverse, m.at);
        }
        let mut uncovered = 0;
        if m.spend > 0 {
            uncovered = self.consume(m.spend, m.at);
            self.debt += uncovered;
        }
        if m.earn > 0 {
            self.credit(m.txn, m.earn, m.expires_at, m.available_at);
        }
        uncovered
    }

    /// The state as read at `now`: lots expired by then are gone.
    pub fn expire_at(&mut self, now: Millis) {
        self.expire(now);
        self.now = now;
    }

    fn expire(&mut self, now: Millis) {
        for l in self.lots.iter().filter(|l| l.expires_at < now) {
            self.expired += l.remaining;
            self.expired_lots.push((l.key, l.remaining));
        }
        self.lots.retain(|l| l.expires_at >= now);
    }

    /// Consumes `n` points FIFO from the lots available at `at`; returns what they could
    /// not cover.
    fn consume(&mut self, mut n: i64, at: Millis) -> i64 {
        for lot in self.lots.iter_mut().filter(|l| l.available_at <= at) {
            if n == 0 {
                break;
            }
            let take = lot.remaining.min(n);
            lot.remaining -= take;
            n -= take;
        }
        self.lots.retain(|l| l.remaining > 0);
        n
    }

    fn credit(&mut self, key: LotKey, mut n: i64, expires_at: Millis, available_at: Millis) {
        let repay = self.debt.min(n);
        self.debt -= repay;
        n -= repay;
        if n > 0 {
            // Keep lots ordered by expiry; equal expiries keep arrival order.
            let pos = self.lots.partition_point(|l| l.expires_at <= expires_at);
            self.lots.insert(
                pos,
                Lot {
                    key,
                    remaining: n,
                    expires_at,
                    available_at,
                },
            );
        }
    }

    fn reverse(&mut self, lot: Option<LotKey>, n: i64, at: Millis) {
        let mut left = n;
        if let Some(key) = lot {
            if let Some(l) = self.lots.iter_mut().find(|l| l.key == key) {
                let take = l.remaining.min(left);
                l.remaining -= take;
                left -= take;
            }
            for (_, rem) in self.expired_lots.iter_mut().filter(|(k, _)| *k == key) {
                let take = (*rem).min(left);
                *rem -= take;
                self.expired -= take;
                left -= take;
            }
            self.expired_lots.retain(|(_, rem)| *rem > 0);
        }
        self.lots.retain(|l| l.remaining > 0);
        let uncovered = self.consume(left, at);
        self.debt += uncovered;
    }
}

/// The canonical order of movements: time, then origin, then sequence.
pub fn canonical_order(a: &Movement, b: &Movement) -> Ordering {
    (a.at, &a.origin, a.seq).cmp(&(b.at, &b.origin, b.seq))
}

/// Derives the points state at `now` from a member's movements, in any order.
///
/// Movements dated after `now` (a clock ahead elsewhere) still count: a fact that
/// exists is never hidden; only expiry is judged at `now`.
pub fn derive(movements: &mut [Movement], now: Millis) -> PointsState {
    derive_traced(movements, now, |_, _| {})
}

/// [`derive`], calling `overdrew(spend, points)` for every spend the balance could not
/// fully cover (the uncovered points became a debt).
pub fn derive_traced(
    movements: &mut [Movement],
    now: Millis,
    mut overdrew: impl FnMut(&Movement, i64),
) -> PointsState {
    movements.sort_by(canonical_order);
    let mut s = PointsState::default();
    for m in movements.iter() {
        let uncovered = s.apply(m);
        if uncovered > 0 {
            overdrew(m, uncovered);
        }
    }
    s.expire_at(now);
    s
}

/// One line of a member's points statement: a movement, or lots that expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLine {
    /// When: the movement's time, or the first instant the expired lots were gone.
    pub at: Millis,
    /// The movement (its index in the movements as sorted), or `None` for an expiry.
    pub movement: Option<usize>,
    /// How much the points held changed.
    pub change: i64,
    /// The points held after it ([`PointsState::held`]).
    pub held: i64,
}

impl PointsState {
    /// Every point the member holds, redeemable or pending, less debt: what a
    /// statement's running balance shows (the balance plus the pending points).
    pub fn held(&self) -> i64 {
        self.lots.iter().map(|l| l.remaining).sum::<i64>() - self.debt
    }

    /// Expires, one instant at a time, the lots gone by `until`; a line for each.
    fn expire_lines(&mut self, until: Millis, out: &mut Vec<StatementLine>) {
        while let Some(gone) = self
            .lots
            .iter()
            .map(|l| l.expires_at)
            .filter(|e| *e < until)
            .min()
        {
            let before = self.held();
            self.expire(gone + 1);
            out.push(StatementLine {
                at: gone + 1,
                movement: None,
                change: self.held() - before,
                held: self.held(),
            });
        }
    }
}

/// A member's points statement at `now`: each movement in canonical order (sorting
/// `movements`) with the change it made to the points held and the running total,
/// and a line wherever lots expired in between. The last line's total is what
/// [`derive`] holds at `now` ([`PointsState::held`]).
pub fn statement(movements: &mut [Movement], now: Millis) -> Vec<StatementLine> {
    movements.sort_by(canonical_order);
    let mut s = PointsState::default();
    let mut out = Vec::with_capacity(movements.len());
    for (i, m) in movements.iter().enumerate() {
        s.expire_lines(m.at, &mut out);
        let before = s.held();
        s.apply(m);
        out.push(StatementLine {
            at: m.at,
            movement: Some(i),
            change: s.held() - before,
            held: s.held(),
        });
    }
    s.expire_lines(now, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mv(at: i64, seq: i64, earn: i64, expires_at: i64, spend: i64) -> Movement {
        Movement {
            at,
            origin: "S001".into(),
            seq,
            txn: [seq as u8; 16],
            earn,
            expires_at,
            available_at: 0,
            spend,
            reverse: 0,
            reverse_lot: None,
        }
    }

    #[test]
    fn a_statement_shows_each_movement_and_each_expiry_with_a_running_total() {
        let mut m = vec![
            mv(0, 1, 100, 1_000, 0),
            mv(10, 2, 50, 500, 0),
            mv(600, 3, 0, 0, 70),
            mv(700, 4, 0, 0, 200),
        ];
        let lines = statement(&mut m, 2_000);
        let got: Vec<_> = lines
            .iter()
            .map(|l| (l.at, l.movement, l.change, l.held))
            .collect();
        assert_eq!(
            got,
            [
                (0, Some(0), 100, 100),
                (10, Some(1), 50, 150),
                // The 50 expiring at 500 are gone from 501 on.
                (501, None, -50, 100),
                (600, Some(2), -70, 30),
                // 200 spent from 30: the rest is a debt.
                (700, Some(3), -200, -170),
            ]
        );
    }

    #[test]
    fn spending_consumes_the_soonest_expiring_lot_first() {
        let mut m = vec![
            mv(0, 1, 100, 1_000, 0),
            mv(10, 2, 50, 500, 0),
            mv(20, 3, 0, 0, 70),
        ];
        let s = derive(&mut m, 30);
        assert_eq!(s.balance(), 80);
        // The lot expiring at 500 was emptied first, then 20 from the lot expiring at 1000.
        assert_eq!(
            s.lots,
            vec![Lot {
                key: [1; 16],
                remaining: 80,
                expires_at: 1_000,
                available_at: 0,
            }]
        );
    }

    #[test]
    fn lots_expire_after_their_last_instant() {
        let mut m = vec![mv(0, 1, 100, 1_000, 0)];
        assert_eq!(
            derive(&mut m.clone(), 1_000).balance(),
            100,
            "usable at its expiry instant"
        );
        let s = derive(&mut m, 1_001);
        assert_eq!((s.balance(), s.expired), (0, 100));
    }

    #[test]
    fn a_reversal_of_spent_points_becomes_a_debt_that_the_next_earn_repays() {
        let mut m = vec![mv(0, 1, 100, 10_000, 0), mv(1, 2, 0, 0, 100)];
        m.push(Movement {
            reverse: 60,
            reverse_lot: Some([1; 16]),
            ..mv(2, 3, 0, 0, 0)
        });
        let s = derive(&mut m.clone(), 3);
        assert_eq!((s.balance(), s.debt), (-60, 60));
        m.push(mv(4, 4, 100, 10_000, 0));
        let s = derive(&mut m, 5);
        assert_eq!((s.balance(), s.debt), (40, 0));
    }

    #[test]
    fn refunding_a_sale_whose_points_expired_takes_nothing_more() {
        let mut m = vec![mv(0, 1, 100, 1_000, 0), mv(10, 2, 50, 9_000, 0)];
        m.push(Movement {
            reverse: 100,
            reverse_lot: Some([1; 16]),
            ..mv(2_000, 3, 0, 0, 0)
        });
        let s = derive(&mut m, 2_001);
        assert_eq!(
            (s.balance(), s.debt, s.expired),
            (50, 0, 0),
            "the expired lot absorbs the reversal"
        );
    }

    #[test]
    fn pending_points_cannot_be_spent_until_available() {
        let mut m = vec![Movement {
            available_at: 500,
            ..mv(0, 1, 100, 10_000, 0)
        }];
        let s = derive(&mut m.clone(), 100);
        assert_eq!((s.balance(), s.pending()), (0, 100));
        m.push(mv(100, 2, 0, 0, 30));
        let s = derive(&mut m.clone(), 200);
        assert_eq!(
            (s.balance(), s.debt),
            (-30, 30),
            "an overdraw on pending points is a debt"
        );
        let s = derive(&mut m, 600);
        assert_eq!(
            (s.balance(), s.pending()),
            (70, 0),
            "the debt is not repaid twice"
        );
    }

    #[test]
    fn expiring_groups_by_instant_within_the_window() {
        let mut m = vec![
            mv(0, 1, 10, 100, 0),
            mv(1, 2, 20, 100, 0),
            mv(2, 3, 30, 900, 0),
        ];
        let s = derive(&mut m, 3);
        assert_eq!(s.expiring_by(500), vec![(100, 30)]);
    }

    fn movement() -> impl Strategy<Value = Movement> {
        (
            0i64..1_000,
            0i64..4,
            0i64..200,
            50i64..2_000,
            0i64..150,
            0i64..100,
            proptest::option::of(0u8..8),
        )
            .prop_map(|(at, origin, earn, life, spend, reverse, lot)| Movement {
                at,
                origin: format!("S00{origin}").into(),
                seq: 0,
                txn: [0; 16],
                earn,
                expires_at: at + life,
                available_at: at,
                spend,
                reverse,
                reverse_lot: lot.map(|b| [b; 16]),
            })
    }

    fn with_ids(mut v: Vec<Movement>) -> Vec<Movement> {
        for (i, m) in v.iter_mut().enumerate() {
            m.seq = i as i64;
            m.txn = [(i % 8) as u8; 16];
        }
        v
    }

    proptest! {
        /// Points are never created or destroyed: what was earned is either still
        /// available, spent, reversed, or expired; debt is what could not be covered.
        #[test]
        fn points_are_conserved(v in proptest::collection::vec(movement(), 0..40), now in 0i64..4_000) {
            let mut v = with_ids(v);
            let earned: i64 = v.iter().map(|m| m.earn).sum();
            let out: i64 = v.iter().map(|m| m.spend + m.reverse).sum();
            let s = derive(&mut v, now);
            let lots: i64 = s.lots.iter().map(|l| l.remaining).sum();
            prop_assert_eq!(earned - out, lots - s.debt + s.expired);
            prop_assert!(s.debt >= 0 && s.expired >= 0);
            prop_assert!(s.lots.iter().all(|l| l.remaining > 0 && l.expires_at >= now));
        }

        /// Each line of a statement holds what `derive` holds over the movements up to
        /// it, evaluated at the line's time (an independent derivation per line); every
        /// movement appears once, in order; expiry lines fall between the movements
        /// around them and take points; the last line ends where `derive` does at `now`.
        #[test]
        fn a_statement_agrees_with_derive_at_every_line(v in proptest::collection::vec(movement(), 0..30), now in 0i64..4_000) {
            let mut v = with_ids(v);
            let lines = statement(&mut v, now);
            let mut applied = 0;
            for (n, l) in lines.iter().enumerate() {
                match l.movement {
                    Some(i) => {
                        prop_assert_eq!(i, applied, "line {}", n);
                        applied += 1;
                    }
                    None => {
                        prop_assert!(l.change < 0, "an expiry takes points: line {}", n);
                        prop_assert!(applied == 0 || v[applied - 1].at < l.at, "line {}", n);
                        prop_assert!(v.get(applied).is_none_or(|m| l.at <= m.at), "line {}", n);
                    }
                }
                let before = derive(&mut v[..applied].to_vec(), l.at).held();
                prop_assert_eq!(l.held, before, "line {}", n);
                if n > 0 {
                    prop_assert_eq!(l.change, l.held - lines[n - 1].held, "line {}", n);
                }
            }
            prop_assert_eq!(applied, v.len());
            let end = lines.last().map_or(0, |l| l.held);
            prop_assert_eq!(end, derive(&mut v.clone(), now.max(v.last().map_or(0, |m| m.at))).held());
        }

    }

    /// Movements at the same millisecond apply by origin, then sequence, whichever
    /// arrived first: a spend at S001 and an earn at S002 in the same instant overdraw
    /// (the spend goes first) at every replica, in either arrival order. A sort on time
    /// alone (stable, so arrival order would decide ties) fails this. The incremental
    /// path over facts in any arrival order is `ledger`'s
    /// `the_snapshot_equals_the_derivation_after_every_fact_in_any_arrival_order`.
    #[test]
    fn ties_in_time_are_broken_by_origin_and_sequence_not_by_arrival() {
        let earn = Movement {
            origin: "S002".into(),
            ..mv(50, 1, 100, 10_000, 0)
        };
        let spend = Movement {
            origin: "S001".into(),
            ..mv(50, 9, 0, 0, 60)
        };
        let first = Movement {
            origin: "S001".into(),
            ..mv(50, 2, 0, 0, 10)
        };
        for arrival in [
            vec![earn.clone(), spend.clone(), first.clone()],
            vec![first.clone(), earn.clone(), spend.clone()],
            vec![spend.clone(), first.clone(), earn.clone()],
        ] {
            let mut v = arrival;
            let mut traced = Vec::new();
            let s = derive_traced(&mut v, 60, |m, n| {
                traced.push((m.origin.to_string(), m.seq, n))
            });
            assert_eq!(
                traced,
                vec![("S001".to_string(), 2, 10), ("S001".to_string(), 9, 60)],
                "S001's spends go first, in sequence order"
            );
            assert_eq!(
                (s.debt, s.balance()),
                (0, 30),
                "S002's earn repays the 70 owed"
            );
        }
    }

    #[test]
    fn an_overdrawing_spend_is_traced_and_later_earnings_repay_the_debt() {
        let mut m = vec![
            mv(0, 1, 100, 10_000, 0),
            mv(10, 2, 0, 0, 80),
            mv(20, 3, 0, 0, 50),
            mv(30, 4, 40, 10_000, 0),
        ];
        let mut traced = Vec::new();
        let s = derive_traced(&mut m, 40, |mv, n| traced.push((mv.seq, n)));
        assert_eq!(
            traced,
            vec![(3, 30)],
            "only the second spend overdrew, by 30"
        );
        // The 40 earned later repay the 30 owed first.
        assert_eq!((s.debt, s.balance()), (0, 10));
    }
}
