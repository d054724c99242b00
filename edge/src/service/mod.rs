//! Domain services: the rules of each POS operation, between the HTTP handlers (which
//! only parse and map errors) and storage (which only runs SQL).
//!
//! Every state-changing operation runs as one closure on the group-commit writer, and
//! inside it as one savepoint: the idempotency check, the business checks, the fact(s)
//! and the stored answer are written together or not at all.

mod adjustments;
mod anomalies;
mod checkout;
mod claims;
mod coupons;
pub mod hub_port;
mod lanes;
pub mod leases;
mod limits;
mod lookups;
mod members;
mod phones;
mod points;
mod profiles;
mod promotions;
mod redemption;
mod refunds;
mod rekey;
pub mod statements;
mod stock;
pub mod sync;
mod transfers;
mod welcome;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use patron_protocol::pos::{Health, HubHealth, SettingsHealth};
use patron_protocol::{MemberId, Points};
use serde::Serialize;

use crate::config::Config;
use crate::crypto::{CryptoError, Vault};
use crate::domain::clock::{self, Millis, StoreCalendar};
use crate::domain::points::PointsState;
use crate::domain::promo::engine::PricingError;
use crate::domain::promo::ruleset::Compiled;
use crate::domain::tiers::{self, Tier, TierRules};
use crate::store::idempotency::{self, IdemIndex};
use crate::store::ledgers;
use crate::store::members as member_rows;
use crate::store::{Store, StoreError, WriteCtx};
use patron_domain::ledger::Snapshot;
use patron_domain::settings::{PointsRules, Source};

