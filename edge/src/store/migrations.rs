//! The schema, as an append-only list of migrations tracked by `PRAGMA user_version`.
//!
//! Never edit or reorder an entry once released: add a new one. A database whose
//! `user_version` is newer than this list was written by a newer edge, and is refused
//! rather than misread, so rolling a store back to an older binary is safe.

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the edge core.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT;

    -- Where facts come from: a node (store id or 'hub') in one database incarnation.
    CREATE TABLE origins (
        id          INTEGER PRIMARY KEY,
        node        TEXT NOT NULL,
        incarnation TEXT NOT NULL,
        UNIQUE (node, incarnation)
    ) STRICT;

    -- The ledger: immutable facts, gap-free seq per origin. Derived numbers (balances,
    -- tiers) are computed from these rows, never stored as facts.
    CREATE TABLE facts (
        origin      INTEGER NOT NULL REFERENCES origins(id),
        seq         INTEGER NOT NULL,
        kind        TEXT    NOT NULL,
        at          INTEGER NOT NULL,            -- unix ms
        member      BLOB,                        -- member id, 16 bytes
        txn         BLOB    NOT NULL,            -- transaction id; keys the lot an earn creates
        earn        INTEGER NOT NULL DEFAULT 0,  -- points credited as a lot
        expires_at  INTEGER NOT NULL DEFAULT 0,  -- that lot's last usable instant
        spend       INTEGER NOT NULL DEFAULT 0,  -- points consumed FIFO
        reverse     INTEGER NOT NULL DEFAULT 0,  -- points taken back from reverse_lot
        reverse_lot BLOB,
        qual_spend  INTEGER NOT NULL DEFAULT 0,  -- qualifying-spend delta, fen
        qual_at     INTEGER NOT NULL DEFAULT 0,  -- when that spend counts
        body        TEXT    NOT NULL,            -- JSON details; personal data only encrypted
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX facts_by_member ON facts (member, at) WHERE member IS NOT NULL;

    -- Current member profiles (a projection of the member facts). Personal fields are
    -- AES-256-GCM ciphertexts under the member's own key, itself wrapped by the store key.
    CREATE TABLE members (
        member_id         BLOB PRIMARY KEY,
        phone_idx         BLOB NOT NULL,          -- HMAC-SHA256 blind index of the phone
        wrapped_key       BLOB NOT NULL,
        phone_enc         BLOB NOT NULL,
        name_enc          BLOB,
        birthday_enc      BLOB,
        referral_code     TEXT NOT NULL UNIQUE,
        referrer_code     TEXT,
        channel           TEXT,
        consent_terms     INTEGER NOT NULL,
        consent_marketing INTEGER NOT NULL,
        policy_version    TEXT,
        tags              TEXT NOT NULL DEFAULT '[]',
        home_store        TEXT NOT NULL,
        created_at        INTEGER NOT NULL,
        updated_at        INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX members_by_phone ON members (phone_idx);

    -- Committed sales by POS receipt number (unique per store). The lines live once, in
    -- the purchase fact (origin, seq).
    CREATE TABLE receipts (
        receipt_id TEXT PRIMARY KEY,
        txn        BLOB    NOT NULL,
        member     BLOB,
        at         INTEGER NOT NULL,
        origin     INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        subtotal   INTEGER NOT NULL,
        total      INTEGER NOT NULL,
        earned     INTEGER NOT NULL,
        redeemed   INTEGER NOT NULL,
        FOREIGN KEY (origin, seq) REFERENCES facts (origin, seq)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE refunds (
        refund_id       BLOB PRIMARY KEY,
        receipt_id      TEXT    NOT NULL REFERENCES receipts(receipt_id),
        at              INTEGER NOT NULL,
        per_line        TEXT    NOT NULL,   -- JSON array: units refunded per receipt line
        gross           INTEGER NOT NULL,
        amount          INTEGER NOT NULL,
        points_reversed INTEGER NOT NULL,
        points_returned INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX refunds_by_receipt ON refunds (receipt_id);

    -- Once-per-period behaviour rewards (check-in per day, profile completion once).
    CREATE TABLE event_claims (
        member BLOB NOT NULL,
        kind   TEXT NOT NULL,
        period TEXT NOT NULL,
        PRIMARY KEY (member, kind, period)
    ) STRICT, WITHOUT ROWID;

    -- POS lanes and cashiers; tokens are stored only as SHA-256 hashes.
    CREATE TABLE lanes (
        id         INTEGER PRIMARY KEY,
        name       TEXT    NOT NULL UNIQUE,
        role       TEXT    NOT NULL,
        token_hash BLOB    NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;

    -- Answers to idempotent requests, encrypted (they may hold a name). An append-only
    -- log in time order: the lookup index by (lane, key) lives in memory and is rebuilt
    -- from this table at start, so a commit appends to one hot page instead of landing on
    -- a random page of a key index.
    CREATE TABLE idempotency (
        id           INTEGER PRIMARY KEY,
        lane         INTEGER NOT NULL,
        key          TEXT    NOT NULL,
        request_hash BLOB    NOT NULL,
        status       INTEGER NOT NULL,
        member       BLOB,                -- set: response sealed under this member's key
        response     BLOB    NOT NULL,
        created_at   INTEGER NOT NULL
    ) STRICT;
    "#,
    // 2: promotions — rule sets, coupons, rule usage, pending points.
    r#"
    -- When a lot becomes redeemable (return window); 0 = at once.
    ALTER TABLE facts ADD COLUMN available_at INTEGER NOT NULL DEFAULT 0;
    -- The rule-set version a sale was priced with.
    ALTER TABLE receipts ADD COLUMN rules_version TEXT;

    -- Index only the member facts that derivations read (points, spend, purchases):
    -- coupon, profile and benefit facts no longer cost a random index page each.
    -- The WHERE clause must stay identical to the one in facts::for_member.
    DROP INDEX facts_by_member;
    CREATE INDEX facts_ledger_by_member ON facts (member, at)
        WHERE member IS NOT NULL AND (earn <> 0 OR spend <> 0 OR reverse <> 0 OR qual_spend <> 0 OR kind = 'purchase');

    -- Every rule-set version ever loaded here; the one with the highest seq is in force.
    CREATE TABLE rule_sets (
        version   TEXT PRIMARY KEY,
        body      TEXT    NOT NULL,
        loaded_at INTEGER NOT NULL,
        seq       INTEGER NOT NULL UNIQUE
    ) STRICT;

    -- Coupons held by members. Issue, use, restore and revoke are also facts.
    CREATE TABLE coupons (
        coupon_id  BLOB PRIMARY KEY,
        code       TEXT    NOT NULL UNIQUE,
        member     BLOB    NOT NULL,
        label      TEXT    NOT NULL,
        off        INTEGER NOT NULL,
        min_spend  INTEGER NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        source     TEXT    NOT NULL,   -- rule id, 'manual', 'upgrade:<tier>'
        source_txn BLOB,               -- the sale that granted it
        active     INTEGER NOT NULL,   -- 0 until claimed, for claim-first coupons
        used_txn   BLOB,               -- the sale that used it
        revoked    INTEGER NOT NULL DEFAULT 0
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX coupons_by_member ON coupons (member);
    CREATE INDEX coupons_by_source_txn ON coupons (source_txn) WHERE source_txn IS NOT NULL;

    -- How often limited rules applied: per member, and store-wide (member = x'').
    CREATE TABLE rule_usage (
        rule_id TEXT    NOT NULL,
        member  BLOB    NOT NULL,
        uses    INTEGER NOT NULL,
        amount  INTEGER NOT NULL,
        PRIMARY KEY (rule_id, member)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 3: a member's coupons are found through the member-ledger index, not their own.
    r#"
    -- Indexes of coupons by member and by granting sale put pages into every sale that
    -- granted a coupon (and refunds scanned all coupons for the ones a sale used). The sale's purchase fact already dirties the member's leaf of
    -- facts_ledger_by_member, and the coupon_issued fact (txn = coupon id) lands next to
    -- it, so indexing that fact there lists a member's coupons for free.
    -- The WHERE clause must stay identical to the one in facts::LEDGER_WHERE.
    DROP INDEX coupons_by_member;
    DROP INDEX coupons_by_source_txn;
    DROP INDEX facts_ledger_by_member;
    CREATE INDEX facts_ledger_by_member ON facts (member, at)
        WHERE member IS NOT NULL AND (earn <> 0 OR spend <> 0 OR reverse <> 0 OR qual_spend <> 0 OR kind = 'purchase' OR kind = 'coupon_issued');
    "#,
    // 4: HQ documents received from the hub (automerge), with the sync state.
    r#"
    CREATE TABLE hq_docs (
        doc_id     TEXT PRIMARY KEY,
        bytes      BLOB NOT NULL,
        sync_state BLOB
    ) STRICT;
    "#,
    // 5: redemptions and who allowed them (the offline floor limit counts from here).
    r#"
    -- One row per fact that spent points by redemption. auth: 'hub' (authorized by the
    -- hub), 'offline' (under the floor limit, hub unreachable), 'local' (not enrolled).
    CREATE TABLE redemptions (
        seq    INTEGER PRIMARY KEY,   -- the spending fact (this node's current origin)
        member BLOB    NOT NULL,
        points INTEGER NOT NULL,
        at     INTEGER NOT NULL,
        auth   TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX redemptions_offline_by_member ON redemptions (member, seq) WHERE auth = 'offline';
    CREATE INDEX redemptions_offline_by_time ON redemptions (at) WHERE auth = 'offline';
    "#,
    // 6: members merged by the hub (one phone registered at two stores), and how far
    // this store has fetched each phone's facts from the hub.
    r#"
    -- From `member_merged` facts: balances and tiers are derived over a member and the
    -- members merged into it. The survivor is never merged itself (one level deep).
    CREATE TABLE member_aliases (
        loser    BLOB PRIMARY KEY,
        survivor BLOB NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX member_aliases_by_survivor ON member_aliases (survivor);
    -- The hub's position after the last fact fetched for a phone (its blind index).
    CREATE TABLE member_fetches (
        phone_idx BLOB PRIMARY KEY,
        upto      INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 7: members registered while the hub was unreachable.
    r#"
    -- Provisional until the hub acknowledges the registration fact (origin, seq): the
    -- hub may merge them into a member another store registered with the same phone,
    -- so they earn but do not redeem before that.
    CREATE TABLE provisional_members (
        member BLOB PRIMARY KEY,
        origin INTEGER NOT NULL,
        seq    INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 8: when each phone was last fetched (members of other stores leave after a while).
    r#"
    ALTER TABLE member_fetches ADD COLUMN fetched_at INTEGER NOT NULL DEFAULT 0;
    -- Phones fetched before this version count as fetched now: a whole keep window.
    UPDATE member_fetches SET fetched_at = CAST(unixepoch('now') AS INTEGER) * 1000;
    -- Facts fetched from the hub, by member: what leaves with a member of another store
    -- (no index on facts finds all of a member's facts).
    CREATE TABLE fetched_facts (
        member BLOB    NOT NULL,
        origin INTEGER NOT NULL,
        seq    INTEGER NOT NULL,
        PRIMARY KEY (member, origin, seq)
    ) STRICT, WITHOUT ROWID;
    -- Those fetched before this version: every member fact of another store's origin.
    INSERT INTO fetched_facts (member, origin, seq)
        SELECT member, origin, seq FROM facts
         WHERE member IS NOT NULL
           AND origin IN (SELECT id FROM origins
                           WHERE node <> (SELECT value FROM meta WHERE key = 'store_id'));
    "#,
    // 9: each member's profile as the per-field CRDT its facts build (patron_sync
    // Profile as JSON); the row's personal columns are derived from it. Filled from the
    // facts held by `members::rebuild_profiles` in the same upgrade; NULL: a row with no
    // such facts, read as its columns stamped at its last change.
    r#"
    ALTER TABLE members ADD COLUMN profile TEXT;
    "#,
    // 10: facts become a rowid table, and coupons are keyed by their code.
    //
    // A WITHOUT ROWID table keeps at most ~1,000 bytes of a row on its leaf (4 KiB
    // pages) and spills the rest to an overflow page of its own: a purchase of a
    // real basket (or one listing the coupons it granted) cost a whole extra page per
    // sale. A rowid table keeps rows up to ~4,000 bytes on the leaf, and appends by
    // starting a new page with the new row instead of redistributing three. The key
    // (origin, seq) becomes a unique index (receipts reference it).
    //
    // Every coupon lookup starts from a code (the POS sends it; facts and purchases
    // record it), and codes begin with a clock, so coupons append in code order: one
    // B-tree per issued coupon instead of a row keyed by id plus a unique index of
    // codes. `migrate` runs this with foreign keys off and checks them before commit.
    r#"
    CREATE TABLE facts_v10 (
        origin       INTEGER NOT NULL REFERENCES origins(id),
        seq          INTEGER NOT NULL,
        kind         TEXT    NOT NULL,
        at           INTEGER NOT NULL,
        member       BLOB,
        txn          BLOB    NOT NULL,
        earn         INTEGER NOT NULL DEFAULT 0,
        expires_at   INTEGER NOT NULL DEFAULT 0,
        spend        INTEGER NOT NULL DEFAULT 0,
        reverse      INTEGER NOT NULL DEFAULT 0,
        reverse_lot  BLOB,
        qual_spend   INTEGER NOT NULL DEFAULT 0,
        qual_at      INTEGER NOT NULL DEFAULT 0,
        body         TEXT    NOT NULL,
        available_at INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (origin, seq)
    ) STRICT;
    INSERT INTO facts_v10 (origin, seq, kind, at, member, txn, earn, expires_at, spend, reverse, reverse_lot, qual_spend, qual_at, body, available_at)
        SELECT origin, seq, kind, at, member, txn, earn, expires_at, spend, reverse, reverse_lot, qual_spend, qual_at, body, available_at
          FROM facts ORDER BY origin, seq;
    DROP TABLE facts;
    ALTER TABLE facts_v10 RENAME TO facts;
    -- The WHERE clause must stay identical to the one in facts::ledger_where.
    CREATE INDEX facts_ledger_by_member ON facts (member, at)
        WHERE member IS NOT NULL AND (earn <> 0 OR spend <> 0 OR reverse <> 0 OR qual_spend <> 0 OR kind = 'purchase' OR kind = 'coupon_issued');

    CREATE TABLE coupons_v10 (
        code       TEXT PRIMARY KEY,
        coupon_id  BLOB    NOT NULL,
        member     BLOB    NOT NULL,
        label      TEXT    NOT NULL,
        off        INTEGER NOT NULL,
        min_spend  INTEGER NOT NULL,
        issued_at  INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        source     TEXT    NOT NULL,   -- rule id, 'manual', 'upgrade:<tier>'
        source_txn BLOB,               -- the sale that granted it
        active     INTEGER NOT NULL,   -- 0 until claimed, for claim-first coupons
        used_txn   BLOB,               -- the sale that used it
        revoked    INTEGER NOT NULL DEFAULT 0
    ) STRICT, WITHOUT ROWID;
    INSERT INTO coupons_v10 (code, coupon_id, member, label, off, min_spend, issued_at, expires_at, source, source_txn, active, used_txn, revoked)
        SELECT code, coupon_id, member, label, off, min_spend, issued_at, expires_at, source, source_txn, active, used_txn, revoked
          FROM coupons;
    DROP TABLE coupons;
    ALTER TABLE coupons_v10 RENAME TO coupons;
    "#,
    r#"
    -- Each person's ledger as a snapshot (patron_domain::ledger), keyed by the id their
    -- merges survive in, written in the transaction of every fact that moves their
    -- points or spend (store::ledgers). The facts stay the reference: a missing or
    -- unreadable snapshot is derived from them again.
    CREATE TABLE member_ledgers (
        member   BLOB PRIMARY KEY,
        snapshot BLOB NOT NULL
    ) STRICT;
    "#,
    // 12: a member's coupons by their own index again.
    r#"
    -- Listing a member's coupons through the ledger index (migration 3) read every
    -- purchase of theirs: 16 ms for a member with 10,000 facts on every lookup. The
    -- index costs a page only to the sales and issues that create a coupon.
    CREATE INDEX coupons_by_member ON coupons (member);
    "#,
    // 13: a member's open coupon codes kept beside their ledger snapshot.
    r#"
    -- The index of migration 12 put a random page into every sale that granted a
    -- coupon (the 10-rule commit benchmark lost a third). The codes of a person's
    -- coupons are kept in their ledger row instead, which the sale writes anyway
    -- (store::ledgers); codes of coupons used, withdrawn or expired are dropped when
    -- the next coupon is added. An empty snapshot is derived from the facts when read.
    DROP INDEX coupons_by_member;
    ALTER TABLE member_ledgers ADD COLUMN coupons TEXT NOT NULL DEFAULT '[]';
    INSERT INTO member_ledgers (member, snapshot, coupons)
    SELECT root, x'', json_group_array(code)
      FROM (SELECT coalesce((SELECT survivor FROM member_aliases WHERE loser = c.member),
                            c.member) AS root, c.code AS code
              FROM coupons c WHERE c.used_txn IS NULL AND c.revoked = 0 ORDER BY c.code)
     WHERE true
     GROUP BY root
    ON CONFLICT (member) DO UPDATE SET coupons = excluded.coupons;
    "#,
    // 14: the cold part of each ledger snapshot in a row of its own.
    r#"
    -- A loyal member's snapshot (two years of daily lots and spend) is 8-9 KB: a row
    -- spanning three pages, all rewritten by each sale. Its older part, which a sale
    -- does not change, is kept here (patron_domain::ledger::Snapshot::encode_split) and
    -- rewritten only when it changes; `member_ledgers.snapshot` keeps the rest. A
    -- snapshot written whole before this migration reads as one with nothing cold.
    CREATE TABLE member_ledgers_cold (
        member BLOB PRIMARY KEY,
        cold   BLOB NOT NULL
    ) STRICT;
    "#,
    // 15: every lookup of a member, for the privacy audit.
    r#"
    -- Who read which member, when, how and why, and whether the answer was masked.
    -- No personal data: the member is its pseudonymous id, a lookup by phone keeps
    -- no phone, and a lookup that found nobody keeps a NULL member (probing shows).
    CREATE TABLE member_lookups (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        lane    INTEGER NOT NULL REFERENCES lanes (id),
        member  BLOB,
        via     TEXT    NOT NULL CHECK (via IN ('phone', 'id', 'register', 'update')),
        purpose TEXT    NOT NULL CHECK (purpose IN ('sale', 'service')),
        shown   TEXT    NOT NULL CHECK (shown IN ('masked', 'full'))
    ) STRICT;
    CREATE INDEX member_lookups_by_member ON member_lookups (member, at);
    CREATE INDEX member_lookups_by_lane ON member_lookups (lane, at);
    "#,
    // 16: what each lane did each store day, against the abuse limits.
    r#"
    -- Written in the transaction of each sale, redemption, refund, event and coupon, so
    -- a limit holds across restarts and concurrent lanes. `day` is the store-local
    -- Julian day number, never earlier than the lane's last (a clock set back does not
    -- reopen a day); `refused` counts operations a limit turned away, `overridden` those
    -- the store's manager did beyond one.
    CREATE TABLE lane_days (
        lane       INTEGER NOT NULL,
        day        INTEGER NOT NULL,
        earned     INTEGER NOT NULL DEFAULT 0,
        redeemed   INTEGER NOT NULL DEFAULT 0,
        refund_fen INTEGER NOT NULL DEFAULT 0,
        coupons    INTEGER NOT NULL DEFAULT 0,
        registrations INTEGER NOT NULL DEFAULT 0,
        refused    INTEGER NOT NULL DEFAULT 0,
        overridden INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (lane, day)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 17: anomalies, raised once per lane, store day and kind.
    r#"
    -- Member sales per lane and day, against which its lookups are judged.
    ALTER TABLE lane_days ADD COLUMN sales INTEGER NOT NULL DEFAULT 0;
    -- The anomalies raised (each also a lane_alert fact for HQ): one per lane, day and
    -- kind, so a scan that finds it again raises nothing.
    CREATE TABLE lane_alerts (
        lane INTEGER NOT NULL,
        day  INTEGER NOT NULL,
        kind TEXT    NOT NULL,
        PRIMARY KEY (lane, day, kind)
    ) STRICT, WITHOUT ROWID;
    "#,
    // 18: member codes taken as proof of presence, each once.
    r#"
    -- A code's signature identifies it; kept until the code expires.
    CREATE TABLE member_codes_used (
        id         BLOB    PRIMARY KEY,
        expires_at INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
    // 19: limited entitlements counted from claim facts, this store's and the others'.
    r#"
    -- One row per claim fact held here (patron_domain::claims): this store's, and other
    -- stores' that came with a member's facts, so a counter counts every claim this
    -- store knows of. `offline`: allowed by the store's offline policy.
    CREATE TABLE member_claims (
        origin      INTEGER NOT NULL,
        seq         INTEGER NOT NULL,
        member      BLOB    NOT NULL,
        entitlement TEXT    NOT NULL,
        period      TEXT    NOT NULL,
        units       INTEGER NOT NULL,
        offline     INTEGER NOT NULL,
        PRIMARY KEY (origin, seq)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX member_claims_by_counter ON member_claims (member, entitlement, period);
    -- Claims recorded before claims were facts stay counted here, under origin 0 (no
    -- origin has that id); the hub never saw them. Shares and benefit uses were one row
    -- per use (`<period>#<n>`), upgrade gifts and referrals named their tier or friend
    -- in the period.
    INSERT INTO member_claims (origin, seq, member, entitlement, period, units, offline)
    SELECT 0, row_number() OVER (ORDER BY member, kind, period), member,
           CASE WHEN kind = 'upgrade' THEN 'upgrade:' || period
                WHEN kind LIKE 'referral!_%' ESCAPE '!' THEN 'referral:' || substr(kind, 10) || ':' || period
                ELSE kind END,
           CASE WHEN kind = 'upgrade' OR kind LIKE 'referral!_%' ESCAPE '!' THEN 'once'
                WHEN instr(period, '#') > 0 THEN substr(period, 1, instr(period, '#') - 1)
                ELSE period END,
           1, 0
      FROM event_claims;
    DROP TABLE event_claims;
    -- Per-member uses of limited rules likewise (rule_usage keeps the store-wide rows
    -- budgets count), under negative sequences.
    INSERT INTO member_claims (origin, seq, member, entitlement, period, units, offline)
    SELECT 0, -row_number() OVER (ORDER BY rule_id, member), member, 'rule:' || rule_id,
           'once', uses, 0
      FROM rule_usage WHERE member <> x'';
    DELETE FROM rule_usage WHERE member <> x'';
    "#,
    // 20: coupons of the whole chain: who issued each, and where it may be used.
    r#"
    -- The issuing store (NULL: this store) and the stores the coupon may be used at
    -- (comma-separated; NULL: any store of the chain).
    ALTER TABLE coupons ADD COLUMN store TEXT;
    ALTER TABLE coupons ADD COLUMN stores TEXT;
    "#,
    // 21: manual points adjustments under the two-person rule.
    r#"
    -- Adjustments asked for at this store (patron_domain::adjustment): applied at once,
    -- or pending until a manager other than the maker approves or rejects them. `id`
    -- is the transaction id of the adjustment fact once applied.
    CREATE TABLE adjustments (
        id          BLOB    PRIMARY KEY,
        member      BLOB    NOT NULL,
        points      INTEGER NOT NULL,
        reason      TEXT    NOT NULL,
        reference   TEXT,
        maker_lane  INTEGER NOT NULL,
        maker_name  TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN ('pending', 'applied', 'rejected')),
        checker_lane INTEGER,
        checker_name TEXT,
        created_at  INTEGER NOT NULL,
        decided_at  INTEGER
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX adjustments_pending ON adjustments (created_at) WHERE status = 'pending';
    "#,
    // 22: the points catalogue's stock given at this store.
    r#"
    -- Units of each catalogue item this store gave (patron_domain::rules::CatalogueItem
    -- stock_per_store bounds them), counted in each sale's transaction.
    CREATE TABLE catalogue_given (
        sku   TEXT    PRIMARY KEY,
        units INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    "#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: usize = 22;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_length_matches_the_declared_version() {
        assert_eq!(MIGRATIONS.len(), SCHEMA_VERSION);
    }
}
