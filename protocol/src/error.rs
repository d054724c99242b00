//! The POS API error codes and their HTTP statuses, in one table.
//!
//! POS vendors code against these strings (`shared/POS-API.md`): never rename one,
//! only add.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal) ),* $(,)?) => {
        /// A stable, machine-readable error code of POS API v1.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The wire string, e.g. `member_not_found`.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status this code is answered with by default.
            pub fn http_status(self) -> u16 {
                match self { $( ErrorCode::$variant => $status, )* }
            }
        }
    };
}

error_codes! {
    /// The request is malformed or a field is out of range.
    InvalidRequest => ("invalid_request", 400),
    /// No bearer token, or an unknown one.
    Unauthorized => ("unauthorized", 401),
    /// A valid token whose role may not do this.
    Forbidden => ("forbidden", 403),
    /// No such route or resource (a receipt, a refund target).
    NotFound => ("not_found", 404),
    /// No member with this id or phone.
    MemberNotFound => ("member_not_found", 404),
    /// The phone already belongs to a member.
    MemberExists => ("member_exists", 409),
    /// The member's available balance is below the points asked for.
    InsufficientPoints => ("insufficient_points", 422),
    /// The hub is unreachable and the offline floor limit is reached.
    OfflineLimitExceeded => ("offline_limit_exceeded", 422),
    /// The receipt id was already committed under another idempotency key.
    ReceiptExists => ("receipt_exists", 409),
    /// A coupon code is unknown, used, expired or not applicable.
    CouponInvalid => ("coupon_invalid", 422),
    /// The idempotency key was used before with a different request body.
    IdempotencyKeyReused => ("idempotency_key_reused", 422),
    /// The body exceeds 64 KiB.
    PayloadTooLarge => ("payload_too_large", 413),
    /// The operation would pass an abuse limit of the lane or the sale (`details` name
    /// it); the store's manager is not limited.
    LimitExceeded => ("limit_exceeded", 422),
    /// A member code offered as proof that the member is present is malformed, forged,
    /// expired, used already, another member's, or cannot be checked at this store yet.
    MemberCodeInvalid => ("member_code_invalid", 422),
    /// A limited entitlement (a benefit's monthly quota) is used up for this member,
    /// counted across the chain; or the hub cannot be asked and the entitlement's
    /// offline policy does not allow another use.
    ClaimLimitReached => ("claim_limit_reached", 422),
    /// Too many requests of this kind from this lane; `Retry-After` says when to try
    /// again.
    RateLimited => ("rate_limited", 429),
    /// A points-catalogue item has no units left at this store.
    OutOfStock => ("out_of_stock", 422),
    /// The resource is not in a state that allows this (an adjustment decided already).
    Conflict => ("conflict", 409),
    /// The operation needs the hub (a points transfer) and the hub cannot be reached.
    HubUnreachable => ("hub_unreachable", 503),
    /// Something failed inside the edge; the client sees no detail.
    Internal => ("internal", 500),
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The error itself.
    pub error: ApiError,
}

/// One error: a stable code, a human-readable message, and optional details.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    /// The stable code the POS branches on.
    pub code: ErrorCode,
    /// For people; may change between versions.
    pub message: String,
    /// Structured context, e.g. `{"member_id": "…"}` for `member_exists`.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_match_serde_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).ok();
            assert_eq!(json, Some(serde_json::Value::String(code.as_str().into())));
        }
    }

    #[test]
    fn statuses_follow_the_spec() {
        assert_eq!(ErrorCode::Unauthorized.http_status(), 401);
        assert_eq!(ErrorCode::MemberExists.http_status(), 409);
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::IdempotencyKeyReused.http_status(), 422);
        assert_eq!(ErrorCode::RateLimited.http_status(), 429);
        assert_eq!(ErrorCode::MemberCodeInvalid.http_status(), 422);
        assert_eq!(ErrorCode::ClaimLimitReached.http_status(), 422);
        assert_eq!(ErrorCode::Conflict.http_status(), 409);
        assert_eq!(ErrorCode::HubUnreachable.http_status(), 503);
        assert_eq!(ErrorCode::OutOfStock.http_status(), 422);
        assert_eq!(ErrorCode::ALL.len(), 20);
    }
}
