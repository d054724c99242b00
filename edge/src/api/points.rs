//! Refunds, standalone redemptions and behaviour events.

use axum::extract::{Path, State};
use axum::response::Response;
use patron_protocol::ErrorBody;
use patron_protocol::pos::{
    EventRequest, EventResponse, RedemptionRequest, RedemptionResponse, RefundRequest,
    RefundResponse,
};

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, member_id, reply};
use crate::service::Idem;

/// Refunds a receipt, whole or by line.
#[utoipa::path(post, path = "/v1/refunds", request_body = RefundRequest, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = RefundResponse), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn refund(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    body: JsonBody<RefundRequest>,
) -> Result<Response, ApiErr> {
    let idem = Idem {
        lane: lane.id,
        key: key.required()?,
        request_hash: body.hash,
    };
    Ok(reply(s.edge.refund(idem, lane.actor(), body.value).await?))
}

/// Spends points outside a sale.
#[utoipa::path(post, path = "/v1/members/{member_id}/redemptions", params(("member_id" = String, Path), ("Idempotency-Key" = String, Header)),
    request_body = RedemptionRequest,
    responses((status = 201, body = RedemptionResponse), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn redeem(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<RedemptionRequest>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = Idem {
        lane: lane.id,
        key: key.required()?,
        request_hash: body.hash,
    };
    Ok(reply(
        s.edge.redeem(idem, lane.actor(), id, body.value).await?,
    ))
}

/// Awards points for behaviour.
#[utoipa::path(post, path = "/v1/members/{member_id}/events", params(("member_id" = String, Path)), request_body = EventRequest,
    responses((status = 201, body = EventResponse), (status = 200, body = EventResponse, description = "limit reached, nothing awarded")),
    security(("bearer" = [])))]
pub async fn event(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<EventRequest>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = key.0.map(|key| Idem {
        lane: lane.id,
        key,
        request_hash: body.hash,
    });
    Ok(reply(
        s.edge.event(idem, lane.actor(), id, body.value).await?,
    ))
}
