//! `GET /v1/openapi.json`, generated from the handlers' annotations and the protocol types.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{checkout, health, members, points, promotions, service};

/// The POS API v1 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Patron POS API", version = "1", description = "The contract between a store's POS and its edge node."),
    paths(
        health::healthz,
        members::register, members::by_phone, members::lookup, members::by_id, members::update,
        checkout::quote, checkout::commit,
        points::refund, points::redeem, points::event,
        promotions::put_rule_set, promotions::get_rule_set, promotions::give_coupon,
        promotions::claim_coupon, promotions::use_benefit,
        service::ledger, service::adjust, service::pending_adjustments,
        service::approve_adjustment, service::reject_adjustment, service::transfer, service::change_phone,
    ),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Serves the document.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
