//! What the sync worker needs from the store: this node's facts as sync facts, and
//! the durable record of what the hub acknowledged.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use patron_domain::fact::CouponRecord;
use patron_domain::{Detail, Entry, Header, Kind};
use patron_protocol::Origin;
use patron_sync::pull::MemberKeys;
use patron_sync::session::Fact;
use uuid::Uuid;

use super::{Edge, EdgeError};
use crate::store::{self, StoreError, facts, incarnation};

/// The node name of facts the hub writes itself (merges); no store may take it.
const HUB_NODE: &str = "hub";

/// `meta` key: highest own sequence the hub acknowledged (`<incarnation>:<seq>`).
pub(super) const ACKED_KEY: &str = "hub_acked";

/// The wire form of one of this node's facts: the typed entry of its columns, checked
/// as the hub will check it.
pub fn to_wire(origin: &Origin, f: facts::SyncFact) -> Result<Fact, EdgeError> {
    let corrupt = |e: String| EdgeError::Store(StoreError::Corrupt(format!("fact {}: {e}", f.seq)));
    let kind = Kind::parse(&f.kind).ok_or_else(|| corrupt(format!("unknown kind {}", f.kind)))?;
    let header = Header {
        at: f.at,
        member: f.member.map(Uuid::from_bytes),
        txn: Uuid::from_bytes(f.txn),
        earn: f.earn,
        expires_at: f.expires_at,
        available_at: f.available_at,
        spend: f.spend,
        reverse: f.reverse,
        reverse_lot: f.reverse_lot.map(Uuid::from_bytes),
        qual_spend: f.qual_spend,
        qual_at: f.qual_at,
    };
    let body = Entry::from_parts(header, kind, f.body)
        .and_then(|e| e.to_json())
        .map_err(|e| corrupt(e.to_string()))?;
    Ok(Fact {
        origin: origin.clone(),
        seq: f.seq.max(0) as u64,
        body,
    })
}

/// A coupon row from its record in a `coupon_issued` fact or a purchase's
/// `coupons_granted` list.
fn coupon_of(
    c: &CouponRecord,
    coupon_id: [u8; 16],
    member: [u8; 16],
    issued_at: i64,
    source_txn: Option<[u8; 16]>,
    store: Option<&str>,
) -> crate::store::coupons::CouponRow {
    crate::store::coupons::CouponRow {
        coupon_id,
        code: c.code.clone(),
        member,
        label: c.label.clone(),
        off: c.off,
        min_spend: c.min_spend,
        issued_at,
        expires_at: c.expires_at,
        source: c.source.clone(),
        source_txn,
        active: c.active,
        used_txn: None,
        revoked: false,
        store: store.map(str::to_string),
        stores: c.stores.clone(),
    }
}

/// Inserts a coupon a refetched fact records. Its code may already be held (the same
/// fact projected before, or — barring a clock set back across the restore and five
/// equal random characters — another coupon): the row held stays.
fn rebuild_coupon(
    conn: &rusqlite::Connection,
    row: &crate::store::coupons::CouponRow,
) -> Result<(), StoreError> {
    use crate::store::coupons;
    if !coupons::insert(conn, row)?
        && coupons::by_code(conn, &row.code)?.is_some_and(|held| held.coupon_id != row.coupon_id)
    {
        tracing::warn!(code = %row.code, "a refetched coupon's code is held by another coupon");
    }
    Ok(())
}

impl Edge {
    /// This database's origin as sync names it.
    pub fn sync_origin(&self) -> Origin {
        Origin {
            node: self.store.origin.node.clone(),
            incarnation: self.store.origin.incarnation,
        }
    }

    /// The highest sequence this node has written.
    pub async fn last_own_seq(&self) -> Result<i64, EdgeError> {
        let origin = self.store.origin.id;
        self.store
            .readers
            .read(move |c| Ok::<_, EdgeError>(facts::last_seq(c, origin)?))
            .await
    }

    /// Up to `max` of this node's facts after `after`, in wire form.
    pub async fn outbox(&self, after: i64, max: usize) -> Result<Vec<Fact>, EdgeError> {
        let origin_id = self.store.origin.id;
        let origin = self.sync_origin();
        self.store
            .readers
            .read(move |c| {
                facts::for_sync(c, origin_id, after, max)
                    .map_err(StoreError::from)?
                    .into_iter()
                    .map(|f| to_wire(&origin, f))
                    .collect::<Result<Vec<_>, EdgeError>>()
            })
            .await
    }

    /// When fact `seq` of this node was written (the watchdog's age of the oldest
    /// unacknowledged fact).
    pub async fn own_fact_at(&self, seq: i64) -> Result<Option<i64>, EdgeError> {
        let origin = self.store.origin.id;
        self.store
            .readers
            .read(move |c| Ok::<_, EdgeError>(facts::at_of(c, origin, seq)?))
            .await
    }

    /// The highest own sequence the hub acknowledged, for this incarnation (0 if none).
    pub async fn hub_acked(&self) -> Result<i64, EdgeError> {
        let inc = self.store.origin.incarnation.to_string();
        self.store
            .readers
            .read(move |c| {
                let v = store::meta_get(c, ACKED_KEY)?;
                Ok::<_, EdgeError>(
                    v.and_then(|v| {
                        let (i, s) = v.split_once(':')?;
                        (i == inc).then(|| s.parse().ok()).flatten()
                    })
                    .unwrap_or(0),
                )
            })
            .await
    }

