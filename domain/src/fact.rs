//! The ledger entry, typed once.
//!
//! Every fact a store or the hub writes is an [`Entry`]: a header every kind shares
//! (when, which member, which transaction, the points it moves and the qualifying
//! spend it adds) and a [`Detail`] whose shape its [`Kind`] fixes. A fact is parsed once
//! where it enters a process ([`Entry::parse`]) and read through these types from then
//! on; nothing matches on kind strings or reaches into the details' JSON by hand.
//!
//! **Byte stability.** A fact is immutable and identified by `(origin, seq)`; the hub
//! compares a resent fact with the one it holds byte for byte. So an entry keeps its
//! details exactly as they were written ([`Entry::body`]), and [`Entry::to_json`] writes
//! the header in the one order and with the one set of omitted zero fields that every
//! earlier version wrote: a fact parsed and written again is the same text (tested
//! against a fixture of every kind written by the code before this module existed).
//!
//! **Versions.** [`SCHEMA_VERSION`] is the entry schema this code writes and reads. A
//! version-1 entry omits `v`, so every fact written before versions existed is version 1.
//! An entry of a newer version is refused with [`FactError::NewerSchema`], never read
//! with guessed defaults.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::hlc::Stamp;

/// The entry schema this code writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a fact is not a valid entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FactError {
    /// Not JSON, or the header is not an entry's.
    #[error("not a ledger entry: {0}")]
    Malformed(String),
    /// A kind this code does not know.
    #[error("unknown fact kind `{0}`")]
    UnknownKind(String),
    /// Written by a newer schema than this code reads.
    #[error("entry schema {found} is newer than this code's {supported}")]
    NewerSchema {
        /// The entry's version.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// The details do not have the shape the kind requires.
    #[error("{kind} details: {why}")]
    Detail {
        /// The fact's kind.
        kind: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The header breaks a rule every entry keeps.
    #[error("{kind}: {why}")]
    Invalid {
        /// The fact's kind.
        kind: &'static str,
        /// Which rule.
        why: &'static str,
    },
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal, member: $needs:literal;)*) => {
        /// What a fact records. The names are the wire names, fixed forever.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($(#[$doc])* $variant,)*
        }

        impl Kind {
            /// Every kind.
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The wire name (`purchase`, `member_registered`, …).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            /// The kind of a wire name.
            pub fn parse(name: &str) -> Option<Kind> {
                match name {
                    $($name => Some(Kind::$variant),)*
                    _ => None,
                }
            }

            /// Whether a fact of this kind is always about a member.
            pub const fn needs_member(self) -> bool {
                match self {
                    $(Kind::$variant => $needs,)*
                }
            }
        }
    };
}

