//! Request bodies have a deadline: a body not received whole within `FECHATTER_BODY_TIMEOUT_SECS`
//! of its headers is cut off and answered 408 with `Connection: close` (headers have their own
//! 5 s bound in actix). The body is read here, before the handler runs (a stalled one then
//! holds only this middleware's state, not the handler's); one announced over
//! `FECHATTER_MAX_BODY_BYTES`, or still arriving past it, is left to the handler's extractor to
//! refuse. A response to a request whose body was not read to its end also closes the
//! connection, so an unread, never-finishing body cannot hold it either.
//!
//! The deadline of each body is drawn from the last eighth of the bound (`spread`): bodies an
//! attacker opened in one burst are then cut off over a spread of time rather than all in the
//! same instant, which queued honest requests behind thousands of cut-offs on a worker.
//!
//! Bodies still arriving are counted per client address (`FECHATTER_PENDING_BODIES_PER_IP`) and
//! server-wide (`FECHATTER_MAX_PENDING_BODIES`): a body over either cap gets no slot and only
//! `FECHATTER_BODY_OVER_CAP_MS` to arrive, then 429 (the address) / 503 (the server) + close. So
//! stalled bodies hold at most the caps' worth of connections, and an honest body, which follows
//! its headers, passes even when the caps are full.

use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, ResponseError, web};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use super::address_caps::{AddressCaps, Over, Slot};
use super::client_ip::client_ip;
use super::error::{ApiError, current_request_id};
use crate::state::AppState;

/// The pending-body counts (app data).
#[derive(Clone)]
pub struct PendingBodies(pub Arc<AddressCaps>);

/// What became of a request's body.
#[derive(Default)]
struct BodyState {
    finished: Cell<bool>,
    timed_out: Cell<bool>,
}

/// The payload, cut off at its deadline.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    state: Rc<BodyState>,
    /// The body's place among the pending ones, given back once it has arrived or is cut off.
    slot: Option<Slot>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.state.finished.get() || this.state.timed_out.get() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.state.finished.set(true);
                this.slot = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.state.timed_out.set(true);
                    this.slot = None;
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request body not received in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The deadline of one body: uniformly within the last eighth of `bound` (never later than it).
fn spread(bound: Duration) -> Duration {
    let eighth = bound / 8;
    if eighth.is_zero() {
        return bound;
    }
    let nanos = u64::try_from(eighth.as_nanos()).unwrap_or(u64::MAX);
    bound - eighth + Duration::from_nanos(rand::random::<u64>() % nanos.max(1))
}

