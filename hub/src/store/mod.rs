//! The hub's storage, behind a trait so that a PostgreSQL backend can follow the SQLite
//! one without touching the service or the HTTP layer.

#[cfg(test)]
pub(crate) mod contract;
pub mod sqlite;

pub use crate::activity::Activity;
pub use crate::authority::{Hold, OverdrawRow};
pub use crate::ingest::{PointsRow, TypedFact};

use patron_domain::points::Movement;
use patron_protocol::Origin;
use patron_protocol::hub::{
    AuthorizeResponse, ClaimResponse, OverdrawReport, StoreStatus, SyncReport,
};
use patron_sync::profile::Profile;
use patron_sync::rights::{Lease, Rights};
use patron_sync::session::{Batch, Fact, Judgement};

/// Storage failures, the same for every backend: a backend's own errors become
/// [`StoreError::Backend`] inside that backend (`sqlite` converts `rusqlite::Error`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (the backend's error, for the log).
    #[error("database: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A store with this id (ignoring case) exists.
    #[error("store {0} exists already (store ids are unique ignoring case)")]
    StoreExists(String),
    /// No such store.
    #[error("no store {0}")]
    NoSuchStore(String),
    /// The enrollment token is unknown, used, or for another store.
    #[error("enrollment refused: {0}")]
    Enrollment(&'static str),
    /// The request names something that belongs to another store.
    #[error("{0}")]
    Conflict(&'static str),
    /// The database was written by a newer hub.
    #[error("database schema {found} is newer than this hub's {supported}")]
    TooNew {
        /// Found.
        found: i64,
        /// Supported.
        supported: i64,
    },
    /// The transaction an authorization shared with others failed.
    #[error("authorization batch: {0}")]
    Batch(String),
    /// A stored value does not parse.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// No projection of this name.
    #[error("no projection {0}")]
    NoSuchProjection(String),
    /// I/O around the database file.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// A store registered at the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    /// Store id (`S001`).
    pub store_id: String,
    /// Display name.
    pub name: String,
    /// Rollout ring.
    pub ring: String,
    /// HQ revoked the store: it is refused, and what it pushes is quarantined.
    pub revoked: bool,
    /// The generation of member keys it holds (none: not enrolled, or by a hub without
    /// keys; [`crate::keyring::CHAIN`]: the chain's).
    pub member_keys: Option<crate::keyring::Generation>,
    /// The generation HQ rotated it to (equal to `member_keys` once the store holds it).
    pub keys_offered: Option<crate::keyring::Generation>,
}

/// A store to register, with the hash of its one-time enrollment secret.
#[derive(Debug, Clone)]
pub struct NewStore<'a> {
    /// Store id.
    pub store_id: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Rollout ring.
    pub ring: &'a str,
    /// SHA-256 of the enrollment secret.
    pub enroll_hash: [u8; 32],
    /// When the secret stops working (unix ms).
    pub enroll_expires_at: i64,
    /// When (unix ms).
    pub now: i64,
}

/// One batch's outcome at ingest: the judgement and the origin's high after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// What was decided.
    pub judgement: Judgement,
    /// Highest contiguous sequence held for the batch's origin afterwards.
    pub high: u64,
    /// Members of the batch merged into the member registered first under their phone.
    pub merged: Vec<patron_sync::session::Merged>,
    /// Why the batch was refused, where the judgement's reason is not precise enough.
    pub reason: Option<String>,
    /// Stores whose stream received facts of the batch (their waiting polls wake).
    pub streamed_to: Vec<String>,
    /// Facts of the batch kept in quarantine (sequence, why), not applied.
    pub quarantined: Vec<(u64, &'static str)>,
    /// Registrations of the batch that claimed another store's member (charged to the
    /// store's lookup budget).
    pub claims: u32,
}

