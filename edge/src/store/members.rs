//! Member profiles (a projection of the member facts) and once-per-period claims.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use patron_domain::{Detail, Kind};

use crate::domain::profile::{Derived, derive, fact_ops};

/// A member row as stored: personal fields are ciphertexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// Member id (UUIDv7 bytes).
    pub member_id: [u8; 16],
    /// Blind index of the phone.
    pub phone_idx: [u8; 32],
    /// The member's data key, wrapped by the store key.
    pub wrapped_key: Vec<u8>,
    /// Encrypted normalized phone.
    pub phone_enc: Vec<u8>,
    /// Encrypted name.
    pub name_enc: Option<Vec<u8>>,
    /// Encrypted birthday.
    pub birthday_enc: Option<Vec<u8>>,
    /// The member's own referral code.
    pub referral_code: String,
    /// The code of who referred them.
    pub referrer_code: Option<String>,
    /// Sign-up channel.
    pub channel: Option<String>,
    /// Terms accepted.
    pub consent_terms: bool,
    /// Marketing consent.
    pub consent_marketing: bool,
    /// Privacy policy version accepted.
    pub policy_version: Option<String>,
    /// Preference tags.
    pub tags: Vec<String>,
    /// Store of registration.
    pub home_store: String,
    /// Registration time (ms).
    pub created_at: i64,
    /// Last profile change (ms).
    pub updated_at: i64,
}

/// The column list, as a macro so statements are built at compile time: a `format!`
/// per call cost an allocation on the writer's hot path.
macro_rules! member_columns {
    () => {
        "member_id, phone_idx, wrapped_key, phone_enc, name_enc, birthday_enc, referral_code,
    referrer_code, channel, consent_terms, consent_marketing, policy_version, tags, home_store, created_at, updated_at"
    };
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(MemberRow, String)> {
    Ok((
        MemberRow {
            member_id: r.get(0)?,
            phone_idx: r.get(1)?,
            wrapped_key: r.get(2)?,
            phone_enc: r.get(3)?,
            name_enc: r.get(4)?,
            birthday_enc: r.get(5)?,
            referral_code: r.get(6)?,
            referrer_code: r.get(7)?,
            channel: r.get(8)?,
            consent_terms: r.get(9)?,
            consent_marketing: r.get(10)?,
            policy_version: r.get(11)?,
            tags: Vec::new(),
            home_store: r.get(13)?,
            created_at: r.get(14)?,
            updated_at: r.get(15)?,
        },
        r.get(12)?,
    ))
}

fn with_tags((mut row, tags): (MemberRow, String)) -> Result<MemberRow, StoreError> {
    row.tags = serde_json::from_str(&tags)
        .map_err(|e| StoreError::Corrupt(format!("members.tags: {e}")))?;
    Ok(row)
}

/// Inserts a new member.
pub fn insert(conn: &Connection, m: &MemberRow) -> Result<(), StoreError> {
    let tags = serde_json::to_string(&m.tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(concat!(
        "INSERT INTO members (",
        member_columns!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
    ))?
    .execute(params![
        &m.member_id[..],
        &m.phone_idx[..],
        m.wrapped_key,
        m.phone_enc,
        m.name_enc,
        m.birthday_enc,
        m.referral_code,
        m.referrer_code,
        m.channel,
        m.consent_terms,
        m.consent_marketing,
        m.policy_version,
        tags,
        m.home_store,
        m.created_at,
        m.updated_at
    ])?;
    Ok(())
}

/// The member with this id.
pub fn get(conn: &Connection, id: &[u8; 16]) -> Result<Option<MemberRow>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        member_columns!(),
        " FROM members WHERE member_id = ?1"
    ))?
    .query_row(params![&id[..]], from_row)
    .optional()?
    .map(with_tags)
    .transpose()
}

/// A member's keys as a re-key reads them.
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// The member.
    pub id: [u8; 16],
    /// The phone's index.
    pub phone_idx: [u8; 32],
    /// The wrapped data key.
    pub wrapped: Vec<u8>,
    /// The sealed phone.
    pub phone_enc: Vec<u8>,
    /// The store that registered them.
    pub home_store: String,
}

