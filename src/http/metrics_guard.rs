//! `/metrics` protection and cost: with `FECHATTER_METRICS_TOKEN` a scrape needs
//! `Authorization: Bearer <token>` (else 401); with `FECHATTER_METRICS_ADDR` the main listener
//! answers `/metrics` 404 and only the separate listener serves it. A rendered scrape is reused
//! for one second, so many scrapers cost one render per second.

use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError, web};
use bytes::Bytes;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::extract::bearer_token;
use crate::state::AppState;

/// How long a rendered scrape is served again.
const REUSE_FOR: Duration = Duration::from_secs(1);

static LAST: Mutex<Option<(Instant, Bytes)>> = Mutex::new(None);

/// Marks the app of the separate metrics listener (app data).
#[derive(Clone, Copy)]
pub struct MetricsListener;

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.path() != "/metrics" {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let dedicated = req.app_data::<MetricsListener>().is_some();
    if state.config.metrics_addr.is_some() && !dedicated {
        let resp =
            ApiError::not_found("/metrics is served on FECHATTER_METRICS_ADDR").error_response();
        return Ok(req.into_response(resp));
    }
    if let Some(token) = &state.config.metrics_token {
        let given = bearer_token(req.request()).unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            let resp = ApiError::unauthorized("/metrics needs its bearer token").error_response();
            return Ok(req.into_response(resp));
        }
    }
    if let Some((at, body)) = LAST.lock().as_ref()
        && at.elapsed() < REUSE_FOR
    {
        let resp = HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(body.clone());
        return Ok(req.into_response(resp));
    }
    let res = next.call(req).await?;
    if res.status() != StatusCode::OK {
        return Ok(res.map_into_boxed_body());
    }
    let (req, resp) = res.into_parts();
    let (head, body) = resp.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    *LAST.lock() = Some((Instant::now(), bytes.clone()));
    let resp = head.set_body(bytes).map_into_boxed_body();
    Ok(ServiceResponse::new(req, resp))
}