/// Stores of the chain: registration, enrollment, credentials, sync figures. Methods block; callers run them off the async runtime.
pub trait Stores: Send + Sync + 'static {
    /// Registers a store (not yet enrolled).
    fn add_store(&self, s: &NewStore<'_>) -> Result<(), StoreError>;

    /// Gives a registered, unrevoked store a new one-time enrollment secret (its hash),
    /// valid until `expires_at`, replacing any outstanding one; with
    /// `revoke_credential`, its current credential stops working at once (a rotation).
    fn issue_enrollment(
        &self,
        store_id: &str,
        enroll_hash: &[u8; 32],
        expires_at: i64,
        revoke_credential: bool,
    ) -> Result<(), StoreError>;

    /// Cancels a store's outstanding enrollment secret; whether there was one.
    fn cancel_enrollment(&self, store_id: &str) -> Result<bool, StoreError>;

    /// Revokes a store at `now`: its credential is refused from now on (its pushes are
    /// kept in quarantine), and it cannot enroll again. Whether it was not revoked yet.
    fn revoke_store(&self, store_id: &str, now: i64) -> Result<bool, StoreError>;

    /// Redeems an enrollment secret for `store_id` once, recording the credential's hash
    /// and, for a store never handed member keys, that it gets `keys` (a store keeps
    /// the keys it was handed first). The row returned names the keys it holds.
    fn enroll(
        &self,
        enroll_hash: &[u8; 32],
        store_id: &str,
        credential_hash: &[u8; 32],
        keys: Option<crate::keyring::Generation>,
        now: i64,
    ) -> Result<StoreRow, StoreError>;

    /// Rotates an enrolled, unrevoked store's member keys: offers it the generation
    /// after the newest it holds or was offered. The generation offered; `None` for an
    /// unknown, unenrolled or revoked store.
    fn offer_keys(&self, store_id: &str) -> Result<Option<crate::keyring::Generation>, StoreError>;

    /// Records the generation of keys a store reports holding: one it was offered, newer
    /// than the one recorded (a store never goes back to keys it rotated away from, nor
    /// to the chain's).
    fn note_key_generation(
        &self,
        store_id: &str,
        held: crate::keyring::Generation,
    ) -> Result<(), StoreError>;

    /// The data keys the hub holds of these members (those it could open: see
    /// [`crate::keyring`]), in no particular order.
    fn held_keys(&self, members: &[uuid::Uuid])
    -> Result<Vec<crate::keyring::HeldKey>, StoreError>;

    /// The enrolled store holding this credential.
    fn store_by_credential(
        &self,
        credential_hash: &[u8; 32],
    ) -> Result<Option<StoreRow>, StoreError>;

    /// Records that `store`'s clock was seen `ahead_ms` ahead of the hub's.
    fn note_clock_ahead(&self, store_id: &str, ahead_ms: i64) -> Result<(), StoreError>;

    /// Every store with its sync figures, at `now`.
    fn list_stores(&self, now: i64) -> Result<Vec<StoreStatus>, StoreError>;

    /// How many stores there are, and how many of them are enrolled (what `/healthz`
    /// shows: a point read, not a report).
    fn store_counts(&self) -> Result<(u64, u64), StoreError>;
}

/// The log of every store's facts and the projections kept with it. Methods block; callers run them off the async runtime.
pub trait FactLog: Send + Sync + 'static {
    /// Applies one store's push: for each batch, asks `judge` (given the origin's
    /// current high) what to do, applies what it says with the facts' typed projections
    /// (profile changes, points movements, registrations), and records the store's
    /// sync report. A batch whose facts could not be typed is refused whole. Pushes
    /// that arrive together may share a transaction and its fsync, each in its own
    /// savepoint: nothing of a push is applied unless all of it is, and a push that
    /// fails does not fail the others. Blocks until the push is durable.
    fn ingest(&self, job: IngestJob) -> Result<Vec<Ingested>, StoreError>;

    /// Up to `max` anomalies stores raised about their lanes (`lane_alert` facts, not
    /// quarantined), newest first.
    fn lane_alerts(&self, max: usize) -> Result<Vec<StoredFact>, StoreError>;

    /// Up to `max` facts kept in quarantine, oldest first.
    fn quarantined(
        &self,
        max: usize,
    ) -> Result<Vec<patron_protocol::hub::QuarantinedFact>, StoreError>;

    /// Rebuilds the projections that follow from each fact alone — registrations by
    /// phone index and merged profiles — from the facts, in ingest order, in one
    /// transaction: `project` types a fact of store `node` as ingest did when the hub's
    /// clock read `received_at` (`None`: the fact projects nothing, e.g. the hub's own
    /// merges). The result must equal what ingest built incrementally (tested).
    fn rebuild_projections(&self, project: &Reproject) -> Result<Rebuilt, StoreError>;

    /// Facts of `origin` after `after`, at most `max`, in sequence order.
    fn read(&self, origin: &Origin, after: u64, max: usize) -> Result<Vec<Fact>, StoreError>;

    /// Highest contiguous sequence held for `origin` (0 if none).
    fn high(&self, origin: &Origin) -> Result<u64, StoreError>;

    /// Facts held, all origins.
    fn fact_count(&self) -> Result<u64, StoreError>;
}

