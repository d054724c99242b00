//! Each person's ledger snapshot (`member_ledgers`), kept in the transaction of every
//! fact that moves their points or qualifying spend, so that a sale, a redemption or
//! a lookup reads one row instead of the member's whole history. The fold is
//! `patron_domain::ledger`'s; the facts stay the reference: a snapshot that is missing,
//! unreadable, or meets a fact that sorts before its last one is derived from them
//! again.

use patron_domain::ledger::{LedgerFact, Snapshot};
use patron_domain::points::Millis;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::facts::{self, MemberFact, NewFact};
use super::members;

/// Lots kept one by one, beyond those sealed together (`Snapshot::seal`): the
/// snapshot grows with the days a member's lots expire on, not with their earns.
pub const KEEP_LOTS: usize = 32;

/// Qualifying-spend entries older than this before a person's latest fact are
/// dropped from the snapshot (about 24 months: tier windows are 12 months by default).
/// A longer window is still answered exactly, from the facts, at a history's cost.
pub const SPEND_KEPT_MS: Millis = 24 * 31 * 86_400_000;

/// What `f`, written under `origin` (its `node/incarnation`) at `seq`, brings to its
/// member's ledger; `None` if nothing.
pub fn ledger_fact(f: &NewFact, origin: &str, seq: i64) -> Option<LedgerFact> {
    let purchase = f.kind == patron_domain::Kind::Purchase;
    let moves = f.earn != 0 || f.spend != 0 || f.reverse != 0;
    if !moves && f.qual_spend == 0 && !purchase {
        return None;
    }
    Some(from_member_fact(MemberFact {
        at: f.at,
        origin: origin.into(),
        seq,
        txn: f.txn,
        earn: f.earn,
        expires_at: f.expires_at,
        spend: f.spend,
        reverse: f.reverse,
        reverse_lot: f.reverse_lot,
        qual_spend: f.qual_spend,
        qual_at: f.qual_at,
        available_at: f.available_at,
        is_purchase: purchase,
    }))
}

/// The same for a fact read back from the ledger.
fn from_member_fact(f: MemberFact) -> LedgerFact {
    let moves = f.earn != 0 || f.spend != 0 || f.reverse != 0;
    LedgerFact {
        movement: moves.then(|| f.movement()),
        spend: (f.qual_spend != 0).then_some((f.qual_at, f.qual_spend)),
        purchase: f.is_purchase,
    }
}

/// The id `member`'s merges survive in (itself if it was never merged).
fn root(conn: &Connection, member: &[u8; 16]) -> Result<[u8; 16], StoreError> {
    Ok(conn
        .prepare_cached("SELECT survivor FROM member_aliases WHERE loser = ?1")?
        .query_row(params![&member[..]], |r| r.get(0))
        .optional()?
        .unwrap_or(*member))
}

/// The stored snapshot of the person `member` stands for, if one is kept and readable.
pub fn get(conn: &Connection, member: &[u8; 16]) -> Result<Option<Snapshot>, StoreError> {
    get_at(conn, &root(conn, member)?)
}

/// The snapshot kept in the row of `root` itself.
fn get_at(conn: &Connection, root: &[u8; 16]) -> Result<Option<Snapshot>, StoreError> {
    Ok(get_parts(conn, root)?.map(|(s, _)| s))
}

/// The snapshot kept for `root`, with its cold part as stored (so that a write can
/// tell whether the cold part changed).
fn get_parts(
    conn: &Connection,
    root: &[u8; 16],
) -> Result<Option<(Snapshot, Vec<u8>)>, StoreError> {
    let hot: Option<Vec<u8>> = conn
        .prepare_cached("SELECT snapshot FROM member_ledgers WHERE member = ?1")?
        .query_row(params![&root[..]], |r| r.get(0))
        .optional()?;
    // An empty snapshot is one not kept (forgotten, or a row holding only coupons).
    let Some(hot) = hot.filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let cold: Vec<u8> = conn
        .prepare_cached("SELECT cold FROM member_ledgers_cold WHERE member = ?1")?
        .query_row(params![&root[..]], |r| r.get(0))
        .optional()?
        .unwrap_or_default();
    let s = Snapshot::decode_split(&hot, &cold);
    if s.is_none() {
        tracing::warn!("a member's ledger snapshot does not decode: derived from the facts");
    }
    Ok(s.map(|s| (s, cold)))
}

