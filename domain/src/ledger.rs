//! A member's ledger kept as a snapshot, so that reading a member costs the same at
//! ten facts as at ten thousand.
//!
//! [`crate::points::derive`] stays the reference: the snapshot holds the points state
//! after every movement folded in canonical order, *before* the expiry that a read at
//! `now` applies, so [`Snapshot::points_at`] gives what `derive` gives over the same
//! movements at any `now` (property-tested below). A movement that sorts before the
//! last one folded (a fact of another store that arrives late, a fact of a merged-away
//! id) cannot be folded in: [`Snapshot::fold`] says so and the owner derives the
//! snapshot again from the facts ([`Snapshot::derive`]), which is rare and bounded by
//! the member's history, never the common path.
//!
//! Qualifying spend for tiers is a sum over a sliding window, so order does not matter;
//! entries older than any window still to be asked about are dropped
//! ([`Snapshot::forget_spend_before`]), and a question about a window that reaches past
//! them answers `None` (derive again).

use std::cmp::Ordering;
use std::sync::Arc;

use crate::points::{LotKey, Millis, Movement, PointsState, canonical_order};

/// A member's ledger, folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The points state after every movement folded, before expiry at the read time.
    pub points: PointsState,
    /// The canonical key (time, origin, sequence) of the last movement folded.
    pub last: Option<(Millis, Arc<str>, i64)>,
    /// Qualifying spend entries (when it counts, amount), oldest first; equal instants
    /// are added up.
    pub spend: Vec<(Millis, i64)>,
    /// Entries counting at or before this instant were dropped (`None`: none were).
    pub spend_from: Option<Millis>,
    /// Whether the member has made a purchase.
    pub purchased: bool,
    /// Ledger facts folded (movements, spend entries, purchases).
    pub facts: u64,
    /// Lots sealed together ([`Snapshot::seal`]): a filter of their keys, so that a
    /// reversal naming one is sent to the derivation.
    pub sealed: Sealed,
}

/// The key a sealed lot carries (no transaction id is all ones: ids are UUIDs).
pub const SEALED: LotKey = [0xFF; 16];

/// A Bloom filter of the keys of sealed lots: "maybe sealed" can be wrong, never
/// "not sealed" (a wrong "maybe" costs one derivation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed(pub [u64; SEALED_WORDS]);

const SEALED_WORDS: usize = 64;

impl Default for Sealed {
    fn default() -> Self {
        Sealed([0; SEALED_WORDS])
    }
}

impl Sealed {
    fn bits(key: &LotKey) -> [usize; 3] {
        let a = u64::from_le_bytes(key[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(key[8..].try_into().unwrap_or_default()) | 1;
        let m = (SEALED_WORDS * 64) as u64;
        [0u64, 1, 2].map(|i| (a.wrapping_add(i.wrapping_mul(b)) % m) as usize)
    }

    fn insert(&mut self, key: &LotKey) {
        for bit in Self::bits(key) {
            self.0[bit / 64] |= 1 << (bit % 64);
        }
    }

    /// Whether `key` may be the key of a sealed lot.
    pub fn may_hold(&self, key: &LotKey) -> bool {
        Self::bits(key)
            .iter()
            .all(|bit| self.0[bit / 64] & (1 << (bit % 64)) != 0)
    }
}

/// What a fact brings to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerFact {
    /// Its points movement, if it moves points.
    pub movement: Option<Movement>,
    /// Its qualifying spend (when it counts, amount), if any.
    pub spend: Option<(Millis, i64)>,
    /// Whether it is a purchase.
    pub purchase: bool,
}

/// A movement that sorts before the last one folded, or that reverses a sealed lot:
/// derive the snapshot again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late;

impl Snapshot {
    /// The reference: every fact folded in canonical order.
    pub fn derive(facts: impl IntoIterator<Item = LedgerFact>) -> Snapshot {
        let mut facts: Vec<LedgerFact> = facts.into_iter().collect();
        facts.sort_by(|a, b| match (&a.movement, &b.movement) {
            (Some(x), Some(y)) => canonical_order(x, y),
            // Only movements need an order; the rest go first, in any order.
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        });
        let mut s = Snapshot::default();
        for f in &facts {
            // Sorted: no movement is late.
            let _ = s.fold(f);
        }
        s
    }

