//! Admin: production health and metrics.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn health() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn metrics() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn prometheus() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

/// Live counters for the admin endpoints.
#[derive(Default)]
pub struct Stats {}