    /// Records durably that the hub holds this node's facts up to `seq`.
    pub async fn set_hub_acked(&self, seq: i64) -> Result<(), EdgeError> {
        let value = format!("{}:{seq}", self.store.origin.incarnation);
        self.store
            .writer
            .write(move |ctx| Ok::<_, EdgeError>(store::meta_set(ctx.conn, ACKED_KEY, &value)?))
            .await
    }
}

/// A coupon id or sale id as a coupon record writes it (hex, or a hyphenated UUID).
fn id_bytes(s: &str) -> Result<[u8; 16], EdgeError> {
    Uuid::parse_str(s).map(|u| *u.as_bytes()).map_err(|_| {
        EdgeError::Store(StoreError::Corrupt(format!(
            "bad id in a refetched fact: {s}"
        )))
    })
}

/// A synced fact as this store writes it.
fn new_fact(e: &Entry) -> facts::NewFact {
    facts::NewFact {
        kind: e.kind(),
        at: e.at,
        member: e.member.map(|m| *m.as_bytes()),
        txn: *e.txn.as_bytes(),
        earn: e.earn,
        expires_at: e.expires_at,
        available_at: e.available_at,
        spend: e.spend,
        reverse: e.reverse,
        reverse_lot: e.reverse_lot.map(|l| *l.as_bytes()),
        qual_spend: e.qual_spend,
        qual_at: e.qual_at,
        body: e.body().to_string(),
    }
}

/// A phone index and a wrapped member data key.
type Keys = ([u8; 32], Vec<u8>);

/// Puts the members held here under the keys the hub translated for this store (after
/// the facts of the same page, whose registrations and re-keys carry the keys of the
/// store that wrote them). Keys that do not open here, for members not held, or that
/// do not parse are skipped. Returns how many rows changed.
fn take_keys(
    conn: &rusqlite::Connection,
    vault: &crate::crypto::Vault,
    keys: &[MemberKeys],
) -> Result<usize, EdgeError> {
    let mut n = 0;
    for k in keys {
        let (Ok(m), Ok(idx), Ok(wrapped)) = (
            Uuid::parse_str(&k.member),
            B64.decode(&k.phone_idx),
            B64.decode(&k.wrapped_key),
        ) else {
            tracing::warn!(member = %k.member, "the hub sent member keys that do not parse");
            continue;
        };
        let (Ok(idx), m) = (<[u8; 32]>::try_from(idx), *m.as_bytes()) else {
            continue;
        };
        let Some(row) = store::members::get(conn, &m)? else {
            continue;
        };
        let Ok(key) = vault.member_key(&m, &wrapped) else {
            tracing::warn!(member = %k.member, "member keys from the hub do not open here");
            continue;
        };
        // Translated under a generation this store is rotating away from (the hub had
        // not heard it holds the new one): put under the current keys at once, so no row
        // needs the old ones once the rotation's pass is done.
        let (idx, wrapped) = match vault.rewrap_for_chain(&m, &wrapped) {
            Ok(Some(current)) => match vault.open_field(&key, &m, "phone", &row.phone_enc) {
                Ok(phone) => (vault.phone_index(&phone), current),
                Err(_) => (idx, wrapped),
            },
            _ => (idx, wrapped),
        };
        if row.phone_idx != idx || row.wrapped_key != wrapped {
            store::members::set_keys(conn, &m, &idx, &wrapped)?;
            n += 1;
        }
    }
    Ok(n)
}

/// The latest re-key of `m` this store holds among the facts it fetched, if any.
fn held_rekey(conn: &rusqlite::Connection, m: &[u8; 16]) -> Result<Option<Keys>, StoreError> {
    use rusqlite::OptionalExtension;
    let body: Option<String> = conn
        .prepare_cached(
            "SELECT f.body FROM fetched_facts x JOIN facts f ON f.origin = x.origin AND f.seq = x.seq
              WHERE x.member = ?1 AND f.kind = 'member_rekeyed'
              ORDER BY f.at DESC, f.origin DESC, f.seq DESC LIMIT 1",
        )?
        .query_row([&m[..]], |r| r.get(0))
        .optional()?;
    // Facts keep the entry's own body (see `new_fact`).
    Ok(
        body.and_then(|b| match Detail::parse_held(Kind::MemberRekeyed, &b) {
            Ok(Detail::MemberRekeyed(r)) => Some((r.phone_idx.0, r.wrapped_key.0)),
            _ => None,
        }),
    )
}

