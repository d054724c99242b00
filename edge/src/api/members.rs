//! Member endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::Response;
use patron_protocol::ErrorBody;
use patron_protocol::pos::{Member, RegisterMember, UpdateMember};
use serde::Deserialize;

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, member_id, reply};
use crate::service::Idem;

/// Registers a member.
#[utoipa::path(post, path = "/v1/members", request_body = RegisterMember,
    responses((status = 201, body = Member), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn register(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    body: JsonBody<RegisterMember>,
) -> Result<Response, ApiErr> {
    let idem = key.0.map(|key| Idem {
        lane: lane.id,
        key,
        request_hash: body.hash,
    });
    Ok(reply(s.edge.register(idem, body.value).await?))
}

#[derive(Deserialize)]
pub struct PhoneQuery {
    phone: String,
}

/// Finds a member by phone.
#[utoipa::path(get, path = "/v1/members", params(("phone" = String, Query, description = "mobile number")),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn by_phone(
    State(s): State<AppState>,
    _auth: Authed,
    uri: Uri,
) -> Result<Json<Member>, ApiErr> {
    let q = axum::extract::Query::<PhoneQuery>::try_from_uri(&uri)
        .map_err(|_| ApiErr::invalid("query parameter phone is required"))?;
    Ok(Json(s.edge.member_by_phone(&q.0.phone).await?))
}

/// Reads a member by id.
#[utoipa::path(get, path = "/v1/members/{member_id}", params(("member_id" = String, Path)),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn by_id(
    State(s): State<AppState>,
    _auth: Authed,
    Path(id): Path<String>,
) -> Result<Json<Member>, ApiErr> {
    Ok(Json(s.edge.member(member_id(&id)?).await?))
}

/// Changes profile fields and preference tags.
#[utoipa::path(patch, path = "/v1/members/{member_id}", params(("member_id" = String, Path)), request_body = UpdateMember,
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update(
    State(s): State<AppState>,
    Authed(lane): Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<UpdateMember>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    let idem = key.0.map(|key| Idem {
        lane: lane.id,
        key,
        request_hash: body.hash,
    });
    Ok(reply(s.edge.update_member(idem, id, body.value).await?))
}