pub use lanes::{Lane, Role, add_lane, revoke_lane};
pub use limits::Actor;
pub use lookups::{LookupBy, recent_lookups};
pub use redemption::{Authority, HubAuthority};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Bad input; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// Bad input with structured details.
    #[error("{message}")]
    InvalidWith {
        /// For people.
        message: String,
        /// For the POS.
        details: serde_json::Value,
    },
    /// No such member.
    #[error("no member with this id or phone")]
    MemberNotFound,
    /// The phone is a member already.
    #[error("this phone already belongs to a member")]
    MemberExists {
        /// The existing member.
        member_id: MemberId,
    },
    /// No such receipt or resource.
    #[error("{0}")]
    NotFound(String),
    /// Not enough points.
    #[error("the member has {available} points; {requested} were asked for")]
    InsufficientPoints {
        /// Available balance.
        available: i64,
        /// Points asked for.
        requested: i64,
    },
    /// Not enough free points: part of the member's points are leased to other stores
    /// for their offline use, and the hub could not recall them (those stores are
    /// offline, or did not answer in time).
    #[error(
        "the member has {available} points free here; {reserved} more are reserved for offline use at other stores"
    )]
    ReservedElsewhere {
        /// What the member may spend here.
        available: i64,
        /// Points asked for.
        requested: i64,
        /// Points reserved at other stores, in all.
        reserved: i64,
        /// Which stores hold how many.
        reserved_at: Vec<patron_protocol::hub::Reserved>,
    },
    /// The hub is unreachable and the offline limits do not cover the redemption.
    #[error(
        "the hub is unreachable and offline redemptions are limited: {requested} points asked, {member_left} left for this member, {store_left} for this store today"
    )]
    OfflineLimitExceeded {
        /// Points asked for.
        requested: i64,
        /// What the member may still redeem here offline.
        member_left: i64,
        /// What the store may still redeem offline today.
        store_left: i64,
    },
    /// The member was registered here while the hub was unreachable and the hub has not
    /// confirmed them yet (it may merge them with a member of another store).
    #[error(
        "the member was registered while the hub was unreachable: redemptions wait until the hub confirms them ({requested} points asked)"
    )]
    ProvisionalMember {
        /// Points asked for.
        requested: i64,
    },
    /// The receipt was committed under another key.
    #[error("receipt {0} was already committed")]
    ReceiptExists(String),
    /// A coupon code does not apply.
    #[error("coupon {code}: {reason}")]
    CouponInvalid {
        /// The code.
        code: String,
        /// Why.
        reason: String,
    },
    /// Same idempotency key, different request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// An abuse limit (`[limits]`) would be passed; the store's manager (an `admin`
    /// lane) is not limited.
    #[error("this would pass the limit {} ({} allowed, {} used, {} asked); the store's manager can do it", .0.limit, .0.allowed, .0.used, .0.asked)]
    LimitExceeded(crate::domain::limits::Exceeded),
    /// A member code offered as proof that the member is present was not taken.
    #[error("{0}")]
    MemberCode(String),
    /// A limited entitlement is used up for the member (or offline, not allowed again).
    #[error("{0}")]
    ClaimLimit(String),
    /// The caller may not do this (a maker deciding their own adjustment).
    #[error("{0}")]
    Forbidden(String),
    /// The resource's state does not allow this (an adjustment decided already).
    #[error("{0}")]
    Conflict(String),
    /// A catalogue item has no units left at this store.
    #[error("{sku}: {left} left at this store, {asked} asked")]
    OutOfStock {
        /// The item.
        sku: String,
        /// Units left.
        left: i64,
        /// Units asked.
        asked: i64,
    },
    /// The operation needs the hub and the hub cannot be reached.
    #[error("{0}")]
    HubUnreachable(String),
    /// The lane has used its lookups for now.
    #[error("this lane looked up too many members by phone; try again in {retry_after_secs} s")]
    RateLimited {
        /// When the lane may look up again.
        retry_after_secs: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Encryption failed.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<rusqlite::Error> for EdgeError {
    fn from(e: rusqlite::Error) -> Self {
        EdgeError::Store(StoreError::Sqlite(e))
    }
}

impl From<PricingError> for EdgeError {
    fn from(e: PricingError) -> Self {
        match e {
            PricingError::Invalid(m) => EdgeError::Invalid(m),
            PricingError::InsufficientPoints {
                available,
                requested,
            } => EdgeError::InsufficientPoints {
                available,
                requested,
            },
            PricingError::RedeemExceedsDue { max_points } => EdgeError::InvalidWith {
                message: e.to_string(),
                details: serde_json::json!({ "max_points": max_points }),
            },
            PricingError::Coupon { code, reason } => EdgeError::CouponInvalid { code, reason },
        }
    }
}

fn invalid(m: String) -> EdgeError {
    EdgeError::Invalid(m)
}

/// Validates an optional field with `check`; absent stays absent.
fn opt<T>(
    v: Option<&str>,
    check: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, EdgeError> {
    v.map(check).transpose().map_err(invalid)
}

/// `member_not_found` unless the member exists here.
fn require_member(conn: &rusqlite::Connection, m: &[u8; 16]) -> Result<(), EdgeError> {
    if member_rows::exists(conn, m)? {
        Ok(())
    } else {
        Err(EdgeError::MemberNotFound)
    }
}

/// An idempotent request's identity: who sent it, under which key, with what body.
#[derive(Debug, Clone)]
pub struct Idem {
    /// The lane (keys are scoped per lane).
    pub lane: i64,
    /// The `Idempotency-Key` header.
    pub key: String,
    /// Keyed hash of route and body.
    pub request_hash: [u8; 32],
}

/// A state-changing operation's answer, as JSON, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
    /// Whether this is a stored answer to an earlier identical request.
    pub replayed: bool,
}

/// What every writer closure needs besides the connection.
pub struct Core {
    /// Keys.
    pub vault: Vault,
    /// The hub's key for member codes, once held.
    pub member_codes: crate::member_codes::MemberCodes,
    /// Rules and settings.
    pub cfg: Config,
    /// The store's calendar.
    pub cal: StoreCalendar,
    /// `node/incarnation` of this store's origin, as facts are ordered by it.
    pub origin_label: std::sync::Arc<str>,
    /// This store's origin's id in its own database (what its facts' `origin` holds).
    pub origin_id: i64,
    /// Where stored idempotent answers are found.
    idem: IdemIndex,
    /// Chain-wide settings in force and where they came from: the configuration's for
    /// a store on its own; HQ's (or the documented defaults) once enrolled.
    settings: RwLock<Settings>,
    /// Stamps profile changes (last-writer-wins per field across stores).
    hlc: std::sync::Mutex<patron_sync::Hlc>,
    /// The last coupon-code clock handed out (see `coupon_code`).
    code_clock: std::sync::atomic::AtomicU64,
    now: Box<dyn Fn() -> Millis + Send + Sync>,
}

impl Core {
    /// The current time (a fixed clock in tests).
    pub fn now(&self) -> Millis {
        (self.now)()
    }

    /// The chain-wide settings in force.
    pub fn settings(&self) -> Settings {
        *self.settings.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The tier thresholds in force.
    pub fn tiers(&self) -> TierRules {
        self.settings().tiers
    }

    /// The points settings in force.
    pub fn points(&self) -> PointsRules {
        self.settings().points
    }

    /// The store is enrolled: what its own configuration says of chain-wide settings no
    /// longer applies; the documented defaults do until HQ's publications are adopted.
    pub fn follow_hq(&self) {
        let mut s = self.settings.write().unwrap_or_else(|p| p.into_inner());
        if s.points_source == Source::Config {
            s.points = PointsRules::default();
            s.points_source = Source::Default;
        }
        if s.tiers_source == Source::Config {
            s.tiers = TierRules::default();
            s.tiers_source = Source::Default;
        }
    }

    /// Puts tier thresholds HQ published in force; `false` if they were already.
    pub fn set_tiers(&self, t: TierRules) -> Result<bool, EdgeError> {
        t.validate().map_err(EdgeError::Invalid)?;
        let mut cur = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let changed = cur.tiers != t || cur.tiers_source != Source::Hq;
        cur.tiers = t;
        cur.tiers_source = Source::Hq;
        Ok(changed)
    }

    /// Puts points settings HQ published in force; `false` if they were already.
    pub fn set_points(&self, p: PointsRules) -> Result<bool, EdgeError> {
        p.validate().map_err(EdgeError::Invalid)?;
        let mut cur = self.settings.write().unwrap_or_else(|p| p.into_inner());
        let changed = cur.points != p || cur.points_source != Source::Hq;
        cur.points = p;
        cur.points_source = Source::Hq;
        Ok(changed)
    }

    /// A hybrid-logical-clock stamp for a profile change at `now`.
    pub fn profile_stamp(&self, now: Millis) -> patron_sync::Stamp {
        let mut h = self.hlc.lock().unwrap_or_else(|p| p.into_inner());
        h.tick(now.max(0) as u64)
    }

    /// The last usable instant of a lot earned at `at`: end of the local day, plus the
    /// configured months.
    pub fn lot_expiry(&self, at: Millis) -> Millis {
        let d = clock::add_months_to_date(self.cal.date(at), self.points().expiry_months as i32);
        self.cal.end_of_day(d)
    }

    /// Runs `op` unless `idem` names a stored answer, and stores `op`'s answer under it.
    ///
    /// `op` says whose key seals the stored answer: answers that hold personal data
    /// (a Member) are sealed under that member's key, so erasing the member erases them.
    /// Whether this request is probably a replay of an answered one (checked before
    /// asking the hub to authorize a redemption the replay would not make).
    pub(super) fn is_replay(&self, idem: &Idem) -> bool {
        self.idem.contains(idem.lane, &idem.key)
    }

    fn idempotent<T: Serialize>(
        &self,
        ctx: &mut WriteCtx<'_>,
        idem: Option<&Idem>,
        now: Millis,
        op: impl FnOnce(&mut WriteCtx<'_>) -> Result<(u16, T, Seal), EdgeError>,
    ) -> Result<Reply, EdgeError> {
        if let Some(i) = idem
            && let Some(stored) = self.idem.get(ctx.conn, i.lane, &i.key)?
        {
            if stored.request_hash != i.request_hash {
                return Err(EdgeError::IdempotencyKeyReused);
            }
            let body = match stored.member {
                None => self.vault.open_store(&seal_context(i), &stored.response)?,
                Some(m) => {
                    let row = member_rows::get(ctx.conn, &m)?.ok_or_else(|| {
                        EdgeError::NotFound(
                            "the stored answer was erased with the member's data".into(),
                        )
                    })?;
                    let key = self.vault.member_key(&m, &row.wrapped_key)?;
                    self.vault
                        .open_field(&key, &m, &seal_context(i), &stored.response)?
                        .into_bytes()
                }
            };
            return Ok(Reply {
                status: stored.status,
                body,
                replayed: true,
            });
        }
        let (status, value, seal) = op(ctx)?;
        let body = serde_json::to_vec(&value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if let Some(i) = idem {
            let (member, response) = match seal {
                Seal::Store => (None, self.vault.seal_store(&seal_context(i), &body)?),
                Seal::Member(m) => {
                    let row = member_rows::get(ctx.conn, &m)?.ok_or(EdgeError::MemberNotFound)?;
                    let key = self.vault.member_key(&m, &row.wrapped_key)?;
                    let text = String::from_utf8(body.clone())
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    (
                        Some(m),
                        self.vault.seal_field(&key, &m, &seal_context(i), &text)?,
                    )
                }
            };
            let stored = idempotency::StoredReply {
                request_hash: i.request_hash,
                status,
                member,
                response,
            };
            self.idem.put(ctx.conn, i.lane, &i.key, &stored, now)?;
        }
        Ok(Reply {
            status,
            body,
            replayed: false,
        })
    }

    /// A member's points and qualifying spend at `now`, read from their ledger
    /// snapshot (a window longer than the snapshot keeps is summed from the facts).
    fn state_of(
        &self,
        conn: &rusqlite::Connection,
        member: &[u8; 16],
        ledger: &Snapshot,
        now: Millis,
    ) -> Result<MemberState, EdgeError> {
        let tiers = self.tiers();
        let window_start = self.tier_window_start(now, &tiers);
        let qualifying_spend = match ledger.spend_after(window_start) {
            Some(n) => n,
            None => ledgers::spend_after_from_facts(conn, member, window_start)?,
        };
        Ok(MemberState {
            points: ledger.points_at(now),
            qualifying_spend,
            tiers,
        })
    }

    /// Spend counting after this instant is in the tier window at `now`: whole local
    /// days, from the day after the same date `window_months` ago through today
    /// (docs/points.md). Counting by day lets a member's ledger keep one entry per day.
    fn tier_window_start(&self, now: Millis, tiers: &TierRules) -> Millis {
        let back = self.cal.add_months(now, -(tiers.window_months as i32));
        self.cal.end_of_day(self.cal.date(back))
    }

    /// The state of a member with no ledger yet (just registered).
    fn empty_state(&self, now: Millis) -> MemberState {
        MemberState {
            points: Snapshot::default().points_at(now),
            qualifying_spend: 0,
            tiers: self.tiers(),
        }
    }

    /// A member's ledger snapshot (over every id merged into them, DESIGN.md §4) and
    /// their state at `now`: one row, whatever the length of their history.
    fn load_state(
        &self,
        conn: &rusqlite::Connection,
        member: &[u8; 16],
        now: Millis,
    ) -> Result<(Snapshot, MemberState), EdgeError> {
        let ledger = ledgers::current(conn, member)?;
        let state = self.state_of(conn, member, &ledger, now)?;
        Ok((ledger, state))
    }
}

/// Whose key seals a stored idempotent answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seal {
    /// The store key: the answer holds no personal data.
    Store,
    /// This member's key: the answer holds their personal data.
    Member([u8; 16]),
}

fn seal_context(i: &Idem) -> String {
    format!("idempotency/{}/{}", i.lane, i.key)
}

/// A member's derived numbers at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    /// Points lots and debt.
    pub points: PointsState,
    /// Qualifying spend in the tier window.
    pub qualifying_spend: i64,
    /// The thresholds in force when it was derived.
    pub tiers: TierRules,
}

impl MemberState {
    /// The tier this state reaches.
    pub fn tier(&self) -> Tier {
        Tier::for_spend(self.qualifying_spend, &self.tiers)
    }
}

/// The edge node's services.
pub struct Edge {
    /// Keys, rules, clock.
    pub core: Arc<Core>,
    /// The database.
    pub store: Store,
    lanes: RwLock<HashMap<[u8; 32], (Lane, std::time::Instant)>>,
    /// The rule set in force (None: no promotions, only core earning and tiers).
    rules: RwLock<Option<Arc<Compiled>>>,
    /// Serializes rule-set loads, so the set in memory is always the one the database
    /// last recorded as in force.
    rules_load: tokio::sync::Mutex<()>,
    /// Sync with the hub, as `/healthz` reports it.
    pub sync_status: hub_port::StatusCell,
    /// The hub as redemption authority, once enrolled (None: this edge decides alone).
    authority: RwLock<Option<Arc<redemption::HubAuthority>>>,
    /// Leases on members' points held here.
    pub leases: leases::Leases,
    /// Identified members, to the task that asks the hub for leases (once enrolled).
    lease_asks: std::sync::Mutex<Option<tokio::sync::mpsc::Sender<[u8; 16]>>>,
    /// When each phone (blind index) was last brought up to date from the hub in the
    /// background, so a cashier looking a member up again and again asks once.
    refreshed: std::sync::Mutex<std::collections::HashMap<[u8; 32], std::time::Instant>>,
    /// Member fetches from the hub under way: a stream page must not release a member
    /// whose fetch has not been stored yet (`apply_streamed`).
    fetches: std::sync::atomic::AtomicUsize,
    /// A refetch of every held phone is running (`refetch_phones`).
    refetching: std::sync::atomic::AtomicBool,
    /// A re-key pass is running (`rekey_for_chain`): one at a time.
    rekeying: std::sync::atomic::AtomicBool,
    /// The generation of this store's keys the hub last confirmed it holds (its push
    /// answer offered nothing newer); `u32::MAX`: not yet. Older keys are destroyed
    /// only once the hub translates under the current ones.
    hub_holds_generation: std::sync::atomic::AtomicU32,
    /// Lookups by phone each lane may still make.
    lookup_budget: lookups::LookupBudget,
}

impl Edge {
    /// Derives every member's ledger snapshot from the facts again; how many people's
    /// were written (`patron-edge rebuild-ledgers`).
    pub async fn rebuild_ledgers(&self) -> Result<u64, EdgeError> {
        let people = self
            .store
            .readers
            .read(|conn| Ok::<_, EdgeError>(ledgers::people(conn)?))
            .await?;
        // A transaction per few people: the writer is never held for the whole ledger.
        for chunk in people.chunks(64) {
            let chunk = chunk.to_vec();
            self.store
                .writer
                .write(move |ctx| {
                    for id in &chunk {
                        ledgers::refresh(ctx.conn, id)?;
                    }
                    Ok::<_, EdgeError>(())
                })
                .await?;
        }
        Ok(people.len() as u64)
    }

    /// Opens the store and keys in `cfg.data_dir`.
    pub fn open(cfg: Config) -> anyhow::Result<Edge> {
        Self::open_with_clock(cfg, Box::new(clock::now_millis))
    }

    /// A test edge of store `store_id` in `dir` whose clock reads the returned cell.
    #[cfg(test)]
    pub(crate) fn for_test(
        store_id: &str,
        dir: &std::path::Path,
        start: Millis,
    ) -> (Arc<Edge>, Arc<std::sync::atomic::AtomicI64>) {
        let cfg = Config {
            store_id: store_id.into(),
            // Data and keys side by side inside the test's own directory.
            data_dir: dir.join("data"),
            key_dir: Some(dir.join("keys")),
            ..Config::default()
        };
        let clock = Arc::new(std::sync::atomic::AtomicI64::new(start));
        let c = clock.clone();
        let edge = Edge::open_with_clock(
            cfg,
            Box::new(move || c.load(std::sync::atomic::Ordering::SeqCst)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        (Arc::new(edge), clock)
    }

    /// Registers a member with `phone` and `name` (tests); the member id as the API
    /// shows it.
    #[cfg(test)]
    pub(crate) async fn test_member(&self, phone: &str, name: Option<&str>) -> String {
        let reply = self
            .register(
                None,
                Actor::manager(),
                serde_json::from_value(
                    serde_json::json!({"phone": phone, "name": name, "consents": {"terms": true}}),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v["member_id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("no member id"))
    }

    /// Like [`Edge::open`], with a given clock (tests).
    pub fn open_with_clock(
        cfg: Config,
        now: Box<dyn Fn() -> Millis + Send + Sync>,
    ) -> anyhow::Result<Edge> {
        use anyhow::Context;
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
        let key_dir = crate::keys::prepare(&cfg.data_dir, &cfg.key_dir(), &cfg.store_id)?;
        let key_file = key_dir.join(crate::keys::EDGE_KEY_FILE);
        let db_path = cfg.data_dir.join(crate::store::DB_FILE);
        let missing = || {
            anyhow::anyhow!(
                "{} is missing: this database is encrypted under it; restore it (and store.key) from the key backup into {}",
                key_file.display(),
                key_dir.display()
            )
        };
        if !key_file.exists() && db_path.exists() {
            // An encrypted database without its key opens nothing, and fresh keys must
            // not be made for it; an older edge's plaintext one says by its key check
            // whether it had keys.
            if !patron_sqlite::connect::is_plaintext(&db_path)? {
                return Err(missing());
            }
            let conn = crate::store::connect(&db_path, true)?;
            if crate::store::meta_get(&conn, "key_check")?.is_some() {
                return Err(missing());
            }
        }
        // The keys the hub handed this store: its own (every generation held, while a
        // rotation re-wraps), or the chain's at a store enrolled before keys were per
        // store.
        let vault = Vault::open_or_create(&key_file)?.with_hub_keys_in(&key_dir)?;
        // The database is encrypted at rest under a key derived from this store's own.
        // Left in plaintext only by explicit configuration, and never once encrypted.
        let encrypt = cfg.storage.encrypt_at_rest
            || (db_path.exists() && !patron_sqlite::connect::is_plaintext(&db_path)?);
        if !encrypt {
            tracing::warn!(
                "the database is not encrypted at rest (storage.encrypt_at_rest = false)"
            );
        }
        let store = Store::open_keyed(
            &cfg.data_dir,
            &cfg.store_id,
            &cfg.storage,
            encrypt.then(|| Arc::new(vault.database_key())),
        )
        .map_err(|e| match e {
            crate::store::StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if f.code == rusqlite::ErrorCode::NotADatabase =>
            {
                anyhow::anyhow!(
                    "the keys in {} are not the ones this database was written under (it does not decrypt): restore this store's keys",
                    key_dir.display()
                )
            }
            e => e.into(),
        })?;
        let offset = clock::parse_offset(&cfg.utc_offset).context("utc_offset")?;
        let origin_label = format!("{}/{}", store.origin.node, store.origin.incarnation).into();
        // Built before the writer takes its first job, from the durable log.
        let conn = store.connect(false)?;
        let check = crate::store::meta_get(&conn, "key_check")?;
        let hub_keys = key_dir.join(crate::crypto::store_key_file(
            vault.key_generation().unwrap_or(1),
        ));
        match check {
            Some(c) if c != vault.key_check() => anyhow::bail!(
                "the keys in {} are not the ones this database was written under: restore this store's keys",
                key_dir.display()
            ),
            Some(_) => {}
            None => crate::store::meta_set(&conn, "key_check", &vault.key_check())?,
        }
        // The chain's keys likewise, once the store has them: members registered since
        // are wrapped under them, so losing them must stop the edge too.
        let chain = crate::store::meta_get(&conn, "chain_key_check")?;
        // A database written under an older generation is at a rotation that took the
        // newer keys and had not recorded them yet: it goes on under the newer ones.
        let held = vault.hub_key_checks();
        match (vault.chain_key_check(), chain) {
            (Some(_), Some(c)) if !held.contains(&c) => anyhow::bail!(
                "{} holds other keys than those this database was written under",
                hub_keys.display()
            ),
            (Some(v), Some(c)) if v != c => {
                crate::store::meta_set(&conn, "chain_key_check", &v)?;
            }
            (Some(v), None) => crate::store::meta_set(&conn, "chain_key_check", &v)?,
            (None, Some(_)) => anyhow::bail!(
                "{} is missing ({} at a store enrolled before keys were per store): this store is enrolled and its members are wrapped under the keys the hub handed it; restore it from the key backup",
                key_dir.join(crate::crypto::STORE_KEY_FILE).display(),
                crate::crypto::CHAIN_KEY_FILE
            ),
            _ => {}
        }
        let idem = IdemIndex::load(&conn, now())?;
        let rules = promotions::load_current(&conn)?;
        drop(conn);
        let core = Arc::new(Core {
            vault,
            member_codes: crate::member_codes::MemberCodes::load(&key_dir)?,
            cal: StoreCalendar::new(offset),
            origin_label,
            origin_id: store.origin.id,
            idem,
            code_clock: std::sync::atomic::AtomicU64::new(0),
            settings: RwLock::new(Settings {
                points: cfg.points.rules(),
                points_source: Source::Config,
                tiers: cfg.tiers.rules(),
                tiers_source: Source::Config,
            }),
            // The edge's own clock is the one it trusts; the hub clamps what runs ahead.
            hlc: std::sync::Mutex::new(patron_sync::Hlc::new(cfg.store_id.clone(), 0)),
            cfg,
            now,
        });
        let lookup_budget =
            lookups::LookupBudget::new(core.cfg.privacy.phone_lookups_per_lane_per_minute);
        Ok(Edge {
            core,
            store,
            lanes: RwLock::new(HashMap::new()),
            rules: RwLock::new(rules),
            rules_load: tokio::sync::Mutex::new(()),
            sync_status: Default::default(),
            authority: RwLock::new(None),
            leases: Default::default(),
            lease_asks: Default::default(),
            refreshed: Default::default(),
            fetches: Default::default(),
            refetching: Default::default(),
            rekeying: Default::default(),
            hub_holds_generation: std::sync::atomic::AtomicU32::new(u32::MAX),
            lookup_budget,
        })
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, EdgeError> {
        let last = self.last_own_seq().await?;
        let st = self
            .sync_status
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        // Before the worker has heard from the hub, the durable position counts.
        let acked = if st.enrolled && st.acked == 0 {
            self.hub_acked().await?
        } else {
            st.acked
        };
        let pending = (last - acked).max(0) as u64;
        let oldest_pending_secs = if pending > 0 {
            self.own_fact_at(acked + 1)
                .await?
                .map(|at| ((self.core.now() - at).max(0) / 1000) as u64)
        } else {
            None
        };
        let s = self.core.settings();
        let source = |src: Source| match src {
            Source::Hq => "hq",
            Source::Default => "default",
            Source::Config => "config",
        };
        let (limits_refused_today, limits_overridden_today, anomalies_today) =
            self.alerts_today().await;
        Ok(Health {
            settings: SettingsHealth {
                points: source(s.points_source).into(),
                tiers: source(s.tiers_source).into(),
            },
            status: "ok".into(),
            limits_refused_today,
            limits_overridden_today,
            anomalies_today,
            encrypted_at_rest: self.store.encrypted(),
            transport: self
                .core
                .cfg
                .tls
                .transport(&self.core.cfg.listen)
                .map_or("refused", |t| t.as_str())
                .into(),
            store_id: self.core.cfg.store_id.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            hub: HubHealth {
                reachable: st.reachable,
                last_sync_at: st.last_sync_at.map(|t| self.core.cal.rfc3339(t)),
                pending_facts: pending,
                leases_held: self.leases.count() as u64,
                coupon_leases_held: self.leases.coupons_count() as u64,
                enrolled: st.enrolled,
                oldest_pending_secs,
                alert: st.alert,
                last_error: st.last_error,
                protocol: st.negotiated.as_ref().map(|n| n.protocol),
                streaming: st.streaming,
            },
        })
    }
}

/// The chain-wide settings in force at this store, with their sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Earn and redeem rates, expiry.
    pub points: PointsRules,
    /// Where `points` came from.
    pub points_source: Source,
    /// Tier thresholds.
    pub tiers: TierRules,
    /// Where `tiers` came from.
    pub tiers_source: Source,
}

/// The balance a state shows, as points.
fn balance(state: &MemberState) -> Points {
    Points(state.points.balance())
}

/// The tier view of a state.
fn tier_code(state: &MemberState) -> String {
    tiers::view(state.qualifying_spend, &state.tiers).code
}

/// A background task that runs one at a time: holds its flag set while it runs, and
/// clears it however the task ends (a panic included).
pub(crate) struct Running<'a>(&'a std::sync::atomic::AtomicBool);

impl<'a> Running<'a> {
    /// Sets `flag`; `None` if the task runs already.
    pub(crate) fn start(flag: &'a std::sync::atomic::AtomicBool) -> Option<Running<'a>> {
        (!flag.swap(true, std::sync::atomic::Ordering::SeqCst)).then_some(Running(flag))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;

    /// Keys lost, or the wrong key directory: the edge refuses to run rather than make
    /// fresh keys and write new members under them beside the old ones it cannot read.
    #[tokio::test]
    async fn an_edge_refuses_keys_its_database_was_not_written_under() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (edge, _) = Edge::for_test("S001", dir.path(), T0);
        edge.test_member("13800000321", Some("Kept")).await;
        let cfg = edge.core.cfg.clone();
        drop(edge);
        let open = |cfg: &Config| Edge::open_with_clock(cfg.clone(), Box::new(|| T0));

        // The key file gone: refused, and no new key file made.
        let keys = cfg.key_dir();
        let kept = keys.join("kept.key");
        std::fs::rename(keys.join(crate::keys::EDGE_KEY_FILE), &kept)
            .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&cfg)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("edge.key is missing"), "{e}");
        assert!(!keys.join(crate::keys::EDGE_KEY_FILE).exists());

        // Another store's keys: refused.
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let stranger = Vault::open_or_create(&other.path().join("edge.key"));
        assert!(stranger.is_ok());
        std::fs::copy(
            other.path().join("edge.key"),
            keys.join(crate::keys::EDGE_KEY_FILE),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&cfg)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            e.contains("not the ones this database was written under"),
            "{e}"
        );

        // Its own keys back: it runs, and reads its member.
        std::fs::rename(&kept, keys.join(crate::keys::EDGE_KEY_FILE))
            .unwrap_or_else(|e| panic!("{e}"));
        let edge = Arc::new(open(&cfg).unwrap_or_else(|e| panic!("{e:#}")));
        let m = edge
            .member_by_phone("13800000321")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.name.as_deref(), Some("Kept"));
        drop(edge);

        // Enrolled: the keys the hub handed are checked too, and their loss stops the
        // edge, whichever file holds them.
        let store_key = keys.join(crate::crypto::STORE_KEY_FILE);
        crate::crypto::save_store_keys(&store_key, &[7u8; crate::crypto::CHAIN_KEYS_LEN])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(open(&cfg).unwrap_or_else(|e| panic!("{e:#}")));
        std::fs::remove_file(&store_key).unwrap_or_else(|e| panic!("{e}"));
        let e = open(&cfg)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("store.key is missing"), "{e}");
        // The same keys under the chain's file name (a store enrolled before keys were
        // per store) open; other keys do not.
        let chain = keys.join(crate::crypto::CHAIN_KEY_FILE);
        crate::crypto::save_chain_keys(&chain, &[7u8; crate::crypto::CHAIN_KEYS_LEN])
            .unwrap_or_else(|e| panic!("{e}"));
        drop(open(&cfg).unwrap_or_else(|e| panic!("{e:#}")));
        std::fs::remove_file(&chain).unwrap_or_else(|e| panic!("{e}"));
        crate::crypto::save_chain_keys(&chain, &[8u8; crate::crypto::CHAIN_KEYS_LEN])
            .unwrap_or_else(|e| panic!("{e}"));
        let e = open(&cfg)
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(e.contains("holds other keys than those"), "{e}");
    }
}