/// Rebuilds what the POS looks up and what guards refunds, coupons and stock (members,
/// receipts, refunds, coupons and their use, catalogue units given) from a fact of this store's that came back
/// from the hub. Balances, tiers and points need nothing: they are derived from the
/// facts themselves, and claims of limited entitlements are counted from their facts.
/// Not rebuilt: the store-wide budgets of rules (a budget's uses from the lost span
/// can be given again).
fn project(
    conn: &rusqlite::Connection,
    vault: &crate::crypto::Vault,
    origin_id: i64,
    origin_node: &str,
    seq: i64,
    e: &Entry,
) -> Result<(), EdgeError> {
    use crate::store::{coupons, members, receipts};
    let member = e.member.map(|m| *m.as_bytes());
    match (&e.detail, member) {
        (Detail::MemberRegistered(r), Some(m)) => {
            let b64 = |s: &Option<String>| s.as_deref().and_then(|t| B64.decode(t).ok());
            let consents = r.consents.clone().unwrap_or_default();
            let row = members::MemberRow {
                member_id: m,
                phone_idx: r.phone_idx.0,
                wrapped_key: r.wrapped_key.clone().map(|k| k.0).unwrap_or_default(),
                phone_enc: b64(&r.phone).unwrap_or_default(),
                name_enc: b64(&r.name),
                birthday_enc: b64(&r.birthday),
                referral_code: r.referral_code.clone().unwrap_or_default(),
                referrer_code: r.referrer_code.clone(),
                channel: r.channel.clone(),
                // Registrations from before consents were recorded took the terms.
                consent_terms: consents.terms.unwrap_or(true),
                consent_marketing: consents.marketing.unwrap_or(false),
                policy_version: consents.policy_version,
                tags: Vec::new(),
                home_store: r.home_store.clone().unwrap_or_default(),
                created_at: e.at,
                updated_at: e.at,
            };
            if members::get(conn, &m)?.is_none()
                && let Err(err) = members::insert(conn, &row)
            {
                // A referral code taken here already (codes are unique per store: handed
                // out again after a restore, or another store's member): the member keeps
                // their row, under a code of this store's that no one will type.
                tracing::warn!(error = %err, "a member's referral code is taken here");
                let row = members::MemberRow {
                    referral_code: format!("~{}", hex::encode(m)),
                    ..row
                };
                if let Err(err) = members::insert(conn, &row) {
                    tracing::error!(error = %err, "a synced member could not be rebuilt");
                }
            }
            // A re-key of this member held already (it came before the registration was
            // rebuilt here) puts the row under its keys, if they open here: another
            // store's keys do not, and the hub translates those for this store.
            if let Some((idx, wrapped)) = held_rekey(conn, &m)?
                && vault.member_key(&m, &wrapped).is_ok()
            {
                members::set_keys(conn, &m, &idx, &wrapped)?;
            }
            // The row's profile CRDT starts from the registration; projected again (a
            // row held already), it changes nothing older than what the row holds.
            super::profiles::apply(
                conn,
                &m,
                &super::profiles::fact_ops(&e.detail, e.at, origin_node),
            )?;
        }
        // Registered before its store enrolled, or re-wrapped by a rotation
        // (service::rekey): taken if the keys open here (this store's own re-key, or
        // keys every store held); another store's are left to the hub, which
        // translates them for this store.
        (Detail::MemberRekeyed(r), Some(m)) if vault.member_key(&m, &r.wrapped_key.0).is_ok() => {
            members::set_keys(conn, &m, &r.phone_idx.0, &r.wrapped_key.0)?;
        }
        // A phone number change: the sealed number opens with the member's data key
        // wherever the member is held; the index is this store's own when the keys
        // open here, else the hub sends it translated with the page.
        (Detail::PhoneChanged(r), Some(m)) => {
            if let Some(sealed) = r.phone.as_deref().and_then(|p| B64.decode(p).ok())
                && let Some(row) = members::get(conn, &m)?
            {
                let idx = if vault.member_key(&m, &r.wrapped_key.0).is_ok() {
                    r.phone_idx.0
                } else {
                    row.phone_idx
                };
                members::set_phone(conn, &m, &idx, &sealed)?;
            }
        }
        (Detail::MemberUpdated(_), Some(m)) => {
            // Per-field last-writer-wins: fetched updates arrive in the hub's order, not
            // the order they were made, and every order gives the same profile.
            super::profiles::apply(
                conn,
                &m,
                &super::profiles::fact_ops(&e.detail, e.at, origin_node),
            )?;
        }
        (Detail::Purchase(sale), _) => {
            let (subtotal, total, redeemed) = sale.goods(e.spend);
            let receipt = receipts::ReceiptRow {
                receipt_id: sale.receipt_id.clone(),
                txn: *e.txn.as_bytes(),
                member,
                at: e.at,
                origin: origin_id,
                seq,
                subtotal,
                total,
                earned: e.earn,
                redeemed,
                rules_version: sale.rules_version.clone(),
            };
            if !receipts::insert(conn, &receipt)? {
                // The POS sold under this receipt number again after the restore: both
                // sales count in the ledger; the receipt row keeps the later one.
                tracing::error!(receipt = %receipt.receipt_id, "a refetched sale's receipt number is taken");
            }
            // The catalogue units it gave left this store's stock (from its lines, which
            // the fact keeps as written).
            if sale.catalogue.is_some() {
                let lines = receipts::record_of(e.body())?.lines;
                for (sku, units) in crate::domain::catalogue::units(&lines) {
                    receipts::give_catalogue(conn, &sku, units)?;
                }
            }
            // Coupons the sale granted, as its fact lists them.
            if let Some(m) = member {
                for g in &sale.coupons_granted {
                    let id = id_bytes(&g.coupon_id)?;
                    rebuild_coupon(conn, &coupon_of(g, id, m, e.at, Some(receipt.txn), None))?;
                }
            }
            // Coupons the sale used stay used.
            for code in &sale.coupons_used {
                if let Some(c) = coupons::by_code(conn, code)? {
                    coupons::mark_used(conn, &c.code, &receipt.txn)?;
                }
            }
        }
        (Detail::Refund(r), _) => {
            receipts::insert_refund(
                conn,
                &receipts::RefundRow {
                    refund_id: *e.txn.as_bytes(),
                    receipt_id: r.receipt_id.clone(),
                    at: e.at,
                    per_line: r.per_line.clone(),
                    gross: r.gross,
                    amount: r.amount,
                    points_reversed: e.reverse,
                    points_returned: e.earn,
                },
            )?;
        }
        (Detail::CouponIssued(c), Some(m)) => {
            let source_txn = c.source_txn.as_deref().map(id_bytes).transpose()?;
            rebuild_coupon(
                conn,
                &coupon_of(c, *e.txn.as_bytes(), m, e.at, source_txn, None),
            )?;
        }
        (Detail::MemberMerged(merge), Some(loser)) if origin_node == HUB_NODE => {
            members::merge(conn, &loser, merge.survivor.as_bytes())?;
        }
        // These name the coupon by its code.
        (Detail::CouponClaimed(c), _) => {
            coupons::activate(conn, &c.code)?;
        }
        (Detail::Claim(_), _) => count_claim(conn, origin_id, seq, e)?,
        (Detail::CouponRestored(c), _) => coupons::restore(conn, &c.code)?,
        (Detail::CouponWithdrawn(c), _) => coupons::revoke(conn, &c.code)?,
        _ => {}
    }
    Ok(())
}