kinds! {
    /// A member joined at a store.
    MemberRegistered = "member_registered", member: true;
    /// A member's profile changed.
    MemberUpdated = "member_updated", member: true;
    /// A member registered before its store enrolled moved under the chain's keys.
    MemberRekeyed = "member_rekeyed", member: true;
    /// The hub merged a member into the one registered first under the same phone.
    MemberMerged = "member_merged", member: true;
    /// A sale (walk-in sales have no member).
    Purchase = "purchase", member: false;
    /// A refund of part or all of a sale.
    Refund = "refund", member: false;
    /// Points spent outside a sale.
    Redemption = "redemption", member: true;
    /// Points for a behaviour (check-in, share, review, …).
    Event = "event", member: true;
    /// A coupon given to a member outside a sale.
    CouponIssued = "coupon_issued", member: true;
    /// A member claimed a coupon that waited for a claim.
    CouponClaimed = "coupon_claimed", member: true;
    /// A refund gave back a coupon the sale used.
    CouponRestored = "coupon_restored", member: true;
    /// A refund withdrew a coupon the sale granted.
    CouponWithdrawn = "coupon_withdrawn", member: true;
    /// One use of a tier benefit's monthly quota.
    BenefitUsed = "benefit_used", member: true;
    /// Points given on reaching a tier.
    UpgradeGift = "upgrade_gift", member: true;
    /// Points given to a referrer.
    ReferralReward = "referral_reward", member: true;
    /// A refund took back the points a tier-upgrade gift gave.
    GiftWithdrawn = "gift_withdrawn", member: true;
    /// A store raised an anomaly about one of its lanes.
    LaneAlert = "lane_alert", member: false;
    /// One use of a limited entitlement, counted chain-wide (or one given back).
    Claim = "claim", member: true;
    /// A referral the store could not credit itself (the referrer is not held there),
    /// for the hub to settle.
    ReferralDue = "referral_due", member: true;
    /// Points a member-service desk added (earn) or took (spend) by hand.
    Adjustment = "adjustment", member: true;
    /// Points one member sent another: a spend on the sender, an earn on the receiver.
    Transfer = "transfer", member: true;
    /// A member's phone number changed: the member moves to the new phone's index, and
    /// the old number no longer finds them.
    PhoneChanged = "phone_changed", member: true;
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Who allowed points to be spent (a redemption's or a sale's `auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// The store alone (no hub configured).
    Local,
    /// The hub authorized it online.
    Hub,
    /// The store's offline floor limit.
    Offline,
    /// The store's lease on the member's points.
    Lease,
}

impl Auth {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Local => "local",
            Auth::Hub => "hub",
            Auth::Offline => "offline",
            Auth::Lease => "lease",
        }
    }
}

/// A phone's 32-byte blind index (base64 on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneIndex(pub [u8; 32]);

impl PhoneIndex {
    /// Reads the base64 form.
    pub fn from_base64(s: &str) -> Option<PhoneIndex> {
        let b = B64.decode(s).ok()?;
        <[u8; 32]>::try_from(b).ok().map(PhoneIndex)
    }

    /// The base64 form, as facts carry it.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
}

impl<'de> Deserialize<'de> for PhoneIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        PhoneIndex::from_base64(&s)
            .ok_or_else(|| serde::de::Error::custom("a phone index is 32 bytes in base64"))
    }
}

impl Serialize for PhoneIndex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

/// Bytes that travel as base64 text (a wrapped key).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        B64.decode(s.as_bytes())
            .map(Base64Bytes)
            .map_err(|_| serde::de::Error::custom("not base64"))
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(&self.0))
    }
}

/// What a member consented to at registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consents {
    /// The terms (registrations before consents were recorded say nothing).
    #[serde(default)]
    pub terms: Option<bool>,
    /// Marketing messages.
    #[serde(default)]
    pub marketing: Option<bool>,
    /// The privacy policy version consented to.
    #[serde(default)]
    pub policy_version: Option<String>,
}

/// A member's registration. Personal fields are ciphertext in base64 text, sealed
/// under the member's data key; the profile keeps that text as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The phone's blind index: how a store finds the member by phone.
    pub phone_idx: PhoneIndex,
    /// The member's data key, wrapped (absent only in the oldest registrations).
    #[serde(default)]
    pub wrapped_key: Option<Base64Bytes>,
    /// The sealed phone number.
    #[serde(default)]
    pub phone: Option<String>,
    /// The sealed name, if given.
    #[serde(default)]
    pub name: Option<String>,
    /// The sealed birthday, if given.
    #[serde(default)]
    pub birthday: Option<String>,
    /// The member's own referral code.
    #[serde(default)]
    pub referral_code: Option<String>,
    /// The code of the member who referred them.
    #[serde(default)]
    pub referrer_code: Option<String>,
    /// Where they registered (`store:S001:staff:…`, `pos`, …).
    #[serde(default)]
    pub channel: Option<String>,
    /// Consents given.
    #[serde(default)]
    pub consents: Option<Consents>,
    /// The store that registered them.
    #[serde(default)]
    pub home_store: Option<String>,
    /// The profile stamp (older registrations: none, the fact's time counts).
    #[serde(default)]
    pub hlc: Option<Stamp>,
}

/// A change of a member's profile: each field present is set (`null` clears it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileChange {
    /// The sealed name: absent = unchanged, `null` = cleared.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub name: Option<Option<String>>,
    /// The sealed birthday, likewise.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub birthday: Option<Option<String>>,
    /// Marketing consent, likewise.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub marketing: Option<Option<bool>>,
    /// Tags added.
    #[serde(default)]
    pub tags_add: Vec<String>,
    /// Tags removed (the edge removes, then adds).
    #[serde(default)]
    pub tags_remove: Vec<String>,
    /// The profile stamp.
    #[serde(default)]
    pub hlc: Option<Stamp>,
}

/// A field that is present (even as `null`) becomes `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A member registered before its store enrolled, under the chain's keys now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rekey {
    /// The phone's index under the chain's key.
    pub phone_idx: PhoneIndex,
    /// The member's data key wrapped under the chain's key.
    pub wrapped_key: Base64Bytes,
    /// The sealed phone (as the registration holds it), from which the hub computes
    /// the chain-wide index: absent from re-keys made when stores held the chain's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

/// A member merged into another (the fact's member is the one merged away).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merge {
    /// The member it was merged into.
    pub survivor: Uuid,
}

/// A coupon as a fact records it (a `coupon_issued` fact, or a sale's grant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponRecord {
    /// The coupon's id (hex of 16 bytes).
    pub coupon_id: String,
    /// The sale that granted it (hex), if a sale did and this is its own fact.
    #[serde(default)]
    pub source_txn: Option<String>,
    /// Usable at once (else it waits for a claim). Coupons recorded before claims
    /// existed say nothing: they were usable at once.
    #[serde(default = "yes")]
    pub active: bool,
    /// The code a cashier types or scans.
    pub code: String,
    /// What the member sees.
    pub label: String,
    /// Off, in fen.
    pub off: i64,
    /// Least spend (fen) it applies to.
    pub min_spend: i64,
    /// Last usable instant (unix ms).
    pub expires_at: i64,
    /// What gave it (a rule id, `cashier`, `upgrade:gold`, …).
    pub source: String,
    /// The stores it may be used at; empty (and absent from coupons recorded before
    /// scopes existed): any store of the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
}

