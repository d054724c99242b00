//! Member-service endpoints (the front desk): the member's ledger, manual points
//! adjustments and their approval, points transfers.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use patron_protocol::service::{
    AdjustPoints, Adjustment, ChangePhone, MemberLedger, PendingAdjustments, PhoneChanged,
    Transfer, TransferPoints,
};
use patron_protocol::{ErrorBody, TransactionId};
use serde::Deserialize;

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, member_id, reply};
use crate::service::statements::LedgerQuery;

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<usize>,
    before: Option<String>,
}

/// The member's history, newest first: purchases, refunds, points movements with the
/// running total, coupons given, expiries.
#[utoipa::path(get, path = "/v1/members/{member_id}/ledger",
    params(("member_id" = String, Path), ("limit" = Option<usize>, Query, description = "1-200, default 50"),
        ("before" = Option<String>, Query, description = "next_before of the page before")),
    responses((status = 200, body = MemberLedger), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ledger(
    State(s): State<AppState>,
    Authed(_lane): Authed,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<MemberLedger>, ApiErr> {
    let q = axum::extract::Query::<PageQuery>::try_from_uri(&uri)
        .map_err(|_| ApiErr::invalid("limit must be a number; before a cursor"))?;
    let id = member_id(&id)?;
    let q = LedgerQuery {
        limit: q.0.limit,
        before: q.0.before,
    };
    Ok(Json(s.edge.member_ledger(id, q).await?))
}

/// Adds or takes points by hand, with a reason code: 201 applied, 202 waiting for a
/// manager (more than `[member_service] approve_adjustments_above` either way).
#[utoipa::path(post, path = "/v1/members/{member_id}/adjustments",
    params(("member_id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = AdjustPoints,
    responses((status = 201, body = Adjustment), (status = 202, body = Adjustment), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn adjust(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<AdjustPoints>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = key.of(&lane, &body)?;
    Ok(reply(s.edge.adjust(idem, &lane, id, body.value).await?))
}

/// Adjustments waiting for a manager's approval (managers only).
#[utoipa::path(get, path = "/v1/adjustments",
    responses((status = 200, body = PendingAdjustments), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn pending_adjustments(
    State(s): State<AppState>,
    Authed(lane): Authed,
) -> Result<Json<PendingAdjustments>, ApiErr> {
    Ok(Json(s.edge.pending_adjustments(&lane).await?))
}

/// Approves a pending adjustment: a manager other than the one who asked for it.
#[utoipa::path(post, path = "/v1/adjustments/{adjustment_id}/approve", params(("adjustment_id" = String, Path)),
    responses((status = 200, body = Adjustment), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn approve_adjustment(
    State(s): State<AppState>,
    Authed(lane): Authed,
    Path(id): Path<String>,
) -> Result<Json<Adjustment>, ApiErr> {
    let id = adjustment_id(&id)?;
    Ok(Json(s.edge.decide_adjustment(&lane, id, true).await?))
}

/// Rejects a pending adjustment: a manager other than the one who asked for it.
#[utoipa::path(post, path = "/v1/adjustments/{adjustment_id}/reject", params(("adjustment_id" = String, Path)),
    responses((status = 200, body = Adjustment), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn reject_adjustment(
    State(s): State<AppState>,
    Authed(lane): Authed,
    Path(id): Path<String>,
) -> Result<Json<Adjustment>, ApiErr> {
    let id = adjustment_id(&id)?;
    Ok(Json(s.edge.decide_adjustment(&lane, id, false).await?))
}

fn adjustment_id(raw: &str) -> Result<TransactionId, ApiErr> {
    uuid::Uuid::parse_str(raw)
        .map(|u| TransactionId::from_bytes(*u.as_bytes()))
        .map_err(|_| {
            crate::service::EdgeError::NotFound("no adjustment with this id".into()).into()
        })
}

/// Sends points to another member of the chain. Needs the hub: refused offline.
#[utoipa::path(post, path = "/v1/members/{member_id}/transfers",
    params(("member_id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = TransferPoints,
    responses((status = 201, body = Transfer), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn transfer(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<TransferPoints>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = key.of(&lane, &body)?;
    Ok(reply(
        s.edge.transfer(idem, lane.actor(), id, body.value).await?,
    ))
}

/// Changes the member's phone number: the old number typed in full, and a new number
/// that is no member's across the chain (asks the hub: refused offline).
#[utoipa::path(post, path = "/v1/members/{member_id}/phone",
    params(("member_id" = String, Path), ("Idempotency-Key" = String, Header)), request_body = ChangePhone,
    responses((status = 200, body = PhoneChanged), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn change_phone(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<ChangePhone>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = key.of(&lane, &body)?;
    Ok(reply(
        s.edge
            .change_phone(idem, lane.actor(), id, body.value)
            .await?,
    ))
}