/// What another store's fact changes in this store's coupons: a member's coupons are
/// usable at any store of the chain (docs/claims.md), so the coupons other stores
/// issued to the members held here are kept here too, with the store that issued them,
/// and follow their state (claimed, used, restored, withdrawn).
fn project_coupons(conn: &rusqlite::Connection, node: &str, e: &Entry) -> Result<(), EdgeError> {
    use crate::store::coupons;
    let Some(m) = e.member.map(|m| *m.as_bytes()) else {
        return Ok(());
    };
    // A state change applies only to the fact's member's coupon (codes are unique per
    // store, not across the chain), and a withdrawal only from the store that issued
    // it: another store's fact cannot touch someone else's coupon.
    let theirs = |code: &str, issuer_only: bool| -> Result<bool, StoreError> {
        Ok(coupons::by_code(conn, code)?
            .is_some_and(|c| c.member == m && (!issuer_only || c.store.as_deref() == Some(node))))
    };
    match &e.detail {
        Detail::CouponIssued(c) => {
            let source_txn = c.source_txn.as_deref().map(id_bytes).transpose()?;
            let row = coupon_of(c, *e.txn.as_bytes(), m, e.at, source_txn, Some(node));
            rebuild_coupon(conn, &row)?;
        }
        Detail::Purchase(sale) => {
            for g in &sale.coupons_granted {
                let id = id_bytes(&g.coupon_id)?;
                let row = coupon_of(g, id, m, e.at, Some(*e.txn.as_bytes()), Some(node));
                rebuild_coupon(conn, &row)?;
            }
            for code in &sale.coupons_used {
                if theirs(code, false)? {
                    coupons::mark_used(conn, code, e.txn.as_bytes())?;
                }
            }
        }
        Detail::CouponClaimed(c) if theirs(&c.code, false)? => {
            coupons::activate(conn, &c.code)?;
        }
        Detail::CouponRestored(c) if theirs(&c.code, false)? => coupons::restore(conn, &c.code)?,
        Detail::CouponWithdrawn(c) if theirs(&c.code, true)? => coupons::revoke(conn, &c.code)?,
        _ => {}
    }
    Ok(())
}

/// Counts a claim fact held here (this store's own, come back after a restore, or
/// another store's, come with a member's facts): the member's counter here then counts
/// every claim this store knows of.
fn count_claim(
    conn: &rusqlite::Connection,
    origin_id: i64,
    seq: i64,
    e: &Entry,
) -> Result<(), StoreError> {
    let (Detail::Claim(c), Some(m)) = (&e.detail, e.member) else {
        return Ok(());
    };
    crate::store::claims::record(
        conn,
        &crate::store::claims::ClaimRow {
            origin: origin_id,
            seq,
            member: *m.as_bytes(),
            key: patron_domain::claims::ClaimKey {
                entitlement: c.entitlement.clone(),
                period: c.period.clone(),
            },
            units: if c.release { -1 } else { 1 },
            offline: c.auth == patron_domain::fact::Auth::Offline,
        },
    )
}

/// `meta` key of a pending refetch of every held phone: the last phone index done
/// (hex; empty: none yet). Absent: no refetch due.
const REFETCH_PHONES_KEY: &str = "stream_refetch_done";

/// `meta` key: the position in the hub's stream up to which every fact is applied, and
/// the mark of the hub's fact there (`<after>:<mark>`).
const STREAM_KEY: &str = "stream_after";

/// What a stream page did.
#[derive(Debug, Default)]
pub struct Streamed {
    /// Facts new here.
    pub stored: usize,
    /// Members whose facts came although this store no longer holds them.
    pub release: Vec<Uuid>,
    /// Merges of a member held here: (loser, survivor).
    pub merges: Vec<(Uuid, Uuid)>,
    /// Nothing was applied: the page carries a member not held here while a member
    /// fetch is under way (it may be that member's): poll again once it is stored.
    pub held_back: bool,
}

/// Facts from the hub being stored in one transaction: the origin ids looked up so
/// far and the members whose profile row is being rebuilt.
struct Kept<'a> {
    own_node: &'a str,
    vault: &'a crate::crypto::Vault,
    origins: std::collections::HashMap<(String, Uuid), i64>,
    rebuilt: std::collections::HashSet<[u8; 16]>,
}