/// What a sale records besides its points (lines and discounts stay in the body as
/// they were written, for audits and re-pricing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// The POS receipt.
    pub receipt_id: String,
    /// Before discounts (fen).
    pub subtotal: i64,
    /// Paid (fen).
    pub total: i64,
    /// The rule set the sale was priced with.
    #[serde(default)]
    pub rules_version: Option<String>,
    /// Coupon codes it used.
    #[serde(default)]
    pub coupons_used: Vec<String>,
    /// Coupons its rules granted.
    #[serde(default)]
    pub coupons_granted: Vec<CouponRecord>,
    /// Who allowed the points it redeemed (absent when none were).
    #[serde(default)]
    pub auth: Option<Auth>,
    /// How the money part was paid (absent: the POS did not say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tender: Vec<TenderRecord>,
    /// How the sale was paid in one word: a money method, `points`, `coupon`, or
    /// `mixed` (absent: not said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_by: Option<String>,
    /// What its points-for-goods catalogue lines took (absent: none), included in
    /// `subtotal`, `total` and the fact's `spend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<CatalogueSpend>,
}

/// The catalogue part of a sale: refunds leave it out (docs/catalogue.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogueSpend {
    /// Money, fen.
    pub cash: i64,
    /// Points.
    pub points: i64,
}

impl Sale {
    /// The figures refunds are proportional to, the catalogue part left out: subtotal,
    /// money paid, and the points that paid, of a sale whose fact spent `spend`.
    pub fn goods(&self, spend: i64) -> (i64, i64, i64) {
        let c = self.catalogue.unwrap_or_default();
        (
            self.subtotal - c.cash,
            self.total - c.cash,
            spend - c.points,
        )
    }
}

/// Money paid one way, as a sale records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenderRecord {
    /// `cash`, `card`, `wechat_pay`, `alipay`, `other`.
    pub method: String,
    /// Fen.
    pub amount: i64,
}

/// A refund's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    /// The receipt refunded.
    pub receipt_id: String,
    /// Units returned per receipt line.
    pub per_line: Vec<i64>,
    /// Gross value of those units (fen).
    pub gross: i64,
    /// Money returned (fen).
    pub amount: i64,
}

/// Points spent outside a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionRecord {
    /// Why (the POS's reason text).
    pub reason: String,
    /// Who allowed it (redemptions recorded before the hub authorized any say nothing:
    /// the store alone did).
    #[serde(default)]
    pub auth: Option<Auth>,
}

/// A behaviour that earned points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// `check_in`, `share`, `review`, `profile_completed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The POS's reference, if any.
    #[serde(rename = "ref", default)]
    pub reference: Option<String>,
}

/// A coupon by code (claimed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponCode {
    /// The code.
    pub code: String,
}

/// A coupon a refund gave back or withdrew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponByRefund {
    /// The code.
    pub code: String,
    /// The refund.
    pub refund_id: Uuid,
}

/// One use of a tier benefit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenefitUse {
    /// The benefit.
    pub code: String,
    /// The month it counts in (`YYYY-MM`).
    pub month: String,
}

/// Points for reaching a tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeGift {
    /// The tier reached (`silver`, `gold`, `diamond`).
    pub tier: String,
    /// The sale that reached it; refunding that sale takes the gift back. Absent on gifts
    /// written before gifts named their sale: those stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sale: Option<Uuid>,
}

/// An anomaly a store raised about one of its lanes' day (no member, no personal data).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneAlertRecord {
    /// The lane's name.
    pub lane: String,
    /// The store day (`YYYY-MM-DD`).
    pub day: String,
    /// `earn_rate` or `lookups_without_sales`.
    pub anomaly: String,
    /// The day's figure: points earned, or lookups.
    pub figure: i64,
    /// What it was judged against: the lane's usual day, or its member sales.
    pub against: i64,
}

/// A gift's points taken back by a refund of the sale that earned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftWithdrawal {
    /// The gift fact's transaction id (the lot its points came in).
    pub gift: Uuid,
    /// The tier it was given for.
    pub tier: String,
    /// The refund that took it back.
    pub refund_id: Uuid,
}

