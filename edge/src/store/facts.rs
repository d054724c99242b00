//! The ledger table: immutable facts with gap-free sequences per origin.

use std::collections::HashMap;
use std::sync::Arc;

use patron_domain::Kind;
use rusqlite::{Connection, params};

use super::StoreError;
use super::writer::WriteCtx;

/// A fact about to be appended by this node.
#[derive(Debug, Clone)]
pub struct NewFact {
    /// What it records.
    pub kind: Kind,
    /// When it happened (unix ms).
    pub at: i64,
    /// The member, if any.
    pub member: Option<[u8; 16]>,
    /// The transaction id; keys the lot an earn creates.
    pub txn: [u8; 16],
    /// Points credited as a lot.
    pub earn: i64,
    /// The lot's last usable instant.
    pub expires_at: i64,
    /// When the lot becomes redeemable (0 = at once).
    pub available_at: i64,
    /// Points consumed FIFO.
    pub spend: i64,
    /// Points taken back from `reverse_lot`.
    pub reverse: i64,
    /// The lot a reversal targets.
    pub reverse_lot: Option<[u8; 16]>,
    /// Qualifying-spend delta in fen.
    pub qual_spend: i64,
    /// When that spend counts.
    pub qual_at: i64,
    /// JSON details (personal data only as ciphertext).
    pub body: String,
}

impl NewFact {
    /// A fact of `kind` that moves no points and adds no qualifying spend; set those
    /// with struct update syntax (`NewFact { earn, ..NewFact::new(..) }`).
    pub fn new(kind: Kind, at: i64, member: Option<[u8; 16]>, txn: [u8; 16], body: String) -> Self {
        NewFact {
            kind,
            at,
            member,
            txn,
            earn: 0,
            expires_at: 0,
            available_at: 0,
            spend: 0,
            reverse: 0,
            reverse_lot: None,
            qual_spend: 0,
            qual_at: 0,
            body,
        }
    }
}

/// Appends a fact with this node's next sequence; returns the sequence.
pub fn append(ctx: &mut WriteCtx<'_>, f: &NewFact) -> Result<i64, StoreError> {
    let seq = ctx.next_seq();
    ctx.conn
        .prepare_cached(
            "INSERT INTO facts (origin, seq, kind, at, member, txn, earn, expires_at, spend, reverse,
                                reverse_lot, qual_spend, qual_at, body, available_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            ctx.origin,
            seq,
            f.kind.as_str(),
            f.at,
            f.member.as_ref().map(|m| &m[..]),
            &f.txn[..],
            f.earn,
            f.expires_at,
            f.spend,
            f.reverse,
            f.reverse_lot.as_ref().map(|m| &m[..]),
            f.qual_spend,
            f.qual_at,
            f.body,
            f.available_at
        ])?;
    keep_ledger(ctx.conn, ctx.origin, seq, f)?;
    Ok(seq)
}

/// Folds a fact just written into its member's ledger snapshot, in the same
/// transaction (`store::ledgers`).
fn keep_ledger(conn: &Connection, origin: i64, seq: i64, f: &NewFact) -> Result<(), StoreError> {
    let Some(member) = &f.member else {
        return Ok(());
    };
    if let Some(lf) = super::ledgers::ledger_fact(f, &origin_label(conn, origin)?, seq) {
        super::ledgers::fold(conn, member, &lf)?;
    }
    Ok(())
}

/// One of this node's facts as sync sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncFact {
    /// Sequence.
    pub seq: i64,
    /// Kind.
    pub kind: String,
    /// When.
    pub at: i64,
    /// Member.
    pub member: Option<[u8; 16]>,
    /// Transaction.
    pub txn: [u8; 16],
    /// Points credited.
    pub earn: i64,
    /// Lot expiry.
    pub expires_at: i64,
    /// Lot availability.
    pub available_at: i64,
    /// Points consumed.
    pub spend: i64,
    /// Points reversed.
    pub reverse: i64,
    /// Lot reversed.
    pub reverse_lot: Option<[u8; 16]>,
    /// Qualifying spend.
    pub qual_spend: i64,
    /// When it counts.
    pub qual_at: i64,
    /// Details.
    pub body: String,
}

/// Facts of `origin` after sequence `after`, at most `limit`, in sequence order.
pub fn for_sync(
    conn: &Connection,
    origin: i64,
    after: i64,
    limit: usize,
) -> rusqlite::Result<Vec<SyncFact>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, at, member, txn, earn, expires_at, available_at, spend, reverse, reverse_lot,
                qual_spend, qual_at, body
           FROM facts WHERE origin = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![origin, after, limit as i64], |r| {
        Ok(SyncFact {
            seq: r.get(0)?,
            kind: r.get(1)?,
            at: r.get(2)?,
            member: r.get(3)?,
            txn: r.get(4)?,
            earn: r.get(5)?,
            expires_at: r.get(6)?,
            available_at: r.get(7)?,
            spend: r.get(8)?,
            reverse: r.get(9)?,
            reverse_lot: r.get(10)?,
            qual_spend: r.get(11)?,
            qual_at: r.get(12)?,
            body: r.get(13)?,
        })
    })?;
    rows.collect()
}

