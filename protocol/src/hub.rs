//! Messages between an edge and the hub: enrollment, sync status, redemption authority
//! and HQ documents. The ledger entry a sync fact carries is `patron_domain::Entry`.

use serde::{Deserialize, Serialize};

use crate::ids::Origin;

/// The sync protocol this build speaks. A hub serves it and the one before
/// ([`MIN_PROTOCOL`]), so stores one release behind keep syncing during a rollout.
/// 1: push, refetch, member fetch, leases, HQ documents. 2: adds the hub-to-store
/// stream (`POST /v1/sync/stream`).
pub const PROTOCOL: u32 = 2;

/// The oldest protocol a hub of this build serves.
pub const MIN_PROTOCOL: u32 = 1;

/// A protocol version and what the hub offers under it, as agreed at enrollment and
/// again on every push (the heartbeat): a hub upgraded or rolled back between two
/// pushes is noticed at the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Negotiated {
    /// The version both sides use: the lower of the two.
    pub protocol: u32,
    /// What the hub offers at that version ([`capability`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// Names of what a hub may offer.
pub mod capability {
    /// `POST /v1/sync/stream`: the facts of the members a store holds, by cursor.
    pub const STREAM: &str = "stream";
}

impl Negotiated {
    /// The hub's side: the version for a store that speaks `asked` (absent: 1, the
    /// protocol before versions were sent); `None` if this hub no longer serves it.
    pub fn for_store(asked: Option<u32>) -> Option<Self> {
        let asked = asked.unwrap_or(1);
        if asked < MIN_PROTOCOL {
            return None;
        }
        let protocol = asked.min(PROTOCOL);
        let mut capabilities = Vec::new();
        if protocol >= 2 {
            capabilities.push(capability::STREAM.to_string());
        }
        Some(Self {
            protocol,
            capabilities,
        })
    }

    /// Whether the hub offers `name`.
    pub fn offers(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

/// `POST /v1/enroll`: a store exchanges its one-time token for a credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The secret part of the enrollment token.
    pub secret: String,
    /// The store id the edge is configured with (must match the token's).
    pub store_id: String,
    /// The newest sync protocol the edge speaks (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// A PKCS#10 signing request (PEM) for the key of the edge's POS API, which the
    /// hub's store-LAN CA certifies. Absent from older edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_csr: Option<String>,
}

/// Most names a store's LAN certificate carries.
pub const MAX_LAN_NAMES: usize = 16;

/// Whether the hub certifies `name` for a store's POS API: an IP address, or a DNS
/// name without wildcards (letters, digits, `-` and `.`, at most 253 characters).
pub fn valid_lan_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_ok()
        || (!name.is_empty()
            && name.len() <= 253
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
}

/// The hub's answer to an enrollment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The enrolled store.
    pub store_id: String,
    /// The store's sync credential (shown once; the hub keeps only its hash).
    pub credential: String,
    /// The rollout ring the store is in.
    pub ring: String,
    /// The hub CA certificate (PEM) the edge pins.
    pub ca_pem: String,
    /// The chain's member keys (base64 of 64 bytes: the phone blind-index key, then the
    /// key that wraps member data keys), so every store finds a phone under the same
    /// index and can read a member another store registered. Absent from older hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_keys: Option<String>,
    /// This store's own member keys (base64 of 64 bytes: the phone blind-index key,
    /// then the key that wraps member data keys), which no other store holds: the hub
    /// translates between stores (`patron_sync::pull::MemberKeys`). Handed out instead
    /// of `chain_keys` by hubs that derive keys per store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_keys: Option<String>,
    /// The protocol agreed (absent from hubs before versions were sent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<Negotiated>,
    /// The POS API's certificate the store-LAN CA issued for `lan_csr` (PEM: the
    /// certificate, then the CA). Absent when none was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lan_certificate: Option<String>,
    /// The public key member codes are checked with (base64 of 32 bytes, Ed25519;
    /// `patron_domain::member_code`). Absent from hubs without member keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_code_key: Option<String>,
}

// Secrets stay out of Debug output (and so out of any log that formats these).
impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for EnrollResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollResponse")
            .field("store_id", &self.store_id)
            .field("ring", &self.ring)
            .finish_non_exhaustive()
    }
}

