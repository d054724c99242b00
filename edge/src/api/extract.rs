//! Request extractors that answer in the POS API's error shape: bearer auth, the
//! `Idempotency-Key` header, and JSON bodies bounded to 64 KiB.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use patron_protocol::ErrorCode;
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiErr;
use crate::domain::validate;
use crate::service::{Lane, Role};

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// The authenticated caller.
pub struct Authed(pub Lane);

impl Authed {
    /// Refuses callers whose role is not in `roles` (403).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiErr> {
        if roles.contains(&self.0.role) {
            Ok(())
        } else {
            Err(ApiErr::new(
                ErrorCode::Forbidden,
                format!("role {} may not do this", self.0.role.as_str()),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Authed {
    type Rejection = ApiErr;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            || ApiErr::new(ErrorCode::Unauthorized, "a valid bearer token is required");
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(unauthorized)?;
        match state.edge.authenticate(token).await? {
            Some(lane) => Ok(Authed(lane)),
            None => Err(unauthorized()),
        }
    }
}

/// The `Idempotency-Key` header, validated, if present.
pub struct IdemKey(pub Option<String>);

impl IdemKey {
    /// The key, or `invalid_request` where the API requires one.
    pub fn required(self) -> Result<String, ApiErr> {
        self.0
            .ok_or_else(|| ApiErr::invalid("this request needs an Idempotency-Key header"))
    }

    /// The identity of a request that requires a key: `lane`'s, under this key, with
    /// `body`'s hash.
    pub fn of<T>(self, lane: &Lane, body: &JsonBody<T>) -> Result<crate::service::Idem, ApiErr> {
        Ok(crate::service::Idem {
            lane: lane.id,
            key: self.required()?,
            request_hash: body.hash,
        })
    }
}

impl FromRequestParts<AppState> for IdemKey {
    type Rejection = ApiErr;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        match parts.headers.get("idempotency-key") {
            None => Ok(IdemKey(None)),
            Some(v) => {
                let s = v
                    .to_str()
                    .map_err(|_| ApiErr::invalid("Idempotency-Key must be visible ASCII"))?;
                Ok(IdemKey(Some(
                    validate::idempotency_key(s).map_err(ApiErr::invalid)?,
                )))
            }
        }
    }
}

/// A JSON body of at most 64 KiB, and the keyed hash of route and raw bytes that
/// idempotency compares.
pub struct JsonBody<T> {
    /// The parsed body.
    pub value: T,
    /// Keyed hash of method, path and body.
    pub hash: [u8; 32],
}

fn too_large() -> ApiErr {
    ApiErr::new(
        ErrorCode::PayloadTooLarge,
        format!("request bodies are limited to {MAX_BODY} bytes"),
    )
    .closing()
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiErr;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        if let Some(ct) = parts.headers.get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("");
            if !ct.starts_with("application/json") && !ct.contains("+json") {
                return Err(ApiErr::invalid("Content-Type must be application/json"));
            }
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => {
                // to_bytes fails with a length-limit error when the stream runs past the cap.
                let is_limit = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit");
                return Err(if is_limit {
                    too_large()
                } else {
                    ApiErr::invalid("could not read the request body")
                });
            }
        };
        let route = format!("{} {}", parts.method, parts.uri.path());
        let hash = state.edge.core.vault.request_hash(&route, &bytes);
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiErr::invalid(format!("malformed JSON body: {e}")))?;
        Ok(JsonBody { value, hash })
    }
}