/// What the redemption authority keeps: holds, leases, movements, overdraws. Methods block; callers run them off the async runtime.
pub trait AuthorityStore: Send + Sync + 'static {
    /// Loads the member's points movements and the points held for other sales, asks
    /// `decide`, and holds `points` for `txn` until `until` if it grants, durably
    /// before answering. Authorizations are served in turn (two stores asking for one
    /// member never both get the same points); ones that arrive together may share a
    /// transaction and its fsync. A hold already recorded for `txn` is granted again.
    /// Returns at once: the answer comes through [`PendingAnswer`], so an async caller
    /// holds no thread while it waits.
    fn authorize(&self, hold: Hold, decide: Decide) -> Result<PendingAnswer, StoreError>;

    /// Counts the member's claims of the counter over every store's facts and every
    /// id of the person, with the claims held for other asks and the store's unsynced
    /// ones, and holds this one until `until` if [`crate::authority::decide_claim`]
    /// grants it, durably before answering; in turn with every other authorization.
    /// A hold already recorded for the claim is granted again.
    fn authorize_claim(
        &self,
        ask: crate::authority::ClaimHold,
    ) -> Result<PendingAnswer<ClaimResponse>, StoreError>;

    /// Runs `work` in one write transaction over what the authority keeps, serialized
    /// with every other write: committed if `work` returns `Ok`, rolled back (nothing
    /// of it kept) if it returns `Err`, which is passed on. The rules of what to write
    /// stay with the caller (`crate::redemption`); the backend only reads and writes.
    fn authority_tx(
        &self,
        work: &mut dyn FnMut(&dyn AuthorityTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Drops the hold of `store`'s claim `claim` (its transaction failed); whether
    /// there was one.
    fn drop_claim_hold(&self, claim: &str, store: &str) -> Result<bool, StoreError>;

    /// Drops `store`'s lease on `member` (only the one ending at `lease`, if given);
    /// whether there was one.
    fn return_lease(
        &self,
        member: &str,
        store: &str,
        lease: Option<i64>,
    ) -> Result<bool, StoreError>;

    /// Every member id of the person whose surviving id is `root` (`root` first, then
    /// the ids merged into it).
    fn person_ids(&self, root: &str) -> Result<Vec<String>, StoreError>;

    /// A member's points movements, every origin, each with whether it was an offline
    /// spend.
    fn movements(&self, member: &str) -> Result<Vec<(Movement, bool)>, StoreError>;

    /// Every recorded overdraw and flag.
    fn overdraw_report(&self) -> Result<OverdrawReport, StoreError>;
}

/// What the redemption authority reads and writes inside one
/// [`AuthorityStore::authority_tx`]: every read sees the transaction's own writes.
pub trait AuthorityTx {
    /// A member's points movements over every id merged into them (every origin),
    /// each with whether it was an offline spend.
    fn movements(&self, member: &str) -> Result<Vec<(Movement, bool)>, StoreError>;

    /// The member's balance at `now` over every id merged into them (every origin):
    /// what [`crate::authority::spendable`] gives over [`AuthorityTx::movements`].
    fn balance(&self, member: &str, now: i64) -> Result<i64, StoreError>;

    /// Points held for the member's authorized sales still open at `now`.
    fn held(&self, member: &str, now: i64) -> Result<i64, StoreError>;

    /// The member's leases, every store.
    fn rights(&self, member: &str) -> Result<Rights, StoreError>;

    /// Forgets the member's leases that ran out by `now`.
    fn drop_expired_leases(&self, member: &str, now: i64) -> Result<(), StoreError>;

    /// Records `lease` as `store`'s lease on the member (replacing any it had).
    fn put_lease(&self, member: &str, store: &str, lease: &Lease) -> Result<(), StoreError>;

    /// Forgets `store`'s lease on the member.
    fn drop_lease(&self, member: &str, store: &str) -> Result<(), StoreError>;

    /// Catalogue units of `sku` every store's sales gave (chain-wide stock).
    fn stock_given(&self, sku: &str) -> Result<i64, StoreError>;

    /// Units of `sku` reserved at `now` for sales other than `except_txn`.
    fn stock_held(&self, sku: &str, now: i64, except_txn: &str) -> Result<i64, StoreError>;

    /// The store holding a reservation for sale `txn` at `now`, if any.
    fn stock_holder(&self, txn: &str, now: i64) -> Result<Option<String>, StoreError>;

    /// Reserves `items` (SKU, units) for `store`'s sale `txn` until `until`, replacing
    /// what that sale held; reservations ended by `now` go.
    fn hold_stock(
        &self,
        txn: &str,
        items: &[(String, i64)],
        store: &str,
        now: i64,
        until: i64,
    ) -> Result<(), StoreError>;

    /// Drops `store`'s reservation for sale `txn`; whether it held one.
    fn release_stock(&self, txn: &str, store: &str) -> Result<bool, StoreError>;

    /// Makes `store` the holder of the member's coupons until `until`; the store that
    /// held them before, if another and its hold had not ended by `now`.
    fn take_coupons(
        &self,
        member: &str,
        store: &str,
        until: i64,
        now: i64,
    ) -> Result<Option<String>, StoreError>;
}

/// Members across stores: merges, fetches by phone, merged profiles. Methods block; callers run them off the async runtime.
pub trait Members: Send + Sync + 'static {
    /// A member's profile, merged field by field over every store's facts and every id
    /// merged into the same member.
    fn profile(&self, member: &str) -> Result<Option<Profile>, StoreError>;

    /// The member `member` stands for: its survivor if it was merged, else itself.
    fn root_member(&self, member: &str) -> Result<String, StoreError>;

    /// What the hub knows of `member` (16-byte id) for `store`'s rights: the member's
    /// home store, if the hub has seen them, and whether it let `store` hold them.
    fn standing(
        &self,
        store: &str,
        member: &[u8; 16],
    ) -> Result<(Option<String>, bool), StoreError>;

    /// Up to `max` facts of the members registered under `phone_idx` (the chain-wide
    /// blind index, base64), from every origin, after ingest position `after`; with the
    /// position of the last one (`after` if none) and whether more follow. `store`
    /// holds those members from now on: their later facts reach it by its stream.
    fn member_facts_by_phone(
        &self,
        store: &str,
        phone_idx: &str,
        after: u64,
        max: usize,
    ) -> Result<(Vec<Fact>, u64, bool), StoreError>;
}