/// What a store tells the hub alongside a push (for the store list and the watchdog).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// The store's own origin now (node + incarnation).
    pub origin: Option<Origin>,
    /// The highest sequence the store has written in that origin.
    pub last_seq: u64,
    /// The newest sync protocol the store speaks (absent: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u32>,
    /// The store's stream cursor: every position up to it is applied there, so the hub
    /// may forget them (absent: the store does not follow the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_after: Option<u64>,
    /// The mark of the fact at `stream_after` (patron_sync::stream::mark): the hub
    /// forgets nothing for a cursor whose fact it does not hold there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_mark: Option<u64>,
    /// The generation of member keys the store holds (0: the chain's; absent: none, or
    /// a store from before rotation, taken as the generation it was handed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_generation: Option<u32>,
    /// Whether the store holds the key member codes are checked with (false: the
    /// answer carries it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub has_member_code_key: bool,
}

/// `POST /v1/sync/push` body: the report and the push itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushRequest<P> {
    /// The store's state.
    pub report: SyncReport,
    /// The facts.
    pub push: P,
}

/// The hub's answer to a push: the sync acknowledgement and the protocol agreed for
/// the store (absent from hubs before versions were sent: 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAnswer<A> {
    /// The acknowledgement.
    #[serde(flatten)]
    pub ack: A,
    /// The protocol agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negotiated: Option<Negotiated>,
    /// New member keys for the store, when HQ rotated them and the store does not hold
    /// them yet (`patron-hub store rotate-keys`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<OfferedKeys>,
    /// The public key member codes are checked with (base64), to a store that reports
    /// not holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_code_key: Option<String>,
}

/// A new generation of a store's member keys.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferedKeys {
    /// The generation (1 and up).
    pub generation: u32,
    /// The keys (base64 of 64 bytes: the phone blind-index key, then the wrapping key).
    pub keys: String,
}

impl std::fmt::Debug for OfferedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfferedKeys")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// One store as the hub lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    /// Store id.
    pub store_id: String,
    /// Display name.
    pub name: String,
    /// Rollout ring.
    pub ring: String,
    /// Whether it has enrolled.
    pub enrolled: bool,
    /// Last successful sync (unix ms), if any.
    pub last_sync_at: Option<i64>,
    /// Milliseconds since the last sync (at the time of listing).
    pub lag_ms: Option<i64>,
    /// Facts the store reported written but the hub does not hold yet.
    pub pending: u64,
    /// Facts held from this store, all incarnations.
    pub facts: u64,
    /// How far ahead of the hub this store's clock was last seen (ms), if ever.
    #[serde(default)]
    pub clock_ahead_ms: Option<i64>,
    /// When HQ revoked the store (unix ms), if it did.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// Facts of this store kept in quarantine for review (not applied).
    #[serde(default)]
    pub quarantined: u64,
    /// The generation of member keys it holds: 0 the chain's (a store enrolled before
    /// keys were per store: docs/keys.md), 1 and up its own; absent if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_generation: Option<u32>,
    /// The generation HQ rotated it to, while the store does not hold it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_offered: Option<u32>,
}

/// An anomaly a store raised about one of its lanes (`patron-hub alerts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneAlert {
    /// Its position in the hub's log.
    pub position: u64,
    /// The store.
    pub store_id: String,
    /// The lane's name.
    pub lane: String,
    /// The store day (`YYYY-MM-DD`).
    pub day: String,
    /// `earn_rate` (points earned far above the lane's usual day) or
    /// `lookups_without_sales`.
    pub anomaly: String,
    /// The day's figure when raised: points earned, or lookups.
    pub figure: i64,
    /// What it was judged against: the lane's usual day, or its member sales.
    pub against: i64,
    /// When the store raised it (unix ms, the store's clock).
    pub at: i64,
    /// When the hub received it (unix ms).
    pub received_at: i64,
}

/// A store's fact the hub kept in quarantine instead of applying it (`GET
/// /v1/quarantine`, `patron-hub quarantine list`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantinedFact {
    /// Its position in the hub's log.
    pub position: u64,
    /// The store that pushed it.
    pub store_id: String,
    /// Its origin's incarnation.
    pub incarnation: String,
    /// Its sequence in that origin.
    pub seq: u64,
    /// Its kind.
    pub kind: String,
    /// Why it was quarantined.
    pub reason: String,
    /// When the hub received it (unix ms).
    pub received_at: i64,
}