/// Up to `limit` members after `after` in id order, with their keys.
pub fn keys_after(
    conn: &Connection,
    after: &[u8; 16],
    limit: usize,
) -> Result<Vec<KeyRow>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT member_id, phone_idx, wrapped_key, phone_enc, home_store FROM members
          WHERE member_id > ?1 ORDER BY member_id LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![&after[..], limit as i64], |r| {
        Ok((
            r.get::<_, Vec<u8>>(0)?,
            r.get::<_, Vec<u8>>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, idx, wrapped, phone_enc, home_store) = row?;
        out.push(KeyRow {
            id: id
                .try_into()
                .map_err(|_| StoreError::Corrupt("members.member_id".into()))?,
            phone_idx: idx
                .try_into()
                .map_err(|_| StoreError::Corrupt("members.phone_idx".into()))?,
            wrapped,
            phone_enc,
            home_store,
        });
    }
    Ok(out)
}

/// A phone's fetch position moves to its index under new keys (a re-key).
pub fn rename_fetch_index(
    conn: &Connection,
    from: &[u8; 32],
    to: &[u8; 32],
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE OR REPLACE member_fetches SET phone_idx = ?2 WHERE phone_idx = ?1",
    )?
    .execute(params![&from[..], &to[..]])?;
    Ok(())
}

/// Puts a member's phone index and wrapped data key under new keys (the chain's);
/// false if the member is not held.
pub fn set_keys(
    conn: &Connection,
    id: &[u8; 16],
    phone_idx: &[u8; 32],
    wrapped: &[u8],
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE members SET phone_idx = ?2, wrapped_key = ?3 WHERE member_id = ?1")?
        .execute(params![&id[..], &phone_idx[..], wrapped])?
        > 0)
}

/// Puts the member under a new phone: its index here and its sealed copy.
pub fn set_phone(
    conn: &Connection,
    id: &[u8; 16],
    phone_idx: &[u8; 32],
    phone_enc: &[u8],
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE members SET phone_idx = ?2, phone_enc = ?3 WHERE member_id = ?1")?
        .execute(params![&id[..], &phone_idx[..], phone_enc])?
        > 0)
}

/// Whether a member with this id exists.
pub fn exists(conn: &Connection, id: &[u8; 16]) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM members WHERE member_id = ?1")?
        .query_row(params![&id[..]], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Whether this store holds `id`: its row, or the row of a member it is merged with.
pub fn held(conn: &Connection, id: &[u8; 16]) -> Result<bool, StoreError> {
    if exists(conn, id)? {
        return Ok(true);
    }
    for other in alias_set(conn, id)? {
        if exists(conn, &other)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The first phone index a member held here is under, after `after` in index order
/// (`None`: from the first).
pub fn phone_index_after(
    conn: &Connection,
    after: Option<&[u8; 32]>,
) -> Result<Option<[u8; 32]>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT phone_idx FROM members WHERE ?1 IS NULL OR phone_idx > ?1
              ORDER BY phone_idx LIMIT 1",
        )?
        .query_row(params![after.map(|a| &a[..])], |r| r.get(0))
        .optional()?)
}

/// Forgets how far each phone was fetched: the next fetch of each takes it whole.
pub fn reset_fetch_positions(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn
        .prepare_cached("UPDATE member_fetches SET upto = 0")?
        .execute([])?)
}

/// The member with a phone under one of these blind indexes, trying them in order
/// (the earliest registration under an index first).
pub fn first_by_phone(
    conn: &Connection,
    indexes: &[[u8; 32]],
) -> Result<Option<[u8; 16]>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT member_id FROM members WHERE phone_idx = ?1 ORDER BY created_at, member_id LIMIT 1",
    )?;
    for idx in indexes {
        if let Some(id) = stmt.query_row(params![&idx[..]], |r| r.get(0)).optional()? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The member `member` is part of (its survivor if the hub merged it), then every
/// member merged into that one.
pub fn alias_set(conn: &Connection, member: &[u8; 16]) -> Result<Vec<[u8; 16]>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "WITH r(id) AS (SELECT coalesce((SELECT survivor FROM member_aliases WHERE loser = ?1), ?1))
         SELECT id FROM r UNION ALL SELECT loser FROM member_aliases, r WHERE survivor = r.id",
    )?;
    let rows = stmt.query_map(params![&member[..]], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<[u8; 16]>>>()?)
}

/// The member's profile CRDT as stored (JSON), `None` for a row from before it was kept.
pub fn profile(conn: &Connection, id: &[u8; 16]) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT profile FROM members WHERE member_id = ?1")?
        .query_row(params![&id[..]], |r| r.get(0))
        .optional()?
        .flatten())
}

