//! Open requests per forwarded client: a trusted proxy's connections are exempt from the
//! per-address connection cap (they carry many clients), so each request it forwards counts
//! against its client's address instead — at most `FECHATTER_MAX_REQUESTS_PER_FORWARDED_CLIENT`
//! open at once, a stream or WebSocket until its response ends; beyond, 429 `RATE_LIMITED`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use bytes::Bytes;

use super::address_caps::{AddressCaps, Slot};
use super::client_ip::{TrustedProxies, client_ip};
use super::error::ApiError;

/// The forwarded clients' open requests (app data).
#[derive(Clone)]
pub struct ForwardedRequests(pub Arc<AddressCaps>);

/// A response body that holds its request's slot until it ends (or is dropped).
struct Held {
    inner: BoxBody,
    _slot: Slot,
}

impl MessageBody for Held {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_next(cx)
    }
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let proxied = match (
        req.peer_addr(),
        req.app_data::<web::Data<TrustedProxies>>(),
        req.app_data::<ForwardedRequests>(),
    ) {
        (Some(peer), Some(trusted), Some(caps)) if trusted.contains(peer.ip()) => {
            Some(caps.0.clone())
        }
        _ => None,
    };
    // Batch sub-requests (the server calling itself) count as their batch, which is counted.
    let internal = req.extensions().contains::<super::batch::Subrequest>();
    let Some(caps) = proxied.filter(|_| !internal) else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let slot = match caps.acquire(client_ip(req.request())) {
        Ok(slot) => slot,
        Err(_) => {
            crate::metrics::rate_limited("requests_per_forwarded_client");
            let err = ApiError::RateLimited {
                message: "Too many open requests from this client; retry shortly".into(),
                retry_after_secs: 1,
            };
            return Ok(req.into_response(err.error_response()));
        }
    };
    let res = next.call(req).await?;
    Ok(res.map_body(|_, body| {
        BoxBody::new(Held {
            inner: body.boxed(),
            _slot: slot,
        })
    }))
}