/// Each store's stream of the facts of the members it holds. Methods block; callers run them off the async runtime.
pub trait Streams: Send + Sync + 'static {
    /// Up to `max` facts of the stream of `store` (patron_sync::stream) after
    /// position `after`, with the store's horizon and the hub's last position, read
    /// in one snapshot. Required of every backend: no fact at or below `end` may
    /// become visible after this read (positions are assigned in commit order), or a
    /// store that moved its cursor to `end` would skip it.
    fn stream(&self, store: &str, after: u64, max: usize) -> Result<StreamRead, StoreError>;

    /// `store` no longer holds these members (16-byte ids): it stops receiving their
    /// facts, unless it fetched them after position `after`. Returns how many it held.
    fn release(&self, store: &str, members: &[[u8; 16]], after: u64) -> Result<usize, StoreError>;

    /// Forgets, for every store, the stream positions of facts received before
    /// `before` (unix ms) that it has not acknowledged; a store that loses any has its
    /// horizon moved past them (it must refetch when it polls again). Returns how many
    /// positions were forgotten.
    fn expire_streams(&self, before: i64) -> Result<u64, StoreError>;
}

/// HQ documents and each store's sync state of them. Methods block; callers run them off the async runtime.
pub trait Documents: Send + Sync + 'static {
    /// An HQ document's bytes.
    fn load_doc(&self, doc_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores an HQ document.
    fn save_doc(&self, doc_id: &str, bytes: &[u8], now: i64) -> Result<(), StoreError>;

    /// The persisted sync state of `peer` for a document.
    fn load_doc_state(&self, doc_id: &str, peer: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Persists the sync state of `peer` for a document.
    fn save_doc_state(&self, doc_id: &str, peer: &str, state: &[u8]) -> Result<(), StoreError>;
}

/// Projections behind the ingest cursor (`projections.rs`): each keeps its own
/// position in the facts' ingest order and its rows, written together. Methods block;
/// callers run them off the async runtime.
pub trait Projections: Send + Sync + 'static {
    /// Folds the member facts after the activity projection's position, at most
    /// `max`, into their members' rows with `fold`, and writes the rows and the new
    /// position in one transaction. The facts and the rows are read in one snapshot
    /// off the writer; a step that read before a [`Projections::reset_projection`]
    /// writes nothing. A fact that no longer parses is skipped, counted and logged.
    fn step_activity(&self, max: usize, fold: crate::activity::Fold) -> Result<Step, StoreError>;

    /// Judges the spends after the overdraws projection's position, at most `max`
    /// facts: each spender's movements over every id are read in one snapshot off the
    /// writer and `rule` finds the overdrawing spends, which are recorded (once per
    /// fact) with the new position in one transaction. `folded` counts the spends
    /// judged; the return's `recorded` how many overdraws were new.
    fn step_overdraws(
        &self,
        max: usize,
        rule: OverdrawRule,
        now: i64,
    ) -> Result<(Step, usize), StoreError>;

    /// Empties projection `name` and puts it back at the start of the log.
    fn reset_projection(&self, name: &str) -> Result<(), StoreError>;

    /// The activity rows of every id of the person `member` (a member id) stands for:
    /// its survivor and every id merged into it.
    fn activity_rows(&self, member: &str) -> Result<Vec<Activity>, StoreError>;

    /// Every member id's activity row, by id (exports, and the rebuild test).
    fn all_activity(&self) -> Result<Vec<(uuid::Uuid, Activity)>, StoreError>;

    /// Where each projection stands against the end of the log.
    fn projection_positions(&self) -> Result<Vec<ProjectionPosition>, StoreError>;
}