/// Records that `loser` was merged into `survivor` (a `member_merged` fact).
pub fn merge(conn: &Connection, loser: &[u8; 16], survivor: &[u8; 16]) -> Result<(), StoreError> {
    let new = conn
        .prepare_cached("INSERT OR IGNORE INTO member_aliases (loser, survivor) VALUES (?1, ?2)")?
        .execute(params![&loser[..], &survivor[..]])?;
    if new > 0 {
        // The loser's ledger and coupons now count under the survivor's.
        super::ledgers::absorb(conn, loser, survivor)?;
    }
    Ok(())
}

/// The hub position this store has fetched a phone's facts up to (0: never).
pub fn fetched_upto(conn: &Connection, phone_idx: &[u8; 32]) -> Result<u64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT upto FROM member_fetches WHERE phone_idx = ?1")?
        .query_row(params![&phone_idx[..]], |r| r.get::<_, i64>(0))
        .optional()?
        .map_or(0, |u| u.max(0) as u64))
}

/// Records the hub position a phone's facts were fetched up to.
pub fn set_fetched_upto(
    conn: &Connection,
    phone_idx: &[u8; 32],
    upto: u64,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO member_fetches (phone_idx, upto, fetched_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (phone_idx) DO UPDATE SET upto = max(upto, excluded.upto),
                                               fetched_at = max(fetched_at, excluded.fetched_at)",
    )?
    .execute(params![&phone_idx[..], upto as i64, now])?;
    Ok(())
}

/// Records that `member`, whose registration is fact (`origin`, `seq`), was registered
/// while the hub was unreachable.
pub fn mark_provisional(
    conn: &Connection,
    member: &[u8; 16],
    origin: i64,
    seq: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO provisional_members (member, origin, seq) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![&member[..], origin, seq])?;
    Ok(())
}

/// The registration fact's sequence of a member registered under origin `origin` while
/// the hub was unreachable (provisional until the hub acknowledges it).
pub fn provisional_seq(
    conn: &Connection,
    member: &[u8; 16],
    origin: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq FROM provisional_members WHERE member = ?1 AND origin = ?2")?
        .query_row(params![&member[..], origin], |r| r.get(0))
        .optional()?)
}

/// Notes that fact (`origin`, `seq`) of `member` came from the hub.
pub fn note_fetched_fact(
    conn: &Connection,
    member: &[u8; 16],
    origin: i64,
    seq: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO fetched_facts (member, origin, seq) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![&member[..], origin, seq])?;
    Ok(())
}

/// Members registered at another store (not `home_store`), in no merge, last fetched
/// before `cutoff`: the candidates to leave this store's set.
pub fn fetched_before(
    conn: &Connection,
    home_store: &str,
    cutoff: i64,
) -> Result<Vec<MemberRow>, StoreError> {
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        member_columns!(),
        " FROM members m
          WHERE home_store <> ?1
            AND coalesce((SELECT fetched_at FROM member_fetches f WHERE f.phone_idx = m.phone_idx), 0) < ?2
            AND NOT EXISTS (SELECT 1 FROM member_aliases a
                             WHERE a.loser = m.member_id OR a.survivor = m.member_id)"
    ))?;
    let rows = stmt.query_map(params![home_store, cutoff], from_row)?;
    rows.map(|r| with_tags(r?)).collect()
}

/// Removes a member of another store from this store: the profile row, the facts
/// fetched for them from other stores (never this store's own: they are its ledger),
/// and the fetch position, so a later lookup fetches them whole again.
pub fn remove_fetched(
    conn: &Connection,
    row: &MemberRow,
    own_node: &str,
) -> Result<usize, StoreError> {
    let facts = conn
        .prepare_cached(
            "DELETE FROM facts WHERE (origin, seq) IN
               (SELECT f.origin, f.seq FROM fetched_facts f JOIN origins o ON o.id = f.origin
                 WHERE f.member = ?1 AND o.node <> ?2)",
        )?
        .execute(params![&row.member_id[..], own_node])?;
    conn.prepare_cached("DELETE FROM fetched_facts WHERE member = ?1")?
        .execute(params![&row.member_id[..]])?;
    conn.prepare_cached("DELETE FROM members WHERE member_id = ?1")?
        .execute(params![&row.member_id[..]])?;
    // Only members in no merge leave (`fetched_before`): the snapshot is theirs alone.
    super::ledgers::forget(conn, &row.member_id)?;
    conn.prepare_cached("DELETE FROM member_fetches WHERE phone_idx = ?1")?
        .execute(params![&row.phone_idx[..]])?;
    Ok(facts)
}