/// When fact `seq` of `origin` was written, if it exists.
pub fn at_of(conn: &Connection, origin: i64, seq: i64) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT at FROM facts WHERE origin = ?1 AND seq = ?2")?
        .query_row(params![origin, seq], |r| r.get(0))
        .optional()
}

/// Inserts a fact of another origin (or an earlier incarnation) under its own
/// sequence; `false` if that sequence is held already.
pub fn insert_at(
    conn: &Connection,
    origin: i64,
    seq: i64,
    f: &NewFact,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "INSERT INTO facts (origin, seq, kind, at, member, txn, earn, expires_at, spend, reverse,
                                reverse_lot, qual_spend, qual_at, body, available_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT (origin, seq) DO NOTHING",
        )?
        .execute(params![
            origin,
            seq,
            f.kind.as_str(),
            f.at,
            f.member.as_ref().map(|m| &m[..]),
            &f.txn[..],
            f.earn,
            f.expires_at,
            f.spend,
            f.reverse,
            f.reverse_lot.as_ref().map(|m| &m[..]),
            f.qual_spend,
            f.qual_at,
            f.body,
            f.available_at
        ])?;
    if n == 1 {
        keep_ledger(conn, origin, seq, f)?;
    }
    Ok(n == 1)
}

/// The highest sequence `origin` has written (0 if none).
pub fn last_seq(conn: &Connection, origin: i64) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(seq), 0) FROM facts WHERE origin = ?1",
        params![origin],
        |r| r.get(0),
    )
}

/// The points- and spend-relevant columns of one of a member's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberFact {
    /// When.
    pub at: i64,
    /// `node/incarnation` of the origin, for a replica-independent order.
    pub origin: Arc<str>,
    /// Sequence within the origin.
    pub seq: i64,
    /// Transaction id.
    pub txn: [u8; 16],
    /// Points credited.
    pub earn: i64,
    /// Expiry of the credited lot.
    pub expires_at: i64,
    /// Points consumed FIFO.
    pub spend: i64,
    /// Points reversed.
    pub reverse: i64,
    /// Lot reversed.
    pub reverse_lot: Option<[u8; 16]>,
    /// Qualifying-spend delta.
    pub qual_spend: i64,
    /// When that spend counts.
    pub qual_at: i64,
    /// When the credited lot becomes redeemable.
    pub available_at: i64,
    /// Whether this is a purchase (first-purchase rules look for one).
    pub is_purchase: bool,
}

/// The predicate of the partial index `facts_ledger_by_member` (migration 3). A query
/// must repeat it verbatim for SQLite to use that index.
macro_rules! ledger_where {
    () => {
        "member = ?1 AND (earn <> 0 OR spend <> 0 OR reverse <> 0 OR qual_spend <> 0 OR kind = 'purchase' OR kind = 'coupon_issued')"
    };
}
pub(crate) use ledger_where;

/// The member-ledger query: reads only that member's range of the partial index.
/// Coupon issues share the index (so listing coupons costs no index of its own) but
/// move no points, so they are left out here.
const FOR_MEMBER_SQL: &str = concat!(
    "SELECT at, origin, seq, txn, earn, expires_at, spend, reverse, reverse_lot, qual_spend, qual_at, available_at, kind = 'purchase'
         FROM facts WHERE ",
    ledger_where!(),
    " AND kind <> 'coupon_issued'"
);

/// Every fact of `member` that moves points or qualifying spend, and every purchase.
pub fn for_member(conn: &Connection, member: &[u8; 16]) -> rusqlite::Result<Vec<MemberFact>> {
    let mut stmt = conn.prepare_cached(FOR_MEMBER_SQL)?;
    let mut labels = Labels::default();
    let mut rows = stmt.query(params![&member[..]])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(member_fact(conn, &mut labels, r)?);
    }
    Ok(out)
}

/// Origin labels by id: a member's facts come from a handful of origins, so each label
/// is resolved once per call instead of building a string per row.
type Labels = HashMap<i64, Arc<str>>;

/// The first 13 columns of [`FOR_MEMBER_SQL`] (and [`STATEMENT_SQL`]) as a fact.
fn member_fact(
    conn: &Connection,
    labels: &mut Labels,
    r: &rusqlite::Row<'_>,
) -> rusqlite::Result<MemberFact> {
    let origin_id: i64 = r.get(1)?;
    let origin = match labels.get(&origin_id) {
        Some(l) => l.clone(),
        None => {
            let l: Arc<str> = origin_label(conn, origin_id)?.into();
            labels.insert(origin_id, l.clone());
            l
        }
    };
    Ok(MemberFact {
        at: r.get(0)?,
        origin,
        seq: r.get(2)?,
        txn: r.get(3)?,
        earn: r.get(4)?,
        expires_at: r.get(5)?,
        spend: r.get(6)?,
        reverse: r.get(7)?,
        reverse_lot: r.get(8)?,
        qual_spend: r.get(9)?,
        qual_at: r.get(10)?,
        available_at: r.get(11)?,
        is_purchase: r.get(12)?,
    })
}

