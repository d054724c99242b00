//! `GET /healthz`.

use axum::Json;
use axum::extract::State;
use patron_protocol::pos::Health;

use super::AppState;
use super::error::ApiErr;

/// Liveness and sync status; no authentication.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
pub async fn healthz(State(s): State<AppState>) -> Result<Json<Health>, ApiErr> {
    Ok(Json(s.edge.health().await?))
}
