//! Batch: several API operations in one request.

use actix_web::HttpResponse;

use super::error::{ApiError, ApiResult};

pub async fn batch() -> ApiResult<HttpResponse> {
    Err(ApiError::NotFound("not implemented yet".into()))
}