    /// Folds one fact in. `Err(Late)` (and nothing changed) when its movement sorts
    /// at or before the last movement folded.
    pub fn fold(&mut self, f: &LedgerFact) -> Result<(), Late> {
        if let Some(m) = &f.movement {
            let key = (m.at, &m.origin, m.seq);
            if let Some((at, origin, seq)) = &self.last
                && key <= (*at, origin, *seq)
            {
                return Err(Late);
            }
            // A reversal of a lot sealed with others needs that lot's own remainder,
            // which only the derivation knows.
            if let Some(lot) = &m.reverse_lot
                && m.reverse > 0
                && (*lot == SEALED || self.sealed.may_hold(lot))
            {
                return Err(Late);
            }
            self.points.apply(m);
            self.last = Some((m.at, m.origin.clone(), m.seq));
        }
        // An entry at or before `spend_from` belongs to no window still asked about.
        if let Some((at, amount)) = f.spend
            && amount != 0
            && self.spend_from.is_none_or(|from| at > from)
        {
            let i = self.spend.partition_point(|(t, _)| *t < at);
            match self.spend.get_mut(i) {
                Some((t, n)) if *t == at => *n += amount,
                _ => self.spend.insert(i, (at, amount)),
            }
        }
        self.purchased |= f.purchase;
        self.facts += 1;
        Ok(())
    }

    /// The points state at `now`: the lots expired by then are gone.
    pub fn points_at(&self, now: Millis) -> PointsState {
        let mut p = self.points.clone();
        p.expire_at(now);
        p
    }

    /// Qualifying spend counting after `start`; `None` if entries that old were dropped.
    pub fn spend_after(&self, start: Millis) -> Option<i64> {
        if self.spend_from.is_some_and(|from| start < from) {
            return None;
        }
        let i = self.spend.partition_point(|(t, _)| *t <= start);
        Some(self.spend[i..].iter().map(|(_, n)| n).sum())
    }

    /// Drops the spend entries counting at or before `before` (no window to be asked
    /// about starts earlier).
    pub fn forget_spend_before(&mut self, before: Millis) {
        if self.spend_from.is_some_and(|from| before <= from) {
            return;
        }
        let i = self.spend.partition_point(|(t, _)| *t <= before);
        self.spend.drain(..i);
        self.spend_from = Some(before);
    }

    /// Keeps the snapshot's size bounded by the days lots expire on, not by the number
    /// of earns: of all but the `keep` lots expiring last, neighbours that expire and
    /// become available at the same instants are sealed into one (consumption, expiry
    /// and every total read the same: lots are consumed in order and expire together);
    /// of the lots that expired, all but the last `keep` are dropped (their points are
    /// counted in `expired`). Their keys go to the filter, so a reversal naming one is
    /// derived from the facts.
    pub fn seal(&mut self, keep: usize) {
        let lots = &mut self.points.lots;
        if lots.len() > keep {
            let cut = lots.len() - keep;
            let mut out: Vec<crate::points::Lot> = Vec::with_capacity(lots.len());
            for (i, l) in std::mem::take(lots).into_iter().enumerate() {
                match out.last_mut() {
                    Some(prev)
                        if i < cut
                            && prev.expires_at == l.expires_at
                            && prev.available_at == l.available_at =>
                    {
                        self.sealed.insert(&prev.key);
                        self.sealed.insert(&l.key);
                        prev.key = SEALED;
                        prev.remaining += l.remaining;
                    }
                    _ => out.push(l),
                }
            }
            *lots = out;
        }
        let expired = &mut self.points.expired_lots;
        if expired.len() > keep {
            let cut = expired.len() - keep;
            for (k, _) in expired.drain(..cut) {
                self.sealed.insert(&k);
            }
        }
    }

    /// The snapshot as bytes (storage keeps it as a blob): integers as zigzag
    /// varints, times as differences from the one before, a sealed lot without its key,
    /// so a member buying daily for two years costs a few KB, not tens.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with(&self.points.lots, &self.spend)
    }

