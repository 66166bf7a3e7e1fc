//! Chats: channels, direct messages, membership and read markers.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn list() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn create() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn create_direct() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn get() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn join() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn leave() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn members() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn add_member() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn mark_read() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}
