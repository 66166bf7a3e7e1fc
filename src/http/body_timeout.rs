//! Request bodies have a deadline: a body not received whole within `FECHATTER_BODY_TIMEOUT_SECS`
//! of its headers is cut off and answered 408 with `Connection: close` (headers have their own
//! 5 s bound in actix). A response to a request whose body was not read to its end also closes
//! the connection, so an unread, never-finishing body cannot hold it either.

use std::cell::Cell;
use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpResponse, web};
use bytes::Bytes;
use futures_util::Stream;

use super::error::current_request_id;
use crate::state::AppState;

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
                Poll::Ready(None)
            }
            Poll::Ready(Some(item)) => Poll::Ready(Some(item)),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.state.timed_out.set(true);
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

pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|s| Duration::from_secs(s.config.body_timeout_secs));
    let Some(timeout) = timeout.filter(|_| has_body(&req)) else {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    };
    let state = Rc::new(BodyState::default());
    let guarded: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(Deadline {
        inner: req.take_payload(),
        sleep: Box::pin(tokio::time::sleep(timeout)),
        state: state.clone(),
    });
    req.set_payload(Payload::from(guarded));
    let res = next.call(req).await;
    if state.timed_out.get() {
        let (http_req, _) = match res {
            Ok(r) => r.into_parts(),
            Err(e) => {
                // The error already rendered a response; replace it with the 408.
                let mut resp = timeout_response();
                resp.head_mut().set_connection_type(ConnectionType::Close);
                return Err(actix_web::error::InternalError::from_response(e, resp).into());
            }
        };
        tracing::debug!("request body timed out");
        return Ok(ServiceResponse::new(http_req, timeout_response()));
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

/// 408 in the contract's envelope, closing the connection.
fn timeout_response() -> HttpResponse {
    let body = serde_json::json!({
        "error": {
            "code": "REQUEST_TIMEOUT",
            "message": "The request body was not received in time",
            "details": {},
        },
        "request_id": current_request_id(),
    });
    let mut resp = HttpResponse::build(StatusCode::REQUEST_TIMEOUT).json(body);
    resp.head_mut().set_connection_type(ConnectionType::Close);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
