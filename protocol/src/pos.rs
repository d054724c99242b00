//! Request and response bodies of POS API v1, exactly as `shared/POS-API.md` names them.
//!
//! Requests are deserialized leniently (unknown fields are ignored, so a POS written
//! against a later minor version still works); every range rule is enforced by the
//! edge's domain layer, not here.

use serde::{Deserialize, Serialize};

use crate::ids::{MemberId, TransactionId};
use crate::money::{Fen, Points};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// Always `ok` when the edge answers.
    pub status: String,
    /// This store's id.
    pub store_id: String,
    /// The edge's software version.
    pub version: String,
    /// The link to the hub.
    pub hub: HubHealth,
    /// Where the chain-wide settings in force came from.
    #[serde(default)]
    pub settings: SettingsHealth,
    /// How the POS API is served: `https` (the default), `http-loopback` (plain HTTP
    /// on a loopback address) or `http-lan` (plain HTTP on the LAN, by explicit
    /// configuration: tokens and member data cross the network in the clear).
    #[serde(default)]
    pub transport: String,
    /// Operations the abuse limits refused today, all lanes (each also logged as an
    /// alert): a number that is not 0 wants a look.
    #[serde(default)]
    pub limits_refused_today: i64,
    /// Operations the store's manager did today beyond an abuse limit (each also
    /// logged).
    #[serde(default)]
    pub limits_overridden_today: i64,
    /// Anomalies raised today (a lane far above its usual day, or looking members up
    /// without selling to them; see `[alerts]`); -1 if they cannot be read.
    #[serde(default)]
    pub anomalies_today: i64,
    /// Whether the database is encrypted at rest (`storage.encrypt_at_rest`).
    #[serde(default)]
    pub encrypted_at_rest: bool,
}

/// Where each chain-wide setting in force at the store came from: `hq` (published for
/// its ring or the chain), `default` (enrolled, HQ published none: the documented
/// defaults), or `config` (a store not enrolled with a hub, on its own configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SettingsHealth {
    /// Earn and redeem rates, expiry.
    pub points: String,
    /// Tier thresholds.
    pub tiers: String,
}

/// The state of the store's link to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HubHealth {
    /// Whether the last attempt to reach the hub succeeded.
    pub reachable: bool,
    /// When the last sync completed (RFC 3339), if ever.
    pub last_sync_at: Option<String>,
    /// Facts committed here that the hub has not acknowledged yet.
    pub pending_facts: u64,
    /// Whether this store is enrolled with a hub (no hub: it runs on its own).
    #[serde(default)]
    pub enrolled: bool,
    /// Age in seconds of the oldest fact the hub has not acknowledged, if any.
    #[serde(default)]
    pub oldest_pending_secs: Option<u64>,
    /// The watchdog's alert: a fact unacknowledged too long while the hub is reachable,
    /// or a refusal the edge cannot resolve by itself.
    #[serde(default)]
    pub alert: Option<String>,
    /// The last error talking to the hub, if the last attempt failed.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Leases on members' points this store holds (spendable without the hub).
    #[serde(default)]
    pub leases_held: u64,
    /// Members whose coupons this store holds for use without the hub (the store where
    /// each was last identified online).
    #[serde(default)]
    pub coupon_leases_held: u64,
    /// The sync protocol agreed with the hub at the last push (absent: none yet).
    #[serde(default)]
    pub protocol: Option<u32>,
    /// Whether this store follows the hub's stream (the facts of its members written
    /// elsewhere arrive as they happen, not only at a lookup).
    #[serde(default)]
    pub streaming: bool,
}

/// Consents given at registration (PIPL): terms are required, marketing optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Consents {
    /// Acceptance of the membership terms; must be `true`.
    pub terms: bool,
    /// Consent to marketing messages.
    #[serde(default)]
    pub marketing: bool,
    /// The privacy policy version the member accepted.
    #[serde(default)]
    pub policy_version: Option<String>,
}

/// `POST /v1/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterMember {
    /// Mainland mobile number; `+86`, spaces and dashes are accepted.
    pub phone: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub birthday: Option<String>,
    /// Where the member signed up, e.g. `store:S001:staff`.
    #[serde(default)]
    pub channel: Option<String>,
    /// The referral code of the member who referred this one.
    #[serde(default)]
    pub referrer_code: Option<String>,
    /// Consents; `terms` must be `true`.
    pub consents: Consents,
}