/// Points for a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralReward {
    /// The friend referred (hex of the member id).
    pub friend: String,
    /// What the friend did (`registered`, `first_purchase`).
    pub event: String,
}

/// A referral for the hub to settle: the fact's member (the friend) did `event` with
/// the referral code `code`, whose member the writing store does not hold. The hub
/// resolves the code chain-wide and credits the referrer once (`crate::referral`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralDue {
    /// The referrer's code, as the friend gave it.
    pub code: String,
    /// What the friend did (`register`, `first_purchase`).
    pub event: String,
    /// The points the store's rule set in force gives the referrer for it.
    pub points: i64,
    /// When those points expire, by the store's calendar and the chain's settings.
    pub expires_at: i64,
}

/// A manual points adjustment (`crate::adjustment`): the points are the fact's `earn`
/// (added, a lot of their own) or `spend` (taken, FIFO, at most the balance the store
/// saw).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdjustmentRecord {
    /// The reason code.
    pub reason: String,
    /// A ticket or receipt number, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The lane that asked for it.
    pub made_by: String,
    /// The manager's lane that approved it (absent: it needed no approval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

/// One side of a points transfer between two members: the sender's fact spends the
/// points, the receiver's earns them (a lot of their own), both in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// The transfer (UUID): both sides name it.
    pub transfer_id: Uuid,
    /// The sender (hex of the member id).
    pub from: String,
    /// The receiver (hex of the member id).
    pub to: String,
    /// Who allowed the sender's spend (the sender's side only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
}

/// One use of a limited entitlement (a once-only reward, a daily check-in, a monthly
/// quota, a rule's per-member limit), or one given back (`release`): the hub counts
/// them per member across the chain (`crate::claims`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// What is claimed (`check_in`, `benefit:dry_cleaning`, `rule:first10`, …).
    pub entitlement: String,
    /// The period it counts in (`once`, `2026-12-07`, `2026-12`).
    pub period: String,
    /// Claims allowed per period, as the store knew it.
    pub limit: u32,
    /// Who allowed it: the hub online, or the store's offline policy.
    pub auth: Auth,
    /// A claim given back (a refund took the upgrade gift back): it no longer counts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
}

/// The details of a fact, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detail {
    /// `member_registered`.
    MemberRegistered(Registration),
    /// `member_updated`.
    MemberUpdated(ProfileChange),
    /// `member_rekeyed`.
    MemberRekeyed(Rekey),
    /// `member_merged`.
    MemberMerged(Merge),
    /// `purchase`.
    Purchase(Sale),
    /// `refund`.
    Refund(RefundRecord),
    /// `redemption`.
    Redemption(RedemptionRecord),
    /// `event`.
    Event(EventRecord),
    /// `coupon_issued`.
    CouponIssued(CouponRecord),
    /// `coupon_claimed`.
    CouponClaimed(CouponCode),
    /// `coupon_restored`.
    CouponRestored(CouponByRefund),
    /// `coupon_withdrawn`.
    CouponWithdrawn(CouponByRefund),
    /// `benefit_used`.
    BenefitUsed(BenefitUse),
    /// `upgrade_gift`.
    UpgradeGift(UpgradeGift),
    /// `referral_reward`.
    ReferralReward(ReferralReward),
    /// `gift_withdrawn`.
    GiftWithdrawn(GiftWithdrawal),
    /// `lane_alert`.
    LaneAlert(LaneAlertRecord),
    /// `claim`.
    Claim(ClaimRecord),
    /// `referral_due`.
    ReferralDue(ReferralDue),
    /// `adjustment`.
    Adjustment(AdjustmentRecord),
    /// `transfer`.
    Transfer(TransferRecord),
    /// `phone_changed`: the new phone's index, the member's data key (wrapped as a
    /// re-key wraps it) and the new phone sealed, in a re-key's shape.
    PhoneChanged(Rekey),
}

fn detail<T: DeserializeOwned>(kind: Kind, body: &str) -> Result<T, FactError> {
    serde_json::from_str(body).map_err(|e| FactError::Detail {
        kind: kind.as_str(),
        why: e.to_string(),
    })
}

