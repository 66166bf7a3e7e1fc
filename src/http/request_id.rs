//! Request id and access-log middleware: every response carries `X-Request-Id` (the client's own,
//! if it sent a sane one), error bodies quote it, and one log line per request names it.

use std::time::Instant;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use super::error::{REQUEST_ID, new_request_id};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The request id, stored in request extensions for handlers that want it.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn incoming_id(req: &ServiceRequest) -> Option<String> {
    let raw = req.headers().get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| raw.to_string())
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = incoming_id(&req).unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = req.path().to_string();
    let started = Instant::now();
    let client = super::client_ip::client_ip(req.request());
    let span = tracing::info_span!("request", request_id = %id, %method, %path, %client);
    let header = HeaderValue::from_str(&id).ok();
    let result: Result<ServiceResponse<BoxBody>, Error> = REQUEST_ID
        .scope(
            id.clone(),
            async move {
                match next.call(req).await {
                    Ok(res) => Ok(res.map_into_boxed_body()),
                    // Render here, inside the scope, so the body quotes this request's id.
                    Err(e) => {
                        let mut resp = e.error_response();
                        if let Some(h) = header {
                            resp.headers_mut().insert(REQUEST_ID_HEADER, h);
                        }
                        Err(actix_web::error::InternalError::from_response(e, resp).into())
                    }
                }
            }
            .instrument(span.clone()),
        )
        .await;
    let mut res: ServiceResponse<BoxBody> = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    let status = res.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::debug!(status, elapsed_ms, "request served");
        }
    });
    Ok(res)
}
