//! The POS API v1 over HTTP (axum). Handlers extract, call a service, and map the
//! result; no business rule lives here.

mod checkout;
pub mod error;
pub mod extract;
mod health;
mod members;
pub mod openapi;
mod points;
mod promotions;
mod service;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use patron_protocol::ErrorCode;
use tower_http::catch_panic::CatchPanicLayer;

use crate::service::{Edge, Reply};
use error::ApiErr;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The services.
    pub edge: Arc<Edge>,
}

/// The full router of the edge.
#[allow(deprecated)] // GET /v1/members?phone= stays for older POS software
pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/v1/openapi.json", get(openapi::serve))
        .route(
            "/v1/members",
            post(members::register).get(members::by_phone),
        )
        .route("/v1/members/lookup", post(members::lookup))
        .route(
            "/v1/members/{member_id}",
            get(members::by_id).merge(patch(members::update)),
        )
        .route("/v1/members/{member_id}/ledger", get(service::ledger))
        .route("/v1/members/{member_id}/adjustments", post(service::adjust))
        .route("/v1/members/{member_id}/transfers", post(service::transfer))
        .route("/v1/members/{member_id}/phone", post(service::change_phone))
        .route("/v1/adjustments", get(service::pending_adjustments))
        .route(
            "/v1/adjustments/{adjustment_id}/approve",
            post(service::approve_adjustment),
        )
        .route(
            "/v1/adjustments/{adjustment_id}/reject",
            post(service::reject_adjustment),
        )
        .route("/v1/members/{member_id}/redemptions", post(points::redeem))
        .route("/v1/members/{member_id}/events", post(points::event))
        .route("/v1/checkout/quote", post(checkout::quote))
        .route("/v1/checkout/commit", post(checkout::commit))
        .route("/v1/refunds", post(points::refund))
        .route(
            "/v1/admin/rule-set",
            get(promotions::get_rule_set).put(promotions::put_rule_set),
        )
        .route(
            "/v1/members/{member_id}/coupons",
            post(promotions::give_coupon),
        )
        .route(
            "/v1/members/{member_id}/coupons/{code}/claim",
            post(promotions::claim_coupon),
        )
        .route(
            "/v1/members/{member_id}/benefits/{code}/use",
            post(promotions::use_benefit),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Our extractor enforces 64 KiB itself and answers in the API's error shape.
        .layer(DefaultBodyLimit::disable())
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiErr::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .with_state(AppState { edge })
}

async fn not_found() -> ApiErr {
    ApiErr::new(ErrorCode::NotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiErr {
    ApiErr::invalid("method not allowed on this endpoint")
        .with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// Sends a stored-or-fresh reply, marking replays.
fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = (
        status,
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r.body,
    )
        .into_response();
    if r.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    resp
}

/// Parses a member id from the path; a malformed one is `invalid_request`.
fn member_id(raw: &str) -> Result<patron_protocol::MemberId, ApiErr> {
    raw.parse()
        .map_err(|_| ApiErr::invalid("member_id must be a UUID"))
}