/// `PATCH /v1/members/{member_id}`: change profile fields and preference tags.
///
/// Not in the POS API page's first edition; added (never renamed) as the page allows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateMember {
    /// New display name.
    #[serde(default)]
    pub name: Option<String>,
    /// New birthday, `YYYY-MM-DD`.
    #[serde(default)]
    pub birthday: Option<String>,
    /// New marketing consent.
    #[serde(default)]
    pub marketing: Option<bool>,
    /// Preference tags to add.
    #[serde(default)]
    pub tags_add: Vec<String>,
    /// Preference tags to remove.
    #[serde(default)]
    pub tags_remove: Vec<String>,
}

/// The member as the POS sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Member {
    /// The member's id (UUIDv7).
    pub member_id: MemberId,
    /// The phone with its middle four digits hidden: `138****8000`.
    pub phone_masked: String,
    /// Display name.
    pub name: Option<String>,
    /// `YYYY-MM-DD`.
    pub birthday: Option<String>,
    /// Current tier and progress to the next.
    pub tier: TierView,
    /// Available points and what expires soon.
    pub points: PointsView,
    /// Coupons the member holds.
    pub coupons: Vec<CouponView>,
    /// Benefits of the member's tier.
    pub benefits: Vec<BenefitView>,
    /// This member's own code for referring friends.
    pub referral_code: String,
    /// Preference tags.
    pub tags: Vec<String>,
    /// Marketing consent as last given.
    pub marketing_consent: bool,
    /// Registration time (RFC 3339).
    pub created_at: String,
    /// The store where the member registered.
    pub home_store: String,
    /// How current this store's view of the member's activity at other stores is.
    #[serde(default)]
    pub freshness: Freshness,
}

/// Why a lane looks a member up; recorded with every lookup for the privacy audit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LookupPurpose {
    /// Identifying the member at a sale: the answer is masked (no birthday, the name
    /// shortened to its first character).
    #[default]
    Sale,
    /// Member service at the desk (a cashier or manager correcting a profile): the
    /// full profile, for the roles that need it.
    Service,
}

/// `POST /v1/members/lookup`: one of `phone` or `member_id`, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LookupMember {
    /// The member's mobile number (normalized as at registration).
    #[serde(default)]
    pub phone: Option<String>,
    /// The member's id.
    #[serde(default)]
    pub member_id: Option<MemberId>,
    /// Why (default `sale`).
    #[serde(default)]
    pub purpose: LookupPurpose,
}

/// How current a store's view of what happens at the other stores is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Freshness {
    /// Other stores' sales and redemptions reach this store as they happen (within
    /// seconds): the hub is reachable and its stream followed. Always true for a store
    /// without a hub.
    pub live: bool,
    /// When the hub last told this store what the other stores did (RFC 3339): what
    /// the member did elsewhere after it may be missing from the balance shown. Absent
    /// if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            live: true,
            as_of: None,
        }
    }
}

/// A member's tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TierView {
    /// `normal`, `silver`, `gold` or `diamond`.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Spend in the rolling window that counts towards tiers.
    pub qualifying_spend: Fen,
    /// The next tier up, if any.
    pub next: Option<NextTier>,
}

/// How far the member is from the next tier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NextTier {
    /// The next tier's code.
    pub code: String,
    /// Spend still needed within the window.
    pub remaining_spend: Fen,
}

/// A member's points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PointsView {
    /// Points available now (negative only while a debt is being repaid).
    pub balance: Points,
    /// Lots expiring within the notice window (30 days by default).
    pub expiring: Vec<ExpiringPoints>,
    /// Earned but not yet redeemable (inside the return window).
    #[serde(default)]
    pub pending: Points,
}

/// Points that expire at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ExpiringPoints {
    /// How many.
    pub points: Points,
    /// When (RFC 3339).
    pub expires_at: String,
}

/// A coupon the member holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CouponView {
    /// Coupon id.
    pub coupon_id: String,
    /// The code the POS sends back in `coupon_codes`.
    pub code: String,
    /// Display label, e.g. `¥50 off`.
    pub label: String,
    /// When it stops being valid (RFC 3339).
    pub expires_at: String,
    /// Value in fen.
    pub amount: Fen,
    /// Smallest amount due it applies to.
    pub min_spend: Fen,
    /// `false` until the member claims it.
    pub active: bool,
}

/// A tier benefit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BenefitView {
    /// Benefit code.
    pub code: String,
    /// Display label.
    pub label: String,
    /// Uses left this calendar month, for benefits with a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_this_month: Option<i64>,
}

/// `POST /v1/members/{member_id}/benefits/{code}/use` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BenefitUse {
    /// Benefit code.
    pub code: String,
    /// Uses left this calendar month.
    pub remaining_this_month: i64,
}