/// The member whose own referral code this is.
pub fn by_referral_code(conn: &Connection, code: &str) -> Result<Option<MemberRow>, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        member_columns!(),
        " FROM members WHERE referral_code = ?1"
    ))?
    .query_row(params![code], from_row)
    .optional()?
    .map(with_tags)
    .transpose()
}

/// Whether a referral code is taken.
pub fn referral_code_taken(conn: &Connection, code: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM members WHERE referral_code = ?1")?
        .query_row(params![code], |_| Ok(()))
        .optional()?
        .is_some())
}

/// Writes the profile CRDT `profile` (JSON) and the fields `derived` from it into the
/// row `m` (which takes them too).
pub fn update_profile(
    conn: &Connection,
    m: &mut MemberRow,
    derived: &Derived,
    profile: &str,
) -> Result<(), StoreError> {
    m.name_enc = derived.name_enc.clone();
    m.birthday_enc = derived.birthday_enc.clone();
    m.consent_marketing = derived.marketing;
    m.tags = derived.tags.clone();
    m.updated_at = m.updated_at.max(derived.last_wall);
    let tags = serde_json::to_string(&m.tags).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "UPDATE members SET name_enc = ?2, birthday_enc = ?3, consent_marketing = ?4, tags = ?5,
                            updated_at = ?6, profile = ?7
         WHERE member_id = ?1",
    )?
    .execute(params![
        &m.member_id[..],
        m.name_enc,
        m.birthday_enc,
        m.consent_marketing,
        tags,
        m.updated_at,
        profile
    ])?;
    Ok(())
}

/// Builds the profile CRDT of every member row from the registration and update facts
/// the store holds (the upgrade to schema 9): rows kept before then show what the old
/// whole-row rule kept, which dropped an earlier edit that arrived after a later one.
/// Streams the facts by member, so memory holds one profile at a time.
pub fn rebuild_profiles(conn: &Connection) -> Result<usize, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT f.member, o.node, f.at, f.kind, f.body FROM facts f JOIN origins o ON o.id = f.origin
          WHERE f.member IS NOT NULL AND f.kind IN ('member_registered', 'member_updated')
          ORDER BY f.member",
    )?;
    let mut rows = stmt.query([])?;
    let mut current: Option<([u8; 16], patron_sync::Profile)> = None;
    let mut rebuilt = 0;
    while let Some(r) = rows.next()? {
        let Ok(id) = r.get::<_, [u8; 16]>(0) else {
            continue;
        };
        let (node, at, kind, body): (String, i64, String, String) =
            (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        // The entry's details, as the sync projection reads them.
        let Some(Ok(detail)) = Kind::parse(&kind).map(|k| Detail::parse_held(k, &body)) else {
            continue;
        };
        if current.as_ref().is_none_or(|(c, _)| *c != id) {
            rebuilt += usize::from(write_rebuilt(conn, current.take())?);
            current = Some((id, patron_sync::Profile::default()));
        }
        if let Some((_, p)) = current.as_mut() {
            for op in fact_ops(&detail, at, &node) {
                p.apply(&op);
            }
        }
    }
    rebuilt += usize::from(write_rebuilt(conn, current.take())?);
    Ok(rebuilt)
}

/// Writes a rebuilt profile into its member's row, if the store holds the row.
fn write_rebuilt(
    conn: &Connection,
    done: Option<([u8; 16], patron_sync::Profile)>,
) -> Result<bool, StoreError> {
    let Some((id, p)) = done else {
        return Ok(false);
    };
    let Some(mut row) = get(conn, &id)? else {
        return Ok(false);
    };
    let json = serde_json::to_string(&p).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    update_profile(conn, &mut row, &derive(&p), &json)?;
    Ok(true)
}

