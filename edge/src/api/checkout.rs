//! Checkout endpoints.

use axum::Json;
use axum::extract::State;
use axum::response::Response;
use patron_protocol::ErrorBody;
use patron_protocol::pos::{Basket, CommitRequest, CommitResponse, Quote};

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, reply};
use crate::service::Idem;

/// Prices a basket; changes nothing.
#[utoipa::path(post, path = "/v1/checkout/quote", request_body = Basket,
    responses((status = 200, body = Quote), (status = 400, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn quote(
    State(s): State<AppState>,
    _auth: Authed,
    body: JsonBody<Basket>,
) -> Result<Json<Quote>, ApiErr> {
    Ok(Json(s.edge.quote(body.value).await?))
}

/// Records a sale; answered only after the durable commit.
#[utoipa::path(post, path = "/v1/checkout/commit", request_body = CommitRequest,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = CommitResponse), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn commit(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    body: JsonBody<CommitRequest>,
) -> Result<Response, ApiErr> {
    let idem = Idem {
        lane: lane.id,
        key: key.required()?,
        request_hash: body.hash,
    };
    Ok(reply(s.edge.commit(idem, lane.actor(), body.value).await?))
}