impl Detail {
    /// Reads the details of a fact of `kind` from their JSON text.
    pub fn parse(kind: Kind, body: &str) -> Result<Detail, FactError> {
        Ok(match kind {
            Kind::MemberRegistered => Detail::MemberRegistered(detail(kind, body)?),
            Kind::MemberUpdated => Detail::MemberUpdated(detail(kind, body)?),
            Kind::MemberRekeyed => Detail::MemberRekeyed(detail(kind, body)?),
            Kind::MemberMerged => Detail::MemberMerged(detail(kind, body)?),
            Kind::Purchase => Detail::Purchase(detail(kind, body)?),
            Kind::Refund => Detail::Refund(detail(kind, body)?),
            Kind::Redemption => Detail::Redemption(detail(kind, body)?),
            Kind::Event => Detail::Event(detail(kind, body)?),
            Kind::CouponIssued => Detail::CouponIssued(detail(kind, body)?),
            Kind::CouponClaimed => Detail::CouponClaimed(detail(kind, body)?),
            Kind::CouponRestored => Detail::CouponRestored(detail(kind, body)?),
            Kind::CouponWithdrawn => Detail::CouponWithdrawn(detail(kind, body)?),
            Kind::BenefitUsed => Detail::BenefitUsed(detail(kind, body)?),
            Kind::UpgradeGift => Detail::UpgradeGift(detail(kind, body)?),
            Kind::ReferralReward => Detail::ReferralReward(detail(kind, body)?),
            Kind::GiftWithdrawn => Detail::GiftWithdrawn(detail(kind, body)?),
            Kind::LaneAlert => Detail::LaneAlert(detail(kind, body)?),
            Kind::Claim => Detail::Claim(detail(kind, body)?),
            Kind::ReferralDue => Detail::ReferralDue(detail(kind, body)?),
            Kind::Adjustment => Detail::Adjustment(detail(kind, body)?),
            Kind::Transfer => Detail::Transfer(detail(kind, body)?),
            Kind::PhoneChanged => Detail::PhoneChanged(detail(kind, body)?),
        })
    }

    /// Reads details as a fact holds them: JSON, or (facts written before details
    /// travelled as raw JSON, still held by the hub and the stores) a JSON string that
    /// holds the JSON. The text is kept as it came either way.
    pub fn parse_held(kind: Kind, body: &str) -> Result<Detail, FactError> {
        if body.starts_with('"') {
            let inner: String =
                serde_json::from_str(body).map_err(|e| FactError::Malformed(e.to_string()))?;
            return Detail::parse(kind, &inner);
        }
        Detail::parse(kind, body)
    }

    /// The kind these details belong to.
    pub fn kind(&self) -> Kind {
        match self {
            Detail::MemberRegistered(_) => Kind::MemberRegistered,
            Detail::MemberUpdated(_) => Kind::MemberUpdated,
            Detail::MemberRekeyed(_) => Kind::MemberRekeyed,
            Detail::MemberMerged(_) => Kind::MemberMerged,
            Detail::Purchase(_) => Kind::Purchase,
            Detail::Refund(_) => Kind::Refund,
            Detail::Redemption(_) => Kind::Redemption,
            Detail::Event(_) => Kind::Event,
            Detail::CouponIssued(_) => Kind::CouponIssued,
            Detail::CouponClaimed(_) => Kind::CouponClaimed,
            Detail::CouponRestored(_) => Kind::CouponRestored,
            Detail::CouponWithdrawn(_) => Kind::CouponWithdrawn,
            Detail::BenefitUsed(_) => Kind::BenefitUsed,
            Detail::UpgradeGift(_) => Kind::UpgradeGift,
            Detail::ReferralReward(_) => Kind::ReferralReward,
            Detail::GiftWithdrawn(_) => Kind::GiftWithdrawn,
            Detail::LaneAlert(_) => Kind::LaneAlert,
            Detail::Claim(_) => Kind::Claim,
            Detail::ReferralDue(_) => Kind::ReferralDue,
            Detail::Adjustment(_) => Kind::Adjustment,
            Detail::Transfer(_) => Kind::Transfer,
            Detail::PhoneChanged(_) => Kind::PhoneChanged,
        }
    }

    /// The JSON text of these details (for a fact about to be written).
    pub fn to_json(&self) -> Result<String, FactError> {
        let out = match self {
            Detail::MemberRegistered(d) => serde_json::to_string(d),
            Detail::MemberUpdated(d) => serde_json::to_string(d),
            Detail::MemberRekeyed(d) => serde_json::to_string(d),
            Detail::MemberMerged(d) => serde_json::to_string(d),
            Detail::Purchase(d) => serde_json::to_string(d),
            Detail::Refund(d) => serde_json::to_string(d),
            Detail::Redemption(d) => serde_json::to_string(d),
            Detail::Event(d) => serde_json::to_string(d),
            Detail::CouponIssued(d) => serde_json::to_string(d),
            Detail::CouponClaimed(d) => serde_json::to_string(d),
            Detail::CouponRestored(d) => serde_json::to_string(d),
            Detail::CouponWithdrawn(d) => serde_json::to_string(d),
            Detail::BenefitUsed(d) => serde_json::to_string(d),
            Detail::UpgradeGift(d) => serde_json::to_string(d),
            Detail::ReferralReward(d) => serde_json::to_string(d),
            Detail::GiftWithdrawn(d) => serde_json::to_string(d),
            Detail::LaneAlert(d) => serde_json::to_string(d),
            Detail::Claim(d) => serde_json::to_string(d),
            Detail::ReferralDue(d) => serde_json::to_string(d),
            Detail::Adjustment(d) => serde_json::to_string(d),
            Detail::Transfer(d) => serde_json::to_string(d),
            Detail::PhoneChanged(d) => serde_json::to_string(d),
        };
        out.map_err(|e| FactError::Detail {
            kind: self.kind().as_str(),
            why: e.to_string(),
        })
    }

