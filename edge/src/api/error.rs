//! The one place where errors become POS API error responses.
//!
//! 4xx answers are the client's business and are not logged as errors; a 5xx is logged
//! with its cause and the client sees only a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patron_protocol::{ApiError, ErrorBody, ErrorCode};
use serde_json::{Value, json};

use crate::service::EdgeError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiErr {
    code: ErrorCode,
    status: Option<StatusCode>,
    message: String,
    details: Value,
    /// The request body was not read: the connection cannot be reused, and the client
    /// must be told so, or its next request on it fails with a broken pipe.
    close: bool,
    /// `Retry-After`, in seconds.
    retry_after: Option<u64>,
}

impl ApiErr {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            status: None,
            message: message.into(),
            details: Value::Null,
            close: false,
            retry_after: None,
        }
    }

    /// `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// Marks a response sent without reading the request body (`Connection: close`).
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Overrides the code's default status (e.g. 405 for a wrong method).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

impl From<EdgeError> for ApiErr {
    fn from(e: EdgeError) -> Self {
        let msg = e.to_string();
        match e {
            EdgeError::Invalid(m) => ApiErr::invalid(m),
            EdgeError::InvalidWith { message, details } => {
                ApiErr::invalid(message).with_details(details)
            }
            EdgeError::MemberNotFound => ApiErr::new(ErrorCode::MemberNotFound, msg),
            EdgeError::MemberExists { member_id } => ApiErr::new(ErrorCode::MemberExists, msg)
                .with_details(json!({ "member_id": member_id })),
            EdgeError::NotFound(m) => ApiErr::new(ErrorCode::NotFound, m),
            EdgeError::InsufficientPoints {
                available,
                requested,
            } => ApiErr::new(ErrorCode::InsufficientPoints, msg)
                .with_details(json!({ "available": available, "requested": requested })),
            EdgeError::ReservedElsewhere {
                available,
                requested,
                reserved_at,
                ..
            } => ApiErr::new(ErrorCode::InsufficientPoints, msg).with_details(json!({
                "available": available, "requested": requested, "reserved_at": reserved_at
            })),
            EdgeError::OfflineLimitExceeded {
                requested,
                member_left,
                store_left,
            } => ApiErr::new(ErrorCode::OfflineLimitExceeded, msg).with_details(json!({
                "requested": requested, "member_left": member_left, "store_left": store_left
            })),
            EdgeError::ProvisionalMember { requested } => {
                ApiErr::new(ErrorCode::OfflineLimitExceeded, msg).with_details(json!({
                    "requested": requested, "member_left": 0, "provisional": true
                }))
            }
            EdgeError::ReceiptExists(r) => {
                ApiErr::new(ErrorCode::ReceiptExists, msg).with_details(json!({ "receipt_id": r }))
            }
            EdgeError::IdempotencyKeyReused => ApiErr::new(ErrorCode::IdempotencyKeyReused, msg),
            EdgeError::MemberCode(_) => ApiErr::new(ErrorCode::MemberCodeInvalid, msg),
            EdgeError::ClaimLimit(_) => ApiErr::new(ErrorCode::ClaimLimitReached, msg),
            EdgeError::Forbidden(_) => ApiErr::new(ErrorCode::Forbidden, msg),
            EdgeError::Conflict(_) => ApiErr::new(ErrorCode::Conflict, msg),
            EdgeError::OutOfStock { sku, left, asked } => ApiErr::new(ErrorCode::OutOfStock, msg)
                .with_details(json!({ "sku": sku, "left": left, "asked": asked })),
            EdgeError::HubUnreachable(_) => ApiErr::new(ErrorCode::HubUnreachable, msg),
            EdgeError::LimitExceeded(e) => ApiErr::new(ErrorCode::LimitExceeded, msg).with_details(
                json!({ "limit": e.limit, "allowed": e.allowed, "used": e.used, "asked": e.asked }),
            ),
            EdgeError::RateLimited { retry_after_secs } => {
                let mut e = ApiErr::new(ErrorCode::RateLimited, msg)
                    .with_details(json!({ "retry_after_secs": retry_after_secs }));
                e.retry_after = Some(retry_after_secs);
                e
            }
            EdgeError::CouponInvalid { code, reason } => ApiErr::new(ErrorCode::CouponInvalid, msg)
                .with_details(json!({ "code": code, "reason": reason })),
            EdgeError::Store(_) | EdgeError::Crypto(_) => {
                tracing::error!(error = %msg, "internal error");
                ApiErr::new(
                    ErrorCode::Internal,
                    "internal error; the request was not applied",
                )
            }
        }
    }
}

impl IntoResponse for ApiErr {
    fn into_response(self) -> Response {
        let status = self
            .status
            .or_else(|| StatusCode::from_u16(self.code.http_status()).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error: ApiError {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        if self.close {
            resp.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        resp
    }
}