    /// [`Snapshot::encode`] with these lots and spend entries in place of its own.
    fn encode_with(&self, lots: &[crate::points::Lot], spend: &[(Millis, i64)]) -> Vec<u8> {
        let p = &self.points;
        let mut out = Vec::with_capacity(32 + 12 * lots.len() + 8 * spend.len());
        out.push(VERSION);
        put(&mut out, p.debt);
        put(&mut out, p.expired);
        put(&mut out, p.now);
        put_lots(&mut out, lots);
        put(&mut out, p.expired_lots.len() as i64);
        for (k, n) in &p.expired_lots {
            put_key(&mut out, k);
            put(&mut out, *n);
        }
        match &self.last {
            None => out.push(0),
            Some((at, origin, seq)) => {
                out.push(1);
                put(&mut out, *at);
                put(&mut out, *seq);
                put(&mut out, origin.len() as i64);
                out.extend_from_slice(origin.as_bytes());
            }
        }
        match self.spend_from {
            None => out.push(0),
            Some(t) => {
                out.push(1);
                put(&mut out, t);
            }
        }
        put_spend(&mut out, spend);
        out.push(u8::from(self.purchased));
        put(&mut out, self.facts as i64);
        // Most members never have a lot sealed: their filter is one byte.
        if self.sealed == Sealed::default() {
            out.push(0);
        } else {
            out.push(1);
            for w in &self.sealed.0 {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Reads [`Snapshot::encode`]'s bytes; `None` if they are not a snapshot of this
    /// version (the owner derives it again).
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let mut r = Reader(bytes);
        if r.byte()? != VERSION {
            return None;
        }
        let mut p = PointsState {
            debt: r.int()?,
            expired: r.int()?,
            now: r.int()?,
            ..PointsState::default()
        };
        p.lots = r.lots()?;
        for _ in 0..r.count()? {
            p.expired_lots.push((r.key()?, r.int()?));
        }
        let last = match r.byte()? {
            0 => None,
            1 => {
                let (at, seq, len) = (r.int()?, r.int()?, r.count()?);
                let origin = std::str::from_utf8(r.take(len)?).ok()?;
                Some((at, Arc::from(origin), seq))
            }
            _ => return None,
        };
        let spend_from = match r.byte()? {
            0 => None,
            1 => Some(r.int()?),
            _ => return None,
        };
        let spend = r.spend()?;
        let purchased = match r.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let facts = u64::try_from(r.int()?).ok()?;
        let mut sealed = Sealed::default();
        match r.byte()? {
            0 => {}
            1 => {
                for w in sealed.0.iter_mut() {
                    *w = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
                }
            }
            _ => return None,
        }
        r.0.is_empty().then_some(Snapshot {
            sealed,
            points: p,
            last,
            spend,
            spend_from,
            purchased,
            facts,
        })
    }
}

impl Snapshot {
    /// The snapshot as two blobs, for storage that rewrites only what changed: `hot`,
    /// which nearly every fact changes (the header, the lots expiring in the last one
    /// to two [`SPLIT_GRID_MS`] periods before the latest expiry, the spend entries of
    /// the last one to two periods), and `cold`, everything older, which changes about
    /// once a period, on a redemption (lots are consumed soonest expiry first) and when
    /// a lot expires. A loyal member's snapshot is mostly cold: a sale rewrites a page,
    /// not the three a whole 8 KB snapshot spans. [`Snapshot::decode_split`] reads the
    /// pair back; the cut is at an index, so the pair always reads back exactly.
    pub fn encode_split(&self) -> (Vec<u8>, Vec<u8>) {
        let lots = &self.points.lots;
        let lot_cut = lots.last().map_or(0, |l| {
            lots.partition_point(|x| x.expires_at < grid_floor(l.expires_at))
        });
        let spend_cut = self.spend.last().map_or(0, |(t, _)| {
            self.spend.partition_point(|(x, _)| *x < grid_floor(*t))
        });
        let hot = self.encode_with(&lots[lot_cut..], &self.spend[spend_cut..]);
        if lot_cut == 0 && spend_cut == 0 {
            return (hot, Vec::new());
        }
        let mut cold = Vec::with_capacity(12 * lot_cut + 8 * spend_cut + 4);
        cold.push(COLD_VERSION);
        put_lots(&mut cold, &lots[..lot_cut]);
        put_spend(&mut cold, &self.spend[..spend_cut]);
        (hot, cold)
    }

    /// Reads [`Snapshot::encode_split`]'s pair (an empty `cold`: nothing was cold, as
    /// for a snapshot stored whole by [`Snapshot::encode`]); `None` if either part is
    /// not of this version.
    pub fn decode_split(hot: &[u8], cold: &[u8]) -> Option<Snapshot> {
        let mut s = Snapshot::decode(hot)?;
        if cold.is_empty() {
            return Some(s);
        }
        let mut r = Reader(cold);
        if r.byte()? != COLD_VERSION {
            return None;
        }
        let mut lots = r.lots()?;
        let mut spend = r.spend()?;
        if !r.0.is_empty() {
            return None;
        }
        lots.append(&mut s.points.lots);
        s.points.lots = lots;
        spend.append(&mut s.spend);
        s.spend = spend;
        Some(s)
    }
}

/// The period the hot part of a split snapshot is cut on (32 days): its cut moves
/// once a period, so the cold part is rewritten about that often.
pub const SPLIT_GRID_MS: Millis = 32 * 86_400_000;

/// The start of the grid period before the one holding `t`.
fn grid_floor(t: Millis) -> Millis {
    t.div_euclid(SPLIT_GRID_MS)
        .saturating_sub(1)
        .saturating_mul(SPLIT_GRID_MS)
}

/// The cold part's version.
const COLD_VERSION: u8 = 1;

fn put_lots(out: &mut Vec<u8>, lots: &[crate::points::Lot]) {
    put(out, lots.len() as i64);
    let mut prev = 0;
    for l in lots {
        put_key(out, &l.key);
        put(out, l.remaining);
        put(out, l.expires_at.wrapping_sub(prev));
        prev = l.expires_at;
        put(out, l.available_at);
    }
}

fn put_spend(out: &mut Vec<u8>, spend: &[(Millis, i64)]) {
    put(out, spend.len() as i64);
    let mut prev = 0;
    for (t, n) in spend {
        put(out, t.wrapping_sub(prev));
        prev = *t;
        put(out, *n);
    }
}

/// The encoding's version: a snapshot of another version is derived again.
const VERSION: u8 = 4;

/// A zigzag varint: small magnitudes, either sign, in few bytes.
fn put(out: &mut Vec<u8>, n: i64) {
    let mut z = ((n << 1) ^ (n >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// A lot's key, or one byte for a sealed lot's.
fn put_key(out: &mut Vec<u8>, key: &LotKey) {
    if *key == SEALED {
        out.push(1);
    } else {
        out.push(0);
        out.extend_from_slice(key);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn int(&mut self) -> Option<i64> {
        let mut z: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            z |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
            }
        }
        // More than ten bytes: not a varint this encoder wrote.
        None
    }
    fn count(&mut self) -> Option<usize> {
        // A count can never exceed the bytes left: a damaged length is refused before
        // it allocates.
        let n = usize::try_from(self.int()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
    fn lots(&mut self) -> Option<Vec<crate::points::Lot>> {
        let mut lots = Vec::new();
        let mut prev: i64 = 0;
        for _ in 0..self.count()? {
            let key = self.key()?;
            let remaining = self.int()?;
            let expires_at = prev.wrapping_add(self.int()?);
            prev = expires_at;
            lots.push(crate::points::Lot {
                key,
                remaining,
                expires_at,
                available_at: self.int()?,
            });
        }
        Some(lots)
    }
    fn spend(&mut self) -> Option<Vec<(Millis, i64)>> {
        let mut spend = Vec::new();
        let mut prev: i64 = 0;
        for _ in 0..self.count()? {
            let t = prev.wrapping_add(self.int()?);
            prev = t;
            spend.push((t, self.int()?));
        }
        Some(spend)
    }
    fn key(&mut self) -> Option<LotKey> {
        match self.byte()? {
            0 => self.take(16)?.try_into().ok(),
            1 => Some(SEALED),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::points::derive;
    use proptest::prelude::*;

    fn fact(at: i64, origin: &str, seq: i64, earn: i64, spend: i64) -> LedgerFact {
        LedgerFact {
            movement: Some(Movement {
                at,
                origin: origin.into(),
                seq,
                txn: [seq as u8; 16],
                earn,
                expires_at: at + 1_000,
                available_at: 0,
                spend,
                reverse: 0,
                reverse_lot: None,
            }),
            spend: Some((at, earn * 10)),
            purchase: earn > 0,
        }
    }

    #[test]
    fn a_late_movement_is_refused_and_changes_nothing() {
        let mut s = Snapshot::default();
        assert_eq!(s.fold(&fact(10, "S001/a", 1, 100, 0)), Ok(()));
        let before = s.clone();
        assert_eq!(s.fold(&fact(5, "S002/b", 1, 50, 0)), Err(Late));
        assert_eq!(s, before);
        // The same instant orders by origin, then sequence.
        assert_eq!(s.fold(&fact(10, "S000/z", 9, 1, 0)), Err(Late));
        assert_eq!(s.fold(&fact(10, "S001/a", 2, 1, 0)), Ok(()));
    }

    #[test]
    fn spend_before_the_forgotten_instant_cannot_be_answered() {
        let mut s = Snapshot::default();
        for (i, at) in [100, 200, 300].into_iter().enumerate() {
            let _ = s.fold(&fact(at, "S001/a", i as i64 + 1, 1, 0));
        }
        assert_eq!(s.spend_after(150), Some(20));
        s.forget_spend_before(200);
        assert_eq!(s.spend, vec![(300, 10)]);
        assert_eq!(s.spend_after(200), Some(10));
        assert_eq!(s.spend_after(199), None, "the entry at 200 is gone");
    }

    #[test]
    fn sealed_lots_read_the_same_and_a_reversal_of_one_is_derived() {
        let mut s = Snapshot::default();
        for seq in 1..=10 {
            let mut f = fact(seq, "S001/a", seq, 10, 0);
            if let Some(m) = f.movement.as_mut() {
                m.expires_at = 5_000;
            }
            let _ = s.fold(&f);
        }
        let before = s.points_at(100);
        s.seal(2);
        assert_eq!(s.points.lots.len(), 3, "eight sealed into one, two kept");
        let after = s.points_at(100);
        assert_eq!(
            (after.balance(), after.expiring_by(i64::MAX)),
            (before.balance(), before.expiring_by(i64::MAX))
        );
        let reverse = |key: u8| LedgerFact {
            movement: Some(Movement {
                reverse: 5,
                reverse_lot: Some([key; 16]),
                ..fact(50, "S001/a", 11, 0, 0)
                    .movement
                    .unwrap_or_else(|| unreachable!())
            }),
            spend: None,
            purchase: false,
        };
        assert_eq!(s.clone().fold(&reverse(3)), Err(Late), "lot 3 was sealed");
        assert_eq!(s.clone().fold(&reverse(10)), Ok(()), "lot 10 was kept");
    }

    #[test]
    fn a_daily_buyer_s_sale_rewrites_the_small_hot_part_only() {
        const DAY: i64 = 86_400_000;
        let mut s = Snapshot::default();
        let sale = |day: i64, seq: i64| LedgerFact {
            movement: Some(Movement {
                at: day * DAY + 3_600_000,
                origin: "S001/a".into(),
                seq,
                txn: [(seq % 251) as u8; 16],
                earn: 25,
                expires_at: (day + 366) * DAY - 1,
                available_at: 0,
                spend: 0,
                reverse: 0,
                reverse_lot: None,
            }),
            spend: Some((day * DAY + 3_600_000, 2_500)),
            purchase: true,
        };
        for day in 0..730 {
            assert_eq!(s.fold(&sale(day, day + 1)), Ok(()));
            s.seal(32);
        }
        let (hot, cold) = s.encode_split();
        let whole = s.encode().len();
        // Under a page, and a fifth of the whole: two years of daily lots and spend are
        // cold.
        assert!(
            hot.len() < 2_500 && hot.len() * 5 < whole,
            "hot {} of {whole} bytes",
            hot.len()
        );
        assert!(hot.len() + cold.len() <= whole + 8);
        // A second sale the same day leaves the cold part as it was (a day's first
        // sale rewrites it when a lot expired overnight).
        let mut again = sale(729, 731);
        if let Some(m) = again.movement.as_mut() {
            m.at += 3_600_000;
        }
        assert_eq!(s.fold(&again), Ok(()));
        s.seal(32);
        let (hot2, cold2) = s.encode_split();
        assert!(cold2 == cold, "cold part changed by a sale");
        assert_ne!(hot2, hot);
        assert_eq!(Snapshot::decode_split(&hot2, &cold2), Some(s));
    }

    #[test]
    fn damaged_bytes_decode_to_none_never_a_panic() {
        let mut s = Snapshot::default();
        let _ = s.fold(&fact(10, "S001/a", 1, 100, 0));
        let bytes = s.encode();
        assert_eq!(Snapshot::decode(&bytes), Some(s));
        for cut in 0..bytes.len() {
            assert_eq!(Snapshot::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(Snapshot::decode(&long), None);
        let mut other = bytes;
        other[0] = VERSION + 1;
        assert_eq!(Snapshot::decode(&other), None);
    }

    #[test]
    fn extreme_integers_survive_the_varint_encoding() {
        let mut s = Snapshot::default();
        s.points.debt = i64::MAX;
        s.points.expired = i64::MIN;
        s.points.now = -1;
        s.points.lots.push(crate::points::Lot {
            key: SEALED,
            remaining: i64::MIN,
            expires_at: i64::MAX,
            available_at: i64::MIN,
        });
        s.points.lots.push(crate::points::Lot {
            key: [3; 16],
            remaining: 1,
            expires_at: i64::MIN,
            available_at: 0,
        });
        s.spend = vec![(i64::MIN, i64::MAX), (i64::MAX, -1)];
        s.spend_from = Some(i64::MIN);
        s.last = Some((i64::MAX, "S001/x".into(), i64::MIN));
        s.facts = u64::MAX >> 1;
        s.sealed.insert(&[7; 16]);
        assert_eq!(Snapshot::decode(&s.encode()), Some(s));
    }

    /// One random fact: a time, an origin of three, and an earn, a spend, a
    /// reversal of an earlier earn's lot, or a refund's negative spend entry.
    fn arb_fact() -> impl Strategy<Value = (i64, usize, u8, i64, i64, u8)> {
        (
            0i64..5_000,
            0usize..3,
            0u8..4,
            1i64..200,
            100i64..3_000,
            0u8..40,
        )
    }

    fn build(raw: &[(i64, usize, u8, i64, i64, u8)]) -> Vec<LedgerFact> {
        let origins = ["S001/a", "S002/b", "HUB/c"];
        let mut seqs = [0i64; 3];
        let mut earned: Vec<LotKey> = Vec::new();
        raw.iter()
            .enumerate()
            .map(|(i, &(at, o, kind, n, life, target))| {
                seqs[o] += 1;
                let mut m = Movement {
                    at,
                    origin: origins[o].into(),
                    seq: seqs[o],
                    txn: [(i % 251) as u8; 16],
                    earn: 0,
                    // Expiry and availability on a coarse grid, as the edge's end-of-day
                    // expiry makes them: lots share instants, and sealing merges them.
                    expires_at: (at + life) / 500 * 500,
                    available_at: if n % 3 == 0 {
                        (at + life / 4) / 500 * 500
                    } else {
                        0
                    },
                    spend: 0,
                    reverse: 0,
                    reverse_lot: None,
                };
                match kind {
                    0 => {
                        m.earn = n;
                        earned.push(m.txn);
                    }
                    1 => m.spend = n,
                    2 => {
                        // A refund names the lot of an earlier sale (or, rarely, none
                        // this member holds).
                        m.reverse = n / 2 + 1;
                        m.reverse_lot = Some(match earned.len() {
                            0 => [250; 16],
                            len => earned[target as usize % len],
                        });
                    }
                    _ => {
                        return LedgerFact {
                            movement: None,
                            spend: Some((at, -n)),
                            purchase: false,
                        };
                    }
                }
                LedgerFact {
                    spend: (kind == 0).then_some((at, n * 100)),
                    purchase: kind == 0,
                    movement: Some(m),
                }
            })
            .collect()
    }

    /// What a replica that receives `facts` in this order keeps: each folded in, and
    /// the whole derived again when one comes late or reverses a sealed lot; sealed
    /// after every fact down to `keep` lots.
    fn kept(facts: &[LedgerFact], keep: usize) -> Vec<Snapshot> {
        let mut s = Snapshot::default();
        let mut out = Vec::new();
        for (i, f) in facts.iter().enumerate() {
            if s.fold(f).is_err() {
                s = Snapshot::derive(facts[..=i].iter().cloned());
            }
            s.seal(keep);
            out.push(s.clone());
        }
        out
    }

    /// Everything a reader of a points state sees.
    fn observed(p: &PointsState) -> (i64, i64, i64, i64, Vec<(i64, i64)>) {
        (
            p.balance(),
            p.pending(),
            p.debt,
            p.expired,
            p.expiring_by(i64::MAX),
        )
    }

    proptest! {
        #[test]
        fn the_snapshot_equals_the_derivation_after_every_fact_in_any_arrival_order(
            raw in prop::collection::vec(arb_fact(), 1..60),
            order in prop::collection::vec(any::<prop::sample::Index>(), 60),
            reads in prop::collection::vec(0i64..8_000, 4),
            keep in 0usize..3,
        ) {
            let facts = build(&raw);
            // Arrival order: a random permutation (late facts of other stores).
            let mut arrived = facts.clone();
            for (i, ix) in order.iter().enumerate().take(arrived.len()) {
                let j = ix.index(arrived.len() - i) + i;
                arrived.swap(i, j);
            }
            for (i, snap) in kept(&arrived, keep).iter().enumerate() {
                let seen = &arrived[..=i];
                let mut movements: Vec<Movement> =
                    seen.iter().filter_map(|f| f.movement.clone()).collect();
                for &now in &reads {
                    prop_assert_eq!(
                        observed(&snap.points_at(now)),
                        observed(&derive(&mut movements, now))
                    );
                    let spend: i64 = seen
                        .iter()
                        .filter_map(|f| f.spend)
                        .filter(|(t, _)| *t > now - 3_000)
                        .map(|(_, n)| n)
                        .sum();
                    prop_assert_eq!(snap.spend_after(now - 3_000), Some(spend));
                }
                prop_assert_eq!(snap.purchased, seen.iter().any(|f| f.purchase));
                prop_assert_eq!(snap.facts, seen.len() as u64);
                prop_assert_eq!(Snapshot::decode(&snap.encode()), Some(snap.clone()));
            }
        }

        #[test]
        fn a_split_snapshot_reads_back_exactly(
            raw in prop::collection::vec(arb_fact(), 1..60),
            scale in prop::sample::select(vec![1i64, 86_400_000 / 50, 86_400_000]),
            keep in 0usize..3,
        ) {
            // The same histories stretched from seconds to years, so that the cut falls
            // anywhere, inside runs of equal expiries included.
            let facts: Vec<LedgerFact> = build(&raw)
                .into_iter()
                .map(|mut f| {
                    if let Some(m) = f.movement.as_mut() {
                        m.at *= scale;
                        m.expires_at *= scale;
                        m.available_at *= scale;
                    }
                    if let Some((t, _)) = f.spend.as_mut() {
                        *t *= scale;
                    }
                    f
                })
                .collect();
            for snap in kept(&facts, keep) {
                let (hot, cold) = snap.encode_split();
                prop_assert_eq!(Snapshot::decode_split(&hot, &cold), Some(snap.clone()));
                // A snapshot stored whole reads back as a split with nothing cold.
                prop_assert_eq!(Snapshot::decode_split(&snap.encode(), &[]), Some(snap.clone()));
                if !cold.is_empty() {
                    prop_assert!(Snapshot::decode_split(&hot, &cold[..cold.len() - 1]).is_none());
                }
            }
        }

        #[test]
        fn any_bytes_decode_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut b = bytes;
            if let Some(v) = b.first_mut() {
                *v = VERSION;
            }
            let _ = Snapshot::decode(&b);
        }

        #[test]
        fn forgetting_old_spend_keeps_every_later_window_exact(
            raw in prop::collection::vec(arb_fact(), 1..60),
            cut in 0i64..5_000,
            start in 0i64..6_000,
        ) {
            let facts = build(&raw);
            let full = Snapshot::derive(facts.clone());
            let mut pruned = full.clone();
            pruned.forget_spend_before(cut);
            let answer = pruned.spend_after(start);
            if start >= cut {
                prop_assert_eq!(answer, full.spend_after(start));
            } else {
                prop_assert_eq!(answer, None);
            }
        }
    }
}