/// `POST /v1/sync/refetch`: a store asks for facts of one of its own origins back (a
/// database restored from an older copy recovers what the hub already holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefetchRequest {
    /// One of the asking store's origins.
    pub origin: Origin,
    /// Facts after this sequence.
    pub after: u64,
    /// At most this many (capped at 1000).
    pub max: usize,
}

/// `POST /v1/docs/sync`: one step of an HQ document's sync (automerge sync messages,
/// base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocSync {
    /// The document (`ring:<ring>`).
    pub doc: String,
    /// The message, if the sender has one.
    #[serde(default)]
    pub message: Option<String>,
    /// The first step of a session: the hub starts from the persisted sync state (what
    /// it believed in flight from an earlier, broken-off session is forgotten).
    #[serde(default)]
    pub fresh: bool,
}

/// `POST /v1/redeem/authorize`: a store asks the hub, which sees every store's
/// redemptions in order, whether a member may spend points now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// The member (UUID).
    pub member: String,
    /// The sale that will spend them (UUID); the hold is settled by its fact.
    pub txn: String,
    /// Points to spend (> 0).
    pub points: i64,
    /// What the store's facts the hub has not acknowledged yet add to the member's
    /// balance: points earned there (less reversals and offline spends). May be
    /// negative.
    pub unsynced: i64,
    /// What the asking store set aside of its own lease on the member for this ask
    /// (its lease's remainder, or 0): the hub may use up to this much of the lease for
    /// what the member's free points do not cover.
    #[serde(default)]
    pub lease_left: i64,
    /// How long the store waits for the answer (ms; 0: not said). The hub spends at
    /// most half of it waiting for leases it recalls from other stores.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub budget_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `POST /v1/leases`: a store that identified a member while the hub is reachable asks
/// for a lease on part of the member's points, to redeem within offline. The store
/// must have pushed its facts before asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// The member (UUID).
    pub member: String,
    /// Only the member's coupons: the store holds a lease on their points already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coupons_only: bool,
}

/// The hub's answer to a [`LeaseRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// Points leased (0: none granted).
    pub points: i64,
    /// How long the store may redeem under the lease, counted from when it asked (ms).
    pub duration_ms: i64,
    /// Why none was granted, if none was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Which lease this is (0: none granted, or a hub that does not say): a return
    /// naming it gives back this lease only, never a later one of the same store.
    #[serde(default)]
    pub lease: i64,
    /// How long the store holds the member's coupons for use while it cannot reach the
    /// hub, counted from when it asked (ms; 0: not granted, or a hub that does not).
    /// The store where a member was last identified online holds them; the one before
    /// is asked to let go through its stream.
    #[serde(default)]
    pub coupons_ms: i64,
}

/// `POST /v1/leases/return`: the store gives a lease back (after pushing its spends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReturn {
    /// The member (UUID).
    pub member: String,
    /// Points the store spent under the lease in all, when it gives the lease back
    /// before the hub holds every such spend (a recall): the hub keeps counting those
    /// not yet arrived. Absent: the store pushed them all first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<i64>,
    /// The lease given back ([`LeaseResponse::lease`]); absent: whatever lease the
    /// store holds on the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
}

/// The hub's answer to a [`LeaseReturn`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseReturned {
    /// Whether the hub held a lease of this store on the member.
    pub returned: bool,
}

/// The hub's answer to an [`AuthorizeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeResponse {
    /// The points are held for this sale until its fact arrives (or the hold expires).
    pub granted: bool,
    /// What the member may spend, as the hub sees it, before this request (with what
    /// the store set aside of its lease).
    pub available: i64,
    /// Points of the granted sale taken from the asking store's lease (which shrinks by
    /// as much, at the hub and at the store).
    #[serde(default)]
    pub lease_used: i64,
    /// On a refusal: other stores' leases that still hold part of the member's points
    /// for their offline use, which the hub could not recall in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<Reserved>,
}

/// Points of a member leased to a store (for its offline use).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    /// The store holding them.
    pub store: String,
    /// How many.
    pub points: i64,
}

/// One redemption that drove a member's balance below zero (a debt later earnings repay
/// first), as `GET /v1/overdraws` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overdraw {
    /// The member (UUID).
    pub member: String,
    /// The store whose redemption overdrew.
    pub store: String,
    /// When (unix ms).
    pub at: i64,
    /// Points the balance could not cover.
    pub points: i64,
    /// Authorized offline (floor limit) rather than by the hub.
    pub offline: bool,
}