impl<'a> Kept<'a> {
    fn new(own_node: &'a str, vault: &'a crate::crypto::Vault) -> Self {
        Self {
            own_node,
            vault,
            origins: Default::default(),
            rebuilt: Default::default(),
        }
    }

    /// The fact's entry, if it is to be stored: this store's own facts are here
    /// already (or come back through the refetch of a restored database, which
    /// rebuilds their receipts too), and one unreadable fact must not keep a member
    /// from this store.
    fn entry(&self, f: &Fact) -> Option<Entry> {
        if f.origin.node == self.own_node {
            return None;
        }
        match Entry::parse(&f.body) {
            Ok(e) => Some(e),
            Err(error) => {
                tracing::warn!(origin = %f.origin, seq = f.seq, %error, "an unreadable fact from the hub was skipped");
                None
            }
        }
    }

    /// Stores a fact from the hub: it counts in the member's balance and tier here,
    /// the member's profile row is rebuilt from the registration and profile facts, and
    /// the member's coupons from other stores are kept (usable here). Other stores'
    /// receipts and refunds are not rebuilt: sales are refunded where they were made.
    /// Whether anything changed.
    fn keep(
        &mut self,
        conn: &rusqlite::Connection,
        f: &Fact,
        e: &Entry,
    ) -> Result<bool, EdgeError> {
        let key = (f.origin.node.clone(), f.origin.incarnation);
        let origin_id = match self.origins.get(&key) {
            Some(id) => *id,
            None => {
                let id = store::origin_id(conn, &f.origin.node, &f.origin.incarnation.to_string())?;
                self.origins.insert(key, id);
                id
            }
        };
        let nf = new_fact(e);
        let seq = f.seq as i64;
        let inserted = facts::insert_at(conn, origin_id, seq, &nf)?;
        if inserted {
            count_claim(conn, origin_id, seq, e)?;
            project_coupons(conn, &f.origin.node, e)?;
        }
        if let Some(m) = &nf.member {
            store::members::note_fetched_fact(conn, m, origin_id, seq)?;
        }
        // A registration held already still rebuilds a missing profile row (a member
        // removed from this store keeps facts it fetched earlier), and the updates held
        // for that member apply to the rebuilt row again.
        let rebuild = match (e.kind(), nf.member) {
            (Kind::MemberRegistered, Some(m)) => {
                let missing = store::members::get(conn, &m)?.is_none();
                if missing {
                    self.rebuilt.insert(m);
                }
                missing
            }
            (Kind::MemberUpdated | Kind::MemberRekeyed | Kind::PhoneChanged, Some(m)) => {
                self.rebuilt.contains(&m)
            }
            _ => false,
        };
        let profile = matches!(
            e.kind(),
            Kind::MemberRegistered
                | Kind::MemberUpdated
                | Kind::MemberMerged
                | Kind::MemberRekeyed
                | Kind::PhoneChanged
        );
        if (inserted || rebuild) && profile {
            project(conn, self.vault, origin_id, &f.origin.node, seq, e)?;
            return Ok(true);
        }
        Ok(inserted)
    }
}

impl Edge {
    /// Stores the facts of a member fetched from the hub (another store registered
    /// them, or they are new since the last fetch, up to hub position `upto` for phone
    /// index `phone_idx`): every fact counts in the member's balance and tier here, the
    /// member's profile row is rebuilt from the registration and profile facts, and their
    /// coupons and claims are kept. Other stores' receipts and refunds are not rebuilt:
    /// sales are refunded where they were made. Returns whether any fact was new.
    pub async fn apply_fetched(
        &self,
        phone_idx: [u8; 32],
        fetched: Vec<Fact>,
        keys: Vec<MemberKeys>,
        upto: u64,
    ) -> Result<bool, EdgeError> {
        let own_node = self.store.origin.node.clone();
        let now = self.core.now();
        let core = self.core.clone();
        self.store
            .writer
            .write(move |ctx| {
                store::members::set_fetched_upto(ctx.conn, &phone_idx, upto, now)?;
                let mut kept = Kept::new(&own_node, &core.vault);
                let mut any = false;
                for f in &fetched {
                    if let Some(e) = kept.entry(f) {
                        any |= kept.keep(ctx.conn, f, &e)?;
                    }
                }
                any |= take_keys(ctx.conn, &core.vault, &keys)? > 0;
                Ok::<_, EdgeError>(any)
            })
            .await
    }

    /// This store's place in the hub's stream: the position every fact up to which is
    /// applied, and the mark of the hub's fact there (`0:0`: nothing yet).
    pub async fn stream_cursor(&self) -> Result<patron_sync::stream::StreamCursor, EdgeError> {
        self.store
            .readers
            .read(|c| {
                let v = store::meta_get(c, STREAM_KEY)?.unwrap_or_default();
                let (after, mark) = v.split_once(':').unwrap_or((v.as_str(), "0"));
                Ok::<_, EdgeError>(patron_sync::stream::StreamCursor {
                    after: after.parse().unwrap_or(0),
                    mark: mark.parse().unwrap_or(0),
                })
            })
            .await
    }