/// Number of members held here.
pub fn count(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("SELECT count(*) FROM members", [], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A merged member stands for its survivor, the survivor for itself and everyone
    /// merged into it, any other member for itself alone; a merge recorded twice counts
    /// once, and the fetch position only moves forward.
    #[test]
    fn alias_sets_follow_merges_one_level_deep() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let (s, l1, l2, other) = ([1u8; 16], [2u8; 16], [3u8; 16], [4u8; 16]);
        let set = |m: &[u8; 16]| alias_set(&conn, m).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set(&s), vec![s]);
        for l in [&l1, &l2, &l1] {
            merge(&conn, l, &s).unwrap_or_else(|e| panic!("{e}"));
        }
        let mut all = set(&s);
        assert_eq!(all[0], s);
        all.sort();
        assert_eq!(all, vec![s, l1, l2]);
        assert_eq!(set(&l2)[0], s, "a loser stands for its survivor");
        assert_eq!(set(&l2).len(), 3);
        assert_eq!(set(&other), vec![other]);
        let idx = [9u8; 32];
        assert_eq!(fetched_upto(&conn, &idx).ok(), Some(0));
        for upto in [40, 12] {
            set_fetched_upto(&conn, &idx, upto, 1).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(fetched_upto(&conn, &idx).ok(), Some(40));
    }

    /// A store upgraded to schema 8 keeps the members it fetched before: their phones
    /// count as fetched at the upgrade, and their fetched facts are recorded, so the
    /// sweep neither drops them at once nor leaves their facts behind.
    #[test]
    fn the_upgrade_to_schema_8_keeps_fetched_members() {
        use super::super::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..7] {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        conn.execute_batch(
            "PRAGMA user_version = 7;
             INSERT INTO meta (key, value) VALUES ('store_id', 'S002');
             INSERT INTO origins (id, node, incarnation) VALUES (1, 'S002', 'a'), (2, 'S001', 'b');
             INSERT INTO facts (origin, seq, kind, at, member, txn, body)
                 VALUES (1, 1, 'purchase', 1, x'01', x'aa', '{}'),
                        (2, 5, 'member_registered', 1, x'01', x'bb', '{}');
             INSERT INTO member_fetches (phone_idx, upto) VALUES (x'09', 12);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let recorded: Vec<(i64, i64)> = conn
            .prepare("SELECT origin, seq FROM fetched_facts")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recorded, vec![(2, 5)], "only the other store's fact");
        let at: i64 = conn
            .query_row("SELECT fetched_at FROM member_fetches", [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(at > 1_700_000_000_000, "fetched_at {at}");
    }

    /// The upgrade to schema 9 builds each member's profile CRDT from the facts held,
    /// which brings back a field the old whole-row rule dropped (an update that
    /// arrived after a later one).
    #[test]
    fn the_upgrade_to_schema_9_rebuilds_profiles_from_the_facts() {
        use super::super::migrations::MIGRATIONS;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("m.sqlite");
        let mut conn = super::super::connect(&path, false).unwrap_or_else(|e| panic!("{e}"));
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{e}"));
        }
        // "TmV3" = "New", "QmRheQ==" = "Bday" (the facts carry base64 ciphertext).
        let hlc = |wall: i64, node: &str| {
            format!(r#""hlc": {{"wall": {wall}, "counter": 0, "node": "{node}"}}"#)
        };
        conn.execute_batch(&format!(
            "PRAGMA user_version = 8;
             INSERT INTO meta (key, value) VALUES ('store_id', 'S002');
             INSERT INTO origins (id, node, incarnation) VALUES (1, 'S002', 'a'), (2, 'S001', 'b');
             INSERT INTO facts (origin, seq, kind, at, member, txn, body) VALUES
               (2, 1, 'member_registered', 1, x'01010101010101010101010101010101', x'b1', '{{\"name\": \"T2xk\", \"consents\": {{\"marketing\": false}}, {}}}'),
               (1, 1, 'member_updated', 3, x'01010101010101010101010101010101', x'a1', '{{\"name\": \"TmV3\", {}}}'),
               (2, 2, 'member_updated', 2, x'01010101010101010101010101010101', x'b2', '{{\"birthday\": \"QmRheQ==\", \"tags_add\": [\"tea\"], \"tags_remove\": [], {}}}');
             INSERT INTO members (member_id, phone_idx, wrapped_key, phone_enc, name_enc, birthday_enc,
                                  referral_code, consent_terms, consent_marketing, tags, home_store,
                                  created_at, updated_at)
               VALUES (x'01010101010101010101010101010101', zeroblob(32), x'', x'', CAST('New' AS BLOB), NULL, 'R1', 1, 0, '[]', 'S001', 1, 3);",
            hlc(1, "S001"),
            hlc(3, "S002"),
            hlc(2, "S001"),
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        super::super::migrate(&mut conn, &path).unwrap_or_else(|e| panic!("{e}"));
        let row = get(&conn, &[1; 16])
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("the member row"));
        assert_eq!(row.name_enc.as_deref(), Some(&b"New"[..]), "the later name");
        assert_eq!(
            row.birthday_enc.as_deref(),
            Some(&b"Bday"[..]),
            "the dropped update is back"
        );
        assert_eq!(row.tags, vec!["tea".to_string()]);
        assert!(
            profile(&conn, &[1; 16]).ok().flatten().is_some(),
            "the CRDT is kept"
        );
    }
}