/// Whether the request announces a body (and is not a WebSocket upgrade, whose "body" is the
/// socket).
fn has_body(req: &ServiceRequest) -> bool {
    let h = req.headers();
    if h.contains_key(header::UPGRADE) {
        return false;
    }
    let sized = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    sized || h.contains_key(header::TRANSFER_ENCODING)
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

fn boxed(stream: impl Stream<Item = Result<Bytes, PayloadError>> + 'static) -> BodyStream {
    Box::pin(stream)
}

/// The announced `Content-Length`, if any.
fn content_length(req: &ServiceRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
}

/// The chunks of a body as one buffer (no copy for a body that came in one chunk).
fn concat(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = bytes::BytesMut::with_capacity(len);
    for chunk in chunks {
        buf.extend_from_slice(&chunk);
    }
    buf.freeze()
}

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let bounds = req.app_data::<web::Data<AppState>>().map(|s| {
        (
            Duration::from_secs(s.config.body_timeout_secs),
            Duration::from_millis(s.config.body_over_cap_ms),
            s.config.max_body_bytes,
        )
    });
    let Some((timeout, over_cap_timeout, max_body)) = bounds.filter(|_| has_body(&req)) else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let counted = req
        .app_data::<PendingBodies>()
        .map(|p| p.0.acquire(client_ip(req.request())));
    let (slot, over) = match counted {
        Some(Ok(slot)) => (Some(slot), None),
        Some(Err(over)) => (None, Some(over)),
        None => (None, None),
    };
    let state = Rc::new(BodyState::default());
    let mut deadline = Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(if over.is_some() {
            over_cap_timeout
        } else {
            spread(timeout)
        })),
        state: state.clone(),
        slot,
    };
    let announced = content_length(&req);
    if announced.is_some_and(|n| n > max_body) {
        // Refused from its header by the handler's extractor: nothing to read first.
        req.set_payload(Payload::from(boxed(deadline)));
    } else {
        // Read the body before the handler runs, so that a stalled one holds only this
        // middleware's state (not the handler's and its extractor's buffers).
        let mut chunks = Vec::new();
        let mut len = 0;
        let mut error = None;
        while len <= max_body {
            match deadline.next().await {
                None => break,
                Some(Ok(chunk)) => {
                    len += chunk.len();
                    chunks.push(chunk);
                }
                Some(Err(e)) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if state.timed_out.get() {
            tracing::debug!(?over, "request body timed out");
            return Ok(req.into_response(cut_off_response(over)));
        }
        let body = concat(chunks, len);
        if state.finished.get() {
            drop(deadline);
            req.set_payload(Payload::from(body));
        } else {
            // Too large, or broken: the handler reads what came, then the rest (or the error).
            let head = futures_util::stream::once(std::future::ready(Ok(body)));
            let rest = match error {
                Some(e) => boxed(futures_util::stream::once(std::future::ready(Err(e)))),
                None => boxed(deadline),
            };
            req.set_payload(Payload::from(boxed(head.chain(rest))));
        }
    }
    let res = next.call(req).await;
    if state.timed_out.get() {
        let (http_req, _) = match res {
            Ok(r) => r.into_parts(),
            Err(e) => {
                // The error already rendered a response; replace it with the 408 (or refusal).
                let mut resp = cut_off_response(over);
                resp.head_mut().set_connection_type(ConnectionType::Close);
                return Err(actix_web::error::InternalError::from_response(e, resp).into());
            }
        };
        tracing::debug!(?over, "request body timed out");
        return Ok(ServiceResponse::new(http_req, cut_off_response(over)));
    }
    let mut res = res?.map_into_boxed_body();
    if !state.finished.get() {
        // The rest of the body was never read: do not wait for it on this connection.
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// The answer to a body cut off: 408 once it had its slot and full time, else the refusal of
/// the cap it was over (429 the address, 503 the server); each closes the connection.
fn cut_off_response(over: Option<Over>) -> HttpResponse {
    let mut resp = match over {
        None => timeout_response(),
        Some(Over::Address) => {
            crate::metrics::rate_limited("pending_bodies_per_ip");
            ApiError::RateLimited {
                message: "Too many request bodies still arriving from this address; send the \
                          body with its headers or retry shortly"
                    .into(),
                retry_after_secs: 1,
            }
            .error_response()
        }
        Some(Over::Server) => {
            crate::metrics::rate_limited("pending_bodies_total");
            ApiError::Unavailable(
                "The server holds too many request bodies still arriving; retry shortly".into(),
            )
            .error_response()
        }
    };
    resp.head_mut().set_connection_type(ConnectionType::Close);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 408 in the contract's envelope.
fn timeout_response() -> HttpResponse {
    let body = serde_json::json!({
        "error": {
            "code": "REQUEST_TIMEOUT",
            "message": "The request body was not received in time",
            "details": {},
        },
        "request_id": current_request_id(),
    });
    HttpResponse::build(StatusCode::REQUEST_TIMEOUT).json(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadlines of bodies started together are spread over the last eighth of the bound and
    /// never exceed it (before: every one was exactly the bound, so a burst of stalled bodies
    /// was cut off in one instant).
    #[test]
    fn deadlines_are_spread_within_the_bound() {
        let bound = Duration::from_secs(10);
        let draws: Vec<Duration> = (0..1000).map(|_| spread(bound)).collect();
        assert!(draws.iter().all(|d| *d <= bound && *d >= bound - bound / 8));
        let min = draws.iter().min().copied().unwrap_or_default();
        let max = draws.iter().max().copied().unwrap_or_default();
        assert!(max - min > bound / 10, "spread only {:?}", max - min);
        assert_eq!(spread(Duration::from_nanos(5)), Duration::from_nanos(5));
    }
}