/// `POST /v1/members/{member_id}/coupons`: a coupon issued by a cashier or HQ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssueCoupon {
    /// Display label.
    pub label: String,
    /// Value in fen.
    pub off: i64,
    /// Smallest amount due it applies to, in fen.
    #[serde(default)]
    pub min_spend: i64,
    /// Days it stays valid.
    pub valid_days: u32,
    /// Usable at once (default) or after the member claims it.
    #[serde(default = "default_true")]
    pub auto_active: bool,
    /// The stores it may be used at (store ids); absent: any store of the chain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stores: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The rule set in force, as `PUT /v1/admin/rule-set` and `GET` report it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleSetInfo {
    /// The version.
    pub version: String,
    /// Number of rules.
    pub rules: usize,
    /// When it was loaded here (RFC 3339).
    pub loaded_at: String,
}

/// One line of a basket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BasketLine {
    /// Stock-keeping unit.
    pub sku: String,
    /// Product category, for category rules.
    #[serde(default)]
    pub category: Option<String>,
    /// Quantity, at least 1.
    pub qty: i64,
    /// Unit price in fen.
    pub unit_price: i64,
    /// Taken from the points-for-goods catalogue: `unit_price` is the item's money part
    /// and its points come from the member's balance (no discount, no points earned).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catalogue: bool,
}

/// A basket to price (`checkout/quote`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Basket {
    /// The member, or absent for a walk-in customer.
    #[serde(default)]
    pub member_id: Option<MemberId>,
    /// The lines.
    pub lines: Vec<BasketLine>,
    /// Coupon codes to apply.
    #[serde(default)]
    pub coupon_codes: Vec<String>,
    /// Points the member wants to pay with.
    #[serde(default)]
    pub redeem_points: i64,
}

/// A basket that was paid (`checkout/commit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitRequest {
    /// The basket, priced again at commit.
    #[serde(flatten)]
    pub basket: Basket,
    /// The POS receipt number, unique per store.
    pub receipt_id: String,
    /// How the money part was paid, one line per method; the amounts add up to the
    /// sale's `total`. Absent: not said (recorded as nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tender: Vec<TenderLine>,
}

/// Money paid one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenderLine {
    /// How.
    pub method: TenderMethod,
    /// How much, in fen (> 0).
    pub amount: i64,
}

/// A way of paying money at the till (points and coupons are the basket's
/// `redeem_points` and `coupon_codes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TenderMethod {
    /// Cash.
    Cash,
    /// A bank card.
    Card,
    /// WeChat Pay.
    WechatPay,
    /// Alipay.
    Alipay,
    /// Anything else (a voucher of the mall, a store card).
    Other,
}

impl TenderMethod {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TenderMethod::Cash => "cash",
            TenderMethod::Card => "card",
            TenderMethod::WechatPay => "wechat_pay",
            TenderMethod::Alipay => "alipay",
            TenderMethod::Other => "other",
        }
    }
}

/// One applied discount.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Discount {
    /// `campaign`, `tier`, `coupon`.
    pub source: String,
    /// The rule or coupon id.
    pub id: String,
    /// Display label, e.g. `满200减30`.
    pub label: String,
    /// Amount taken off, in fen.
    pub amount: Fen,
}

/// A coupon a sale will issue or has issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssuedCoupon {
    /// Coupon id (empty in a quote).
    pub coupon_id: String,
    /// Display label.
    pub label: String,
    /// Value in fen.
    pub amount: Fen,
}

/// `checkout/quote` answer: the priced basket; nothing was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quote {
    /// Sum of `qty × unit_price` over the lines.
    pub subtotal: Fen,
    /// Discounts in the order they were applied.
    pub discounts: Vec<Discount>,
    /// Points used to pay.
    pub points_redeemed: Points,
    /// What those points are worth, in fen.
    pub points_value: Fen,
    /// Points the basket's catalogue lines take from the member (besides
    /// `points_redeemed`).
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub catalogue_points: Points,
    /// What the customer pays in money.
    pub total: Fen,
    /// Points this sale earns.
    pub points_to_earn: Points,
    /// Coupons this sale issues.
    pub coupons_to_issue: Vec<IssuedCoupon>,
    /// One line per rule applied or considered, for people.
    pub explain: Vec<String>,
    /// Flags the sale earns, e.g. `free_shipping`.
    #[serde(default)]
    pub flags: Vec<String>,
    /// The rule-set version the basket was priced with (absent: no rule set loaded).
    #[serde(default)]
    pub rules_version: Option<String>,
}

