//! Real time: the WebSocket endpoint and the SSE stream.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn sse() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn websocket() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}
