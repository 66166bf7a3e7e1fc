//! Messages: send, list, edit, delete, reactions — writes go through the chat's room.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn list() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn send() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn update() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn delete() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn add_reaction() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn remove_reaction() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}