impl MemberFact {
    /// The points movement it makes (none moves nothing, as a purchase without points).
    pub fn movement(&self) -> patron_domain::points::Movement {
        patron_domain::points::Movement {
            at: self.at,
            origin: self.origin.clone(),
            seq: self.seq,
            txn: self.txn,
            earn: self.earn,
            expires_at: self.expires_at,
            available_at: self.available_at,
            spend: self.spend,
            reverse: self.reverse,
            reverse_lot: self.reverse_lot,
        }
    }
}

/// One of a member's facts as their statement shows it: the ledger columns, the kind
/// and the details' text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFact {
    /// The ledger columns.
    pub fact: MemberFact,
    /// The fact's kind.
    pub kind: String,
    /// Its details (JSON; personal data only sealed).
    pub body: String,
}

const STATEMENT_SQL: &str = concat!(
    "SELECT at, origin, seq, txn, earn, expires_at, spend, reverse, reverse_lot, qual_spend, qual_at, available_at, kind = 'purchase', kind, body
         FROM facts WHERE ",
    ledger_where!()
);

/// Every fact of `member` that moves points or qualifying spend, every purchase and
/// every coupon given: the member's range of the ledger index.
pub fn for_statement(conn: &Connection, member: &[u8; 16]) -> rusqlite::Result<Vec<StatementFact>> {
    let mut stmt = conn.prepare_cached(STATEMENT_SQL)?;
    let mut labels = Labels::default();
    let mut rows = stmt.query(params![&member[..]])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(StatementFact {
            fact: member_fact(conn, &mut labels, r)?,
            kind: r.get(13)?,
            body: r.get(14)?,
        });
    }
    Ok(out)
}

const SENT_SQL: &str = concat!(
    "SELECT coalesce(sum(spend), 0) FROM facts WHERE ",
    ledger_where!(),
    " AND kind = 'transfer' AND spend > 0 AND at >= ?2"
);

/// Points `member` sent to other members from `since` on (every store's transfers
/// held here).
pub fn transferred_since(
    conn: &Connection,
    member: &[u8; 16],
    since: i64,
) -> rusqlite::Result<i64> {
    conn.prepare_cached(SENT_SQL)?
        .query_row(params![&member[..], since], |r| r.get(0))
}

/// A tier-upgrade gift of points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftLot {
    /// The gift fact's transaction id: the lot its points came in.
    pub txn: [u8; 16],
    /// Points it gave.
    pub points: i64,
    /// The tier it was given for.
    pub tier: String,
}

/// A member's upgrade gifts, and the gifts (by transaction id) refunds took back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gifts {
    /// Every upgrade gift of points.
    pub given: Vec<GiftLot>,
    /// The gifts taken back.
    pub withdrawn: Vec<[u8; 16]>,
}

const GIFTS_SQL: &str = concat!(
    "SELECT kind, txn, earn, body FROM facts WHERE ",
    ledger_where!(),
    " AND kind IN ('upgrade_gift', 'gift_withdrawn')"
);

/// `member`'s upgrade gifts of points and their withdrawals, from the member's range of
/// the ledger index (a handful of rows: one gift per tier reached).
pub fn gifts(conn: &Connection, member: &[u8; 16]) -> Result<Gifts, StoreError> {
    use patron_domain::fact::Detail;
    let mut stmt = conn.prepare_cached(GIFTS_SQL)?;
    let mut rows = stmt.query(params![&member[..]])?;
    let mut out = Gifts::default();
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let body: String = r.get(3)?;
        let kind = Kind::parse(&kind).ok_or_else(|| StoreError::Corrupt(kind.clone()))?;
        match Detail::parse_held(kind, &body).map_err(|e| StoreError::Corrupt(e.to_string()))? {
            Detail::UpgradeGift(g) => out.given.push(GiftLot {
                txn: r.get(1)?,
                points: r.get(2)?,
                tier: g.tier,
            }),
            Detail::GiftWithdrawn(w) => out.withdrawn.push(*w.gift.as_bytes()),
            _ => {}
        }
    }
    Ok(out)
}

/// `node/incarnation` of an origin row.
pub fn origin_label(conn: &Connection, origin_id: i64) -> rusqlite::Result<String> {
    conn.prepare_cached("SELECT node || '/' || incarnation FROM origins WHERE id = ?1")?
        .query_row(params![origin_id], |r| r.get(0))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The plan SQLite chooses for `sql` (every parameter a 16-byte blob).
    pub(crate) fn plan_of(sql: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("f.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap_or_else(|e| panic!("{e}"));
        let blob = [0u8; 16];
        let args: Vec<&dyn rusqlite::ToSql> = (0..stmt.parameter_count())
            .map(|_| &blob as &dyn rusqlite::ToSql)
            .collect();
        stmt.query_map(&args[..], |r| r.get::<_, String>(3))
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(Result::ok)
            .collect()
    }

    /// Without the partial index every sale would scan the whole ledger.
    #[test]
    fn the_member_ledger_query_uses_its_partial_index() {
        let plan = plan_of(FOR_MEMBER_SQL);
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX facts_ledger_by_member")),
            "{plan:?}"
        );
    }
}