    /// Stores a page of the hub's stream (facts of the members this store holds,
    /// written elsewhere) and moves the stream position to `upto`, in one transaction.
    /// Facts of members this store no longer holds are not stored: they are returned,
    /// for the next poll to release. Merges are returned too (the other member's
    /// history is fetched by phone).
    pub async fn apply_streamed(
        &self,
        page: Vec<patron_sync::stream::Streamed>,
        keys: Vec<MemberKeys>,
        upto: u64,
        mark: u64,
    ) -> Result<Streamed, EdgeError> {
        let own_node = self.store.origin.node.clone();
        let fetching = self.fetching();
        let core = self.core.clone();
        self.store
            .writer
            .write(move |ctx| {
                let mut kept = Kept::new(&own_node, &core.vault);
                let mut out = Streamed::default();
                // A fetch under way may be of a member this page carries but the store
                // does not hold yet: releasing them now would undo the fetch's holding
                // at the hub (the release would be later than the fetch).
                if fetching {
                    for s in &page {
                        let m = Entry::parse(&s.fact.body).ok().and_then(|e| e.member);
                        if let Some(m) = m
                            && s.fact.origin.node != own_node
                            && !store::members::held(ctx.conn, m.as_bytes())?
                        {
                            out.held_back = true;
                            return Ok(out);
                        }
                    }
                }
                for s in &page {
                    let Some(e) = kept.entry(&s.fact) else {
                        continue;
                    };
                    let Some(m) = e.member else { continue };
                    let survivor = match &e.detail {
                        Detail::MemberMerged(merge) => Some(merge.survivor),
                        _ => None,
                    };
                    let held = store::members::held(ctx.conn, m.as_bytes())?
                        || survivor
                            .map(|s| store::members::held(ctx.conn, s.as_bytes()))
                            .transpose()?
                            .unwrap_or(false);
                    if !held {
                        if !out.release.contains(&m) {
                            out.release.push(m);
                        }
                        continue;
                    }
                    if kept.keep(ctx.conn, &s.fact, &e)? {
                        out.stored += 1;
                    }
                    if let Some(survivor) = survivor {
                        out.merges.push((m, survivor));
                    }
                }
                take_keys(ctx.conn, &core.vault, &keys)?;
                store::meta_set(ctx.conn, STREAM_KEY, &format!("{upto}:{mark}"))?;
                Ok::<_, EdgeError>(out)
            })
            .await
    }

    /// The stream cannot continue from this store's position (its database is older
    /// than what the hub forgot, or the hub's is older than this store's position):
    /// every phone's fetch position is forgotten, the stream resumes at `resume`, and a
    /// refetch of every held phone is recorded as due, in the same transaction: it
    /// survives a restart ([`Edge::next_refetch_phone`]).
    pub async fn restart_stream(&self, resume: u64, mark: u64) -> Result<(), EdgeError> {
        self.store
            .writer
            .write(move |ctx| {
                store::members::reset_fetch_positions(ctx.conn)?;
                store::meta_set(ctx.conn, STREAM_KEY, &format!("{resume}:{mark}"))?;
                store::meta_set(ctx.conn, REFETCH_PHONES_KEY, "")?;
                Ok::<_, EdgeError>(())
            })
            .await
    }

    /// The next phone a pending refetch must fetch again (`None`: no refetch due, or
    /// it is complete, which is then recorded).
    pub async fn next_refetch_phone(&self) -> Result<Option<[u8; 32]>, EdgeError> {
        self.store
            .writer
            .write(move |ctx| {
                let Some(done) = store::meta_get(ctx.conn, REFETCH_PHONES_KEY)? else {
                    return Ok(None);
                };
                let after = hex::decode(&done)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok());
                let next = store::members::phone_index_after(ctx.conn, after.as_ref())?;
                if next.is_none() {
                    store::meta_delete(ctx.conn, REFETCH_PHONES_KEY)?;
                }
                Ok::<_, EdgeError>(next)
            })
            .await
    }

    /// Records that the pending refetch has fetched every phone up to `phone`.
    pub async fn refetched_phone(&self, phone: [u8; 32]) -> Result<(), EdgeError> {
        let done = hex::encode(phone);
        self.store
            .writer
            .write(move |ctx| {
                Ok::<_, EdgeError>(store::meta_set(ctx.conn, REFETCH_PHONES_KEY, &done)?)
            })
            .await
    }

    /// The old incarnation's facts still to fetch back from the hub, if any.
    pub async fn pending_refetch(&self) -> Result<Option<incarnation::Refetch>, EdgeError> {
        self.store
            .readers
            .read(|c| Ok::<_, EdgeError>(incarnation::pending_refetch(c)?))
            .await
    }

    /// Stores facts of the old incarnation that came back from the hub, rebuilds the
    /// members and receipts they carry, and moves the refetch on; with none left
    /// (`facts` empty), the refetch is done.
    pub async fn apply_refetched(
        &self,
        r: incarnation::Refetch,
        facts: Vec<Fact>,
    ) -> Result<(), EdgeError> {
        let own_node = self.store.origin.node.clone();
        let core = self.core.clone();
        self.store
            .writer
            .write(move |ctx| {
                let mut after = r.after;
                for f in &facts {
                    let seq = f.seq as i64;
                    if seq != after + 1 {
                        // Only contiguous facts: anything else is asked for again.
                        break;
                    }
                    let e = Entry::parse(&f.body)
                        .map_err(|x| StoreError::Corrupt(format!("refetched fact: {x}")))?;
                    if facts::insert_at(ctx.conn, r.origin_id, seq, &new_fact(&e))? {
                        project(ctx.conn, &core.vault, r.origin_id, &own_node, seq, &e)?;
                    }
                    after = seq;
                }
                if !facts.is_empty() && after == r.after {
                    return Err(EdgeError::Store(StoreError::Corrupt(format!(
                        "the hub's facts do not continue after {}",
                        r.after
                    ))));
                }
                if facts.is_empty() {
                    ctx.conn
                        .execute(
                            "DELETE FROM meta WHERE key = ?1",
                            [incarnation::REFETCH_KEY],
                        )
                        .map_err(StoreError::from)?;
                } else {
                    let next = incarnation::Refetch { after, ..r };
                    store::meta_set(
                        ctx.conn,
                        incarnation::REFETCH_KEY,
                        &serde_json::to_string(&next)
                            .map_err(|x| StoreError::Corrupt(x.to_string()))?,
                    )?;
                }
                Ok::<_, EdgeError>(())
            })
            .await
    }
}

