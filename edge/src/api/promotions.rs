//! Rule-set administration, coupons and tier benefits.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use patron_protocol::pos::{BenefitUse, CouponView, IssueCoupon, RuleSetInfo};
use patron_protocol::{ErrorBody, ErrorCode};

use super::error::ApiErr;
use super::extract::{Authed, IdemKey, JsonBody};
use super::{AppState, member_id, reply};
use crate::domain::promo::ruleset::RuleSet;
use crate::service::{Idem, Role};

/// Loads a rule set (JSON, `docs/rules.md`) and puts it in force. Admin only. 201 when
/// the version is new, 200 when the same version with the same content was loaded
/// before (it is put back in force).
#[utoipa::path(put, path = "/v1/admin/rule-set",
    responses((status = 201, body = RuleSetInfo), (status = 200, body = RuleSetInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_rule_set(
    State(s): State<AppState>,
    auth: Authed,
    body: JsonBody<RuleSet>,
) -> Result<Response, ApiErr> {
    auth.require(&[Role::Admin])?;
    let (info, created) = s.edge.load_rules(body.value).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info)).into_response())
}

/// The rule set in force.
#[utoipa::path(get, path = "/v1/admin/rule-set",
    responses((status = 200, body = RuleSetInfo), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_rule_set(
    State(s): State<AppState>,
    auth: Authed,
) -> Result<Json<RuleSetInfo>, ApiErr> {
    auth.require(&[Role::Admin, Role::Cashier])?;
    match s.edge.rules_info().await? {
        Some(info) => Ok(Json(info)),
        None => Err(ApiErr::new(
            ErrorCode::NotFound,
            "no rule set is loaded: no promotions apply",
        )),
    }
}

/// Gives a member a coupon. Cashiers and admins only: a POS lane cannot mint coupons.
#[utoipa::path(post, path = "/v1/members/{member_id}/coupons", params(("member_id" = String, Path)), request_body = IssueCoupon,
    responses((status = 201, body = CouponView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn give_coupon(
    State(s): State<AppState>,
    auth: Authed,
    key: IdemKey,
    Path(id): Path<String>,
    body: JsonBody<IssueCoupon>,
) -> Result<Response, ApiErr> {
    auth.require(&[Role::Cashier, Role::Admin])?;
    let id = member_id(&id)?;
    let idem = key.0.map(|key| Idem {
        lane: auth.0.id,
        key,
        request_hash: body.hash,
    });
    Ok(reply(
        s.edge
            .give_coupon(idem, auth.0.actor(), id, body.value)
            .await?,
    ))
}

/// Activates a coupon that must be claimed before use.
#[utoipa::path(post, path = "/v1/members/{member_id}/coupons/{code}/claim", params(("member_id" = String, Path), ("code" = String, Path)),
    responses((status = 200, body = CouponView), (status = 422, body = ErrorBody)), security(("bearer" = [])))]
pub async fn claim_coupon(
    State(s): State<AppState>,
    _auth: Authed,
    Path((id, code)): Path<(String, String)>,
) -> Result<Json<CouponView>, ApiErr> {
    let id = member_id(&id)?;
    Ok(Json(s.edge.claim_coupon(id, code).await?))
}

/// Uses one of a tier benefit's monthly quota (e.g. a free dry-cleaning).
#[utoipa::path(post, path = "/v1/members/{member_id}/benefits/{code}/use", params(("member_id" = String, Path), ("code" = String, Path)),
    responses((status = 201, body = BenefitUse), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn use_benefit(
    State(s): State<AppState>,
    auth: Authed,
    key: IdemKey,
    Path((id, code)): Path<(String, String)>,
) -> Result<Response, ApiErr> {
    let id = member_id(&id)?;
    // No body: the key alone identifies the request.
    let hash = s
        .edge
        .core
        .vault
        .request_hash(&format!("benefit {id} {code}"), &[]);
    let idem = key.0.map(|key| Idem {
        lane: auth.0.id,
        key,
        request_hash: hash,
    });
    Ok(reply(s.edge.use_benefit(idem, id, code).await?))
}