    /// Who allowed the points this fact spends, if it records that.
    pub fn auth(&self) -> Option<Auth> {
        match self {
            Detail::Purchase(s) => s.auth,
            Detail::Redemption(r) => r.auth,
            Detail::Transfer(t) => t.auth,
            _ => None,
        }
    }

    /// The phone index this fact puts its member under: a registration's, or a re-key's
    /// (a member registered before its store enrolled, now under the chain's index).
    pub fn phone_index(&self) -> Option<&PhoneIndex> {
        match self {
            Detail::MemberRegistered(r) => Some(&r.phone_idx),
            Detail::MemberRekeyed(r) => Some(&r.phone_idx),
            Detail::PhoneChanged(r) => Some(&r.phone_idx),
            _ => None,
        }
    }
}

/// One fact of the ledger, typed: the header every kind shares (read through `Deref`:
/// `entry.at`, `entry.earn`, …), the typed details, and the details' text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Schema version ([`SCHEMA_VERSION`] for everything this code writes).
    pub v: u32,
    /// When, who, which transaction, and the points and qualifying spend it moves.
    pub head: Header,
    /// The details, typed.
    pub detail: Detail,
    /// The details exactly as written (JSON text).
    body: String,
}

impl std::ops::Deref for Entry {
    type Target = Header;

    fn deref(&self) -> &Header {
        &self.head
    }
}

fn one() -> u32 {
    1
}

fn yes() -> bool {
    true
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

/// The header as it is read.
#[derive(Deserialize)]
struct WireIn<'a> {
    #[serde(borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default = "one")]
    v: u32,
    at: i64,
    #[serde(default)]
    member: Option<Uuid>,
    txn: Uuid,
    #[serde(default)]
    earn: i64,
    #[serde(default)]
    expires_at: i64,
    #[serde(default)]
    available_at: i64,
    #[serde(default)]
    spend: i64,
    #[serde(default)]
    reverse: i64,
    #[serde(default)]
    reverse_lot: Option<Uuid>,
    #[serde(default)]
    qual_spend: i64,
    #[serde(default)]
    qual_at: i64,
    #[serde(borrow)]
    body: &'a RawValue,
}

/// The header as it is written: the field order and omissions of every earlier
/// version (see the module's note on byte stability). `v` is omitted at 1.
#[derive(Serialize)]
struct WireOut<'a> {
    kind: &'static str,
    #[serde(skip_serializing_if = "is_one")]
    v: u32,
    at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<Uuid>,
    txn: Uuid,
    #[serde(skip_serializing_if = "is_zero")]
    earn: i64,
    #[serde(skip_serializing_if = "is_zero")]
    expires_at: i64,
    #[serde(skip_serializing_if = "is_zero")]
    available_at: i64,
    #[serde(skip_serializing_if = "is_zero")]
    spend: i64,
    #[serde(skip_serializing_if = "is_zero")]
    reverse: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reverse_lot: Option<Uuid>,
    #[serde(skip_serializing_if = "is_zero")]
    qual_spend: i64,
    #[serde(skip_serializing_if = "is_zero")]
    qual_at: i64,
    body: &'a RawValue,
}

/// The parts of an entry every kind shares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// When it happened (unix ms, the writing node's clock).
    pub at: i64,
    /// The member, if any.
    pub member: Option<Uuid>,
    /// The transaction; an earn's lot is keyed by it.
    pub txn: Uuid,
    /// Points credited as a lot (≥ 0).
    pub earn: i64,
    /// The lot's last usable instant.
    pub expires_at: i64,
    /// When the lot becomes redeemable (0: at once).
    pub available_at: i64,
    /// Points consumed FIFO (≥ 0).
    pub spend: i64,
    /// Points taken back from `reverse_lot` (≥ 0).
    pub reverse: i64,
    /// The lot a reversal targets.
    pub reverse_lot: Option<Uuid>,
    /// Qualifying-spend delta in fen (negative for a refund).
    pub qual_spend: i64,
    /// When that spend counts.
    pub qual_at: i64,
}