impl Edge {
    /// A stored HQ document (a new, empty one if none) and its persisted sync state.
    pub async fn hq_doc(
        &self,
        doc_id: &str,
    ) -> Result<(patron_sync::docs::HqDoc, Option<Vec<u8>>), EdgeError> {
        let id = doc_id.to_string();
        let stored = self
            .store
            .readers
            .read(move |c| Ok::<_, EdgeError>(store::hq_docs::load(c, &id)?))
            .await?;
        match stored {
            Some((bytes, state)) => Ok((
                patron_sync::docs::HqDoc::load(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("HQ document {doc_id}: {e}")))?,
                state,
            )),
            None => Ok((patron_sync::docs::HqDoc::new(), None)),
        }
    }

    /// Stores an HQ document and its sync state.
    pub async fn save_hq_doc(
        &self,
        doc_id: &str,
        bytes: Vec<u8>,
        state: Vec<u8>,
    ) -> Result<(), EdgeError> {
        let id = doc_id.to_string();
        self.store
            .writer
            .write(move |ctx| {
                Ok::<_, EdgeError>(store::hq_docs::save(ctx.conn, &id, &bytes, &state)?)
            })
            .await
    }

    /// Puts in force what HQ published for this store's ring (or, where the ring has
    /// none, for every store): points settings, tier thresholds, and the rule set if it
    /// is not the one in force already. Returns the rule-set version loaded, if one was.
    pub async fn adopt_hq_docs(&self, ring: &str) -> Result<Option<String>, EdgeError> {
        use patron_sync::docs::ring_doc;
        let (own, _) = self.hq_doc(&ring_doc(ring)).await?;
        let (all_doc, _) = self.hq_doc(&ring_doc("all")).await?;
        self.adopt(&[own, all_doc]).await
    }

    /// Puts in force what `docs` (most specific first) hold; see [`Edge::adopt_hq_docs`].
    pub async fn adopt(
        &self,
        docs: &[patron_sync::docs::HqDoc],
    ) -> Result<Option<String>, EdgeError> {
        let mut chosen = None;
        let (mut tiers, mut points) = (None, None);
        for doc in docs {
            if chosen.is_none() {
                chosen = doc.current_rule_set();
            }
            if tiers.is_none() {
                tiers = doc.tier_rules();
            }
            if points.is_none() {
                points = doc.points_rules();
            }
        }
        // Each setting on its own: one this edge cannot read (a newer hub's) must not
        // keep the others from applying.
        if let Some(json) = points {
            match serde_json::from_str::<patron_domain::settings::PointsRules>(&json)
                .map_err(|e| EdgeError::Invalid(format!("HQ points settings: {e}")))
                .and_then(|p| self.core.set_points(p).map(|changed| (p, changed)))
            {
                Ok((p, true)) => tracing::info!(points = ?p, "HQ points settings in force"),
                Ok((_, false)) => {}
                Err(e) => tracing::error!(error = %e, "HQ points settings not applied"),
            }
        }
        if let Some(json) = tiers {
            let t: patron_domain::tiers::TierRules = serde_json::from_str(&json)
                .map_err(|e| EdgeError::Invalid(format!("HQ tier rules: {e}")))?;
            if self.core.set_tiers(t)? {
                tracing::info!(tiers = ?t, "HQ tier thresholds in force");
            }
        }
        let Some((version, json)) = chosen else {
            return Ok(None);
        };
        if self.rules().is_some_and(|r| r.set.version == version) {
            return Ok(None);
        }
        let set: crate::domain::promo::ruleset::RuleSet = serde_json::from_str(&json)
            .map_err(|e| EdgeError::Invalid(format!("HQ rule set {version}: {e}")))?;
        self.load_rules(set).await?;
        Ok(Some(version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::coupons;
    use serde_json::{Value, json};

    const T0: i64 = 1_764_000_000_000;

    fn idem(key: &str) -> super::super::Idem {
        super::super::Idem {
            lane: 1,
            key: key.into(),
            request_hash: [0; 32],
        }
    }

    fn json_of(reply: &super::super::Reply) -> Value {
        serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}"))
    }

    async fn sell(edge: &Edge, member: &str, receipt: &str, price: i64, codes: &[&str]) -> Value {
        let req = serde_json::from_value(json!({
            "member_id": member, "receipt_id": receipt, "coupon_codes": codes,
            "lines": [{"sku": "A1", "category": "food", "qty": 1, "unit_price": price}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let reply = edge
            .commit(idem(receipt), crate::service::Actor::manager(), req)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 201);
        json_of(&reply)
    }

    /// A sale's granted coupons ride in its purchase fact (no `coupon_issued` fact of
    /// their own), and a store restored from an old backup rebuilds them from it: same
    /// code, value, expiry and granting sale, used if a later sale used it.
    #[tokio::test]
    async fn granted_coupons_live_in_the_purchase_fact_and_come_back_after_a_restore() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        let set = serde_json::from_value(json!({"version": "v1", "rules": [
            {"id": "g", "label": "满300赠50", "type": "coupon_grant", "threshold": 30000,
             "coupon": {"label": "¥50 off", "off": 5000, "valid_days": 30}}
        ]}))
        .unwrap_or_else(|e| panic!("{e}"));
        edge.load_rules(set).await.unwrap_or_else(|e| panic!("{e}"));
        let member = edge.test_member("13800000077", None).await;
        let granting = sell(&edge, &member, "R-1", 30_000, &[]).await;
        assert_eq!(granting["coupons_issued"].as_array().map(Vec::len), Some(1));
        let before = held(&edge).await;
        assert_eq!(before.len(), 1);
        let code = before[0].code.clone();
        sell(&edge, &member, "R-2", 10_000, &[&code]).await;

        let facts = edge.outbox(0, 100).await.unwrap_or_else(|e| panic!("{e}"));
        let entries: Vec<Entry> = facts
            .iter()
            .map(|f| Entry::parse(&f.body).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        assert!(!entries.iter().any(|e| e.kind() == Kind::CouponIssued));
        let purchase: Value = entries
            .iter()
            .find(|e| e.kind() == Kind::Purchase)
            .and_then(|e| serde_json::from_str(e.body()).ok())
            .unwrap_or_else(|| panic!("no purchase"));
        assert_eq!(purchase["coupons_granted"][0]["code"], json!(code));

        // The same store, restored from a backup older than both sales: the hub sends
        // its facts back.
        let restored_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let restored = restore(&edge, restored_dir.path(), None, facts).await;
        let after = held(&restored).await;
        assert_eq!(after, before_used(&before[0], &entries));
    }

    /// A store restored from an old backup counts again the catalogue units its own
    /// sales gave, from their facts: it does not give its stock a second time.
    #[tokio::test]
    async fn a_restored_store_counts_the_catalogue_units_its_sales_gave() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        let set: patron_domain::rules::RuleSet =
            serde_json::from_value(json!({"version": "v1", "rules": [], "catalogue": [
                {"sku": "UMB", "label": "umbrella", "points": 1, "cash": 990, "stock_per_store": 3}
            ]}))
            .unwrap_or_else(|e| panic!("{e}"));
        edge.load_rules(set.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let member = edge.test_member("13800000078", None).await;
        sell(&edge, &member, "R-1", 100_000, &[]).await;
        let umbrellas = |receipt: &str, qty: i64| {
            serde_json::from_value(json!({
                "member_id": member, "receipt_id": receipt,
                "lines": [{"sku": "UMB", "qty": qty, "unit_price": 990, "catalogue": true}]
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let reply = edge
            .commit(
                idem("R-2"),
                crate::service::Actor::manager(),
                umbrellas("R-2", 2),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reply.status, 201, "{}", json_of(&reply));
        assert_eq!(given(&edge).await, 2);
        let facts = edge.outbox(0, 100).await.unwrap_or_else(|e| panic!("{e}"));

        let restored_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let restored = restore(&edge, restored_dir.path(), Some(set), facts).await;
        assert_eq!(
            given(&restored).await,
            2,
            "the two umbrellas sold before the restore"
        );
    }

    /// Store S001 (`edge`) restored into `dir` from a backup older than all of `facts`
    /// (its own, which the hub sends back), under rule set `set`.
    async fn restore(
        edge: &Edge,
        dir: &std::path::Path,
        set: Option<patron_domain::rules::RuleSet>,
        facts: Vec<Fact>,
    ) -> std::sync::Arc<Edge> {
        let (restored, _) = Edge::for_test("S001", dir, T0 + 1);
        if let Some(set) = set {
            restored
                .load_rules(set)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let incarnation = edge.store.origin.incarnation;
        let origin_id = restored
            .store
            .writer
            .write(move |ctx| crate::store::origin_id(ctx.conn, "S001", &incarnation.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let r = incarnation::Refetch {
            origin_id,
            incarnation,
            after: 0,
            upto: facts.len() as i64,
        };
        restored
            .apply_refetched(r, facts)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        restored
    }

    /// Units of catalogue item `UMB` this store counts as given.
    async fn given(edge: &Edge) -> i64 {
        edge.store
            .readers
            .read(|c| Ok::<_, EdgeError>(crate::store::receipts::catalogue_given(c, "UMB")?))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every coupon `edge` holds.
    async fn held(edge: &Edge) -> Vec<coupons::CouponRow> {
        edge.store
            .readers
            .read(|c| Ok::<_, EdgeError>(coupons::all(c)?))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `c` as used by the second purchase in `entries`.
    fn before_used(c: &coupons::CouponRow, entries: &[Entry]) -> Vec<coupons::CouponRow> {
        let used = entries
            .iter()
            .filter(|e| e.kind() == Kind::Purchase)
            .nth(1)
            .map(|e| *e.txn.as_bytes());
        vec![coupons::CouponRow {
            used_txn: used,
            ..c.clone()
        }]
    }
}