/// A member who redeemed offline at two stores within an hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionFlag {
    /// The member (UUID).
    pub member: String,
    /// The first store and when (unix ms).
    pub first_store: String,
    /// When at the first store.
    pub first_at: i64,
    /// The second store.
    pub second_store: String,
    /// When at the second store.
    pub second_at: i64,
}

/// `GET /v1/overdraws`: debts from redemptions and members flagged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdrawReport {
    /// Overdrawing redemptions, oldest first.
    pub overdraws: Vec<Overdraw>,
    /// Members flagged for offline redemptions at two stores within an hour.
    pub flags: Vec<RedemptionFlag>,
    /// Entitlements claimed beyond their limit (offline claims at several stores).
    #[serde(default)]
    pub over_claims: Vec<OverClaim>,
}

/// `POST /v1/claims`: a store asks the hub, which counts every store's claims, whether
/// a member may use a limited entitlement once more (`patron_domain::claims`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRequest {
    /// The member (UUID).
    pub member: String,
    /// The claim (UUID): the `claim` fact's transaction, which settles the hold.
    pub claim: String,
    /// What is claimed (`check_in`, `benefit:dry_cleaning`, …).
    pub entitlement: String,
    /// The period it counts in (`once`, `YYYY-MM-DD`, `YYYY-MM`).
    pub period: String,
    /// Claims allowed per period, as the store knows it.
    pub limit: u32,
    /// The store's claims of this counter the hub has not acknowledged yet.
    #[serde(default)]
    pub unsynced: i64,
}

/// The hub's answer to a [`ClaimRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimResponse {
    /// Allowed, and counted (held) until its fact arrives or the hold lapses.
    pub granted: bool,
    /// Claims the hub counted before this one (facts, holds, the store's unsynced).
    pub used: i64,
    /// The limit it counted against.
    pub limit: u32,
}

/// `POST /v1/claims/release`: the store did not record a claim the hub granted (its
/// transaction failed): the hub stops holding it rather than let it lapse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRelease {
    /// The claim (UUID) as asked.
    pub claim: String,
}

/// The hub's answer to a [`ClaimRelease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimReleased {
    /// Whether the hub held the claim for this store.
    pub released: bool,
}

/// `POST /v1/stock/reserve`: a sale about to give catalogue items with a chain-wide
/// stock reserves their units at the hub (all of them or none) until its purchase
/// fact arrives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRequest {
    /// The sale's transaction (UUID): its purchase fact settles the reservation.
    pub txn: String,
    /// The items and units.
    pub items: Vec<StockItem>,
}

/// Units of one catalogue item a sale takes, and the chain-wide stock the store's rule
/// set gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockItem {
    /// The item's SKU.
    pub sku: String,
    /// Units the sale gives (1 or more).
    pub units: i64,
    /// The item's chain-wide stock (`stock_chain`).
    pub stock: u32,
}

/// The hub's answer to a [`StockRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockResponse {
    /// Every item's units are reserved.
    pub granted: bool,
    /// Per item asked, the units free before this reservation (given and reserved
    /// ones taken off).
    pub left: Vec<StockLeft>,
}

/// Units of an item still free chain-wide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLeft {
    /// The item's SKU.
    pub sku: String,
    /// Units free.
    pub left: i64,
}

/// `POST /v1/stock/release`: the store did not record the sale it reserved units for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRelease {
    /// The sale's transaction (UUID), as reserved.
    pub txn: String,
}

/// The hub's answer to a [`StockRelease`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    /// Whether the hub held units for that sale of this store.
    pub released: bool,
}

/// A member's entitlement claimed beyond its limit, as `GET /v1/overdraws` lists it:
/// the extra rewards were given (offline, at stores that could not know of each
/// other's claims) and are reported, not taken back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverClaim {
    /// The member (UUID; the survivor of any merge).
    pub member: String,
    /// What was claimed.
    pub entitlement: String,
    /// The period.
    pub period: String,
    /// Net claims the hub holds.
    pub claimed: i64,
    /// The limit (the smallest any claim carried).
    pub limit: u32,
    /// Stores that claimed it, sorted.
    pub stores: Vec<String>,
}