/// What one step of a projection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Member facts handed to the fold (which may pass over some, e.g. merges).
    pub folded: u64,
    /// Facts skipped because they no longer parse (damage).
    pub unreadable: u64,
    /// The projection's position afterwards.
    pub position: u64,
    /// The log's last position when the step read it.
    pub end: u64,
}

/// A fact as the log holds it, with who pushed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFact {
    /// Its position in the hub's log.
    pub position: u64,
    /// The store that pushed it.
    pub store_id: String,
    /// When the hub received it (unix ms).
    pub received_at: i64,
    /// The fact (its JSON text).
    pub body: String,
}

/// Where a projection stands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectionPosition {
    /// Its name.
    pub name: String,
    /// The last ingest position folded in.
    pub position: u64,
    /// The log's last position.
    pub end: u64,
}

/// Everything the hub stores: each capability above. A backend implements them all and
/// must pass the storage contract suite (`store::contract`).
pub trait HubStore:
    Stores + FactLog + AuthorityStore + Members + Streams + Documents + Projections
{
}

impl<T: Stores + FactLog + AuthorityStore + Members + Streams + Documents + Projections> HubStore
    for T
{
}

/// What the stream holds for a store after a position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamRead {
    /// The facts at their positions, in order.
    pub facts: Vec<(u64, Fact)>,
    /// More follow the last one.
    pub more: bool,
    /// Positions up to here were forgotten for the store (it acknowledged them).
    pub horizon: u64,
    /// The hub's last position.
    pub end: u64,
    /// The mark of the fact at `end` (0: none).
    pub end_mark: u64,
    /// The mark of the fact at the position asked after (0: none there).
    pub mark_at_cursor: u64,
}

