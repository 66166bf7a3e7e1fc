//! Connection caps: at most `FECHATTER_MAX_CONNECTIONS_PER_IP` open connections per client
//! address (trusted proxies exempt) and, server-wide, the open-file limit less
//! `FECHATTER_FD_HEADROOM`. Counted at accept (`on_connect`) with a guard in the connection's
//! extensions that uncounts on close; a connection over a cap is still accepted and answered —
//! 503 `SERVICE_UNAVAILABLE` with `Retry-After` and `Connection: close` — never left to fail
//! with "too many open files".
//!
//! The refusal happens at accept, before anything is parsed: whatever the client has sent is
//! discarded, the canned 503 written and both directions shut, so the connection ends at once
//! (a client that never finishes its request line no longer holds its descriptor until the
//! header timeout) and costs no request state, middleware, log line or metric series. Bytes
//! that reach the socket between that discard and actix's first read (the client wrote right
//! after connecting) are still queued by Linux despite the shutdown, so actix may parse one
//! request from them: the outermost layer ([`drop_refused`]) answers it before any other layer
//! runs and the connection closes. Only a connection from the server's own address (its batch
//! sub-requests call it on loopback) is left to the middleware, which lets sub-requests through.

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError};
use dashmap::DashMap;

use super::client_ip::TrustedProxies;
use super::error::ApiError;
use crate::faults::Faults;

/// Open connections, per address and in total.
pub struct ConnLimits {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    per_ip_max: usize,
    total_max: usize,
    trusted: TrustedProxies,
    faults: Arc<Faults>,
}

/// Which cap a connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Over {
    Address,
    Server,
}

/// Held in a connection's extensions for its lifetime.
struct Slot {
    limits: Arc<ConnLimits>,
    ip: Option<IpAddr>,
    over: Option<Over>,
    /// Answered and shut at accept: nothing read from it is served.
    refused: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip
            && let dashmap::Entry::Occupied(mut e) = self.limits.per_ip.entry(ip)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl ConnLimits {
    pub fn new(
        per_ip_max: usize,
        total_max: usize,
        trusted: TrustedProxies,
        faults: Arc<Faults>,
    ) -> Arc<Self> {
        Arc::new(ConnLimits {
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            per_ip_max,
            total_max,
            trusted,
            faults,
        })
    }

    /// Open connections now (all addresses).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Counts a new connection (the `HttpServer::on_connect` hook); refuses one over a cap.
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, ext: &mut Extensions) {
        let tcp = io.downcast_ref::<actix_web::rt::net::TcpStream>();
        let peer = tcp.and_then(|s| s.peer_addr().ok()).map(|a| a.ip());
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let mut over = (total > self.total_max).then_some(Over::Server);
        let ip = peer.filter(|ip| !self.trusted.contains(*ip));
        if let Some(ip) = ip {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            *n += 1;
            if *n > self.per_ip_max {
                over = over.or(Some(Over::Address));
            }
        }
        let mut refused = false;
        if let (Some(over), Some(tcp), Some(peer)) = (over, tcp, peer) {
            let own = tcp.local_addr().ok().map(|a| a.ip());
            if own != Some(peer) {
                refuse_at_accept(tcp, over, !self.faults.keep_refused_bytes());
                refused = true;
            }
        }
        ext.insert(Slot {
            limits: self.clone(),
            ip,
            over,
            refused,
        });
    }
}

impl Over {
    fn limiter(self) -> &'static str {
        match self {
            Over::Address => "connections_per_ip",
            Over::Server => "connections_total",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Over::Address => "Too many open connections from this address; retry shortly",
            Over::Server => "The server is at its connection limit; retry shortly",
        }
    }
}

/// The whole 503 response to a refused connection, in the contract's envelope.
fn canned_refusal(over: Over) -> Vec<u8> {
    let id = super::error::new_request_id();
    let body = ApiError::Unavailable(over.message().into()).envelope(&id);
    let body = body.to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nx-request-id: {id}\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Refuses a fresh connection before actix reads from it: drops what the client has sent so far
/// (at most 64 KiB; more, or anything later, makes the kernel reset the connection after the
/// answer), writes the 503 without waiting and shuts both directions, so actix's first read
/// sees the end and closes it. `discard` is false only under the fault hook that stands for
/// bytes arriving just after the discard.
fn refuse_at_accept(tcp: &actix_web::rt::net::TcpStream, over: Over, discard: bool) {
    crate::metrics::rate_limited(over.limiter());
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let fd = tcp.as_raw_fd();
        let mut sink = [0u8; 4096];
        for _ in 0..if discard { 16 } else { 0 } {
            // SAFETY: `fd` is the connection's open socket (borrowed for this call) and `sink` a
            // writable buffer of the length given; MSG_DONTWAIT never blocks.
            let n =
                unsafe { libc::recv(fd, sink.as_mut_ptr().cast(), sink.len(), libc::MSG_DONTWAIT) };
            if n <= 0 {
                break;
            }
        }
        let response = canned_refusal(over);
        // SAFETY: as above; the buffer is readable for its length. A short or failed write
        // (a full send buffer on a fresh socket does not happen) only loses the answer.
        unsafe {
            libc::send(
                fd,
                response.as_ptr().cast(),
                response.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
            libc::shutdown(fd, libc::SHUT_RDWR);
        }
    }
}

/// The outermost layer: a request parsed from a connection refused at accept (its bytes came
/// in after the refusal's discard) is not served, counted or logged; the client already has
/// its 503, so the bare answer only closes the connection.
pub async fn drop_refused(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !req.conn_data::<Slot>().is_some_and(|s| s.refused) {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let mut resp = actix_web::HttpResponse::ServiceUnavailable().finish();
    resp.head_mut().set_connection_type(ConnectionType::Close);
    Ok(req.into_response(resp).map_into_right_body())
}

/// Answers requests on a connection over a cap that was not refused at accept (from the
/// server's own address) with 503 and closes it. Batch sub-requests (the server calling itself)
/// are let through.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let over = req.conn_data::<Slot>().and_then(|s| s.over);
    let internal = req.extensions().contains::<super::batch::Subrequest>();
    let Some(over) = over.filter(|_| !internal) else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    crate::metrics::rate_limited(over.limiter());
    let mut resp = ApiError::Unavailable(over.message().into()).error_response();
    resp.head_mut().set_connection_type(ConnectionType::Close);
    Ok(req.into_response(resp).map_into_right_body())
}