/// The ledger facts of the person `member` stands for, under every id.
fn person_facts(conn: &Connection, member: &[u8; 16]) -> Result<Vec<MemberFact>, StoreError> {
    let mut all = Vec::new();
    for id in members::alias_set(conn, member)? {
        all.extend(facts::for_member(conn, &id)?);
    }
    Ok(all)
}

/// The person's ledger derived from their facts under every id (the reference).
pub fn derive(conn: &Connection, member: &[u8; 16]) -> Result<Snapshot, StoreError> {
    let all: Vec<LedgerFact> = person_facts(conn, member)?
        .into_iter()
        .map(from_member_fact)
        .collect();
    let latest = all.iter().filter_map(latest_at).max();
    let mut s = Snapshot::derive(all);
    if let Some(t) = latest {
        s.forget_spend_before(forget_before(t));
    }
    s.seal(KEEP_LOTS);
    Ok(s)
}

/// The stored snapshot, or one derived from the facts when none is kept (a reader
/// cannot store it; the next fact of the person does).
pub fn current(conn: &Connection, member: &[u8; 16]) -> Result<Snapshot, StoreError> {
    match get(conn, member)? {
        Some(s) => Ok(s),
        None => derive(conn, member),
    }
}

/// Qualifying spend counting after `start`, from the facts (for a window longer than
/// the snapshot keeps).
pub fn spend_after_from_facts(
    conn: &Connection,
    member: &[u8; 16],
    start: Millis,
) -> Result<i64, StoreError> {
    Ok(person_facts(conn, member)?
        .iter()
        .filter(|f| f.qual_at > start)
        .map(|f| f.qual_spend)
        .sum())
}

/// Keeps `s` in the row of `root` itself: its hot part always, its cold part only when
/// it differs from `stored_cold` (what the row held, if known), so that a sale of a
/// loyal member rewrites one small row, not the pages of two years of lots and spend.
fn put_at(
    conn: &Connection,
    root: &[u8; 16],
    s: &Snapshot,
    stored_cold: Option<&[u8]>,
) -> Result<(), StoreError> {
    let (hot, cold) = s.encode_split();
    conn.prepare_cached(
        "INSERT INTO member_ledgers (member, snapshot) VALUES (?1, ?2)
         ON CONFLICT (member) DO UPDATE SET snapshot = excluded.snapshot",
    )?
    .execute(params![&root[..], hot])?;
    if stored_cold != Some(cold.as_slice()) {
        put_cold(conn, root, &cold)?;
    }
    Ok(())
}

/// Keeps (or, empty, drops) the cold part of `root`'s snapshot.
fn put_cold(conn: &Connection, root: &[u8; 16], cold: &[u8]) -> Result<(), StoreError> {
    if cold.is_empty() {
        conn.prepare_cached("DELETE FROM member_ledgers_cold WHERE member = ?1")?
            .execute(params![&root[..]])?;
    } else {
        conn.prepare_cached(
            "INSERT INTO member_ledgers_cold (member, cold) VALUES (?1, ?2)
             ON CONFLICT (member) DO UPDATE SET cold = excluded.cold",
        )?
        .execute(params![&root[..], cold])?;
    }
    Ok(())
}

fn latest_at(f: &LedgerFact) -> Option<Millis> {
    let m = f.movement.as_ref().map(|m| m.at);
    let s = f.spend.map(|(t, _)| t);
    m.max(s)
}

