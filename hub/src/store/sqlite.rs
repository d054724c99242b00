//! The SQLite backend: WAL with `synchronous=FULL`, foreign keys on, migrations under
//! `PRAGMA user_version`, one connection that every write goes through.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::Duration;

use patron_domain::claims::ClaimKey;
use patron_domain::points::Movement;
use patron_domain::{Detail, Entry};
use patron_protocol::Origin;
use patron_protocol::hub::{
    AuthorizeResponse, ClaimResponse, OverClaim, Overdraw, OverdrawReport, QuarantinedFact,
    RedemptionFlag, Reserved, StoreStatus,
};
use patron_sqlite::wal::WalBound;

use crate::keyring::{Generation, HeldKey};
use patron_sync::profile::{Profile, ProfileOp};
use patron_sync::rights::{Lease, Rights};
use patron_sync::session::{Fact, Judgement, Merged};
use rusqlite::{Connection, OptionalExtension, params};

use crate::activity::{ACTIVITY, Activity, Fold as ActivityFold};
use crate::authority::{ClaimHold, OVERDRAWS, OfflineSpend};

use super::{
    AuthorityStore, AuthorityTx, Decide, Documents, FactLog, Hold, IngestJob, Ingested, Members,
    NewStore, OverdrawRow, OverdrawRule, PendingAnswer, PointsRow, ProjectionPosition, Projections,
    Rebuilt, Reproject, Step, StoreError, StoreRow, StoredFact, Stores, StreamRead, Streams,
    TypedFact,
};