/// `checkout/commit` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommitResponse {
    /// The new transaction's id.
    pub transaction_id: TransactionId,
    /// The POS receipt number.
    pub receipt_id: String,
    /// Money paid, in fen.
    pub total: Fen,
    /// Discounts applied.
    pub discounts: Vec<Discount>,
    /// Points earned by this sale.
    pub points_earned: Points,
    /// Points spent in this sale to pay.
    pub points_redeemed: Points,
    /// Points the sale's catalogue lines took.
    #[serde(default, skip_serializing_if = "Points::is_zero")]
    pub catalogue_points: Points,
    /// The member's balance after the sale (absent for a walk-in).
    pub balance_after: Option<Points>,
    /// The member's tier after the sale (absent for a walk-in).
    pub tier_after: Option<String>,
    /// Coupons issued by this sale.
    pub coupons_issued: Vec<IssuedCoupon>,
    /// The rule-set version the sale was priced with (absent: no rule set loaded).
    #[serde(default)]
    pub rules_version: Option<String>,
    /// Flags the sale earned, e.g. `free_shipping`.
    #[serde(default)]
    pub flags: Vec<String>,
}

/// One refunded line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundLine {
    /// The SKU as it was on the receipt.
    pub sku: String,
    /// How many units come back.
    pub qty: i64,
}

/// `POST /v1/refunds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundRequest {
    /// The receipt being refunded.
    pub receipt_id: String,
    /// The refunded lines; absent means everything not yet refunded.
    #[serde(default)]
    pub lines: Option<Vec<RefundLine>>,
}

/// `POST /v1/refunds` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundResponse {
    /// The refund's id.
    pub refund_id: TransactionId,
    /// Money returned to the customer, in fen.
    pub amount_refunded: Fen,
    /// Earned points taken back.
    pub points_reversed: Points,
    /// Redeemed points given back.
    pub points_returned: Points,
    /// The member's balance after (absent for a walk-in receipt).
    pub balance_after: Option<Points>,
    /// Codes of coupons the sale used, usable again after a full refund.
    #[serde(default)]
    pub coupons_restored: Vec<String>,
    /// Codes of coupons the sale had granted, withdrawn: all of them by a full refund,
    /// and a tier's upgrade coupon by a refund that takes the member below that tier.
    #[serde(default)]
    pub coupons_withdrawn: Vec<String>,
    /// Points of tier-upgrade gifts the sale earned, taken back on the same rule.
    #[serde(default)]
    pub gift_points_withdrawn: Points,
}

/// `POST /v1/members/{member_id}/redemptions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedemptionRequest {
    /// Points to spend, at least 1.
    pub points: i64,
    /// What for, e.g. `gift:SAMPLE-01`.
    pub reason: String,
    /// The member's code (from the member's page), as proof that the member is present:
    /// with it a lane may redeem above `limits.standalone_redemption_points` without
    /// the manager. Each code is taken once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_code: Option<String>,
}

/// `POST /v1/members/{member_id}/redemptions` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RedemptionResponse {
    /// The redemption's id.
    pub redemption_id: TransactionId,
    /// The member's balance after.
    pub balance_after: Points,
}

/// Behaviour that earns points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    /// Daily check-in: once per calendar day.
    CheckIn,
    /// Sharing a product or campaign.
    Share,
    /// The member completed the profile: once per member.
    ProfileCompleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CheckIn => "check_in",
            EventType::Share => "share",
            EventType::ProfileCompleted => "profile_completed",
        }
    }
}

/// `POST /v1/members/{member_id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventRequest {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client's reference (a share id, for example).
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
}

/// `POST /v1/members/{member_id}/events` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventResponse {
    /// Points awarded; 0 when the rule's limit was already reached.
    pub points_awarded: Points,
    /// The member's balance after.
    pub balance_after: Points,
    /// Why nothing was awarded, when nothing was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_request_reads_the_flat_wire_shape() {
        let json = r#"{"member_id":null,"lines":[{"sku":"A1","qty":2,"unit_price":9900}],
                       "receipt_id":"R-1"}"#;
        let req: Result<CommitRequest, _> = serde_json::from_str(json);
        let req = req.ok();
        assert_eq!(req.as_ref().map(|r| r.receipt_id.as_str()), Some("R-1"));
        assert_eq!(req.map(|r| r.basket.lines.len()), Some(1));
    }

    #[test]
    fn event_type_uses_snake_case() {
        let e: Result<EventRequest, _> = serde_json::from_str(r#"{"type":"check_in"}"#);
        assert_eq!(e.ok().map(|e| e.kind), Some(EventType::CheckIn));
    }
}
