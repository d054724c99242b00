//! Who is asking: the store behind a sync credential, or HQ behind the admin token.
//! Handlers take these as arguments, so no handler runs for an unauthenticated caller.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{HubCode, err};
use crate::enrollment::secret_hash;
use crate::error::HubError;
use crate::store::StoreRow;

/// The bearer token of a request.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The store behind the request's bearer credential, as `authenticate` finds it.
fn store_of(
    parts: &Parts,
    authenticate: impl FnOnce(&str) -> Result<StoreRow, HubError>,
) -> Result<StoreRow, HubError> {
    authenticate(bearer(&parts.headers).ok_or(HubError::Unauthorized)?)
}

/// Counts the request against its store's budget, before the body is read.
fn within_budget(s: &AppState, row: StoreRow) -> Result<StoreRow, HubError> {
    s.store_requests.take(&row.store_id, s.hub.now())?;
    Ok(row)
}

/// The enrolled store whose credential the request carries.
#[derive(Debug, Clone)]
pub struct AuthedStore(pub StoreRow);

impl FromRequestParts<AppState> for AuthedStore {
    type Rejection = Response;

    /// A point read on a reader connection (microseconds, never behind a commit): no
    /// blocking thread, which matters on the authorization hot path.
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        store_of(parts, |c| s.hub.enrollment.authenticate(c))
            .and_then(|row| within_budget(s, row))
            .map(AuthedStore)
            .map_err(IntoResponse::into_response)
    }
}

/// The store whose credential a push carries, revoked or not: a revoked store's push
/// is kept in quarantine, then refused.
#[derive(Debug, Clone)]
pub struct PushingStore(pub StoreRow);

impl FromRequestParts<AppState> for PushingStore {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        store_of(parts, |c| s.hub.enrollment.authenticate_revoked_too(c))
            .and_then(|row| within_budget(s, row))
            .map(PushingStore)
            .map_err(IntoResponse::into_response)
    }
}

/// HQ, by the admin token whose hash `patron-hub init` wrote.
#[derive(Debug, Clone, Copy)]
pub struct HqAdmin;

impl FromRequestParts<AppState> for HqAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Response> {
        match (s.admin_hash, bearer(&parts.headers)) {
            // Comparing hashes: timing reveals at most a prefix of a SHA-256, not the
            // token.
            (Some(h), Some(t)) if h == secret_hash(t) => Ok(HqAdmin),
            _ => Err(err(HubCode::Unauthorized, "an HQ admin token is required")),
        }
    }
}
