//! The hub's own error table: each code its wire string and HTTP status, in one place,
//! and the one mapping from [`HubError`]. Failures of the hub itself (storage, the
//! system) are answered 500 with a fixed message — their detail goes to the log, never
//! to the caller.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::HubError;

macro_rules! hub_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal) ),* $(,)?) => {
        /// A stable, machine-readable error code of the hub's API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum HubCode {
            $( $(#[$doc])* $variant, )*
        }

        impl HubCode {
            /// Every code, in table order.
            pub const ALL: &'static [HubCode] = &[$(HubCode::$variant),*];

            /// The wire string.
            pub fn as_str(self) -> &'static str {
                match self { $( HubCode::$variant => $code, )* }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> u16 {
                match self { $( HubCode::$variant => $status, )* }
            }
        }
    };
}

hub_codes! {
    /// The request is malformed or a field is out of range.
    InvalidRequest => ("invalid_request", 400),
    /// No credential or token, or an unknown one.
    Unauthorized => ("unauthorized", 401),
    /// A valid store that may not do this (a forged origin, a refused enrollment).
    Forbidden => ("forbidden", 403),
    /// The store was revoked by HQ: nothing it sends is applied.
    StoreRevoked => ("store_revoked", 403),
    /// No such endpoint.
    NotFound => ("not_found", 404),
    /// The thing to create exists already.
    Exists => ("exists", 409),
    /// The body is larger than the endpoint takes.
    PayloadTooLarge => ("payload_too_large", 413),
    /// The store speaks a sync protocol this hub no longer serves: upgrade it.
    ProtocolUnsupported => ("protocol_unsupported", 426),
    /// The store sends requests faster than its budget: retry after `Retry-After`.
    RateLimited => ("rate_limited", 429),
    /// The store used up its member-fetch budget: retry later.
    FetchLimit => ("fetch_limit", 429),
    /// The hub failed; the detail is in its log.
    Internal => ("internal", 500),
}

/// The body of every error answer: `{"error": {"code": …, "message": …}}`.
#[derive(Debug, Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Debug, Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: &'a str,
}

/// An error answer.
pub fn err(code: HubCode, message: impl AsRef<str>) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = Body {
        error: Detail {
            code: code.as_str(),
            message: message.as_ref(),
        },
    };
    (status, axum::Json(body)).into_response()
}

/// The message of every 500: what failed is in the hub's log.
pub const INTERNAL: &str = "the hub failed to answer; the detail is in its log";

impl IntoResponse for HubError {
    fn into_response(self) -> Response {
        let code = match &self {
            HubError::Invalid(_) => HubCode::InvalidRequest,
            HubError::Exists(_) => HubCode::Exists,
            HubError::Unauthorized => HubCode::Unauthorized,
            HubError::Revoked(_) => HubCode::StoreRevoked,
            HubError::Forged { .. } | HubError::Enrollment(_) | HubError::NotServed => {
                HubCode::Forbidden
            }
            HubError::Protocol { .. } => HubCode::ProtocolUnsupported,
            HubError::FetchLimit { .. } => HubCode::FetchLimit,
            HubError::RateLimited {
                retry_after_secs, ..
            } => {
                let mut r = err(HubCode::RateLimited, self.to_string());
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(*retry_after_secs),
                );
                return r;
            }
            HubError::Store(_) | HubError::Random => {
                tracing::error!(error = %self, "the hub failed a request");
                return err(HubCode::Internal, INTERNAL);
            }
        };
        err(code, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_map_to_their_statuses() {
        let mut seen = std::collections::HashSet::new();
        for c in HubCode::ALL {
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!(StatusCode::from_u16(c.status()).is_ok());
        }
        let storage = HubError::Store(crate::store::StoreError::Corrupt(
            "page 7 of hub.sqlite".into(),
        ));
        let r = storage.into_response();
        assert_eq!(r.status().as_u16(), 500);
        let fetch = HubError::FetchLimit { per_minute: 5 }.into_response();
        assert_eq!(fetch.status().as_u16(), 429);
        let old = HubError::Protocol {
            asked: 0,
            min: 1,
            newest: 2,
        }
        .into_response();
        assert_eq!(old.status().as_u16(), 426);
    }

    /// A 500 says nothing of what failed: storage paths and SQL stay in the log.
    #[tokio::test]
    async fn a_failure_of_the_hub_is_masked() {
        use http_body_util::BodyExt;
        let storage = HubError::Store(crate::store::StoreError::Corrupt(
            "page 7 of /var/lib/patron-hub/hub.sqlite".into(),
        ));
        let body = storage
            .into_response()
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(INTERNAL), "{text}");
        assert!(
            !text.contains("hub.sqlite") && !text.contains("page 7"),
            "{text}"
        );
    }
}
