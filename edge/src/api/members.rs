//! Member endpoints.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use patron_protocol::ErrorBody;
use patron_protocol::pos::{LookupMember, LookupPurpose, Member, RegisterMember, UpdateMember};
use serde::Deserialize;

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, member_id, reply};
use crate::service::{Idem, LookupBy};

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
    Ok(reply(s.edge.register_for(&lane, idem, body.value).await?))
}

#[derive(Deserialize)]
pub struct PhoneQuery {
    phone: String,
}

#[derive(Deserialize)]
pub struct PurposeQuery {
    #[serde(default)]
    purpose: LookupPurpose,
}

/// Finds a member by phone. The phone sits in the URL, where proxies and logs keep
/// it: use `POST /v1/members/lookup` (this route stays for older POS software).
#[utoipa::path(get, path = "/v1/members", params(("phone" = String, Query, description = "mobile number")),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
#[deprecated = "POST /v1/members/lookup keeps the phone out of URLs"]
pub async fn by_phone(
    State(s): State<AppState>,
    Authed(lane): Authed,
    uri: Uri,
) -> Result<Response, ApiErr> {
    let q = axum::extract::Query::<PhoneQuery>::try_from_uri(&uri)
        .map_err(|_| ApiErr::invalid("query parameter phone is required"))?;
    let m = s
        .edge
        .look_up(&lane, LookupBy::Phone(q.0.phone), LookupPurpose::Sale)
        .await?;
    let mut resp = Json(m).into_response();
    // RFC 9745: the route is deprecated; the successor is linked.
    let h = resp.headers_mut();
    h.insert("deprecation", HeaderValue::from_static("@1796083200"));
    h.insert(
        axum::http::header::LINK,
        HeaderValue::from_static("</v1/members/lookup>; rel=\"successor-version\""),
    );
    Ok(resp)
}

/// Finds a member by phone or id, saying why (`sale` or `service`). The answer is
/// masked unless the lane's role needs more for that purpose; every lookup is
/// recorded; lookups by phone are limited per lane.
#[utoipa::path(post, path = "/v1/members/lookup", request_body = LookupMember,
    responses((status = 200, body = Member), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 429, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup(
    State(s): State<AppState>,
    Authed(lane): Authed,
    body: JsonBody<LookupMember>,
) -> Result<Json<Member>, ApiErr> {
    let req = body.value;
    let by = match (req.phone, req.member_id) {
        (Some(phone), None) => LookupBy::Phone(phone),
        (None, Some(id)) => LookupBy::Id(id),
        _ => return Err(ApiErr::invalid("give one of phone or member_id")),
    };
    Ok(Json(s.edge.look_up(&lane, by, req.purpose).await?))
}

/// Reads a member by id (`?purpose=service` for member service; default `sale`).
#[utoipa::path(get, path = "/v1/members/{member_id}",
    params(("member_id" = String, Path), ("purpose" = Option<LookupPurpose>, Query)),
    responses((status = 200, body = Member), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn by_id(
    State(s): State<AppState>,
    Authed(lane): Authed,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<Member>, ApiErr> {
    let q = axum::extract::Query::<PurposeQuery>::try_from_uri(&uri)
        .map_err(|_| ApiErr::invalid("purpose must be sale or service"))?;
    let id = member_id(&id)?;
    Ok(Json(
        s.edge.look_up(&lane, LookupBy::Id(id), q.0.purpose).await?,
    ))
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
    Ok(reply(s.edge.update_for(&lane, idem, id, body.value).await?))
}