impl Entry {
    /// Parses and checks a fact's JSON text: the header, the kind, the version, the
    /// details for that kind, and the rules every entry keeps ([`Entry::check`]).
    pub fn parse(text: &str) -> Result<Entry, FactError> {
        let w: WireIn<'_> =
            serde_json::from_str(text).map_err(|e| FactError::Malformed(e.to_string()))?;
        if w.v > SCHEMA_VERSION || w.v == 0 {
            return Err(FactError::NewerSchema {
                found: w.v,
                supported: SCHEMA_VERSION,
            });
        }
        let kind =
            Kind::parse(&w.kind).ok_or_else(|| FactError::UnknownKind(w.kind.to_string()))?;
        let detail = Detail::parse_held(kind, w.body.get())?;
        let e = Entry {
            v: w.v,
            head: Header {
                at: w.at,
                member: w.member,
                txn: w.txn,
                earn: w.earn,
                expires_at: w.expires_at,
                available_at: w.available_at,
                spend: w.spend,
                reverse: w.reverse,
                reverse_lot: w.reverse_lot,
                qual_spend: w.qual_spend,
                qual_at: w.qual_at,
            },
            detail,
            body: w.body.get().to_owned(),
        };
        e.check()?;
        Ok(e)
    }

    /// A new entry of this code's schema from its header and details.
    pub fn new(h: Header, detail: Detail) -> Result<Entry, FactError> {
        let body = detail.to_json()?;
        Entry::with_body(h, detail, body)
    }

    /// A new entry whose details are already JSON text (`detail` must be what `body`
    /// says: it is parsed again here, so the two cannot disagree).
    pub fn from_parts(h: Header, kind: Kind, body: String) -> Result<Entry, FactError> {
        let detail = Detail::parse(kind, &body)?;
        Entry::with_body(h, detail, body)
    }

    fn with_body(h: Header, detail: Detail, body: String) -> Result<Entry, FactError> {
        let e = Entry {
            v: SCHEMA_VERSION,
            head: h,
            detail,
            body,
        };
        e.check()?;
        Ok(e)
    }

    /// The rules every entry keeps: points amounts are not negative, a reversal names
    /// its lot, and member kinds name their member.
    pub fn check(&self) -> Result<(), FactError> {
        let kind = self.kind().as_str();
        let invalid = |why| Err(FactError::Invalid { kind, why });
        if self.earn < 0 || self.spend < 0 || self.reverse < 0 {
            return invalid("points amounts are never negative");
        }
        if self.reverse > 0 && self.reverse_lot.is_none() {
            return invalid("a reversal names the lot it takes from");
        }
        if self.kind().needs_member() && self.member.is_none() {
            return invalid("this kind is about a member and names none");
        }
        Ok(())
    }

    /// What the fact records.
    pub fn kind(&self) -> Kind {
        self.detail.kind()
    }

    /// The details exactly as written.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// Whether the fact moves points (earns, spends or reverses any).
    pub fn moves_points(&self) -> bool {
        self.earn != 0 || self.spend != 0 || self.reverse != 0
    }