/// Folds `f`, a fact of `member` just written in this transaction, into the person's
/// snapshot; derives the snapshot from the facts (the new one included) when none is
/// kept or `f` sorts before its last movement.
pub fn fold(conn: &Connection, member: &[u8; 16], f: &LedgerFact) -> Result<(), StoreError> {
    let root = root(conn, member)?;
    let stored = get_parts(conn, &root)?;
    let (stored, cold) = match stored {
        Some((s, cold)) => (Some(s), Some(cold)),
        None => (None, None),
    };
    let folded = stored.and_then(|mut s| s.fold(f).is_ok().then_some(s));
    let s = match folded {
        Some(mut s) => {
            if let Some(t) = latest_at(f) {
                s.forget_spend_before(forget_before(t));
            }
            s.seal(KEEP_LOTS);
            s
        }
        None => derive(conn, member)?,
    };
    put_at(conn, &root, &s, cold.as_deref())
}

/// Where spend entries are forgotten for a person whose latest fact is at `t`: about
/// [`SPEND_KEPT_MS`] before, moved back to the split grid so that the cut (and with it
/// the cold part of the snapshot) changes once a grid period, not every day.
fn forget_before(t: Millis) -> Millis {
    let grid = patron_domain::ledger::SPLIT_GRID_MS;
    t.saturating_sub(SPEND_KEPT_MS)
        .div_euclid(grid)
        .saturating_mul(grid)
}

/// Derives the snapshot of the person `member` stands for again and keeps it (after a
/// merge or after facts were removed).
pub fn refresh(conn: &Connection, member: &[u8; 16]) -> Result<(), StoreError> {
    let s = derive(conn, member)?;
    put_at(conn, &root(conn, member)?, &s, None)
}

/// Forgets the snapshot kept under `member` itself (a person removed from this
/// store): it is derived from the facts when next read. Their coupon codes stay.
pub fn forget(conn: &Connection, member: &[u8; 16]) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE member_ledgers SET snapshot = x'' WHERE member = ?1")?
        .execute(params![&member[..]])?;
    put_cold(conn, member, &[])
}

/// `loser` now counts under `survivor`: the loser's coupon codes join the survivor's,
/// the loser's row goes, and the survivor's snapshot is derived over both ids.
pub fn absorb(conn: &Connection, loser: &[u8; 16], survivor: &[u8; 16]) -> Result<(), StoreError> {
    let mut codes = codes_at(conn, survivor)?;
    for c in codes_at(conn, loser)? {
        if !codes.contains(&c) {
            codes.push(c);
        }
    }
    conn.prepare_cached("DELETE FROM member_ledgers WHERE member = ?1")?
        .execute(params![&loser[..]])?;
    put_cold(conn, loser, &[])?;
    put_codes(conn, survivor, &codes)?;
    refresh(conn, survivor)
}

/// The coupon codes kept in the row of `root` itself.
fn codes_at(conn: &Connection, root: &[u8; 16]) -> Result<Vec<String>, StoreError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT coupons FROM member_ledgers WHERE member = ?1")?
        .query_row(params![&root[..]], |r| r.get(0))
        .optional()?;
    match json {
        None => Ok(Vec::new()),
        Some(j) => serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string())),
    }
}

fn put_codes(conn: &Connection, root: &[u8; 16], codes: &[String]) -> Result<(), StoreError> {
    let json = serde_json::to_string(codes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO member_ledgers (member, snapshot, coupons) VALUES (?1, x'', ?2)
         ON CONFLICT (member) DO UPDATE SET coupons = excluded.coupons",
    )?
    .execute(params![&root[..], json])?;
    Ok(())
}

/// The codes of the coupons of the person `member` stands for (any of their ids) that
/// were open when the last was added; the caller reads each coupon and checks it.
pub fn coupon_codes(conn: &Connection, member: &[u8; 16]) -> Result<Vec<String>, StoreError> {
    codes_at(conn, &root(conn, member)?)
}

