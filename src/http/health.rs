//! `GET /api/health`: liveness, the build's version and uptime.

use actix_web::{HttpResponse, web};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/api/health", tag = "health", summary = "Liveness, version and uptime",
    security(()), responses((status = 200, body = crate::http::openapi::Health)))]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "healthy",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started_at.elapsed().as_secs(),
    }))
}