    /// The fact's JSON text: the same text it was parsed from, for any fact written by
    /// this code or an earlier version.
    pub fn to_json(&self) -> Result<String, FactError> {
        let body = RawValue::from_string(self.body.clone())
            .map_err(|e| FactError::Malformed(e.to_string()))?;
        serde_json::to_string(&WireOut {
            kind: self.kind().as_str(),
            v: self.v,
            at: self.at,
            member: self.member,
            txn: self.txn,
            earn: self.earn,
            expires_at: self.expires_at,
            available_at: self.available_at,
            spend: self.spend,
            reverse: self.reverse,
            reverse_lot: self.reverse_lot,
            qual_spend: self.qual_spend,
            qual_at: self.qual_at,
            body: &body,
        })
        .map_err(|e| FactError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Facts of every kind as the code before this module wrote them (edge and hub, the
    /// release binaries of 6457e93 driven through the POS API and sync; one per line). The
    /// lines after them (a gift naming its sale, a gift taken back, a lane alert, claims,
    /// a referral due, adjustments, a transfer, a phone change) are kinds added later, written by hand in the shape the edge
    /// writes them (their writers' tests: `e2e` `promotions::refunding_…`, `edge`
    /// `service::anomalies::tests`, `e2e` `claims`).
    const FIXTURE: &str = include_str!("../fixtures/facts-v1.jsonl");

    /// Older shapes edges and the first hub wrote, still held in upgraded databases: a
    /// redemption before `auth` (fec9f5b), a coupon before `active` (fb3320a), details
    /// as an escaped string (before dd8003b).
    const LEGACY: &str = include_str!("../fixtures/facts-v1-legacy.jsonl");

    fn fixture() -> Vec<&'static str> {
        FIXTURE
            .lines()
            .chain(LEGACY.lines())
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    #[test]
    fn legacy_shapes_read_with_their_documented_meaning() {
        let mut it = LEGACY
            .lines()
            .map(|l| Entry::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")));
        let r = it.next().unwrap_or_else(|| panic!("redemption"));
        assert_eq!(r.detail.auth(), None, "no auth: the store alone");
        let c = it.next().unwrap_or_else(|| panic!("coupon"));
        assert!(
            matches!(&c.detail, Detail::CouponIssued(c) if c.active),
            "usable at once"
        );
        let g = it.next().unwrap_or_else(|| panic!("registration"));
        assert!(
            g.detail.phone_index().is_some(),
            "read through the escaped string"
        );
    }

    #[test]
    fn every_stored_fact_reads_and_writes_back_byte_for_byte() {
        let mut seen = std::collections::BTreeSet::new();
        for line in fixture() {
            let e = Entry::parse(line).unwrap_or_else(|err| panic!("{err}: {line}"));
            seen.insert(e.kind());
            assert_eq!(e.to_json().as_deref(), Ok(line), "re-serialized differs");
        }
        let missing: Vec<_> = Kind::ALL.iter().filter(|k| !seen.contains(k)).collect();
        assert!(missing.is_empty(), "the fixture lacks {missing:?}");
    }

    #[test]
    fn kind_names_round_trip_and_unknown_kinds_are_named_in_the_error() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
        }
        let t =
            r#"{"kind":"teleport","at":1,"txn":"0190a000-0000-7000-8000-000000000001","body":{}}"#;
        assert_eq!(
            Entry::parse(t),
            Err(FactError::UnknownKind("teleport".into()))
        );
    }

    fn sale(extra: &str) -> String {
        format!(
            r#"{{"kind":"purchase","at":5,{extra}"txn":"0190a000-0000-7000-8000-000000000001","body":{{"receipt_id":"R1","subtotal":100,"total":100}}}}"#
        )
    }

    #[test]
    fn newer_schemas_and_broken_rules_are_refused_with_their_reason() {
        assert!(Entry::parse(&sale("")).is_ok());
        assert_eq!(
            Entry::parse(&sale(r#""v":2,"#)),
            Err(FactError::NewerSchema {
                found: 2,
                supported: 1
            })
        );
        assert!(matches!(
            Entry::parse(&sale(r#""spend":-5,"#)),
            Err(FactError::Invalid { why, .. }) if why.contains("negative")
        ));
        assert!(matches!(
            Entry::parse(&sale(r#""reverse":5,"#)),
            Err(FactError::Invalid { why, .. }) if why.contains("lot")
        ));
        // A redemption is about a member.
        let r = r#"{"kind":"redemption","at":5,"txn":"0190a000-0000-7000-8000-000000000001","spend":3,"body":{"reason":"x","auth":"hub"}}"#;
        assert!(matches!(Entry::parse(r), Err(FactError::Invalid { .. })));
        // A re-key without its key is not a re-key.
        let k = r#"{"kind":"member_rekeyed","at":5,"member":"0190a000-0000-7000-8000-000000000001","txn":"0190a000-0000-7000-8000-000000000002","body":{"phone_idx":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}}"#;
        assert!(matches!(
            Entry::parse(k),
            Err(FactError::Detail { kind: "member_rekeyed", why }) if why.contains("wrapped_key")
        ));
        assert!(matches!(
            Entry::parse(r#"{"kind":"purchase"}"#),
            Err(FactError::Malformed(_))
        ));
        assert!(matches!(
            Entry::parse("not json"),
            Err(FactError::Malformed(_))
        ));
    }

    #[test]
    fn a_profile_change_tells_a_cleared_field_from_an_absent_one() {
        let c: ProfileChange =
            serde_json::from_str(r#"{"name":null,"marketing":true}"#).unwrap_or_default();
        assert_eq!(c.name, Some(None));
        assert_eq!(c.birthday, None);
        assert_eq!(c.marketing, Some(Some(true)));
    }

    #[test]
    fn a_new_entry_reads_back_as_itself() {
        let h = Header {
            at: 7,
            member: Some(Uuid::from_u128(1)),
            txn: Uuid::from_u128(2),
            earn: 10,
            expires_at: 99,
            ..Default::default()
        };
        let d = Detail::UpgradeGift(UpgradeGift {
            tier: "gold".into(),
            sale: None,
        });
        let e = Entry::new(h, d).unwrap_or_else(|e| panic!("{e}"));
        let text = e.to_json().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Entry::parse(&text), Ok(e));
    }
}
