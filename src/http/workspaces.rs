//! Workspaces, invites and workspace member lists.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn list() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn create() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn get() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn invite() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn accept_invite() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}

pub async fn list_users() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}
