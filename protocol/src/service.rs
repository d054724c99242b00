//! Member-service operations of POS API v1 (the front desk): a member's ledger, manual
//! points adjustments with a two-person rule, and points transfers between members.

use serde::{Deserialize, Serialize};

use crate::ids::MemberId;
use crate::money::{Fen, Points};

/// Most entries one ledger page holds.
pub const MAX_LEDGER_PAGE: usize = 200;

/// `GET /v1/members/{member_id}/ledger` answer: entries newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberLedger {
    /// The member.
    pub member_id: MemberId,
    /// Redeemable points now (as the member card shows them).
    pub balance: Points,
    /// Points earned but not redeemable yet.
    pub pending: Points,
    /// This page's entries, newest first.
    pub entries: Vec<LedgerEntry>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// One line of a member's ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LedgerEntry {
    /// When (RFC 3339, the store's offset).
    pub at: String,
    /// What: a fact kind (`purchase`, `refund`, `redemption`, `event`, `coupon_issued`,
    /// `upgrade_gift`, `referral_reward`, `gift_withdrawn`, `adjustment`, `transfer`,
    /// …) or `expired` (lots that expired unused).
    pub kind: String,
    /// The store that recorded it (`hub` for what the hub settled; empty for expiries).
    pub store: String,
    /// How the points held changed (earned, spent, taken back, expired).
    pub points: Points,
    /// Points held after it: the balance plus pending points, less any debt.
    pub balance_after: Points,
    /// The receipt, for purchases and refunds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt_id: Option<String>,
    /// Money paid (purchases) or returned (refunds, negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Fen>,
    /// Coupons: the code given, or the codes a purchase used (comma-separated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<String>,
    /// A short reason: a redemption's reason, an event's type, an adjustment's reason
    /// code, a gift's tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /v1/members/{member_id}/adjustments`: points added (> 0) or taken (< 0) by
/// hand. More than the store's threshold either way waits for a manager's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AdjustPoints {
    /// Points: positive adds, negative takes (at most the balance).
    pub points: i64,
    /// `goodwill`, `correction`, `complaint`, `missing_purchase`, `migration`, `other`.
    pub reason: String,
    /// A ticket or receipt number (no free text).
    #[serde(default)]
    pub reference: Option<String>,
}

/// An adjustment and where it stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Adjustment {
    /// Its id (the adjustment fact's transaction once applied).
    pub adjustment_id: String,
    /// The member.
    pub member_id: MemberId,
    /// Points added or taken.
    pub points: Points,
    /// The reason code.
    pub reason: String,
    /// The reference, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `applied`, `pending` (waiting for a manager) or `rejected`.
    pub status: String,
    /// The lane that asked for it.
    pub requested_by: String,
    /// The manager's lane that approved or rejected it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When it was asked for (RFC 3339).
    pub created_at: String,
    /// The member's balance after it, when it was applied by this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_after: Option<Points>,
}

/// `GET /v1/adjustments` answer: adjustments waiting for a decision, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingAdjustments {
    /// The adjustments.
    pub adjustments: Vec<Adjustment>,
}

/// `POST /v1/members/{member_id}/transfers`: points sent to another member of the
/// chain. Needs the hub (refused offline) and stays within the store's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferPoints {
    /// The receiver (looked up at this store first: by phone through
    /// `POST /v1/members/lookup`, which fetches a member of another store).
    pub to_member_id: MemberId,
    /// Points to send (> 0).
    pub points: i64,
}

/// A transfer made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transfer {
    /// Its id.
    pub transfer_id: String,
    /// Points sent.
    pub points: Points,
    /// The sender's balance after.
    pub balance_after: Points,
}

/// `POST /v1/members/{member_id}/phone`: a new phone number for the member. The old
/// number, typed in full, proves the request is the member's; the new one must be no
/// member's across the chain (the hub is asked: refused offline).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangePhone {
    /// The member's phone number now.
    pub old_phone: String,
    /// The new number.
    pub new_phone: String,
}

/// A phone number changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PhoneChanged {
    /// The member.
    pub member_id: MemberId,
    /// The new number, masked.
    pub phone_masked: String,
}