/// Adds coupon `code` to the person's list, dropping the codes `open` says are no
/// longer open: the list stays as long as the coupons a member can still use.
pub fn add_coupon(
    conn: &Connection,
    member: &[u8; 16],
    code: &str,
    open: impl Fn(&str) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let root = root(conn, member)?;
    let mut codes = Vec::new();
    for c in codes_at(conn, &root)? {
        if c != code && open(&c)? {
            codes.push(c);
        }
    }
    codes.push(code.to_string());
    put_codes(conn, &root, &codes)
}

/// Every person with facts, by the id their merges survive in.
pub fn people(conn: &Connection) -> Result<Vec<[u8; 16]>, StoreError> {
    Ok(conn
        .prepare(
            "SELECT DISTINCT coalesce((SELECT survivor FROM member_aliases WHERE loser = f.member),
                                      f.member)
               FROM facts f WHERE f.member IS NOT NULL",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?)
}

/// Derives every person's snapshot from the facts again, in one transaction; how many
/// were written (the edge itself rebuilds in chunks, `Edge::rebuild_ledgers`).
#[cfg(test)]
fn rebuild_all(conn: &Connection) -> Result<u64, StoreError> {
    conn.execute("UPDATE member_ledgers SET snapshot = x''", [])?;
    conn.execute("DELETE FROM member_ledgers_cold", [])?;
    let ids = people(conn)?;
    for id in &ids {
        refresh(conn, id)?;
    }
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use patron_domain::Kind;
    use proptest::prelude::*;

    const A: [u8; 16] = [0xA; 16];
    const B: [u8; 16] = [0xB; 16];

    struct Db {
        _dir: tempfile::TempDir,
        conn: Connection,
        origins: Vec<i64>,
        seqs: Vec<i64>,
    }

    /// Everything a reader of a snapshot sees, at a few read times.
    #[allow(clippy::type_complexity)]
    fn observed(
        s: &Snapshot,
        scale: i64,
    ) -> (
        Vec<(i64, i64, i64, i64, Vec<(i64, i64)>)>,
        Option<i64>,
        bool,
        u64,
    ) {
        let points = [0, 5_000, 20_000]
            .iter()
            .map(|&now| {
                let p = s.points_at(now * scale);
                (
                    p.balance(),
                    p.pending(),
                    p.debt,
                    p.expired,
                    p.expiring_by(i64::MAX),
                )
            })
            .collect();
        (points, s.spend_after(-1), s.purchased, s.facts)
    }

    fn db() -> Db {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("l.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let origins = ["S001", "S002", "S003"]
            .iter()
            .map(|n| super::super::origin_id(&conn, n, "inc").unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Db {
            _dir: dir,
            conn,
            origins,
            seqs: vec![0; 3],
        }
    }

    /// One step a store's ledger can take.
    #[derive(Debug, Clone)]
    enum Step {
        /// A fact of `member` (A or B) from origin `o`, at `at`: an earn, a spend, a
        /// reversal of an earlier lot, a refund's negative spend, a walk-in purchase.
        Fact {
            o: usize,
            b: bool,
            at: i64,
            kind: u8,
            n: i64,
        },
        /// B is merged into A (a `member_merged` fact from the hub).
        Merge,
        /// The snapshot row (or its cold part) is lost or damaged (a restore of an
        /// older file, a bad sector): the next read or fact derives it again.
        Damage { b: bool, cold: bool },
    }

    fn arb_step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => (0usize..3, any::<bool>(), 0i64..10_000, 0u8..5, 1i64..300)
                .prop_map(|(o, b, at, kind, n)| Step::Fact { o, b, at, kind, n }),
            1 => Just(Step::Merge),
            1 => (any::<bool>(), any::<bool>()).prop_map(|(b, cold)| Step::Damage { b, cold }),
        ]
    }

    /// Applies `step` with its times multiplied by `scale` (1: milliseconds; a day's
    /// worth: the same history over decades, so snapshots have cold parts).
    fn apply(d: &mut Db, step: &Step, i: usize, scale: i64) {
        let c = &d.conn;
        match *step {
            Step::Fact { o, b, at, kind, n } => {
                let at = at * scale;
                let member = if b { B } else { A };
                let txn = [i as u8; 16];
                let mut f = NewFact::new(Kind::Event, at, Some(member), txn, "{}".into());
                match kind {
                    0 => {
                        f.earn = n;
                        f.expires_at = at + (3_000 + n * 10) * scale;
                        f.available_at = if n % 4 == 0 { at + 500 * scale } else { 0 };
                        f.qual_spend = n * 100;
                        f.qual_at = at;
                        f.kind = Kind::Purchase;
                    }
                    1 => {
                        f.spend = n;
                        f.kind = Kind::Redemption;
                    }
                    2 => {
                        f.reverse = n / 2 + 1;
                        f.reverse_lot = Some([(i / 2) as u8; 16]);
                        f.qual_spend = -n;
                        f.qual_at = at;
                        f.kind = Kind::Refund;
                    }
                    3 => {
                        f.qual_spend = -n;
                        f.qual_at = at;
                        f.kind = Kind::Refund;
                    }
                    _ => f.kind = Kind::Purchase,
                }
                d.seqs[o] += 1;
                let put = facts::insert_at(c, d.origins[o], d.seqs[o], &f);
                assert!(put.unwrap_or_else(|e| panic!("{e}")), "a new fact");
            }
            Step::Merge => members::merge(c, &B, &A).unwrap_or_else(|e| panic!("{e}")),
            Step::Damage { b, cold } => {
                let root = root(c, if b { &B } else { &A }).unwrap_or_else(|e| panic!("{e}"));
                let sql = if cold {
                    "UPDATE member_ledgers_cold SET cold = x'01ff' WHERE member = ?1"
                } else {
                    "UPDATE member_ledgers SET snapshot = x'00ff' WHERE member = ?1"
                };
                c.execute(sql, params![&root[..]])
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Facts arrive in any order from three origins (late facts of other stores,
        /// late facts of the id merged away), merges happen, snapshots are damaged:
        /// after every step, what the store keeps and reads equals the derivation
        /// from the facts, for both ids.
        #[test]
        fn the_kept_snapshot_equals_the_derivation_from_the_facts_after_every_step(
            steps in prop::collection::vec(arb_step(), 1..40),
            scale in prop::sample::select(vec![1i64, 86_400_000 / 40]),
        ) {
            let mut d = db();
            for (i, s) in steps.iter().enumerate() {
                apply(&mut d, s, i, scale);
                for id in [A, B] {
                    let reference = derive(&d.conn, &id).unwrap_or_else(|e| panic!("{e}"));
                    let read = current(&d.conn, &id).unwrap_or_else(|e| panic!("{e}"));
                    prop_assert_eq!(observed(&read, scale), observed(&reference, scale), "step {} {:?}", i, s);
                    for now in [0, 5_000 * scale, 20_000 * scale] {
                        let mut movements: Vec<patron_domain::points::Movement> = members::alias_set(&d.conn, &id)
                            .unwrap_or_else(|e| panic!("{e}"))
                            .iter()
                            .flat_map(|m| facts::for_member(&d.conn, m).unwrap_or_else(|e| panic!("{e}")))
                            .filter(|f| f.earn != 0 || f.spend != 0 || f.reverse != 0)
                            .map(|f| from_member_fact(f).movement.unwrap_or_else(|| unreachable!()))
                            .collect();
                        prop_assert_eq!(
                            read.points_at(now),
                            patron_domain::points::derive(&mut movements, now)
                        );
                    }
                }
                // A fact of a person leaves a readable snapshot kept (not derived on
                // every read): the one the fact touched.
                if let Step::Fact { b, .. } = s {
                    let id = if *b { B } else { A };
                    let kept = get(&d.conn, &id).unwrap_or_else(|e| panic!("{e}"));
                    prop_assert!(kept.is_some(), "no snapshot kept after a fact");
                }
            }
            // A rebuild from the facts reads as what was kept, and keeps a snapshot of
            // everyone with facts.
            let kept: Vec<Snapshot> = [A, B]
                .iter()
                .map(|id| current(&d.conn, id).unwrap_or_else(|e| panic!("{e}")))
                .collect();
            rebuild_all(&d.conn).unwrap_or_else(|e| panic!("{e}"));
            for (id, before) in [A, B].iter().zip(kept) {
                let after = get(&d.conn, id).unwrap_or_else(|e| panic!("{e}"));
                if before.facts > 0 {
                    prop_assert_eq!(
                        Some(observed(&before, scale)),
                        after.as_ref().map(|a| observed(a, scale))
                    );
                }
            }
        }
    }

    #[test]
    fn a_sale_reads_one_row_not_the_history() {
        let mut d = db();
        for i in 0..50 {
            apply(
                &mut d,
                &Step::Fact {
                    o: 0,
                    b: false,
                    at: 1_000 + i,
                    kind: 0,
                    n: 10,
                },
                i as usize,
                1,
            );
        }
        // With the facts gone, the kept snapshot still answers: reads do not derive.
        d.conn
            .execute("DELETE FROM facts", [])
            .unwrap_or_else(|e| panic!("{e}"));
        let s = current(&d.conn, &A).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.points_at(2_000).balance(), 500);
        assert_eq!(s.facts, 50);
    }

    /// A loyal member's sale rewrites the small hot row of their snapshot only: the
    /// cold part (years of lots and spend) is written when it changes, not per sale.
    #[test]
    fn a_loyal_member_s_sale_rewrites_one_ledger_row() {
        const DAY: i64 = 86_400_000;
        let mut d = db();
        let sale = |d: &mut Db, at: i64, i: usize| {
            let mut f = NewFact::new(
                Kind::Purchase,
                at,
                Some(A),
                [(i % 251) as u8; 16],
                "{}".into(),
            );
            f.earn = 10;
            // Noon a year on: the sales below, early in the day, expire no lot.
            f.expires_at = at + 365 * DAY + DAY / 2;
            f.qual_spend = 1_000;
            f.qual_at = at;
            d.seqs[0] += 1;
            facts::insert_at(&d.conn, d.origins[0], d.seqs[0], &f).unwrap_or_else(|e| panic!("{e}"))
        };
        for day in 0..600 {
            assert!(sale(&mut d, day * DAY + 1_000, day as usize));
        }
        let cold_rows = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM member_ledgers_cold", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert_eq!(
            cold_rows(&d.conn),
            1,
            "two years of history has a cold part"
        );
        d.conn
            .execute_batch(
                "CREATE TEMP TABLE cold_writes (n INTEGER);
                 CREATE TEMP TRIGGER cold_ins AFTER INSERT ON main.member_ledgers_cold
                 BEGIN INSERT INTO cold_writes VALUES (1); END;
                 CREATE TEMP TRIGGER cold_upd AFTER UPDATE ON main.member_ledgers_cold
                 BEGIN INSERT INTO cold_writes VALUES (1); END;",
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let cold_writes = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM cold_writes", [], |r| r.get(0))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(sale(&mut d, 599 * DAY + 2_000, 600));
        assert_eq!(
            cold_writes(&d.conn),
            0,
            "a same-day sale left the cold part alone"
        );
        // A redemption takes from the lots expiring first, which are cold: rewritten.
        let mut spend = NewFact::new(
            Kind::Redemption,
            599 * DAY + 3_000,
            Some(A),
            [7; 16],
            "{}".into(),
        );
        spend.spend = 15;
        d.seqs[0] += 1;
        facts::insert_at(&d.conn, d.origins[0], d.seqs[0], &spend)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cold_writes(&d.conn),
            1,
            "the redemption rewrote the cold part"
        );
        let s = current(&d.conn, &A).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.facts, 602);
        assert_eq!(
            observed(&s, DAY),
            observed(&derive(&d.conn, &A).unwrap_or_else(|e| panic!("{e}")), DAY)
        );
    }
}