/// What `store` may still credit, as last written.
fn store_budget(
    tx: &Connection,
    store: &str,
) -> Result<Option<crate::ingest::StoreBudget>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT points, at FROM store_budgets WHERE store = ?1")?
        .query_row(params![store], |r| {
            Ok(crate::ingest::StoreBudget {
                points: r.get(0)?,
                at: r.get(1)?,
            })
        })
        .optional()?)
}

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only.
const MIGRATIONS: &[&str] = &[
    r#"
    -- Stores of the chain. A store is registered with a one-time enrollment secret
    -- (kept as a hash) and exchanges it for a sync credential (also a hash).
    CREATE TABLE stores (
        store_id        TEXT PRIMARY KEY,
        name            TEXT    NOT NULL,
        ring            TEXT    NOT NULL,
        enroll_hash     BLOB,              -- NULL once redeemed
        credential_hash BLOB UNIQUE,
        created_at      INTEGER NOT NULL,
        enrolled_at     INTEGER,
        last_sync_at    INTEGER,
        report_origin   INTEGER REFERENCES origins(id),
        report_last_seq INTEGER NOT NULL DEFAULT 0
    ) STRICT;

    -- Where facts come from; `high` is the highest contiguous sequence held.
    CREATE TABLE origins (
        id          INTEGER PRIMARY KEY,
        node        TEXT    NOT NULL,
        incarnation TEXT    NOT NULL,
        high        INTEGER NOT NULL DEFAULT 0,
        UNIQUE (node, incarnation)
    ) STRICT;

    -- Every synced fact. The rowid is the ingest order: the cursor that pulls follow.
    CREATE TABLE facts (
        id          INTEGER PRIMARY KEY,
        origin      INTEGER NOT NULL REFERENCES origins(id),
        seq         INTEGER NOT NULL,
        body        TEXT    NOT NULL,
        received_at INTEGER NOT NULL,
        UNIQUE (origin, seq)
    ) STRICT;
    "#,
    r#"
    -- HQ-authored automerge documents (one per ring) and each peer's sync state.
    CREATE TABLE docs (
        doc_id     TEXT PRIMARY KEY,
        bytes      BLOB    NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE doc_sync_states (
        doc_id TEXT NOT NULL,
        peer   TEXT NOT NULL,
        state  BLOB NOT NULL,
        PRIMARY KEY (doc_id, peer)
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- Member profiles merged from every store's profile facts (a projection: it can be
    -- rebuilt from the facts). `profile` is a patron_sync::Profile as JSON.
    CREATE TABLE profiles (
        member     TEXT PRIMARY KEY,
        profile    TEXT    NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT;
    -- How far ahead a store's clock was seen (profile stamps clamped), if ever.
    ALTER TABLE stores ADD COLUMN clock_ahead_ms INTEGER;
    "#,
    r#"
    -- Every member's points movements (a projection of the facts, written in the ingest
    -- transaction): what the hub authorizes redemptions against.
    CREATE TABLE points (
        member       TEXT    NOT NULL,
        origin       INTEGER NOT NULL REFERENCES origins(id),
        seq          INTEGER NOT NULL,
        at           INTEGER NOT NULL,
        txn          TEXT    NOT NULL,
        earn         INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        available_at INTEGER NOT NULL,
        spend        INTEGER NOT NULL,
        reverse      INTEGER NOT NULL,
        reverse_lot  TEXT,
        offline      INTEGER NOT NULL
    ) STRICT;
    -- Rows append in ingest order; only this narrow index lands on a page per member
    -- (keyed by member, the wide rows cost ingest 3x: 259k -> 77k facts/s).
    CREATE INDEX points_by_member ON points (member);

    -- Points the hub promised to a sale it authorized, until the sale's fact arrives.
    CREATE TABLE holds (
        txn        TEXT PRIMARY KEY,
        member     TEXT    NOT NULL,
        store      TEXT    NOT NULL,
        points     INTEGER NOT NULL,
        until      INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX holds_by_member ON holds (member);

    -- Redemptions that drove a balance below zero, and members who redeemed offline at
    -- two stores within the flag window.
    CREATE TABLE overdraws (
        origin  TEXT    NOT NULL,
        seq     INTEGER NOT NULL,
        member  TEXT    NOT NULL,
        store   TEXT    NOT NULL,
        at      INTEGER NOT NULL,
        points  INTEGER NOT NULL,
        offline INTEGER NOT NULL,
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE redemption_flags (
        member       TEXT    NOT NULL,
        first_store  TEXT    NOT NULL,
        first_at     INTEGER NOT NULL,
        second_store TEXT    NOT NULL,
        second_at    INTEGER NOT NULL,
        PRIMARY KEY (member, first_store, first_at, second_store, second_at)
    ) STRICT, WITHOUT ROWID;

    -- The movements already held, as the ingest would have indexed them.
    INSERT OR IGNORE INTO points (member, origin, seq, at, txn, earn, expires_at, available_at,
                                  spend, reverse, reverse_lot, offline)
    SELECT json_extract(body, '$.member'), origin, seq, json_extract(body, '$.at'),
           json_extract(body, '$.txn'),
           coalesce(json_extract(body, '$.earn'), 0),
           coalesce(json_extract(body, '$.expires_at'), 0),
           coalesce(json_extract(body, '$.available_at'), 0),
           coalesce(json_extract(body, '$.spend'), 0),
           coalesce(json_extract(body, '$.reverse'), 0),
           json_extract(body, '$.reverse_lot'),
           coalesce(json_extract(body, '$.body.auth') = 'offline', 0)
      FROM facts
     WHERE json_extract(body, '$.member') IS NOT NULL
       AND (coalesce(json_extract(body, '$.earn'), 0) <> 0
            OR coalesce(json_extract(body, '$.spend'), 0) <> 0
            OR coalesce(json_extract(body, '$.reverse'), 0) <> 0);
    "#,
    r#"
    -- Leases: part of a member's points a store may redeem offline (patron_sync::rights).
    -- spent: the store's spends under the lease that reached the hub.
    CREATE TABLE leases (
        member TEXT    NOT NULL,
        store  TEXT    NOT NULL,
        points INTEGER NOT NULL,
        spent  INTEGER NOT NULL,
        until  INTEGER NOT NULL,
        PRIMARY KEY (member, store)
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- A member's facts from every store, and members by the phone's chain-wide blind
    -- index: a store fetches a member it does not hold by phone, and the hub finds a
    -- phone registered twice. Expressions over the stored fact: the ingest code is
    -- unchanged, but each insert evaluates them (BENCHMARKS.md: within the noise).
    CREATE INDEX facts_by_member ON facts (json_extract(body, '$.member'))
        WHERE json_extract(body, '$.member') IS NOT NULL;
    CREATE INDEX registrations_by_phone
        ON facts (json_extract(json_extract(body, '$.body'), '$.phone_idx'))
        WHERE json_extract(body, '$.kind') = 'member_registered';
    "#,
    r#"
    -- Members merged into the member registered first under the same phone (DESIGN.md
    -- §4). The survivor is always a first registration, so aliases are one level deep.
    -- Each row is also a `member_merged` fact of the hub's own origin.
    CREATE TABLE member_aliases (
        loser    TEXT PRIMARY KEY,
        survivor TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX member_aliases_by_survivor ON member_aliases (survivor);
    "#,
    r#"
    -- A member registered before its store enrolled is found by phone through the
    -- `member_rekeyed` fact that puts it under the chain's phone index. A re-key counts
    -- as a registration there: the survivor of a merge is the first registration or
    -- re-key under a phone index, so aliases stay one level deep.
    DROP INDEX registrations_by_phone;
    CREATE INDEX registrations_by_phone
        ON facts (json_extract(json_extract(body, '$.body'), '$.phone_idx'))
        WHERE json_extract(body, '$.kind') IN ('member_registered', 'member_rekeyed');
    "#,
    r#"
    -- (Details are read with json_extract(json_extract(body, '$.body'), …): the first
    -- hub builds held them as an escaped JSON string, which the nested form reads too.)
    -- Facts are typed once, at ingest (patron_domain::fact): what queries select on is
    -- a column, not an expression over the JSON evaluated on every insert (the
    -- expression indexes of migrations 6 and 8 held ingest to a fifth of a bare
    -- insert). Ids are 16-byte blobs. The points movement is columns of the fact
    -- itself, so a fact costs one member-index entry, not two (the `points` table and
    -- its own member index cost ingest 30%).
    CREATE TABLE facts_typed (
        id           INTEGER PRIMARY KEY,
        origin       INTEGER NOT NULL REFERENCES origins(id),
        seq          INTEGER NOT NULL,
        body         TEXT    NOT NULL,
        received_at  INTEGER NOT NULL,
        kind         TEXT    NOT NULL,
        at           INTEGER NOT NULL,
        member       BLOB,
        txn          BLOB    NOT NULL,
        earn         INTEGER NOT NULL,
        expires_at   INTEGER NOT NULL,
        available_at INTEGER NOT NULL,
        spend        INTEGER NOT NULL,
        reverse      INTEGER NOT NULL,
        reverse_lot  BLOB,
        qual_spend   INTEGER NOT NULL,
        qual_at      INTEGER NOT NULL,
        auth         TEXT,            -- who allowed a spend (hub, lease, offline, local)
        UNIQUE (origin, seq)
    ) STRICT;
    INSERT INTO facts_typed
    SELECT id, origin, seq, body, received_at,
           json_extract(body, '$.kind'), json_extract(body, '$.at'),
           unhex(replace(json_extract(body, '$.member'), '-', '')),
           unhex(replace(json_extract(body, '$.txn'), '-', '')),
           coalesce(json_extract(body, '$.earn'), 0),
           coalesce(json_extract(body, '$.expires_at'), 0),
           coalesce(json_extract(body, '$.available_at'), 0),
           coalesce(json_extract(body, '$.spend'), 0),
           coalesce(json_extract(body, '$.reverse'), 0),
           unhex(replace(json_extract(body, '$.reverse_lot'), '-', '')),
           coalesce(json_extract(body, '$.qual_spend'), 0),
           coalesce(json_extract(body, '$.qual_at'), 0),
           json_extract(json_extract(body, '$.body'), '$.auth')
      FROM facts ORDER BY id;
    DROP TABLE facts;
    DROP TABLE points;
    ALTER TABLE facts_typed RENAME TO facts;
    CREATE INDEX facts_by_member ON facts (member) WHERE member IS NOT NULL;

    -- Members by the phone index their registration or re-key put them under, in
    -- ingest order (a projection of the facts, written in the ingest transaction): how
    -- a store fetches a member by phone and how the hub finds a phone registered twice.
    -- Member ids here are text, as in the alias, hold and lease tables.
    CREATE TABLE registrations (
        phone_idx TEXT    NOT NULL,
        fact      INTEGER NOT NULL REFERENCES facts(id),
        member    TEXT    NOT NULL,
        PRIMARY KEY (phone_idx, fact)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO registrations (phone_idx, fact, member)
    SELECT json_extract(json_extract(body, '$.body'), '$.phone_idx'), id,
           json_extract(body, '$.member')
      FROM facts
     WHERE kind IN ('member_registered', 'member_rekeyed')
       AND member IS NOT NULL
       AND json_extract(json_extract(body, '$.body'), '$.phone_idx') IS NOT NULL;
    "#,
    r#"
    -- The hub-to-store stream (patron_sync::stream). `holdings`: which stores hold
    -- which members (ids as the facts name them), once a member is held beyond the
    -- stores that wrote their facts: a store that fetched them, the stores that wrote
    -- their facts, and any that serves them later; `touched` is the hub position when
    -- a store last fetched them (or joined), so a release sent before a later fetch
    -- is ignored.
    -- `stream`: per store, the positions of facts it must receive, filled in the
    -- ingest transaction of each fact (a poll costs what it returns). Positions a store
    -- acknowledged are deleted; `stream_horizon` is the highest deleted.
    CREATE TABLE holdings (
        member  BLOB    NOT NULL,
        store   TEXT    NOT NULL,
        touched INTEGER NOT NULL,
        PRIMARY KEY (member, store)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE stream (
        store TEXT    NOT NULL,
        pos   INTEGER NOT NULL,
        PRIMARY KEY (store, pos)
    ) STRICT, WITHOUT ROWID;
    -- A member only the stores that wrote their facts know has no rows here: the
    -- first fetch by another store makes those stores holders (patron-hub ingest).
    ALTER TABLE stores ADD COLUMN stream_horizon INTEGER NOT NULL DEFAULT 0;
    "#,
    r#"
    -- Projections behind the ingest cursor (projections.rs): each keeps the last
    -- ingest position it folded in; a reset moves its generation on, so a step that
    -- read before the reset never writes after it.
    CREATE TABLE projections (
        name       TEXT    PRIMARY KEY,
        position   INTEGER NOT NULL,
        generation INTEGER NOT NULL
    ) STRICT;
    INSERT INTO projections (name, position, generation) VALUES ('activity', 0, 0);
    -- Each member id's activity (crate::activity), as the facts name the member (a
    -- merged person has a row per id; reads add them up).
    CREATE TABLE activity (
        member            BLOB    PRIMARY KEY,
        facts             INTEGER NOT NULL,
        purchases         INTEGER NOT NULL,
        spend             INTEGER NOT NULL,
        refunds           INTEGER NOT NULL,
        refunded          INTEGER NOT NULL,
        first_purchase_at INTEGER,
        last_purchase_at  INTEGER,
        points_earned     INTEGER NOT NULL,
        points_spent      INTEGER NOT NULL,
        points_reversed   INTEGER NOT NULL,
        last_seen_at      INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- Overdraws are judged behind the ingest cursor (projections.rs), off the push
    -- path; the spends already held were judged at their ingest.
    INSERT INTO projections (name, position, generation)
    SELECT 'overdraws', coalesce(max(id), 0), 0 FROM facts;
    "#,
    r#"
    -- A lease its store gave back on a recall, before every spend under it reached
    -- the hub: it counts only those spends, and nothing of it may be used any more.
    ALTER TABLE leases ADD COLUMN returned INTEGER NOT NULL DEFAULT 0;
    "#,
    r#"
    -- Each person's points ledger as a snapshot (patron_domain::ledger), under their
    -- surviving id: every movement of theirs up to fact `position` folded in. The
    -- authorizer folds in what arrived since; a merge drops the rows of both ids.
    CREATE TABLE member_ledgers (
        member   TEXT    PRIMARY KEY,
        position INTEGER NOT NULL,
        snapshot BLOB    NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- What the hub trusts a store with (crate::ingest::quarantine_reason). Each
    -- member's home: the store whose fact first named them (their registration).
    -- A fact a store had no right to write is kept in the log, in order, with why
    -- (`quarantine`) and without its member, so no member's state, stream or fetch
    -- sees it; HQ reviews it (`patron-hub quarantine`).
    CREATE TABLE member_homes (
        member BLOB PRIMARY KEY,
        store  TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    INSERT OR IGNORE INTO member_homes (member, store)
    SELECT f.member, o.node FROM facts f JOIN origins o ON o.id = f.origin
     WHERE f.member IS NOT NULL AND o.node <> 'hub' ORDER BY f.id;
    ALTER TABLE facts ADD COLUMN quarantine TEXT;
    CREATE INDEX facts_quarantined ON facts (id) WHERE quarantine IS NOT NULL;
    -- Enrollment tokens expire; a revoked store is refused and its pushes quarantined.
    ALTER TABLE stores ADD COLUMN enroll_expires_at INTEGER;
    ALTER TABLE stores ADD COLUMN revoked_at INTEGER;
    "#,
    r#"
    -- Tokens issued before tokens expired get the default day from now.
    UPDATE stores SET enroll_expires_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000 + 86400000
     WHERE enroll_hash IS NOT NULL AND enroll_expires_at IS NULL;
    "#,
    r#"
    -- Which member keys a store holds (crate::keyring::Generation): 0 the chain's
    -- (every store enrolled before keys were per store), n >= 1 generation n of its
    -- own; NULL: none yet. `key_offered`: the generation HQ rotated it to (the hub
    -- hands it out until the store reports holding it).
    ALTER TABLE stores ADD COLUMN key_generation INTEGER;
    ALTER TABLE stores ADD COLUMN key_offered INTEGER;
    UPDATE stores SET key_generation = 0, key_offered = 0 WHERE enrolled_at IS NOT NULL;
    -- Each member's data key wrapped under the chain's key, with the phone sealed under
    -- it, as the hub learnt them from the member's registration or re-key: the hub
    -- translates them for each store that receives the member (crate::keyring).
    CREATE TABLE member_keys (
        member  BLOB PRIMARY KEY,
        wrapped BLOB NOT NULL,
        phone   BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- The anomalies stores raise about their lanes (`patron-hub alerts`): partial, so
    -- no other fact pays for it at ingest.
    CREATE INDEX facts_lane_alerts ON facts (id) WHERE kind = 'lane_alert';
    -- What each store may still credit (crate::ingest::StoreBudget): points, as of
    -- `at` (the hub's clock); refilled as it is read.
    CREATE TABLE store_budgets (
        store  TEXT    PRIMARY KEY,
        points INTEGER NOT NULL,
        at     INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- Limited entitlements as chain-wide counters (patron_domain::claims): each claim
    -- fact as counted (a projection inside ingest; rebuilt from the facts), keyed by
    -- the member id the fact names (a merge joins counters through member_aliases).
    CREATE TABLE claims (
        fact        INTEGER PRIMARY KEY REFERENCES facts(id),
        member      BLOB    NOT NULL,
        entitlement TEXT    NOT NULL,
        period      TEXT    NOT NULL,
        units       INTEGER NOT NULL,
        cap         INTEGER NOT NULL,
        store       TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX claims_by_counter ON claims (member, entitlement, period);
    -- Claims the hub allowed whose facts have not arrived (by the surviving id).
    CREATE TABLE claim_holds (
        claim       TEXT    PRIMARY KEY,
        member      TEXT    NOT NULL,
        entitlement TEXT    NOT NULL,
        period      TEXT    NOT NULL,
        store       TEXT    NOT NULL,
        until       INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX claim_holds_by_counter ON claim_holds (member, entitlement, period);
    -- Counters whose claims passed their limit (offline claims at several stores), by
    -- the surviving id when judged.
    CREATE TABLE over_claims (
        member      TEXT    NOT NULL,
        entitlement TEXT    NOT NULL,
        period      TEXT    NOT NULL,
        claimed     INTEGER NOT NULL,
        cap         INTEGER NOT NULL,
        stores      TEXT    NOT NULL,
        at          INTEGER NOT NULL,
        PRIMARY KEY (member, entitlement, period)
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- A release cancels only its store's claims made before it: the claim's time.
    ALTER TABLE claims ADD COLUMN at INTEGER NOT NULL DEFAULT 0;
    "#,
    r#"
    -- Referral codes (patron_domain::referral), a projection of registrations inside
    -- ingest: the first registration received under a code keeps it.
    CREATE TABLE referral_codes (
        code   TEXT    PRIMARY KEY,
        member TEXT    NOT NULL,
        fact   INTEGER NOT NULL REFERENCES facts(id)
    ) STRICT, WITHOUT ROWID;
    INSERT OR IGNORE INTO referral_codes (code, member, fact)
    SELECT upper(trim(json_extract(json_extract(body, '$.body'), '$.referral_code'))),
           json_extract(body, '$.member'), id
      FROM facts
     WHERE kind = 'member_registered' AND member IS NOT NULL AND quarantine IS NULL
       AND json_extract(json_extract(body, '$.body'), '$.referral_code') IS NOT NULL
     ORDER BY id;
    -- Referrals stores could not credit (referral_due facts), each settled once the
    -- code's member is known: `outcome` is 'pending' until then, and `reward` the
    -- hub's referral_reward fact when it credited one. A log of decisions, not a
    -- projection: a rebuild keeps it.
    CREATE TABLE referral_dues (
        fact       INTEGER PRIMARY KEY REFERENCES facts(id),
        code       TEXT    NOT NULL,
        friend     TEXT    NOT NULL,
        event      TEXT    NOT NULL,
        points     INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        store      TEXT    NOT NULL,
        outcome    TEXT    NOT NULL DEFAULT 'pending',
        reward     INTEGER REFERENCES facts(id),
        settled_at INTEGER
    ) STRICT;
    CREATE INDEX referral_dues_pending ON referral_dues (code) WHERE outcome = 'pending';
    -- The referrer's code each member registered with (a projection inside ingest): a
    -- due is settled only under the code its friend registered with.
    CREATE TABLE referred (
        friend TEXT    PRIMARY KEY,
        code   TEXT    NOT NULL,
        fact   INTEGER NOT NULL REFERENCES facts(id)
    ) STRICT, WITHOUT ROWID;
    INSERT OR IGNORE INTO referred (friend, code, fact)
    SELECT json_extract(body, '$.member'),
           upper(trim(json_extract(json_extract(body, '$.body'), '$.referrer_code'))), id
      FROM facts
     WHERE kind = 'member_registered' AND member IS NOT NULL AND quarantine IS NULL
       AND json_extract(json_extract(body, '$.body'), '$.referrer_code') IS NOT NULL
     ORDER BY id;
    "#,
    r#"
    -- Coupons used more than once, each reuse settled by the hub's own adjustment
    -- (`fact`) taking `points` from the person. A log of decisions, not a projection:
    -- a rebuild keeps it, as it keeps the facts it names.
    CREATE TABLE coupon_debts (
        coupon TEXT    NOT NULL,
        nth    INTEGER NOT NULL,
        member TEXT    NOT NULL,
        points INTEGER NOT NULL,
        fact   INTEGER NOT NULL REFERENCES facts(id),
        at     INTEGER NOT NULL,
        PRIMARY KEY (coupon, nth)
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- The store holding each person's coupons for use without the hub (the store where
    -- they were last identified online), until when.
    CREATE TABLE coupon_leases (
        member TEXT    PRIMARY KEY,
        store  TEXT    NOT NULL,
        until  INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    -- Every such hold, kept: a coupon use at a store that held them then may be a
    -- reuse the member owes (coupon_debts); a use at any other store is not.
    CREATE TABLE coupon_lease_log (
        member TEXT    NOT NULL,
        store  TEXT    NOT NULL,
        since  INTEGER NOT NULL,
        until  INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX coupon_lease_log_by_member ON coupon_lease_log (member, store);
    -- Coupon uses the hub granted, kept after their facts settle the hold: a claim
    -- fact naming one of these was allowed by the hub, not by its store alone.
    CREATE TABLE coupon_grants (
        claim TEXT PRIMARY KEY,
        store TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    r#"
    -- Catalogue units each sale gave (patron_domain::stock; a projection inside ingest,
    -- rebuilt from the facts), and units reserved for sales whose facts have not arrived.
    CREATE TABLE catalogue_given (
        fact  INTEGER NOT NULL REFERENCES facts(id),
        sku   TEXT    NOT NULL,
        units INTEGER NOT NULL,
        PRIMARY KEY (fact, sku)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX catalogue_given_by_sku ON catalogue_given (sku, units);
    INSERT INTO catalogue_given (fact, sku, units)
    SELECT f.id, json_extract(l.value, '$.sku'), sum(json_extract(l.value, '$.qty'))
      FROM facts f, json_each(json_extract(json_extract(f.body, '$.body'), '$.lines')) l
     WHERE f.kind = 'purchase' AND f.quarantine IS NULL
       AND json_extract(l.value, '$.catalogue') = 1 AND json_extract(l.value, '$.qty') > 0
     GROUP BY f.id, json_extract(l.value, '$.sku');
    CREATE TABLE stock_holds (
        txn   TEXT    NOT NULL,
        sku   TEXT    NOT NULL,
        units INTEGER NOT NULL,
        store TEXT    NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (txn, sku)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX stock_holds_by_sku ON stock_holds (sku, until);
    "#,
];

/// SQL for the member `id` stands for: its survivor if it was merged, else itself.
macro_rules! root_of {
    ($id:literal) => {
        concat!(
            "coalesce((SELECT survivor FROM member_aliases WHERE loser = ",
            $id,
            "), ",
            $id,
            ")"
        )
    };
}

/// SQL for every id of the person whose surviving id is `$id` (itself and the ids merged
/// into it), as the 16-byte member keys of `facts`, `claims` and the like.
macro_rules! person_ids {
    ($id:literal) => {
        concat!(
            "(SELECT unhex(replace(",
            $id,
            ", '-', '')) UNION ALL SELECT unhex(replace(loser, '-', '')) FROM member_aliases WHERE survivor = ",
            $id,
            ")"
        )
    };
}

mod coupon_debts;
mod referrals;

/// Every fact of the members registered under a phone index (`?1`), after ingest
/// position `?2`, at most `?3`: the registrations table, then each member's facts by
/// the member index, never a scan of the facts.
pub(crate) const MEMBER_FACTS_BY_PHONE: &str = "
    SELECT f.id, o.node, o.incarnation, f.seq, f.body
      FROM facts f JOIN origins o ON o.id = f.origin
     WHERE f.member IN (SELECT unhex(replace(member, '-', '')) FROM registrations
                         WHERE phone_idx = ?1)
       AND f.member IS NOT NULL
       AND f.id > ?2
     ORDER BY f.id
     LIMIT ?3";

/// The mark (`patron_sync::stream::mark`) of the fact at position `pos`; 0 if none.
fn mark_at(conn: &Connection, pos: i64) -> Result<u64, StoreError> {
    let f = conn
        .prepare_cached(
            "SELECT o.node, o.incarnation, f.seq FROM facts f JOIN origins o ON o.id = f.origin
              WHERE f.id = ?1",
        )?
        .query_row(params![pos], |r| {
            Ok(Fact {
                origin: Origin {
                    node: r.get(0)?,
                    incarnation: parse_incarnation(r, 1)?,
                },
                seq: r.get::<_, i64>(2)? as u64,
                body: String::new(),
            })
        })
        .optional()?;
    Ok(f.as_ref().map_or(0, patron_sync::stream::mark))
}

/// A fact read with its position: (id, node, incarnation, seq, body).
fn positioned_fact(r: &rusqlite::Row<'_>) -> rusqlite::Result<(u64, Fact)> {
    Ok((
        r.get::<_, i64>(0)? as u64,
        Fact {
            origin: Origin {
                node: r.get(1)?,
                incarnation: parse_incarnation(r, 2)?,
            },
            seq: r.get::<_, i64>(3)? as u64,
            body: r.get(4)?,
        },
    ))
}

/// An origin's incarnation column as a UUID.
fn parse_incarnation(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<uuid::Uuid> {
    let text: String = r.get(i)?;
    text.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

/// The hub database file name inside the data directory.
pub const DB_FILE: &str = "hub.sqlite";

/// The SQLite hub store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections: every read (credentials, movements for overdraws,
    /// lookups, streams, reports, documents) goes here, never behind the writer's
    /// transaction and fsync; WAL lets each read the last commit meanwhile.
    readers: Readers,
    path: PathBuf,
    /// Authorizations, to the thread that commits them in groups.
    asks: mpsc::Sender<Ask>,
    /// Pushes, to the thread that commits them in groups.
    pushes: mpsc::Sender<Pushed>,
    stop_checkpointer: Arc<AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_checkpointer.store(true, Ordering::Relaxed);
    }
}

/// How long a connection waits for another's lock before answering busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer restarts the WAL once it holds this many pages (64 MiB).
const WAL_RESTART_PAGES: u32 = 16_384;

/// How often the background checkpointer copies the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

/// A connection with the settings every Patron database needs (`patron_sqlite::connect`)
/// and the hub's tuning.
fn connect(path: &Path, access: patron_sqlite::connect::Access) -> Result<Connection, StoreError> {
    let conn = patron_sqlite::connect::open(path, access, BUSY_TIMEOUT)?;
    // The hub reads members' rows from all over its file (a member's points come from
    // every store): with SQLite's 2 MiB default, authorizations read pages from the
    // OS on most lookups. Not much more than 32 MiB, though: a commit whose B-tree
    // balance renumbered pages through the pending-byte page (most commits under
    // random inserts) walks the page cache's whole hash table, which grows with the
    // cache. At 256 MiB that walk was 14% of the authorizer thread (perf), and the
    // authorization benchmark ran 15–20% faster at 32 MiB (BENCHMARKS.md).
    conn.pragma_update(None, "cache_size", -32_768)?;
    // A group of pushes journals each push's savepoint; past SQLite's in-memory
    // threshold the sub-journal spills to a temporary file, and on these machines that
    // spill failed with SQLITE_FULL ("database or disk is full") with the disk far from
    // full. In memory it is bounded by the group (MAX_INGEST_GROUP pushes of at most
    // MAX_BATCH facts each).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Plans stay as first prepared: without this the bundled SQLite re-prepared the
    // member lookup on every new bound value (14% of an authorization's time).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    use patron_sqlite::migrate::MigrateError;
    patron_sqlite::migrate::migrate(conn, path, MIGRATIONS, |_, _| Ok(())).map_err(|e| match e {
        MigrateError::TooNew { found, supported } => StoreError::TooNew {
            found: found as i64,
            supported: supported as i64,
        },
        MigrateError::Sqlite(e) => StoreError::from(e),
        other => StoreError::Corrupt(other.to_string()),
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the hub database in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join(DB_FILE);
        use patron_sqlite::connect::Access;
        let mut conn = connect(&path, Access::ReadWrite)?;
        migrate(&mut conn, &path)?;
        let hub_origin = new_hub_origin(&conn)?;
        // SQLite's automatic checkpoint ran inside the commit that crossed 1,000 pages,
        // about once a second under 2,000 authorizations/s: every ask of that group
        // waited for the copy and the database's sync (commits of 11–18 ms; the paced
        // p99 fell from 20–150 ms to under 10 ms without it, BENCHMARKS.md).
        let wal = Arc::new(WalBound::install(
            &mut conn,
            WAL_RESTART_PAGES,
            BUSY_TIMEOUT,
        )?);
        let stop_checkpointer = Arc::new(AtomicBool::new(false));
        patron_sqlite::wal::spawn_checkpointer(
            connect(&path, Access::ReadWrite)?,
            CHECKPOINT_EVERY,
            stop_checkpointer.clone(),
        )?;
        let readers = Readers::open(&path, READERS)?;
        let conn = Arc::new(Mutex::new(conn));
        let (asks, queue) = mpsc::channel();
        spawn_authorizer(conn.clone(), queue, wal.clone())?;
        let (pushes, pushed) = mpsc::channel();
        spawn_ingester(conn.clone(), pushed, hub_origin, wal.clone())?;
        Ok(Self {
            conn,
            readers,
            path,
            asks,
            pushes,
            stop_checkpointer,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        lock(&self.conn)
    }
}

/// Read-only connections in the hub.
const READERS: usize = 4;

/// A few read-only connections, each behind its own lock: a read takes a free one, or
/// waits for the next in turn.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Readers {
    fn open(path: &Path, n: usize) -> Result<Self, StoreError> {
        let conns = (0..n.max(1))
            .map(|_| connect(path, patron_sqlite::connect::Access::ReadOnly).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            conns,
            next: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// A free connection if there is one, else the next in turn once it is free.
    fn get(&self) -> MutexGuard<'_, Connection> {
        for c in &self.conns {
            if let Ok(g) = c.try_lock() {
                return g;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        lock(&self.conns[i])
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves no open transaction behind (rusqlite rolls
    // back on drop), so the connection is still usable.
    conn.lock().unwrap_or_else(|p| p.into_inner())
}

/// Most authorizations decided in one transaction.
const MAX_AUTHORIZE_BATCH: usize = 256;

/// Commits authorizations in groups: it takes every ask queued while it committed the
/// previous group and decides them in order in one transaction and one fsync (one per
/// ask made the hub's authorization p99 ~2x the target under 64 lanes). The thread
/// ends when the store, which holds the sending side, is dropped.
fn spawn_authorizer(
    conn: Arc<Mutex<Connection>>,
    asks: mpsc::Receiver<Ask>,
    wal: Arc<WalBound>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("hub-authorize".into())
        .spawn(move || {
            while let Ok(first) = asks.recv() {
                let mut batch = vec![first];
                batch.extend(asks.try_iter().take(MAX_AUTHORIZE_BATCH - 1));
                // A panic drops the batch's replies: each caller gets an error, and the
                // rolled-back transaction granted nothing.
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    authorize_batch(&mut lock(&conn), &batch)
                }));
                match done {
                    Ok(Ok(answers)) => {
                        for (ask, a) in batch.into_iter().zip(answers) {
                            ask.answer(a);
                        }
                    }
                    Ok(Err(e)) => {
                        let why = e.to_string();
                        for ask in batch {
                            ask.fail(why.clone());
                        }
                    }
                    Err(_) => tracing::error!("an authorization batch panicked"),
                }
                // After answering: a restart holds up the next group, not this one.
                if wal.due() {
                    wal.after_commit(&lock(&conn));
                }
            }
        })?;
    Ok(())
}

fn origin_row(conn: &Connection, o: &Origin) -> Result<Option<(i64, u64)>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT id, high FROM origins WHERE node = ?1 AND incarnation = ?2")?
        .query_row(params![o.node, o.incarnation.to_string()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .optional()?)
}

fn ensure_origin(conn: &Connection, o: &Origin) -> Result<(i64, u64), StoreError> {
    if let Some(row) = origin_row(conn, o)? {
        return Ok(row);
    }
    conn.prepare_cached("INSERT INTO origins (node, incarnation) VALUES (?1, ?2)")?
        .execute(params![o.node, o.incarnation.to_string()])?;
    Ok((conn.last_insert_rowid(), 0))
}

/// In the ingest transaction of `member`'s registration: if another member registered
/// first under the same phone (first as the hub received them), `member` is merged into
/// them — an alias, and a `member_merged` fact of the hub's own origin that stores
/// receive with the member's facts. Ledger rows keep their member ids; balances are
/// derived over the alias set. Idempotent: a member is merged at most once.
fn merge_if_registered_twice(
    tx: &Connection,
    hub_origin: i64,
    member: &str,
    phone_idx: &str,
    now: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<Option<Merged>, StoreError> {
    let first: Option<String> = tx
        .prepare_cached(
            "SELECT member FROM registrations WHERE phone_idx = ?1 ORDER BY fact LIMIT 1",
        )?
        .query_row(params![phone_idx], |r| r.get(0))
        .optional()?;
    let Some(survivor) = crate::ingest::survivor(member, first.as_deref()).map(str::to_string)
    else {
        return Ok(None);
    };
    let n = tx
        .prepare_cached("INSERT OR IGNORE INTO member_aliases (loser, survivor) VALUES (?1, ?2)")?
        .execute(params![member, survivor])?;
    if n == 0 {
        return Ok(None);
    }
    // The survivor's ledger now takes in the loser's movements: derived again.
    tx.prepare_cached("DELETE FROM member_ledgers WHERE member IN (?1, ?2)")?
        .execute(params![member, survivor])?;
    // Leases on the merged-away id now count against the survivor (spends under them
    // are credited to the survivor). A store holding one under each id keeps one row
    // adding both up, ending at the later end: it may reserve more than the store can
    // spend until then, never less.
    tx.prepare_cached(
        "UPDATE leases SET
            points   = points + (SELECT l.points FROM leases l WHERE l.member = ?1 AND l.store = leases.store),
            spent    = spent  + (SELECT l.spent  FROM leases l WHERE l.member = ?1 AND l.store = leases.store),
            until    = max(until, (SELECT l.until FROM leases l WHERE l.member = ?1 AND l.store = leases.store)),
            returned = max(returned, (SELECT l.returned FROM leases l WHERE l.member = ?1 AND l.store = leases.store))
          WHERE member = ?2 AND store IN (SELECT store FROM leases WHERE member = ?1)",
    )?
    .execute(params![member, survivor])?;
    tx.prepare_cached(
        "DELETE FROM leases WHERE member = ?1 AND store IN (SELECT store FROM leases WHERE member = ?2)",
    )?
    .execute(params![member, survivor])?;
    tx.prepare_cached("UPDATE leases SET member = ?2 WHERE member = ?1")?
        .execute(params![member, survivor])?;
    // Points held for the merged-away id's sales now count against the survivor.
    tx.prepare_cached("UPDATE holds SET member = ?2 WHERE member = ?1")?
        .execute(params![member, survivor])?;
    let uuid = |s: &str| {
        uuid::Uuid::parse_str(s).map_err(|e| StoreError::Corrupt(format!("member id {s}: {e}")))
    };
    let entry = crate::ingest::merge_fact(uuid(member)?, uuid(&survivor)?, now)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let pos = append_hub_fact(tx, hub_origin, &entry, now)?;
    fan_out_merge(
        tx,
        uuid(member)?.as_bytes(),
        uuid(&survivor)?.as_bytes(),
        pos,
        streamed,
    )?;
    tracing::info!(loser = member, survivor = %survivor, "one phone registered twice: members merged");
    Ok(Some(Merged {
        loser: member.to_string(),
        survivor,
    }))
}

/// Appends `entry` to the hub's own origin (the next sequence); its position.
fn append_hub_fact(
    tx: &Connection,
    hub_origin: i64,
    entry: &Entry,
    now: i64,
) -> Result<i64, StoreError> {
    let high: i64 = tx
        .prepare_cached("SELECT high FROM origins WHERE id = ?1")?
        .query_row(params![hub_origin], |r| r.get(0))?;
    let body = entry
        .to_json()
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let seq = high + 1;
    let pos = insert_fact(
        &mut *tx.prepare_cached(INSERT_FACT)?,
        tx,
        hub_origin,
        seq,
        &body,
        now,
        entry,
        None,
    )?;
    tx.prepare_cached("UPDATE origins SET high = ?2 WHERE id = ?1")?
        .execute(params![hub_origin, seq])?;
    Ok(pos)
}

/// The stream's share of a fact the hub wrote of `member` at `pos`: every store that
/// holds the member, or wrote a fact of them, receives it (and holds them from now on).
fn fan_out_hub_fact(
    tx: &Connection,
    member: &[u8],
    pos: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    hold_writers(tx, member, pos)?;
    let holders: Vec<String> = tx
        .prepare_cached("SELECT store FROM holdings WHERE member = ?1")?
        .query_map(params![member], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut send =
        tx.prepare_cached("INSERT OR IGNORE INTO stream (store, pos) VALUES (?1, ?2)")?;
    for h in holders {
        send.execute(params![h, pos])?;
        streamed.insert(h);
    }
    Ok(())
}

/// A new incarnation of the hub's own origin (facts the hub writes: merges), made at
/// every open: a hub restored from an older copy of its database would otherwise write
/// merges under sequence numbers that stores already hold for other merges, and they
/// would ignore them. Merges are rare, so a new origin row per start costs nothing.
fn new_hub_origin(conn: &Connection) -> Result<i64, StoreError> {
    let (id, _) = ensure_origin(
        conn,
        &Origin {
            node: HUB_ORIGIN_NODE.into(),
            incarnation: uuid::Uuid::now_v7(),
        },
    )?;
    Ok(id)
}

/// The node name of facts the hub writes itself (no store may take it).
const HUB_ORIGIN_NODE: &str = "hub";

/// The refusal for a batch with a fact that is not a valid ledger entry (the verdict
/// says which fact and why).
pub const NOT_AN_ENTRY: &str = "a fact is not a valid ledger entry";

/// Why a batch that re-keys another store's member is refused.
const REKEY_OF_A_STRANGER: &str = "a store re-keys only members it registered";

/// Whether `facts` (from store `node`) re-key a member that `node` did not register:
/// a re-key counts as a registration under its phone index (a merge may follow), so
/// only the store whose own registration it replaces may send one. The registration
/// may be held already or come earlier in the same facts.
fn rekeys_a_stranger(
    conn: &Connection,
    node: &str,
    facts: &[TypedFact],
) -> Result<bool, StoreError> {
    crate::ingest::rekeys_a_stranger(facts, |member| {
        let registered: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM facts f JOIN origins o ON o.id = f.origin
                  WHERE f.member = ?1 AND f.kind = 'member_registered' AND o.node = ?2",
            )?
            .query_row(params![&member.as_bytes()[..], node], |r| r.get(0))?;
        Ok(registered > 0)
    })
}

/// Whether any of `facts` differs from the body stored under its sequence.
fn differs(conn: &Connection, origin_id: i64, facts: &[Fact]) -> Result<bool, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT body FROM facts WHERE origin = ?1 AND seq = ?2")?;
    for f in facts {
        let held: Option<String> = stmt
            .query_row(params![origin_id, f.seq as i64], |r| r.get(0))
            .optional()?;
        if held.as_deref() != Some(f.body.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The statement of [`insert_fact`]; ingest holds it for a whole push (looking a
/// statement up in the cache hashes its text, at every fact).
const INSERT_FACT: &str =
    "INSERT INTO facts (origin, seq, body, received_at, kind, at, member, txn, earn,
                        expires_at, available_at, spend, reverse, reverse_lot, qual_spend,
                        qual_at, auth, quarantine)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// Appends a fact to the log with its typed columns (`insert`: [`INSERT_FACT`]
/// prepared on `tx`); returns its ingest position.
#[allow(clippy::too_many_arguments)]
fn insert_fact(
    insert: &mut rusqlite::Statement<'_>,
    tx: &Connection,
    origin_id: i64,
    seq: i64,
    body: &str,
    now: i64,
    e: &Entry,
    quarantine: Option<&str>,
) -> Result<i64, StoreError> {
    // A quarantined fact is kept without its member: nothing keyed by member (ledgers,
    // fetches, projections) can see it.
    let member = e
        .member
        .as_ref()
        .filter(|_| quarantine.is_none())
        .map(|m| &m.as_bytes()[..]);
    insert.execute(params![
        origin_id,
        seq,
        body,
        now,
        e.kind().as_str(),
        e.at,
        member,
        &e.txn.as_bytes()[..],
        e.earn,
        e.expires_at,
        e.available_at,
        e.spend,
        e.reverse,
        e.reverse_lot.as_ref().map(|l| &l.as_bytes()[..]),
        e.qual_spend,
        e.qual_at,
        e.detail.auth().map(|a| a.as_str()),
        quarantine,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// A store's row from `store_id, name, ring, revoked, key_generation, key_offered`
/// (the first six columns).
fn store_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoreRow> {
    Ok(StoreRow {
        store_id: r.get(0)?,
        name: r.get(1)?,
        ring: r.get(2)?,
        revoked: r.get(3)?,
        member_keys: r.get(4)?,
        keys_offered: r.get(5)?,
    })
}

/// Keeps a member's data key as the hub learnt it (the latest registration or re-key
/// wins: the key is the same, only its wrapping and the phone's sealing differ).
fn put_member_key(tx: &Connection, k: &HeldKey) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO member_keys (member, wrapped, phone) VALUES (?1, ?2, ?3)
         ON CONFLICT (member) DO UPDATE SET wrapped = excluded.wrapped, phone = excluded.phone",
    )?
    .execute(params![&k.member.as_bytes()[..], k.wrapped, k.phone])?;
    Ok(())
}

/// The store whose fact first named `member` (its home), if the hub has seen them.
fn member_home(tx: &Connection, member: &[u8]) -> Result<Option<String>, StoreError> {
    Ok(tx
        .prepare_cached("SELECT store FROM member_homes WHERE member = ?1")?
        .query_row(params![member], |r| r.get(0))
        .optional()?)
}

/// Whether phone index `phone_idx` belongs to a person other than `member`'s (a phone
/// change to it would make two people one).
fn phone_of_another(tx: &Connection, member: &str, phone_idx: &str) -> Result<bool, StoreError> {
    let others: i64 = tx
        .prepare_cached(concat!(
            "SELECT count(*) FROM registrations r WHERE r.phone_idx = ?2 AND ",
            root_of!("r.member"),
            " <> ",
            root_of!("?1")
        ))?
        .query_row(params![member, phone_idx], |r| r.get(0))?;
    Ok(others > 0)
}

/// A phone change of `member`: the person's other phone indexes are retired, so the
/// old number finds nobody and its next owner registers as a new member.
fn retire_phones(tx: &Connection, member: &str, phone_idx: &str) -> Result<(), StoreError> {
    tx.prepare_cached(concat!(
        "WITH p(root) AS (SELECT ",
        root_of!("?1"),
        ")
         DELETE FROM registrations WHERE phone_idx <> ?2 AND member IN (
             SELECT root FROM p UNION SELECT loser FROM member_aliases, p WHERE survivor = p.root)"
    ))?
    .execute(params![member, phone_idx])?;
    Ok(())
}

/// Whether `store`'s registration of `member` under `phone_idx` claims another
/// store's member (crate::ingest::claims_another_store_s_member).
fn claims_another(
    tx: &Connection,
    store: &str,
    member: &str,
    phone_idx: &str,
) -> Result<bool, StoreError> {
    let first: Option<String> = tx
        .prepare_cached(
            "SELECT member FROM registrations WHERE phone_idx = ?1 ORDER BY fact LIMIT 1",
        )?
        .query_row(params![phone_idx], |r| r.get(0))
        .optional()?;
    let Some(first) = first else {
        return Ok(false);
    };
    let Ok(id) = uuid::Uuid::parse_str(&first) else {
        return Ok(false);
    };
    let home = member_home(tx, id.as_bytes())?;
    let holds = holds_member(tx, &Some(id), store)?;
    Ok(crate::ingest::claims_another_store_s_member(
        store,
        member,
        &first,
        home.as_deref(),
        holds,
    ))
}

/// Whether the hub let `store` hold `member` (a fetch, the stream, a merge).
fn holds_member(
    tx: &Connection,
    member: &Option<uuid::Uuid>,
    store: &str,
) -> Result<bool, StoreError> {
    let Some(m) = member else { return Ok(false) };
    Ok(tx
        .prepare_cached("SELECT 1 FROM holdings WHERE member = ?1 AND store = ?2")?
        .query_row(params![&m.as_bytes()[..], store], |_| Ok(()))
        .optional()?
        .is_some())
}

/// The stream's share of a store's fact of `member` at position `pos`: every other
/// store holding the member receives it. Holdings are kept only for members held
/// beyond the stores that wrote their facts (someone fetched them): a member only
/// their own stores know costs one index probe here and no write. Once a member has
/// holders, a store writing their facts joins them (it served the member). A store
/// can write facts only of members it holds a row for, and it gets the row of
/// another store's member only by a fetch or a merge, both of which record holdings:
/// no fact of a member held elsewhere passes here unseen.
fn fan_out(
    tx: &Connection,
    store: &str,
    member: &[u8],
    pos: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    let holders: Vec<String> = tx
        .prepare_cached("SELECT store FROM holdings WHERE member = ?1")?
        .query_map(params![member], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if holders.is_empty() {
        return Ok(());
    }
    let decided = crate::ingest::fan_out(store, &holders);
    if decided.writer_joins {
        tx.prepare_cached("INSERT INTO holdings (member, store, touched) VALUES (?1, ?2, ?3)")?
            .execute(params![member, store, pos])?;
    }
    let mut send =
        tx.prepare_cached("INSERT OR IGNORE INTO stream (store, pos) VALUES (?1, ?2)")?;
    for h in decided.send_to {
        send.execute(params![h, pos])?;
        streamed.insert(h.clone());
    }
    Ok(())
}

/// Makes every store that wrote a fact of `member` a holder of them (`touched`: the
/// position now), when the member first becomes held beyond those stores.
fn hold_writers(tx: &Connection, member: &[u8], touched: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO holdings (member, store, touched)
         SELECT DISTINCT ?1, o.node, ?2 FROM facts f JOIN origins o ON o.id = f.origin
          WHERE f.member = ?1 AND o.node <> 'hub'",
    )?
    .execute(params![member, touched])?;
    Ok(())
}

/// The stream's share of a merge the hub wrote at `pos`: every store holding either
/// member (or that wrote a fact of either) receives it, and holds both from now on (the
/// loser's later facts, written under its old id by stores that have not synced yet,
/// concern the survivor's too).
fn fan_out_merge(
    tx: &Connection,
    loser: &[u8],
    survivor: &[u8],
    pos: i64,
    streamed: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    hold_writers(tx, loser, pos)?;
    hold_writers(tx, survivor, pos)?;
    let holders: BTreeSet<String> = tx
        .prepare_cached("SELECT store FROM holdings WHERE member IN (?1, ?2)")?
        .query_map(params![loser, survivor], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut hold = tx.prepare_cached(
        "INSERT OR IGNORE INTO holdings (member, store, touched) VALUES (?1, ?2, ?3)",
    )?;
    let mut send =
        tx.prepare_cached("INSERT OR IGNORE INTO stream (store, pos) VALUES (?1, ?2)")?;
    for h in &holders {
        hold.execute(params![loser, h, pos])?;
        hold.execute(params![survivor, h, pos])?;
        send.execute(params![h, pos])?;
        streamed.insert(h.clone());
    }
    Ok(())
}

/// What a member's points movement changes besides the log: it settles the hold of its
/// sale, counts against the store's lease, and flags an offline spend that follows
/// another store's within the window.
fn apply_points(
    tx: &Connection,
    store: &str,
    p: &PointsRow,
    flag_window_ms: i64,
) -> Result<(), StoreError> {
    if p.spend > 0 {
        // Only the store's own hold: a txn id another store names settles nothing.
        tx.prepare_cached("DELETE FROM holds WHERE txn = ?1 AND store = ?2")?
            .execute(params![p.txn, store])?;
    }
    if p.lease && p.spend > 0 {
        tx.prepare_cached(concat!(
            "UPDATE leases SET spent = spent + ?3 WHERE member = ",
            root_of!("?1"),
            " AND store = ?2"
        ))?
        .execute(params![p.member, store, p.spend])?;
    }
    if p.offline && p.spend > 0 && flag_window_ms > 0 {
        // The person's offline spends at other stores (over every id: a merged member
        // redeems under either); the flag rule decides which pairs flag them.
        let root: String = tx
            .prepare_cached(concat!("SELECT ", root_of!("?1")))?
            .query_row(params![p.member], |r| r.get(0))?;
        let others: Vec<OfflineSpend> = tx
            .prepare_cached(concat!(
                "SELECT o.node, x.at FROM facts x JOIN origins o ON o.id = x.origin
                  WHERE x.member IN ",
                person_ids!("?1"),
                "
                    AND x.auth = 'offline' AND x.spend > 0 AND o.node <> ?2"
            ))?
            .query_map(params![root, store], |r| {
                Ok(OfflineSpend {
                    store: r.get(0)?,
                    at: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let spend = OfflineSpend {
            store: store.to_string(),
            at: p.at,
        };
        let mut flag = tx.prepare_cached(
            "INSERT OR IGNORE INTO redemption_flags (member, first_store, first_at, second_store, second_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for f in crate::authority::offline_flags(&spend, &others, flag_window_ms) {
            flag.execute(params![
                root,
                f.first.store,
                f.first.at,
                f.second.store,
                f.second.at
            ])?;
        }
    }
    Ok(())
}

/// Most pushes applied in one transaction.
const MAX_INGEST_GROUP: usize = 16;

/// A push waiting for the ingest writer, with where its answer goes.
/// A push on its way to the writer. The pusher keeps the other reference, so the
/// parsed facts are freed on its thread, not the writer's (4% of the writer's time).
type Pushed = (
    Arc<IngestJob>,
    mpsc::SyncSender<Result<Vec<Ingested>, StoreError>>,
);

/// Commits pushes in groups: it takes every push queued while it committed the previous
/// group and applies them in one transaction and one fsync, each in a savepoint. Under
/// concurrent pushes most of a commit's pages are member-index leaves that several
/// pushes touch: a group writes each of them once instead of once per push. The thread
/// ends when the store, which holds the sending side, is dropped.
fn spawn_ingester(
    conn: Arc<Mutex<Connection>>,
    pushes: mpsc::Receiver<Pushed>,
    hub_origin: i64,
    wal: Arc<WalBound>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("hub-ingest".into())
        .spawn(move || {
            while let Ok(first) = pushes.recv() {
                let mut group = vec![first];
                group.extend(pushes.try_iter().take(MAX_INGEST_GROUP - 1));
                // A panic drops the group's replies: each pusher gets an error, and the
                // rolled-back transaction applied nothing.
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut conn = lock(&conn);
                    let answers = ingest_group(&mut conn, hub_origin, &group);
                    if answers.is_ok() {
                        wal.after_commit(&conn);
                    }
                    answers
                }));
                match done {
                    Ok(Ok(answers)) => {
                        for ((job, reply), a) in group.into_iter().zip(answers) {
                            // Before the reply: the pusher then holds the last reference.
                            drop(job);
                            let _ = reply.send(a);
                        }
                    }
                    Ok(Err(e)) => {
                        let why = e.to_string();
                        for (_, reply) in group {
                            let _ = reply.send(Err(StoreError::Batch(why.clone())));
                        }
                    }
                    Err(_) => tracing::error!("an ingest group panicked"),
                }
            }
        })?;
    Ok(())
}

/// Applies `group` in one transaction, each push in its own savepoint. `Err` only if the
/// transaction itself cannot begin or commit.
#[allow(clippy::type_complexity)]
fn ingest_group(
    conn: &mut Connection,
    hub_origin: i64,
    group: &[Pushed],
) -> Result<Vec<Result<Vec<Ingested>, StoreError>>, StoreError> {
    let mut tx = conn.transaction()?;
    let mut answers = Vec::with_capacity(group.len());
    for (job, _) in group {
        let sp = tx.savepoint()?;
        let answer = ingest_one(&sp, hub_origin, job);
        if answer.is_ok() {
            sp.commit()?;
        }
        // Dropping an uncommitted savepoint rolls back to it.
        answers.push(answer);
    }
    tx.commit()?;
    Ok(answers)
}

/// Applies one push in the open transaction `tx` (a savepoint of its group's).
fn ingest_one(
    tx: &Connection,
    hub_origin: i64,
    job: &IngestJob,
) -> Result<Vec<Ingested>, StoreError> {
    let IngestJob {
        store_id,
        report,
        batches,
        judge,
        flag_window_ms,
        limits,
        quarantine_all,
        claim_budget,
        now,
    } = job;
    let now = *now;
    let mut claims_left = *claim_budget;
    let budget_before = store_budget(tx, store_id)?;
    let mut budget = limits.refill(budget_before, now);
    let mut spent = false;
    let mut out = Vec::with_capacity(batches.len());
    // Members' homes as this push learns them: a home is written once and never
    // changed, and a push names most of its members more than once.
    let mut homes = std::collections::HashMap::<uuid::Uuid, Option<String>>::new();
    let mut insert = tx.prepare_cached(INSERT_FACT)?;
    for incoming in batches {
        let b = &incoming.batch;
        let mut merged = Vec::new();
        let mut reason = None;
        let mut streamed = BTreeSet::new();
        let mut quarantined = Vec::new();
        let mut claims = 0u32;
        let (origin_id, high) = origin_row(tx, &b.origin)?.unwrap_or_default();
        // Facts the hub holds already must be the same facts (patron_sync::receiver).
        let placed = match incoming.checked {
            Err(why) => Judgement::Refuse(why),
            Ok(()) => judge(high, b),
        };
        let mut judgement =
            patron_sync::receiver::settle(placed, b, |repeated| differs(tx, origin_id, repeated))?;
        let typed: &[TypedFact] = match (&incoming.typed, judgement) {
            (Ok(t), _) => t,
            (Err(why), Judgement::Apply { .. }) => {
                judgement = Judgement::Refuse(NOT_AN_ENTRY);
                reason = Some(why.clone());
                &[]
            }
            (Err(_), _) => &[],
        };
        if let Judgement::Apply { skip, .. } = judgement
            && rekeys_a_stranger(tx, &b.origin.node, &typed[skip..])?
        {
            judgement = Judgement::Refuse(REKEY_OF_A_STRANGER);
        }
        let high = match judgement {
            Judgement::Apply {
                skip,
                high: new_high,
            } => {
                let origin_id = if origin_id == 0 {
                    ensure_origin(tx, &b.origin)?.0
                } else {
                    origin_id
                };
                for (f, t) in b.facts[skip..].iter().zip(&typed[skip..]) {
                    let home = match (*quarantine_all, &t.entry.member) {
                        (None, Some(m)) => match homes.get(m) {
                            Some(home) => home.clone(),
                            None => {
                                let home = member_home(tx, m.as_bytes())?;
                                homes.insert(*m, home.clone());
                                home
                            }
                        },
                        _ => None,
                    };
                    let why = match *quarantine_all {
                        Some(why) => Some(why),
                        None => {
                            let member = &t.entry.member;
                            let held = || holds_member(tx, member, &b.origin.node);
                            crate::ingest::quarantine_reason(
                                &b.origin.node,
                                t,
                                limits,
                                home.as_deref(),
                                held,
                            )?
                        }
                    };
                    let phone_change = t.entry.kind() == patron_domain::Kind::PhoneChanged;
                    let why = match (why, &t.registered) {
                        (None, Some((member, phone_idx)))
                            if phone_change && phone_of_another(tx, member, phone_idx)? =>
                        {
                            Some(crate::ingest::PHONE_TAKEN)
                        }
                        (None, Some((member, phone_idx)))
                            if !phone_change
                                && claims_another(tx, &b.origin.node, member, phone_idx)? =>
                        {
                            if claims_left == 0 {
                                Some(crate::ingest::CLAIM_BEYOND_BUDGET)
                            } else {
                                claims_left -= 1;
                                claims += 1;
                                None
                            }
                        }
                        (why, _) => why,
                    };
                    // A due's points are credited at the hub, but on this store's word:
                    // they count against its budget as its own credits do.
                    let credits = t
                        .entry
                        .earn
                        .saturating_add(t.due.as_ref().map_or(0, |d| d.points));
                    let why = match crate::ingest::spend_store_budget(&mut budget, why, credits) {
                        Ok(did) => {
                            spent |= did;
                            None
                        }
                        Err(why) => Some(why),
                    };
                    let fact_id = insert_fact(
                        &mut insert,
                        tx,
                        origin_id,
                        f.seq as i64,
                        &f.body,
                        now,
                        &t.entry,
                        why,
                    )?;
                    if let Some(why) = why {
                        quarantined.push((f.seq, why));
                        continue;
                    }
                    if let Some(member) = &t.entry.member {
                        if home.is_none() {
                            // The member's first fact: its store is their home.
                            tx.prepare_cached(
                                "INSERT OR IGNORE INTO member_homes (member, store) VALUES (?1, ?2)",
                            )?
                            .execute(params![&member.as_bytes()[..], &b.origin.node])?;
                            homes.insert(*member, Some(b.origin.node.clone()));
                        }
                        fan_out(
                            tx,
                            &b.origin.node,
                            member.as_bytes(),
                            fact_id,
                            &mut streamed,
                        )?;
                    }
                    if let (Some(member), false) = (&t.entry.member, t.profile.is_empty()) {
                        apply_profile_ops(tx, &member.to_string(), &t.profile, now)?;
                    }
                    if let Some(row) = &t.points {
                        apply_points(tx, &b.origin.node, row, *flag_window_ms)?;
                    }
                    if !t.catalogue.is_empty() {
                        give_catalogue(tx, &b.origin.node, fact_id, t)?;
                    }
                    if let Some(c) = &t.claim {
                        apply_claim(tx, &b.origin.node, fact_id, c, now)?;
                        coupon_debts::settle(
                            tx,
                            hub_origin,
                            &b.origin.node,
                            c,
                            now,
                            &mut streamed,
                        )?;
                    }
                    if let Some(k) = &t.key {
                        put_member_key(tx, k)?;
                    }
                    if let Some((member, phone_idx)) = &t.registered {
                        if phone_change {
                            retire_phones(tx, member, phone_idx)?;
                        }
                        tx.prepare_cached(
                                "INSERT INTO registrations (phone_idx, fact, member) VALUES (?1, ?2, ?3)",
                            )?
                            .execute(params![phone_idx, fact_id, member])?;
                        // A phone change moved the person to a free number: nobody to
                        // merge with.
                        if !phone_change
                            && let Some(m) = merge_if_registered_twice(
                                tx,
                                hub_origin,
                                member,
                                phone_idx,
                                now,
                                &mut streamed,
                            )?
                        {
                            merged.push(m);
                        }
                    }
                    // After the merge above: a code or due is settled between people.
                    if let Some(member) = &t.entry.member
                        && let Some(code) = referrals::index(tx, t, &member.to_string(), fact_id)?
                    {
                        referrals::settle_pending(tx, hub_origin, &code, now, &mut streamed)?;
                    }
                    if let Some(d) = &t.due {
                        referrals::add_due(
                            tx,
                            hub_origin,
                            &b.origin.node,
                            fact_id,
                            d,
                            now,
                            &mut streamed,
                        )?;
                    }
                }
                tx.prepare_cached("UPDATE origins SET high = ?2 WHERE id = ?1")?
                    .execute(params![origin_id, new_high as i64])?;
                new_high
            }
            _ => high,
        };
        out.push(Ingested {
            judgement,
            high,
            merged,
            reason,
            streamed_to: streamed.into_iter().collect(),
            quarantined,
            claims,
        });
    }
    let report_origin = match &report.origin {
        Some(o) => Some(ensure_origin(tx, o)?.0),
        None => None,
    };
    if let Some(acked) = report.stream_after {
        forget_streamed(tx, store_id, acked, report.stream_mark.unwrap_or(0))?;
    }
    tx.prepare_cached(
        "UPDATE stores SET last_sync_at = ?2, report_origin = coalesce(?3, report_origin),
                    report_last_seq = ?4 WHERE store_id = ?1",
    )?
    .execute(params![
        store_id,
        now,
        report_origin,
        report.last_seq as i64
    ])?;
    // Written only when something was spent: an unwritten refill is recomputed, the
    // same, from the row as it stands.
    if spent || budget_before.is_none() {
        tx.prepare_cached(
            "INSERT INTO store_budgets (store, points, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (store) DO UPDATE SET points = excluded.points, at = excluded.at",
        )?
        .execute(params![store_id, budget.points, budget.at])?;
    }
    Ok(out)
}

/// The store applied its stream up to `acked` (the fact there has `mark`): those
/// positions are forgotten and the store's horizon moves there.
fn forget_streamed(tx: &Connection, store: &str, acked: u64, mark: u64) -> Result<(), StoreError> {
    let horizon: i64 = tx
        .prepare_cached("SELECT stream_horizon FROM stores WHERE store_id = ?1")?
        .query_row(params![store], |r| r.get(0))?;
    let acked = acked.min(i64::MAX as u64) as i64;
    // The store's cursor must name the fact the hub holds there: after a restore of the
    // hub's database the position may hold another fact (or none), and nothing is
    // forgotten on the strength of it.
    if acked > horizon && mark != 0 && mark_at(tx, acked)? == mark {
        tx.prepare_cached("DELETE FROM stream WHERE store = ?1 AND pos <= ?2")?
            .execute(params![store, acked])?;
        tx.prepare_cached("UPDATE stores SET stream_horizon = ?2 WHERE store_id = ?1")?
            .execute(params![store, acked])?;
    }
    Ok(())
}

/// The overdrawing spends that `rule` finds over the movements, from every store, of
/// each person in `spenders` (ids as the facts name them), read on `conn`; and how many
/// people's movements could not be read (a damaged row: logged, and passed over so
/// that the projection does not stop behind it).
fn judge_overdraws(
    conn: &Connection,
    spenders: &[String],
    rule: OverdrawRule,
    now: i64,
) -> Result<(Vec<OverdrawRow>, u64), StoreError> {
    let mut roots = Vec::with_capacity(spenders.len());
    for m in spenders {
        let root: String = conn
            .prepare_cached(concat!("SELECT ", root_of!("?1")))?
            .query_row(params![m], |r| r.get(0))?;
        roots.push(root);
    }
    roots.sort();
    roots.dedup();
    let (mut rows, mut unreadable) = (Vec::new(), 0);
    for root in roots {
        match movement_rows(conn, &root) {
            Ok(movements) => rows.extend(rule(&root, movements, now)),
            Err(e) => {
                tracing::error!(error = %e, "a spender's movements could not be read: their overdraws are not judged");
                unreadable += 1;
            }
        }
    }
    Ok((rows, unreadable))
}

/// An authorization waiting for the next transaction: a redemption's or a claim's.
enum Ask {
    Redeem {
        hold: Hold,
        decide: Decide,
        reply: tokio::sync::oneshot::Sender<Result<AuthorizeResponse, StoreError>>,
    },
    Claim {
        ask: ClaimHold,
        reply: tokio::sync::oneshot::Sender<Result<ClaimResponse, StoreError>>,
    },
}

/// An ask's answer, on its way back.
enum Answer {
    Redeem(Result<AuthorizeResponse, StoreError>),
    Claim(Result<ClaimResponse, StoreError>),
}

impl Answer {
    fn is_ok(&self) -> bool {
        matches!(self, Answer::Redeem(Ok(_)) | Answer::Claim(Ok(_)))
    }
}

impl Ask {
    fn decide(&self, conn: &Connection) -> Answer {
        match self {
            Ask::Redeem { hold, decide, .. } => Answer::Redeem(authorize_one(conn, hold, *decide)),
            Ask::Claim { ask, .. } => Answer::Claim(authorize_claim_one(conn, ask)),
        }
    }

    fn answer(self, a: Answer) {
        match (self, a) {
            (Ask::Redeem { reply, .. }, Answer::Redeem(a)) => {
                let _ = reply.send(a);
            }
            (Ask::Claim { reply, .. }, Answer::Claim(a)) => {
                let _ = reply.send(a);
            }
            // Each ask is answered with its own decision (`authorize_batch`).
            _ => unreachable!("an ask answered with another kind's answer"),
        }
    }

    fn fail(self, why: String) {
        match self {
            Ask::Redeem { reply, .. } => {
                let _ = reply.send(Err(StoreError::Batch(why)));
            }
            Ask::Claim { reply, .. } => {
                let _ = reply.send(Err(StoreError::Batch(why)));
            }
        }
    }
}

/// The person's (surviving id `root`) claim facts of a counter, judged
/// (`patron_domain::claims::tally`).
fn counted_claims(
    conn: &Connection,
    root: &str,
    key: &ClaimKey,
) -> Result<patron_domain::claims::Tally, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT store, at, units, cap FROM claims
          WHERE member IN ",
        person_ids!("?1"),
        "
            AND entitlement = ?2 AND period = ?3"
    ))?;
    let rows = stmt
        .query_map(params![root, key.entitlement, key.period], |r| {
            Ok(patron_domain::claims::ClaimFact {
                store: r.get::<_, String>(0)?,
                at: r.get(1)?,
                units: r.get(2)?,
                limit: u32::try_from(r.get::<_, i64>(3)?).unwrap_or(u32::MAX),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(patron_domain::claims::tally(rows))
}

/// Claims of `root`'s counter `key` the hub granted and still holds at `now` (their
/// facts not arrived), other than claim `except`'s.
fn open_claim_holds(
    conn: &Connection,
    root: &str,
    key: &ClaimKey,
    now: i64,
    except: &str,
) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT count(*) FROM claim_holds
              WHERE member = ?1 AND entitlement = ?2 AND period = ?3 AND until > ?4
                AND claim <> ?5",
        )?
        .query_row(
            params![root, key.entitlement, key.period, now, except],
            |r| r.get(0),
        )?)
}

fn authorize_claim_one(conn: &Connection, ask: &ClaimHold) -> Result<ClaimResponse, StoreError> {
    let root: String = conn
        .prepare_cached(concat!("SELECT ", root_of!("?1")))?
        .query_row(params![ask.member], |r| r.get(0))?;
    let key = &ask.key;
    let used = counted_claims(conn, &root, key)?.net;
    let held = open_claim_holds(conn, &root, key, ask.now, &ask.claim)?;
    // The claim's hold as recorded: ours again (a retried ask, granted again), or
    // another store's, which an ask naming the same claim may not take over.
    let recorded: Option<(String, i64)> = conn
        .prepare_cached("SELECT store, until FROM claim_holds WHERE claim = ?1")?
        .query_row(params![ask.claim], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((store, until)) = &recorded {
        if *store != ask.store && *until > ask.now {
            return Err(StoreError::Conflict(
                "the claim id is held for another store",
            ));
        }
        if *store == ask.store && *until > ask.now {
            return Ok(ClaimResponse {
                granted: true,
                used: used.saturating_add(held),
                limit: ask.limit,
            });
        }
    }
    let counted = patron_domain::claims::Counted {
        used,
        held,
        unsynced: ask.unsynced,
    };
    let answer = crate::authority::decide_claim(counted, ask.limit);
    if answer.granted {
        if key
            .entitlement
            .starts_with(patron_domain::claims::COUPON_PREFIX)
        {
            conn.prepare_cached(
                "INSERT OR IGNORE INTO coupon_grants (claim, store) VALUES (?1, ?2)",
            )?
            .execute(params![ask.claim, ask.store])?;
        }
        conn.prepare_cached(
            "INSERT OR REPLACE INTO claim_holds (claim, member, entitlement, period, store, until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            ask.claim,
            root,
            key.entitlement,
            key.period,
            ask.store,
            ask.until
        ])?;
        conn.prepare_cached("DELETE FROM claim_holds WHERE member = ?1 AND until <= ?2")?
            .execute(params![root, ask.now])?;
    }
    Ok(answer)
}

/// Counts the catalogue units sale `fact` of `store` gave (chain-wide stock) and
/// settles what the hub reserved for it.
fn give_catalogue(
    tx: &Connection,
    store: &str,
    fact: i64,
    t: &crate::ingest::TypedFact,
) -> Result<(), StoreError> {
    count_catalogue(tx, fact, &t.catalogue)?;
    // Only the store's own reservation: a sale naming another store's txn settles none.
    tx.prepare_cached("DELETE FROM stock_holds WHERE txn = ?1 AND store = ?2")?
        .execute(params![t.entry.txn.to_string(), store])?;
    Ok(())
}

fn count_catalogue(tx: &Connection, fact: i64, units: &[(String, i64)]) -> Result<(), StoreError> {
    let mut put = tx.prepare_cached(
        "INSERT OR IGNORE INTO catalogue_given (fact, sku, units) VALUES (?1, ?2, ?3)",
    )?;
    for (sku, n) in units {
        put.execute(params![fact, sku, n])?;
    }
    Ok(())
}

/// Counts claim fact `fact` of `store`.
fn insert_claim(
    tx: &Connection,
    fact: i64,
    c: &crate::ingest::ClaimRow,
    store: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO claims (fact, member, entitlement, period, units, cap, store, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        fact,
        &c.member[..],
        c.key.entitlement,
        c.key.period,
        c.units,
        i64::from(c.limit),
        store,
        c.at
    ])?;
    Ok(())
}

/// What a claim fact changes besides the log: it is counted, it settles the hold of the
/// ask that allowed it, and its counter is judged again (claims past the limit are
/// recorded as an over-claim of the person, a release may clear one).
fn apply_claim(
    tx: &Connection,
    store: &str,
    fact: i64,
    c: &crate::ingest::ClaimRow,
    now: i64,
) -> Result<(), StoreError> {
    insert_claim(tx, fact, c, store)?;
    // Only the store's own hold: a claim id another store names settles nothing.
    tx.prepare_cached("DELETE FROM claim_holds WHERE claim = ?1 AND store = ?2")?
        .execute(params![c.claim, store])?;
    let member = uuid::Uuid::from_bytes(c.member).to_string();
    let root: String = tx
        .prepare_cached(concat!("SELECT ", root_of!("?1")))?
        .query_row(params![member], |r| r.get(0))?;
    judge_counter(tx, &root, &c.key, now)
}

/// Records (or clears) the person's over-claim of a counter from the claims held.
fn judge_counter(tx: &Connection, root: &str, key: &ClaimKey, now: i64) -> Result<(), StoreError> {
    let tally = counted_claims(tx, root, key)?;
    if tally.excess() > 0 {
        tx.prepare_cached(
            "INSERT INTO over_claims (member, entitlement, period, claimed, cap, stores, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (member, entitlement, period) DO UPDATE
                SET claimed = excluded.claimed, cap = excluded.cap, stores = excluded.stores",
        )?
        .execute(params![
            root,
            key.entitlement,
            key.period,
            tally.net,
            i64::from(tally.smallest.unwrap_or(0)),
            tally.stores.join(","),
            now
        ])?;
    } else {
        tx.prepare_cached(
            "DELETE FROM over_claims WHERE member = ?1 AND entitlement = ?2 AND period = ?3",
        )?
        .execute(params![root, key.entitlement, key.period])?;
    }
    Ok(())
}

/// Decides `asks` in order in one transaction: each sees the holds of those before it.
/// An ask that fails is rolled back to its own savepoint and answered with its error;
/// the others go on. `Err` only if the transaction itself cannot begin or commit.
fn authorize_batch(conn: &mut Connection, asks: &[Ask]) -> Result<Vec<Answer>, StoreError> {
    let mut tx = conn.transaction()?;
    let mut answers = Vec::with_capacity(asks.len());
    for ask in asks {
        let sp = tx.savepoint()?;
        let answer = ask.decide(&sp);
        if answer.is_ok() {
            sp.commit()?;
        }
        // Dropping an uncommitted savepoint rolls back to it.
        answers.push(answer);
    }
    tx.commit()?;
    Ok(answers)
}

fn authorize_one(
    conn: &Connection,
    hold: &Hold,
    decide: Decide,
) -> Result<AuthorizeResponse, StoreError> {
    // Resolved here, not by the caller: a lookup on the shared connection before
    // queueing waited for the batch in flight, its fsync included.
    let member: String = conn
        .prepare_cached(concat!("SELECT ", root_of!("?1")))?
        .query_row(params![hold.member], |r| r.get(0))?;
    let hold = &Hold {
        member,
        ..hold.clone()
    };
    let balance = ledger_balance(conn, &hold.member, hold.now)?;
    let held: i64 = conn
        .prepare_cached(
            "SELECT coalesce(sum(points), 0) FROM holds
              WHERE member = ?1 AND until > ?2 AND txn <> ?3",
        )?
        .query_row(params![hold.member, hold.now, hold.txn], |r| r.get(0))?;
    // Leases take their unspent points, the asking store's own too; of its own, the
    // store may use what it set aside for this ask (its local remainder, which already
    // counts its spends the hub has not seen), and what is used leaves the lease.
    let rights = rights(conn, &hold.member)?;
    let own = rights.leases.get(&hold.store);
    let own_outstanding = own.map_or(0, |l| l.outstanding(hold.now));
    let held = held
        .saturating_add(rights.reserved(hold.now, Some(&hold.store)))
        .saturating_add(own_outstanding);
    // A lease given back on a recall counts spends still on their way: none of it is
    // usable, whatever an ask sent before the recall set aside.
    let usable = match own {
        Some(l) if !l.returned => own_outstanding.min(hold.lease_left),
        _ => 0,
    };
    // The txn's hold as recorded: ours again (a retried ask), or another store's,
    // which an ask naming the same txn must neither take over nor release.
    let recorded: Option<(String, String, i64)> = conn
        .prepare_cached("SELECT store, member, until FROM holds WHERE txn = ?1")?
        .query_row(params![hold.txn], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    if recorded
        .as_ref()
        .is_some_and(|(store, _, until)| *store != hold.store && *until > hold.now)
    {
        return Err(StoreError::Conflict(
            "the transaction id is held for another store's sale",
        ));
    }
    let again = recorded.is_some_and(|(store, member, until)| {
        store == hold.store && member == hold.member && until > hold.now
    });
    let mut answer = decide(balance, held, usable, hold);
    if !answer.granted {
        answer.reserved = rights
            .reserved_by(hold.now, &hold.store)
            .into_iter()
            .map(|(store, points)| Reserved { store, points })
            .collect();
    }
    if answer.granted && !again && answer.lease_used > 0 {
        conn.prepare_cached(
            "UPDATE leases SET points = points - ?3 WHERE member = ?1 AND store = ?2",
        )?
        .execute(params![hold.member, hold.store, answer.lease_used])?;
    }
    if answer.granted && !again {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO holds (txn, member, store, points, until) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![hold.txn, hold.member, hold.store, hold.points, hold.until])?;
        // Lapsed holds of this member go as they are passed.
        conn.prepare_cached("DELETE FROM holds WHERE member = ?1 AND until <= ?2")?
            .execute(params![hold.member, hold.now])?;
    }
    Ok(answer)
}

/// A member's open leases.
fn rights(conn: &Connection, member: &str) -> Result<Rights, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT store, points, spent, until, returned FROM leases WHERE member = ?1",
    )?;
    let rows = stmt.query_map(params![member], |r| {
        Ok((
            r.get::<_, String>(0)?,
            Lease {
                points: r.get(1)?,
                spent: r.get(2)?,
                until: r.get(3)?,
                returned: r.get::<_, i64>(4)? != 0,
            },
        ))
    })?;
    Ok(Rights {
        leases: rows.collect::<rusqlite::Result<_>>()?,
    })
}

/// A member's points movements over every id merged into them, each with whether it was
/// an offline spend. `f.member IS NOT NULL` repeats the predicate of the partial index
/// `facts_by_member`, so that SQLite uses it.
fn movement_rows(conn: &Connection, member: &str) -> Result<Vec<(Movement, bool)>, StoreError> {
    Ok(movements_after(conn, member, 0)?
        .into_iter()
        .map(|(_, m, offline)| (m, offline))
        .collect())
}

/// Lots a hub ledger snapshot keeps apart; older ones are sealed together (as the
/// edge's snapshots are: `patron_domain::ledger::Snapshot::seal`).
const LEDGER_KEEP_LOTS: usize = 32;

/// A tail this long is folded into the stored snapshot, so the next ask reads less.
const LEDGER_WRITE_TAIL: usize = 8;

/// The person's (`root`, a surviving id) balance at `now`: their ledger snapshot with
/// the movements that arrived since folded in, or, when one of those sorts before what
/// the snapshot holds (a late fact) or there is none, derived from every movement of
/// theirs (`patron_domain::ledger` holds both rules). The snapshot is stored again when
/// that saves the next read real work. Costs the same at ten facts as at ten thousand,
/// but for the derivation after a late fact or a merge.
fn ledger_balance(conn: &Connection, root: &str, now: i64) -> Result<i64, StoreError> {
    use patron_domain::ledger::{LedgerFact, Snapshot};
    let movement = |m: Movement| LedgerFact {
        movement: Some(m),
        spend: None,
        purchase: false,
    };
    let held: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT position, snapshot FROM member_ledgers WHERE member = ?1")?
        .query_row(params![root], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let kept = held.and_then(|(pos, b)| Snapshot::decode(&b).map(|s| (pos, s)));
    let folded = match kept {
        Some((pos, mut snap)) => {
            let mut tail = movements_after(conn, root, pos)?;
            tail.sort_by(|a, b| patron_domain::points::canonical_order(&a.1, &b.1));
            let upto = tail.iter().map(|t| t.0).max().unwrap_or(pos);
            let n = tail.len();
            let late = tail
                .into_iter()
                .any(|(_, m, _)| snap.fold(&movement(m)).is_err());
            (!late).then_some((snap, upto, n >= LEDGER_WRITE_TAIL))
        }
        None => None,
    };
    let (mut snap, upto, write) = match folded {
        Some(f) => f,
        None => {
            let all = movements_after(conn, root, 0)?;
            let upto = all.iter().map(|t| t.0).max().unwrap_or(0);
            let snap = Snapshot::derive(all.into_iter().map(|(_, m, _)| movement(m)));
            (snap, upto, true)
        }
    };
    if write {
        // Sealing keeps the balance at every instant; it only bounds the lots kept.
        snap.seal(LEDGER_KEEP_LOTS);
        conn.prepare_cached(
            "INSERT OR REPLACE INTO member_ledgers (member, position, snapshot) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![root, upto, snap.encode()])?;
    }
    Ok(snap.points_at(now).balance())
}

/// A person's points movements over every id merged into them, from the facts after
/// ingest position `after`: (position, movement, whether it was an offline spend).
/// `f.member IS NOT NULL` repeats the predicate of the partial index `facts_by_member`,
/// so that SQLite uses it.
fn movements_after(
    conn: &Connection,
    member: &str,
    after: i64,
) -> Result<Vec<(i64, Movement, bool)>, StoreError> {
    let mut labels: std::collections::HashMap<i64, std::sync::Arc<str>> = Default::default();
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT f.origin, o.node || '/' || o.incarnation, f.seq, f.at, f.txn, f.earn, f.expires_at,
                f.available_at, f.spend, f.reverse, f.reverse_lot, f.auth = 'offline', f.id
           FROM facts f JOIN origins o ON o.id = f.origin
          WHERE f.member IN ",
        person_ids!("?1"),
        "
            AND f.member IS NOT NULL
            AND f.id > ?2
            AND (f.earn <> 0 OR f.spend <> 0 OR f.reverse <> 0)"
    ))?;
    let mut rows = stmt.query(params![member, after])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let origin: i64 = r.get(0)?;
        let label = match labels.get(&origin) {
            Some(l) => l.clone(),
            None => {
                let l: std::sync::Arc<str> = r.get::<_, String>(1)?.into();
                labels.insert(origin, l.clone());
                l
            }
        };
        let offline: Option<bool> = r.get(11)?;
        out.push((
            r.get(12)?,
            Movement {
                origin: label,
                seq: r.get(2)?,
                at: r.get(3)?,
                txn: r.get(4)?,
                earn: r.get(5)?,
                expires_at: r.get(6)?,
                available_at: r.get(7)?,
                spend: r.get(8)?,
                reverse: r.get(9)?,
                reverse_lot: r.get(10)?,
            },
            offline.unwrap_or(false),
        ));
    }
    Ok(out)
}

/// Applies a fact's profile changes to its member's merged profile: one read and one
/// write per fact, whatever the number of fields it sets.
fn apply_profile_ops(
    conn: &Connection,
    member: &str,
    ops: &[ProfileOp],
    now: i64,
) -> Result<(), StoreError> {
    let held: Option<String> = conn
        .prepare_cached("SELECT profile FROM profiles WHERE member = ?1")?
        .query_row(params![member], |r| r.get(0))
        .optional()?;
    let mut p: Profile = match held {
        Some(j) => serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        None => Profile::default(),
    };
    for op in ops {
        p.apply(op);
    }
    let j = serde_json::to_string(&p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO profiles (member, profile, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (member) DO UPDATE SET profile = excluded.profile, updated_at = excluded.updated_at",
    )?
    .execute(params![member, j, now])?;
    Ok(())
}

impl Stores for SqliteStore {
    fn add_store(&self, s: &NewStore<'_>) -> Result<(), StoreError> {
        let conn = self.lock();
        // Ids that differ only in case are one store: referral codes carry the id in
        // upper case (patron_domain::referral), and must stay unique across the chain.
        let n = conn.execute(
            "INSERT INTO stores (store_id, name, ring, enroll_hash, enroll_expires_at, created_at)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
              WHERE NOT EXISTS (SELECT 1 FROM stores WHERE upper(store_id) = upper(?1))",
            params![
                s.store_id,
                s.name,
                s.ring,
                &s.enroll_hash[..],
                s.enroll_expires_at,
                s.now
            ],
        )?;
        if n == 0 {
            return Err(StoreError::StoreExists(s.store_id.to_string()));
        }
        Ok(())
    }

    fn issue_enrollment(
        &self,
        store_id: &str,
        enroll_hash: &[u8; 32],
        expires_at: i64,
        revoke_credential: bool,
    ) -> Result<(), StoreError> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE stores SET enroll_hash = ?2, enroll_expires_at = ?3,
                        credential_hash = CASE WHEN ?4 THEN NULL ELSE credential_hash END
                  WHERE store_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![
                store_id,
                &enroll_hash[..],
                expires_at,
                revoke_credential
            ])?;
        match n {
            0 => Err(StoreError::Enrollment("no such store, or it was revoked")),
            _ => Ok(()),
        }
    }

    fn cancel_enrollment(&self, store_id: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        Ok(conn
            .prepare_cached(
                "UPDATE stores SET enroll_hash = NULL, enroll_expires_at = NULL
                  WHERE store_id = ?1 AND enroll_hash IS NOT NULL",
            )?
            .execute(params![store_id])?
            > 0)
    }

    fn revoke_store(&self, store_id: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // The credential is kept, so that the store's pushes are still recognised
        // (and quarantined); the enrollment token goes.
        let revoked = tx
            .prepare_cached(
                "UPDATE stores SET revoked_at = ?2, enroll_hash = NULL, enroll_expires_at = NULL
                  WHERE store_id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![store_id, now])?
            > 0;
        if revoked {
            // What it held goes with it: its leases and holds stop reserving members'
            // points, it holds no member any more, and its stream is dropped.
            for sql in [
                "DELETE FROM leases WHERE store = ?1",
                "DELETE FROM holds WHERE store = ?1",
                "DELETE FROM holdings WHERE store = ?1",
                "DELETE FROM stream WHERE store = ?1",
            ] {
                tx.prepare_cached(sql)?.execute(params![store_id])?;
            }
        }
        tx.commit()?;
        Ok(revoked)
    }

    fn enroll(
        &self,
        enroll_hash: &[u8; 32],
        store_id: &str,
        credential_hash: &[u8; 32],
        keys: Option<Generation>,
        now: i64,
    ) -> Result<StoreRow, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (row, expires_at) = tx
            .query_row(
                "SELECT store_id, name, ring, revoked_at IS NOT NULL, key_generation,
                        key_offered, enroll_expires_at
                   FROM stores WHERE enroll_hash = ?1",
                params![&enroll_hash[..]],
                |r| Ok((store_row(r)?, r.get::<_, Option<i64>>(6)?)),
            )
            .optional()?
            .ok_or(StoreError::Enrollment("unknown or already used token"))?;
        if row.store_id != store_id {
            return Err(StoreError::Enrollment("the token is for another store"));
        }
        if row.revoked {
            return Err(StoreError::Enrollment("the store was revoked"));
        }
        if expires_at.is_some_and(|t| t <= now) {
            return Err(StoreError::Enrollment(
                "the token expired: ask HQ for a new one",
            ));
        }
        // A store keeps the keys it holds: its members are wrapped under them.
        let member_keys = row.member_keys.or(keys);
        let keys_offered = row.keys_offered.or(keys);
        tx.execute(
            "UPDATE stores SET enroll_hash = NULL, enroll_expires_at = NULL, credential_hash = ?2,
                    enrolled_at = ?3, key_generation = ?4, key_offered = ?5
              WHERE store_id = ?1",
            params![
                store_id,
                &credential_hash[..],
                now,
                member_keys,
                keys_offered
            ],
        )?;
        tx.commit()?;
        Ok(StoreRow {
            member_keys,
            keys_offered,
            ..row
        })
    }

    fn held_keys(&self, members: &[uuid::Uuid]) -> Result<Vec<HeldKey>, StoreError> {
        let conn = self.readers.get();
        let mut stmt =
            conn.prepare_cached("SELECT wrapped, phone FROM member_keys WHERE member = ?1")?;
        let mut out = Vec::with_capacity(members.len());
        for m in members {
            let row = stmt
                .query_row(params![&m.as_bytes()[..]], |r| {
                    Ok(HeldKey {
                        member: *m,
                        wrapped: r.get(0)?,
                        phone: r.get(1)?,
                    })
                })
                .optional()?;
            out.extend(row);
        }
        Ok(out)
    }

    fn store_by_credential(
        &self,
        credential_hash: &[u8; 32],
    ) -> Result<Option<StoreRow>, StoreError> {
        let conn = self.readers.get();
        Ok(conn
            .prepare_cached(
                "SELECT store_id, name, ring, revoked_at IS NOT NULL, key_generation, key_offered
                   FROM stores WHERE credential_hash = ?1",
            )?
            .query_row(params![&credential_hash[..]], store_row)
            .optional()?)
    }

    fn offer_keys(&self, store_id: &str) -> Result<Option<Generation>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .prepare_cached(
                "UPDATE stores SET key_offered = max(coalesce(key_offered, 0), coalesce(key_generation, 0)) + 1
                  WHERE store_id = ?1 AND key_generation IS NOT NULL AND revoked_at IS NULL
                  RETURNING key_offered",
            )?
            .query_row(params![store_id], |r| r.get(0))
            .optional()?)
    }

    fn note_key_generation(&self, store_id: &str, held: Generation) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "UPDATE stores SET key_generation = ?2
              WHERE store_id = ?1 AND ?2 <= key_offered AND ?2 > coalesce(key_generation, -1)",
        )?
        .execute(params![store_id, held])?;
        Ok(())
    }

    fn note_clock_ahead(&self, store_id: &str, ahead_ms: i64) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached("UPDATE stores SET clock_ahead_ms = ?2 WHERE store_id = ?1")?
            .execute(params![store_id, ahead_ms])?;
        Ok(())
    }

    fn store_counts(&self) -> Result<(u64, u64), StoreError> {
        let conn = self.readers.get();
        let (all, enrolled): (i64, i64) = conn
            .prepare_cached(
                "SELECT count(*), coalesce(sum(credential_hash IS NOT NULL), 0) FROM stores",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((all as u64, enrolled as u64))
    }

    fn list_stores(&self, now: i64) -> Result<Vec<StoreStatus>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare(
            "SELECT s.store_id, s.name, s.ring, s.credential_hash IS NOT NULL, s.last_sync_at,
                    max(s.report_last_seq - coalesce(o.high, 0), 0),
                    (SELECT coalesce(sum(x.high), 0) FROM origins x WHERE x.node = s.store_id),
                    s.clock_ahead_ms, s.revoked_at,
                    (SELECT count(*) FROM facts f INDEXED BY facts_quarantined
                       JOIN origins x ON x.id = f.origin
                      WHERE f.quarantine IS NOT NULL AND x.node = s.store_id),
                    s.key_generation,
                    CASE WHEN s.key_offered IS NOT s.key_generation THEN s.key_offered END
               FROM stores s LEFT JOIN origins o ON o.id = s.report_origin
              ORDER BY s.store_id",
        )?;
        let rows = stmt.query_map([], |r| {
            let last: Option<i64> = r.get(4)?;
            Ok(StoreStatus {
                store_id: r.get(0)?,
                name: r.get(1)?,
                ring: r.get(2)?,
                enrolled: r.get(3)?,
                last_sync_at: last,
                lag_ms: last.map(|l| (now - l).max(0)),
                pending: r.get::<_, i64>(5)? as u64,
                facts: r.get::<_, i64>(6)? as u64,
                clock_ahead_ms: r.get(7)?,
                revoked_at: r.get(8)?,
                quarantined: r.get::<_, i64>(9)? as u64,
                key_generation: r.get(10)?,
                key_offered: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl FactLog for SqliteStore {
    fn ingest(&self, job: IngestJob) -> Result<Vec<Ingested>, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Arc::new(job);
        self.pushes
            .send((Arc::clone(&job), reply))
            .map_err(|_| StoreError::Batch("the ingest writer stopped".into()))?;
        let answer = answer
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Batch("the ingest writer failed".into())));
        drop(job);
        answer
    }

    fn read(&self, origin: &Origin, after: u64, max: usize) -> Result<Vec<Fact>, StoreError> {
        let conn = self.readers.get();
        let Some((id, _)) = origin_row(&conn, origin)? else {
            return Ok(Vec::new());
        };
        let mut stmt = conn.prepare_cached(
            "SELECT seq, body FROM facts WHERE origin = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![id, after as i64, max as i64], |r| {
            Ok(Fact {
                origin: origin.clone(),
                seq: r.get::<_, i64>(0)? as u64,
                body: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn rebuild_projections(&self, project: &Reproject) -> Result<Rebuilt, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // Ledger snapshots are kept under surviving ids: dropped with the aliases, each
        // is derived again from the facts at its member's next ask.
        tx.execute_batch(
            "DELETE FROM registrations; DELETE FROM profiles; DELETE FROM member_aliases;
             DELETE FROM member_ledgers; DELETE FROM claims; DELETE FROM over_claims;
             DELETE FROM catalogue_given;
             DELETE FROM referral_codes; DELETE FROM referred;",
        )?;
        // Counters are judged once every claim and merge is back.
        let mut counters = BTreeSet::new();
        let mut latest = 0i64;
        let mut out = Rebuilt::default();
        let mut profiled = std::collections::HashSet::new();
        {
            let mut stmt = tx.prepare(
                "SELECT f.id, o.node, f.body, f.received_at
                   FROM facts f JOIN origins o ON o.id = f.origin
                  WHERE f.quarantine IS NULL ORDER BY f.id",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (id, node, body, received_at): (i64, String, String, i64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                out.facts += 1;
                latest = latest.max(received_at);
                let t = match project(&node, &body, received_at) {
                    Ok(Some(t)) => t,
                    Ok(None) => continue,
                    Err(why) => {
                        tracing::error!(fact = id, %why, "a held fact does not parse");
                        out.unreadable += 1;
                        continue;
                    }
                };
                if let (Some(member), false) = (&t.entry.member, t.profile.is_empty()) {
                    let member = member.to_string();
                    apply_profile_ops(&tx, &member, &t.profile, received_at)?;
                    profiled.insert(member);
                }
                if let Some(k) = &t.key {
                    put_member_key(&tx, k)?;
                }
                count_catalogue(&tx, id, &t.catalogue)?;
                if let Some(c) = &t.claim {
                    insert_claim(&tx, id, c, &node)?;
                    counters.insert((uuid::Uuid::from_bytes(c.member), c.key.clone()));
                    out.claims += 1;
                }
                if let Some((member, phone_idx)) = &t.registered {
                    if t.entry.kind() == patron_domain::Kind::PhoneChanged {
                        retire_phones(&tx, member, phone_idx)?;
                    }
                    tx.prepare_cached(
                        "INSERT INTO registrations (phone_idx, fact, member) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![phone_idx, id, member])?;
                    out.registrations += 1;
                }
                if let Some(member) = &t.entry.member {
                    referrals::index(&tx, &t, &member.to_string(), id)?;
                }
                if let (Detail::MemberMerged(merge), Some(loser)) =
                    (&t.entry.detail, t.entry.member)
                {
                    out.aliases += tx
                        .prepare_cached(
                            "INSERT OR IGNORE INTO member_aliases (loser, survivor) VALUES (?1, ?2)",
                        )?
                        .execute(params![loser.to_string(), merge.survivor.to_string()])?
                        as u64;
                }
            }
        }
        for (member, key) in counters {
            let root: String = tx
                .prepare_cached(concat!("SELECT ", root_of!("?1")))?
                .query_row(params![member.to_string()], |r| r.get(0))?;
            judge_counter(&tx, &root, &key, latest)?;
        }
        out.profiles = profiled.len() as u64;
        tx.commit()?;
        Ok(out)
    }

    fn high(&self, origin: &Origin) -> Result<u64, StoreError> {
        let conn = self.readers.get();
        Ok(origin_row(&conn, origin)?.map_or(0, |(_, h)| h))
    }

    fn fact_count(&self) -> Result<u64, StoreError> {
        let conn = self.readers.get();
        Ok(conn.query_row("SELECT count(*) FROM facts", [], |r| r.get::<_, i64>(0))? as u64)
    }

    fn lane_alerts(&self, max: usize) -> Result<Vec<StoredFact>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare_cached(
            "SELECT f.id, o.node, f.received_at, f.body
               FROM facts f JOIN origins o ON o.id = f.origin
              WHERE f.kind = 'lane_alert' AND f.quarantine IS NULL ORDER BY f.id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![max as i64], |r| {
            Ok(StoredFact {
                position: r.get::<_, i64>(0)? as u64,
                store_id: r.get(1)?,
                received_at: r.get(2)?,
                body: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn quarantined(&self, max: usize) -> Result<Vec<QuarantinedFact>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare_cached(
            "SELECT f.id, o.node, o.incarnation, f.seq, f.kind, f.quarantine, f.received_at
               FROM facts f JOIN origins o ON o.id = f.origin
              WHERE f.quarantine IS NOT NULL ORDER BY f.id LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![max as i64], |r| {
            Ok(QuarantinedFact {
                position: r.get::<_, i64>(0)? as u64,
                store_id: r.get(1)?,
                incarnation: r.get(2)?,
                seq: r.get::<_, i64>(3)? as u64,
                kind: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
                reason: r.get(5)?,
                received_at: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// The writer's open transaction, as the authority sees it.
struct WriteTx<'a>(&'a Connection);

impl AuthorityTx for WriteTx<'_> {
    fn movements(&self, member: &str) -> Result<Vec<(Movement, bool)>, StoreError> {
        movement_rows(self.0, member)
    }

    fn held(&self, member: &str, now: i64) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT coalesce(sum(points), 0) FROM holds WHERE member = ?1 AND until > ?2",
            )?
            .query_row(params![member, now], |r| r.get(0))?)
    }

    fn balance(&self, member: &str, now: i64) -> Result<i64, StoreError> {
        ledger_balance(self.0, member, now)
    }

    fn rights(&self, member: &str) -> Result<Rights, StoreError> {
        rights(self.0, member)
    }

    fn drop_expired_leases(&self, member: &str, now: i64) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM leases WHERE member = ?1 AND until <= ?2")?
            .execute(params![member, now])?;
        Ok(())
    }

    fn put_lease(&self, member: &str, store: &str, lease: &Lease) -> Result<(), StoreError> {
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO leases (member, store, points, spent, until, returned)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                member,
                store,
                lease.points,
                lease.spent,
                lease.until,
                i64::from(lease.returned)
            ])?;
        Ok(())
    }

    fn drop_lease(&self, member: &str, store: &str) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM leases WHERE member = ?1 AND store = ?2")?
            .execute(params![member, store])?;
        Ok(())
    }

    fn stock_given(&self, sku: &str) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT coalesce(sum(units), 0) FROM catalogue_given WHERE sku = ?1")?
            .query_row(params![sku], |r| r.get(0))?)
    }

    fn stock_held(&self, sku: &str, now: i64, except_txn: &str) -> Result<i64, StoreError> {
        Ok(self
            .0
            .prepare_cached(
                "SELECT coalesce(sum(units), 0) FROM stock_holds
                  WHERE sku = ?1 AND until > ?2 AND txn <> ?3",
            )?
            .query_row(params![sku, now, except_txn], |r| r.get(0))?)
    }

    fn stock_holder(&self, txn: &str, now: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .prepare_cached("SELECT store FROM stock_holds WHERE txn = ?1 AND until > ?2 LIMIT 1")?
            .query_row(params![txn, now], |r| r.get(0))
            .optional()?)
    }

    fn hold_stock(
        &self,
        txn: &str,
        items: &[(String, i64)],
        store: &str,
        now: i64,
        until: i64,
    ) -> Result<(), StoreError> {
        self.0
            .prepare_cached("DELETE FROM stock_holds WHERE txn = ?1 OR until <= ?2")?
            .execute(params![txn, now])?;
        let mut put = self.0.prepare_cached(
            "INSERT INTO stock_holds (txn, sku, units, store, until) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (sku, units) in items {
            put.execute(params![txn, sku, units, store, until])?;
        }
        Ok(())
    }

    fn release_stock(&self, txn: &str, store: &str) -> Result<bool, StoreError> {
        Ok(self
            .0
            .prepare_cached("DELETE FROM stock_holds WHERE txn = ?1 AND store = ?2")?
            .execute(params![txn, store])?
            > 0)
    }

    fn take_coupons(
        &self,
        member: &str,
        store: &str,
        until: i64,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let before: Option<(String, i64)> = self
            .0
            .prepare_cached("SELECT store, until FROM coupon_leases WHERE member = ?1")?
            .query_row(params![member], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        self.0
            .prepare_cached(
                "INSERT OR REPLACE INTO coupon_leases (member, store, until) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![member, store, until])?;
        self.0
            .prepare_cached(
                "INSERT INTO coupon_lease_log (member, store, since, until) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![member, store, now, until])?;
        Ok(before.and_then(|(s, u)| (s != store && u > now).then_some(s)))
    }
}

impl AuthorityStore for SqliteStore {
    fn authorize(&self, hold: Hold, decide: Decide) -> Result<PendingAnswer, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.asks
            .send(Ask::Redeem {
                hold,
                decide,
                reply,
            })
            .map_err(|_| StoreError::Batch("the authorizer stopped".into()))?;
        // Dropped unanswered only if deciding its batch panicked (nothing committed).
        Ok(PendingAnswer(answer))
    }

    fn authorize_claim(&self, ask: ClaimHold) -> Result<PendingAnswer<ClaimResponse>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.asks
            .send(Ask::Claim { ask, reply })
            .map_err(|_| StoreError::Batch("the authorizer stopped".into()))?;
        Ok(PendingAnswer(answer))
    }

    fn authority_tx(
        &self,
        work: &mut dyn FnMut(&dyn AuthorityTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // Dropped without a commit on `Err`: rolled back.
        work(&WriteTx(&tx))?;
        tx.commit()?;
        Ok(())
    }

    fn drop_claim_hold(&self, claim: &str, store: &str) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .prepare_cached("DELETE FROM claim_holds WHERE claim = ?1 AND store = ?2")?
            .execute(params![claim, store])?;
        Ok(n == 1)
    }

    fn return_lease(
        &self,
        member: &str,
        store: &str,
        lease: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = self
            .lock()
            .prepare_cached(
                "DELETE FROM leases WHERE member = ?1 AND store = ?2 AND (?3 IS NULL OR until = ?3)",
            )?
            .execute(params![member, store, lease])?;
        Ok(n == 1)
    }

    fn person_ids(&self, root: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare_cached(
            "SELECT loser FROM member_aliases WHERE survivor = ?1 ORDER BY loser",
        )?;
        let mut ids = vec![root.to_string()];
        for id in stmt.query_map(params![root], |r| r.get::<_, String>(0))? {
            ids.push(id?);
        }
        Ok(ids)
    }

    fn movements(&self, member: &str) -> Result<Vec<(Movement, bool)>, StoreError> {
        movement_rows(&self.readers.get(), member)
    }

    fn overdraw_report(&self) -> Result<OverdrawReport, StoreError> {
        let conn = self.readers.get();
        let overdraws = conn
            .prepare(
                "SELECT member, store, at, points, offline FROM overdraws ORDER BY at, origin, seq",
            )?
            .query_map([], |r| {
                Ok(Overdraw {
                    member: r.get(0)?,
                    store: r.get(1)?,
                    at: r.get(2)?,
                    points: r.get(3)?,
                    offline: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let flags = conn
            .prepare(
                "SELECT member, first_store, first_at, second_store, second_at
                   FROM redemption_flags ORDER BY second_at, member",
            )?
            .query_map([], |r| {
                Ok(RedemptionFlag {
                    member: r.get(0)?,
                    first_store: r.get(1)?,
                    first_at: r.get(2)?,
                    second_store: r.get(3)?,
                    second_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let over_claims = conn
            .prepare(
                "SELECT member, entitlement, period, claimed, cap, stores
                   FROM over_claims ORDER BY at, member, entitlement, period",
            )?
            .query_map([], |r| {
                Ok(OverClaim {
                    member: r.get(0)?,
                    entitlement: r.get(1)?,
                    period: r.get(2)?,
                    claimed: r.get(3)?,
                    limit: u32::try_from(r.get::<_, i64>(4)?).unwrap_or(u32::MAX),
                    stores: r
                        .get::<_, String>(5)?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(OverdrawReport {
            overdraws,
            flags,
            over_claims,
        })
    }
}

impl Members for SqliteStore {
    fn root_member(&self, member: &str) -> Result<String, StoreError> {
        // A read: the reader sees every committed ingest and waits for no writer.
        Ok(self
            .readers
            .get()
            .prepare_cached(concat!("SELECT ", root_of!("?1")))?
            .query_row(params![member], |r| r.get(0))?)
    }

    fn standing(
        &self,
        store: &str,
        member: &[u8; 16],
    ) -> Result<(Option<String>, bool), StoreError> {
        let conn = self.readers.get();
        let home = member_home(&conn, member)?;
        let held = holds_member(&conn, &Some(uuid::Uuid::from_bytes(*member)), store)?;
        Ok((home, held))
    }

    fn member_facts_by_phone(
        &self,
        store: &str,
        phone_idx: &str,
        after: u64,
        max: usize,
    ) -> Result<(Vec<Fact>, u64, bool), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        // The holdings first, in the transaction that reads: a fact ingested after this
        // read reaches the store by its stream, one ingested before is in this answer.
        // The stores that wrote the members' facts become holders too (they hold them
        // without a row until someone else does: `fan_out`).
        let end: i64 = tx
            .prepare_cached("SELECT coalesce(max(id), 0) FROM facts")?
            .query_row([], |r| r.get(0))?;
        let members: Vec<Vec<u8>> = tx
            .prepare_cached(
                "SELECT DISTINCT unhex(replace(member, '-', '')) FROM registrations
                  WHERE phone_idx = ?1",
            )?
            .query_map(params![phone_idx], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for m in &members {
            hold_writers(&tx, m, end)?;
            tx.prepare_cached(
                "INSERT INTO holdings (member, store, touched) VALUES (?1, ?2, ?3)
                 ON CONFLICT (member, store) DO UPDATE SET touched = excluded.touched",
            )?
            .execute(params![m, store, end])?;
        }
        let mut rows = {
            let mut stmt = tx.prepare_cached(MEMBER_FACTS_BY_PHONE)?;
            stmt.query_map(
                params![phone_idx, after as i64, max as i64 + 1],
                positioned_fact,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        let more = rows.len() > max;
        rows.truncate(max);
        let upto = rows.last().map_or(after, |(pos, _)| *pos);
        Ok((rows.into_iter().map(|(_, f)| f).collect(), upto, more))
    }

    fn profile(&self, member: &str) -> Result<Option<Profile>, StoreError> {
        let conn = self.readers.get();
        // Every id of the member: their profiles merge field by field (DESIGN.md §4).
        // Larger ids first: a merge keeps the first of two equal stamps, and the edges
        // break such ties to the larger id.
        let mut stmt = conn.prepare_cached(concat!(
            "WITH r(id) AS (SELECT ",
            root_of!("?1"),
            ")
             SELECT profile FROM profiles
              WHERE member IN (SELECT id FROM r UNION ALL
                               SELECT loser FROM member_aliases, r WHERE survivor = r.id)
              ORDER BY member DESC"
        ))?;
        let mut merged: Option<Profile> = None;
        for held in stmt.query_map(params![member], |r| r.get::<_, String>(0))? {
            let p: Profile =
                serde_json::from_str(&held?).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match &mut merged {
                Some(m) => m.merge(&p),
                None => merged = Some(p),
            }
        }
        Ok(merged)
    }
}

/// The last position received before `before` (0: none), by binary search over the
/// positions: facts are received in position order (`received_at` is the hub's clock
/// when the one writer inserted them). Should the hub's clock step back, the answer
/// falls somewhere inside the step, which moves a stream's expiry by that step at most.
fn last_received_before(conn: &Connection, before: i64) -> Result<i64, StoreError> {
    let end: i64 = conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM facts")?
        .query_row([], |r| r.get(0))?;
    let mut first_at = conn
        .prepare_cached("SELECT id, received_at FROM facts WHERE id >= ?1 ORDER BY id LIMIT 1")?;
    // Invariant: `lo` was received before the cutoff (or is 0); nothing at or after
    // `hi` was.
    let (mut lo, mut hi) = (0i64, end + 1);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match first_at
            .query_row(params![mid], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
            })
            .optional()?
        {
            Some((id, at)) if at < before && id < hi => lo = id,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The activity row's columns, in the order [`activity_row`] reads them.
const ACTIVITY_COLUMNS: &str = "facts, purchases, spend, refunds, refunded, first_purchase_at,
     last_purchase_at, points_earned, points_spent, points_reversed, last_seen_at";

/// An activity row from columns `at..at + 11` ([`ACTIVITY_COLUMNS`]).
fn activity_row(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Activity> {
    Ok(Activity {
        facts: r.get(at)?,
        purchases: r.get(at + 1)?,
        spend: r.get(at + 2)?,
        refunds: r.get(at + 3)?,
        refunded: r.get(at + 4)?,
        first_purchase_at: r.get(at + 5)?,
        last_purchase_at: r.get(at + 6)?,
        points_earned: r.get(at + 7)?,
        points_spent: r.get(at + 8)?,
        points_reversed: r.get(at + 9)?,
        last_seen_at: r.get(at + 10)?,
    })
}

/// A 16-byte member id column.
fn member_id(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<uuid::Uuid> {
    let b: Vec<u8> = r.get(i)?;
    uuid::Uuid::from_slice(&b).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Blob, Box::new(e))
    })
}

/// Projection `name`'s position and generation, and the log's end, in `conn`'s snapshot.
fn projection_at(conn: &Connection, name: &str) -> Result<(i64, i64, i64), StoreError> {
    let (position, generation): (i64, i64) = conn
        .prepare_cached("SELECT position, generation FROM projections WHERE name = ?1")?
        .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let end: i64 = conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM facts")?
        .query_row([], |r| r.get(0))?;
    Ok((position, generation, end))
}

/// Moves projection `name` from `read` (its position and generation when the step
/// read) to `upto`; false if it was reset or stepped since, and nothing of the step
/// may be written.
fn move_projection(
    tx: &Connection,
    name: &str,
    read: (i64, i64),
    upto: i64,
) -> Result<bool, StoreError> {
    let moved = tx
        .prepare_cached(
            "UPDATE projections SET position = ?2
              WHERE name = ?1 AND position = ?3 AND generation = ?4",
        )?
        .execute(params![name, upto, read.0, read.1])?;
    Ok(moved == 1)
}

impl Projections for SqliteStore {
    fn step_activity(&self, max: usize, fold: ActivityFold) -> Result<Step, StoreError> {
        let max = max.max(1);
        // Read off the writer, in one snapshot: the position, the facts after it and
        // the current rows of their members (only this projection writes them).
        let (position, generation, end, facts, mut rows) = {
            let conn = self.readers.get();
            let tx = conn.unchecked_transaction()?;
            let (position, generation, end) = projection_at(&tx, ACTIVITY)?;
            let bodies: Vec<(i64, String)> = tx
                .prepare_cached(
                    "SELECT id, body FROM facts
                      WHERE id > ?1 AND id <= ?2 AND member IS NOT NULL ORDER BY id LIMIT ?3",
                )?
                .query_map(params![position, end, max as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            // Each fact parsed once: its member names the row to load, then it is folded.
            let facts: Vec<(i64, Result<Entry, patron_domain::fact::FactError>)> = bodies
                .into_iter()
                .map(|(id, body)| (id, Entry::parse(&body)))
                .collect();
            let mut rows = std::collections::HashMap::<uuid::Uuid, Activity>::new();
            let mut read = tx.prepare_cached(&format!(
                "SELECT {ACTIVITY_COLUMNS} FROM activity WHERE member = ?1"
            ))?;
            for m in facts.iter().filter_map(|(_, e)| e.as_ref().ok()?.member) {
                if let std::collections::hash_map::Entry::Vacant(slot) = rows.entry(m) {
                    let held = read
                        .query_row(params![&m.as_bytes()[..]], |r| activity_row(r, 0))
                        .optional()?;
                    slot.insert(held.unwrap_or_default());
                }
            }
            drop(read);
            tx.commit()?;
            (position, generation, end, facts, rows)
        };
        let upto = if facts.len() == max {
            facts.last().map_or(end, |(id, _)| *id)
        } else {
            end
        };
        let mut step = Step {
            folded: 0,
            unreadable: 0,
            position: upto as u64,
            end: end as u64,
        };
        for (id, parsed) in &facts {
            match parsed {
                Ok(entry) => {
                    if let Some(row) = entry.member.and_then(|m| rows.get_mut(&m)) {
                        fold(row, entry);
                        step.folded += 1;
                    }
                }
                Err(e) => {
                    tracing::error!(fact = id, error = %e, "a held fact does not parse: activity skips it");
                    step.unreadable += 1;
                }
            }
        }
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !move_projection(&tx, ACTIVITY, (position, generation), upto)? {
            // Reset (or stepped by another process) since the read: nothing of it
            // counts any more.
            return Ok(Step {
                position: position as u64,
                end: end as u64,
                ..Step::default()
            });
        }
        {
            let mut write = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO activity (member, {ACTIVITY_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?;
            for (m, a) in &rows {
                write.execute(params![
                    &m.as_bytes()[..],
                    a.facts,
                    a.purchases,
                    a.spend,
                    a.refunds,
                    a.refunded,
                    a.first_purchase_at,
                    a.last_purchase_at,
                    a.points_earned,
                    a.points_spent,
                    a.points_reversed,
                    a.last_seen_at,
                ])?;
            }
        }
        tx.commit()?;
        Ok(step)
    }

    fn step_overdraws(
        &self,
        max: usize,
        rule: OverdrawRule,
        now: i64,
    ) -> Result<(Step, usize), StoreError> {
        // Judged off the writer, in one snapshot; only the rows and the position are
        // written.
        let (position, generation, end, upto, judged, (rows, unreadable)) = {
            let conn = self.readers.get();
            let tx = conn.unchecked_transaction()?;
            let (position, generation, end) = projection_at(&tx, OVERDRAWS)?;
            let upto = end.min(position.saturating_add(max.max(1) as i64));
            let ids: Vec<(i64, Vec<u8>)> = tx
                .prepare_cached(
                    "SELECT id, member FROM facts
                      WHERE id > ?1 AND id <= ?2 AND spend > 0 AND member IS NOT NULL",
                )?
                .query_map(params![position, upto], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // A damaged member id is passed over (and counted), not allowed to stop
            // the projection behind it.
            let mut damaged = 0;
            let spenders: Vec<String> = ids
                .into_iter()
                .filter_map(|(id, m)| match uuid::Uuid::from_slice(&m) {
                    Ok(u) => Some(u.to_string()),
                    Err(_) => {
                        tracing::error!(
                            fact = id,
                            "a spend's member id is damaged: its overdraw is not judged"
                        );
                        damaged += 1;
                        None
                    }
                })
                .collect();
            let (rows, unreadable) = judge_overdraws(&tx, &spenders, rule, now)?;
            tx.commit()?;
            let judged = (rows, unreadable + damaged);
            (position, generation, end, upto, spenders.len(), judged)
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        if !move_projection(&tx, OVERDRAWS, (position, generation), upto)? {
            // Reset (or stepped by another process) since the read.
            return Ok((
                Step {
                    position: position as u64,
                    end: end as u64,
                    ..Step::default()
                },
                0,
            ));
        }
        let mut recorded = 0;
        {
            let mut write = tx.prepare_cached(
                "INSERT OR IGNORE INTO overdraws (origin, seq, member, store, at, points, offline)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for r in &rows {
                let o = &r.overdraw;
                recorded += write.execute(params![
                    r.origin, r.seq, o.member, o.store, o.at, o.points, o.offline
                ])?;
            }
        }
        tx.commit()?;
        Ok((
            Step {
                folded: judged as u64,
                unreadable,
                position: upto as u64,
                end: end as u64,
            },
            recorded,
        ))
    }

    fn reset_projection(&self, name: &str) -> Result<(), StoreError> {
        let table = match name {
            ACTIVITY => "activity",
            OVERDRAWS => "overdraws",
            other => return Err(StoreError::NoSuchProjection(other.to_string())),
        };
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(&format!("DELETE FROM {table}"), [])?;
        tx.prepare_cached(
            "UPDATE projections SET position = 0, generation = generation + 1 WHERE name = ?1",
        )?
        .execute(params![name])?;
        tx.commit()?;
        Ok(())
    }

    fn activity_rows(&self, member: &str) -> Result<Vec<Activity>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare_cached(&format!(
            concat!(
                "WITH r(id) AS (SELECT ",
                root_of!("?1"),
                ")
                 SELECT {} FROM activity
                  WHERE member IN (SELECT unhex(replace(id, '-', '')) FROM r UNION ALL
                                   SELECT unhex(replace(loser, '-', ''))
                                     FROM member_aliases, r WHERE survivor = r.id)"
            ),
            ACTIVITY_COLUMNS
        ))?;
        let rows = stmt
            .query_map(params![member], |r| activity_row(r, 0))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn all_activity(&self) -> Result<Vec<(uuid::Uuid, Activity)>, StoreError> {
        let conn = self.readers.get();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT member, {ACTIVITY_COLUMNS} FROM activity ORDER BY member"
        ))?;
        let rows = stmt
            .query_map([], |r| Ok((member_id(r, 0)?, activity_row(r, 1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    fn projection_positions(&self) -> Result<Vec<ProjectionPosition>, StoreError> {
        let conn = self.readers.get();
        let tx = conn.unchecked_transaction()?;
        let end: i64 = tx
            .prepare_cached("SELECT coalesce(max(id), 0) FROM facts")?
            .query_row([], |r| r.get(0))?;
        let out = tx
            .prepare_cached("SELECT name, position FROM projections ORDER BY name")?
            .query_map([], |r| {
                Ok(ProjectionPosition {
                    name: r.get(0)?,
                    position: r.get::<_, i64>(1)? as u64,
                    end: end as u64,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(out)
    }
}

impl Streams for SqliteStore {
    fn stream(&self, store: &str, after: u64, max: usize) -> Result<StreamRead, StoreError> {
        let mut conn = self.readers.get();
        // One snapshot: the end read with the facts, so no fact at or below it can
        // commit later (positions are assigned by the one writer, in commit order).
        let tx = conn.transaction()?;
        let (horizon, end): (i64, i64) = tx
            .prepare_cached(
                "SELECT (SELECT stream_horizon FROM stores WHERE store_id = ?1),
                        (SELECT coalesce(max(id), 0) FROM facts)",
            )?
            .query_row(params![store], |r| {
                Ok((r.get::<_, Option<i64>>(0)?.unwrap_or(0), r.get(1)?))
            })?;
        let end_mark = mark_at(&tx, end)?;
        let mark_at_cursor = mark_at(&tx, after as i64)?;
        let mut facts = {
            let mut stmt = tx.prepare_cached(
                "SELECT s.pos, o.node, o.incarnation, f.seq, f.body
                   FROM stream s JOIN facts f ON f.id = s.pos JOIN origins o ON o.id = f.origin
                  WHERE s.store = ?1 AND s.pos > ?2
                  ORDER BY s.pos LIMIT ?3",
            )?;
            stmt.query_map(
                params![store, after as i64, max as i64 + 1],
                positioned_fact,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.commit()?;
        let more = facts.len() > max;
        facts.truncate(max);
        Ok(StreamRead {
            facts,
            more,
            horizon: horizon.max(0) as u64,
            end: end.max(0) as u64,
            end_mark,
            mark_at_cursor,
        })
    }

    fn expire_streams(&self, before: i64) -> Result<u64, StoreError> {
        // Found on a reader, by a few point reads: scanning `received_at` (no index)
        // held the writer for the whole log once an hour.
        let cutoff = last_received_before(&self.readers.get(), before)?;
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let stores: Vec<(String, i64)> = tx
            .prepare_cached("SELECT store, max(pos) FROM stream WHERE pos <= ?1 GROUP BY store")?
            .query_map(params![cutoff], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut n = 0u64;
        for (store, last) in &stores {
            n += tx
                .prepare_cached("DELETE FROM stream WHERE store = ?1 AND pos <= ?2")?
                .execute(params![store, last])? as u64;
            tx.prepare_cached(
                "UPDATE stores SET stream_horizon = max(stream_horizon, ?2) WHERE store_id = ?1",
            )?
            .execute(params![store, last])?;
        }
        tx.commit()?;
        Ok(n)
    }

    fn release(&self, store: &str, members: &[[u8; 16]], after: u64) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let mut n = 0;
        {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM holdings WHERE member = ?1 AND store = ?2 AND touched < ?3",
            )?;
            for m in members {
                n += stmt.execute(params![&m[..], store, after as i64])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

impl Documents for SqliteStore {
    fn load_doc(&self, doc_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.readers.get();
        Ok(conn
            .prepare_cached("SELECT bytes FROM docs WHERE doc_id = ?1")?
            .query_row(params![doc_id], |r| r.get(0))
            .optional()?)
    }

    fn save_doc(&self, doc_id: &str, bytes: &[u8], now: i64) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO docs (doc_id, bytes, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (doc_id) DO UPDATE SET bytes = excluded.bytes, updated_at = excluded.updated_at",
        )?
        .execute(params![doc_id, bytes, now])?;
        Ok(())
    }

    fn load_doc_state(&self, doc_id: &str, peer: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.readers.get();
        Ok(conn
            .prepare_cached("SELECT state FROM doc_sync_states WHERE doc_id = ?1 AND peer = ?2")?
            .query_row(params![doc_id, peer], |r| r.get(0))
            .optional()?)
    }

    fn save_doc_state(&self, doc_id: &str, peer: &str, state: &[u8]) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(
            "INSERT INTO doc_sync_states (doc_id, peer, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (doc_id, peer) DO UPDATE SET state = excluded.state",
        )?
        .execute(params![doc_id, peer, state])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {

    /// Reads, reports and lookups never wait for the writer: with the writer's
    /// connection held (as during a long ingest group), each read still answers.
    #[test]
    fn reads_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        store
            .save_doc("ring:all", b"doc", 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let writer = store.lock();
        let (tx, rx) = mpsc::channel();
        let reads = store.clone();
        std::thread::spawn(move || {
            let o = Origin {
                node: "S001".into(),
                incarnation: uuid::Uuid::from_u128(1),
            };
            let r = (|| -> Result<(), StoreError> {
                reads.list_stores(0)?;
                reads.read(&o, 0, 10)?;
                reads.high(&o)?;
                reads.fact_count()?;
                reads.overdraw_report()?;
                reads.profile("m")?;
                reads.load_doc("ring:all")?;
                reads.load_doc_state("ring:all", "S001")?;
                reads.movements("m")?;
                reads.root_member("m")?;
                reads.store_by_credential(&[0; 32])?;
                reads.stream("S001", 0, 10)?;
                Ok(())
            })();
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let answered = rx.recv_timeout(Duration::from_secs(10));
        drop(writer);
        assert_eq!(answered, Ok(Ok(())), "a read waited for the writer");
    }

    /// The storage contract every backend must pass (`store::contract`).
    #[test]
    fn the_sqlite_backend_keeps_the_storage_contract() {
        let dirs = std::sync::Mutex::new(Vec::new());
        crate::store::contract::run_all(|| {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            let store = SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
            if let Ok(mut d) = dirs.lock() {
                d.push(dir);
            }
            store
        });
    }
    use super::*;

    #[test]
    fn the_last_position_received_before_a_cutoff_is_found_as_a_scan_finds_it() {
        let conn = Connection::open_in_memory().unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(
            "CREATE TABLE facts (id INTEGER PRIMARY KEY, received_at INTEGER NOT NULL)",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let scan = |before: i64| -> i64 {
            conn.query_row(
                "SELECT coalesce(max(id), 0) FROM facts WHERE received_at < ?1",
                params![before],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let check = |label: &str| {
            for before in -5..1_300 {
                assert_eq!(
                    last_received_before(&conn, before).unwrap_or_else(|e| panic!("{e}")),
                    scan(before),
                    "{label}, before {before}"
                );
            }
        };
        check("empty log");
        // Positions 1..=100 received every 10 ms, several facts per instant, with holes
        // (positions freed by rolled-back pushes).
        for id in (1..=100i64).filter(|i| i % 7 != 3) {
            conn.execute(
                "INSERT INTO facts (id, received_at) VALUES (?1, ?2)",
                params![id, (id / 3) * 10],
            )
            .unwrap_or_else(|e| panic!("{e}"));
        }
        check("a log with holes");
    }

    #[test]
    fn a_newer_database_is_refused_and_migrating_twice_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        drop(SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        drop(SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap_or_else(|e| panic!("{e}"));
        conn.pragma_update(None, "user_version", 99)
            .unwrap_or_else(|e| panic!("{e}"));
        drop(conn);
        assert!(matches!(
            SqliteStore::open(dir.path()),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    /// A database of schema 8 (facts as JSON, points in their own table, expression
    /// indexes) moves to typed columns with nothing lost: movements, registrations by
    /// phone, fact order, bodies and offline flags read the same afterwards.
    #[test]
    fn an_untyped_database_upgrades_to_typed_columns_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join(DB_FILE);
        let m = "0190a000-0000-7000-8000-00000000000a";
        let idx = "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=";
        let facts = [
            format!(
                r#"{{"kind":"member_registered","at":1,"member":"{m}","txn":"{m}","body":{{"phone_idx":"{idx}"}}}}"#
            ),
            format!(
                r#"{{"kind":"purchase","at":2,"member":"{m}","txn":"0190a000-0000-7000-8000-0000000000b1","earn":300,"expires_at":9000000000000,"body":{{"receipt_id":"R1","subtotal":100,"total":100}}}}"#
            ),
            r#"{"kind":"purchase","at":3,"txn":"0190a000-0000-7000-8000-0000000000b2","body":{"receipt_id":"R2","subtotal":5,"total":5}}"#.to_string(),
            format!(
                r#"{{"kind":"redemption","at":4,"member":"{m}","txn":"0190a000-0000-7000-8000-0000000000b3","spend":120,"body":{{"reason":"gift","auth":"offline"}}}}"#
            ),
        ];
        {
            let mut conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            for sql in &MIGRATIONS[..8] {
                conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
            }
            conn.pragma_update(None, "user_version", 8)
                .unwrap_or_else(|e| panic!("{e}"));
            let tx = conn.transaction().unwrap_or_else(|e| panic!("{e}"));
            tx.execute(
                "INSERT INTO origins (node, incarnation, high) VALUES ('S001', ?1, 4)",
                [uuid::Uuid::from_u128(7).to_string()],
            )
            .unwrap_or_else(|e| panic!("{e}"));
            for (i, body) in facts.iter().enumerate() {
                tx.execute(
                    "INSERT INTO facts (origin, seq, body, received_at) VALUES (1, ?1, ?2, 0)",
                    params![i as i64 + 1, body],
                )
                .unwrap_or_else(|e| panic!("{e}"));
            }
            // The points rows the schema-8 ingest wrote, as migration 4 derives them.
            tx.execute_batch(
                "INSERT INTO points (member, origin, seq, at, txn, earn, expires_at, available_at,
                                     spend, reverse, reverse_lot, offline)
                 SELECT json_extract(body, '$.member'), origin, seq, json_extract(body, '$.at'),
                        json_extract(body, '$.txn'), coalesce(json_extract(body, '$.earn'), 0),
                        coalesce(json_extract(body, '$.expires_at'), 0), 0,
                        coalesce(json_extract(body, '$.spend'), 0), 0, NULL,
                        coalesce(json_extract(body, '$.body.auth') = 'offline', 0)
                   FROM facts WHERE json_extract(body, '$.member') IS NOT NULL
                    AND json_extract(body, '$.kind') <> 'member_registered'",
            )
            .unwrap_or_else(|e| panic!("{e}"));
            tx.commit().unwrap_or_else(|e| panic!("{e}"));
        }
        let before: Vec<(Movement, bool)> = {
            let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
            let mut stmt = conn
                .prepare(
                    "SELECT at, seq, earn, expires_at, spend, offline FROM points ORDER BY seq",
                )
                .unwrap_or_else(|e| panic!("{e}"));
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .and_then(|rows| {
                rows.collect::<rusqlite::Result<Vec<(i64, i64, i64, i64, i64, bool)>>>()
            })
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|(at, seq, earn, expires_at, spend, offline)| {
                (
                    Movement {
                        at,
                        origin: format!("S001/{}", uuid::Uuid::from_u128(7)).into(),
                        seq,
                        txn: [0; 16],
                        earn,
                        expires_at,
                        available_at: 0,
                        spend,
                        reverse: 0,
                        reverse_lot: None,
                    },
                    offline,
                )
            })
            .collect()
        };
        assert_eq!(before.len(), 2);

        let store = SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut after = store.movements(m).unwrap_or_else(|e| panic!("{e}"));
        after.sort_by_key(|(mv, _)| mv.seq);
        let strip = |v: Vec<(Movement, bool)>| -> Vec<(Movement, bool)> {
            v.into_iter()
                .map(|(mv, o)| (Movement { txn: [0; 16], ..mv }, o))
                .collect()
        };
        assert_eq!(
            strip(after.clone()),
            before,
            "the same movements, offline flag kept"
        );
        assert_eq!(
            after[0].0.txn,
            *uuid::Uuid::from_u128(0x0190a000_0000_7000_8000_0000000000b1).as_bytes()
        );
        // Registrations by phone were carried over: the member's facts come back in
        // ingest order, the walk-in sale not among them.
        let (got, _, more) = store
            .member_facts_by_phone("S001", idx, 0, 10)
            .unwrap_or_else(|e| panic!("{e}"));
        let seqs: Vec<u64> = got.iter().map(|f| f.seq).collect();
        assert_eq!((seqs, more), (vec![1, 2, 4], false));
        assert_eq!(got[1].body, facts[1], "bodies unchanged");
        let conn = Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let typed: (String, Option<Vec<u8>>, i64) = conn
            .query_row(
                "SELECT kind, member, earn FROM facts WHERE seq = 2",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            typed,
            (
                "purchase".to_string(),
                Some(
                    uuid::Uuid::parse_str(m)
                        .map(|u| u.as_bytes().to_vec())
                        .unwrap_or_default()
                ),
                300
            )
        );
        let gone: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name IN ('points', 'registrations_by_phone')",
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(gone, 0);
    }

    /// Pushes applied in one group are isolated: one that fails part-way (here: a judge
    /// that takes held facts for new ones, so the insert of its second batch breaks the
    /// unique key after its first batch was written) is rolled back whole and answered
    /// with its error; the push beside it is applied.
    #[test]
    fn a_failing_push_does_not_fail_the_others_in_its_group() {
        use patron_sync::session::{Batch, batch};
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = SqliteStore::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let origin = |node: &str, inc: u128| Origin {
            node: node.into(),
            incarnation: uuid::Uuid::from_u128(inc),
        };
        let facts = |o: Origin| -> Batch {
            let fs = (1..=2u64)
                .map(|seq| Fact {
                    origin: o.clone(),
                    seq,
                    body: format!(
                        r#"{{"kind":"purchase","at":{seq},"txn":"{}","body":{{"receipt_id":"R{seq}","subtotal":1,"total":1}}}}"#,
                        uuid::Uuid::from_u128(u128::from(seq))
                    ),
                })
                .collect();
            batch(o, fs)
        };
        let job = |node: &str, origins: Vec<Origin>, judge: super::super::Judge| IngestJob {
            store_id: node.into(),
            report: patron_protocol::hub::SyncReport::default(),
            batches: origins
                .into_iter()
                .map(|o| {
                    let b = facts(o);
                    let typed = crate::ingest::type_batch(node, None, &b, 0, &mut 0);
                    let checked = patron_sync::session::check(true, "hub", node, &b);
                    super::super::IncomingBatch {
                        batch: b,
                        checked,
                        typed,
                    }
                })
                .collect(),
            judge,
            flag_window_ms: 0,
            limits: crate::ingest::FactLimits::default(),
            quarantine_all: None,
            claim_budget: u32::MAX,
            now: 0,
        };
        let honest: super::super::Judge = patron_sync::session::place;
        let lying: super::super::Judge = |_, b| Judgement::Apply {
            skip: 0,
            high: b.facts.len() as u64,
        };
        let held = store
            .ingest(job("S002", vec![origin("S002", 3)], honest))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(held[0].judgement, Judgement::Apply { .. }));
        let (tx, _rx) = mpsc::sync_channel(1);
        let group = vec![
            (
                Arc::new(job("S001", vec![origin("S001", 3)], honest)),
                tx.clone(),
            ),
            // A new incarnation's batch (written), then the held one (fails).
            (
                Arc::new(job(
                    "S002",
                    vec![origin("S002", 4), origin("S002", 3)],
                    lying,
                )),
                tx,
            ),
        ];
        let hub_origin: i64 = lock(&store.conn)
            .query_row("SELECT max(id) FROM origins WHERE node = 'hub'", [], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let answers = ingest_group(&mut lock(&store.conn), hub_origin, &group)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&answers[0], Ok(i) if matches!(i[0].judgement, Judgement::Apply { .. })),
            "{:?}",
            answers[0]
        );
        assert!(answers[1].is_err(), "{:?}", answers[1]);
        let high = |o: Origin| store.high(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(high(origin("S001", 3)), 2, "the other push applied");
        assert_eq!(
            high(origin("S002", 4)),
            0,
            "the failed push's first batch rolled back"
        );
        assert_eq!(store.fact_count().unwrap_or_else(|e| panic!("{e}")), 4);
    }
}