/// One batch of a push: as it arrived, and its facts typed (or why they are not).
#[derive(Debug)]
pub struct IncomingBatch {
    /// The batch.
    pub batch: Batch,
    /// What could be judged without the log (`patron_sync::session::check`: size,
    /// origin, checksum, sequence shape), done before the push reaches the writer.
    pub checked: Result<(), &'static str>,
    /// Its facts in order, typed; or why the batch is refused whole.
    pub typed: Result<Vec<TypedFact>, String>,
}

/// The rule that places a checked batch against what the hub holds of its origin
/// (`patron_sync::session::place`: already held, a gap, or what to apply).
pub type Judge = fn(high: u64, batch: &Batch) -> Judgement;

/// The rule that finds the overdrawing spends of a member (the survivor of any merge)
/// from their movements over every id (`crate::authority::overdraws`).
pub type OverdrawRule =
    fn(member: &str, movements: Vec<(Movement, bool)>, now: i64) -> Vec<OverdrawRow>;

/// Types a held fact again for a rebuild: (origin node, body, received_at) → its
/// projections, `Ok(None)` if it has none, `Err` if it no longer parses.
pub type Reproject = dyn Fn(&str, &str, i64) -> Result<Option<TypedFact>, String>;

/// What a rebuild of the projections did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Facts read.
    pub facts: u64,
    /// Registrations written.
    pub registrations: u64,
    /// Members whose profile was written.
    pub profiles: u64,
    /// Member aliases (merges) written.
    pub aliases: u64,
    /// Claims of limited entitlements counted.
    pub claims: u64,
    /// Facts that did not parse (none were accepted that way; a count here is damage).
    pub unreadable: u64,
}

/// One store's push, ready to apply.
#[derive(Debug)]
pub struct IngestJob {
    /// The authenticated store.
    pub store_id: String,
    /// What it reported about itself.
    pub report: SyncReport,
    /// Its batches, typed.
    pub batches: Vec<IncomingBatch>,
    /// How each batch is judged.
    pub judge: Judge,
    /// An offline spend flags its member if another store saw an offline spend of
    /// theirs within this many ms.
    pub flag_window_ms: i64,
    /// What one fact may carry.
    pub limits: crate::ingest::FactLimits,
    /// Every fact applied is quarantined, for this reason (a revoked store's push).
    pub quarantine_all: Option<&'static str>,
    /// Registrations of the push that may claim another store's member
    /// ([`crate::ingest::claims_another_store_s_member`]); beyond, quarantined.
    pub claim_budget: u32,
    /// The hub's clock (unix ms).
    pub now: i64,
}

/// An authorization queued for the store's next transaction.
#[derive(Debug)]
pub struct PendingAnswer<T = AuthorizeResponse>(
    pub(crate) tokio::sync::oneshot::Receiver<Result<T, StoreError>>,
);

impl<T> PendingAnswer<T> {
    /// Waits for the answer without holding a thread.
    pub async fn wait(self) -> Result<T, StoreError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Batch("the authorizer failed".into())))
    }

    /// Waits for the answer on this thread (never inside an async task).
    pub fn wait_blocking(self) -> Result<T, StoreError> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(StoreError::Batch("the authorizer failed".into())))
    }
}

/// The rule that decides an authorization from the member's balance over every
/// store's facts, the points held for other sales and leases (the asking store's own
/// included), and how much of the asking store's lease it may use; a plain function
/// so that the authorizer thread can decide asks queued by any caller.
pub type Decide = fn(i64, i64, i64, &Hold) -> AuthorizeResponse;
