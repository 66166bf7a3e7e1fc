//! Connection caps: at most `FECHATTER_MAX_CONNECTIONS_PER_IP` open connections per client
//! address (trusted proxies exempt) and, server-wide, the open-file limit less
//! `FECHATTER_FD_HEADROOM`. Counted at accept (`on_connect`) with a guard in the connection's
//! extensions that uncounts on close; a connection over a cap is still accepted and answered —
//! 503 `SERVICE_UNAVAILABLE` with `Retry-After` and `Connection: close` — never left to fail
//! with "too many open files".

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

/// Open connections, per address and in total.
pub struct ConnLimits {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    per_ip_max: usize,
    total_max: usize,
    trusted: TrustedProxies,
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
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            if let dashmap::Entry::Occupied(mut e) = self.limits.per_ip.entry(ip) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }
}

impl ConnLimits {
    pub fn new(per_ip_max: usize, total_max: usize, trusted: TrustedProxies) -> Arc<Self> {
        Arc::new(ConnLimits {
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            per_ip_max,
            total_max,
            trusted,
        })
    }

    /// Open connections now (all addresses).
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Counts a new connection (the `HttpServer::on_connect` hook).
    pub fn on_connect(self: &Arc<Self>, io: &dyn Any, ext: &mut Extensions) {
        let peer = io
            .downcast_ref::<actix_web::rt::net::TcpStream>()
            .and_then(|s| s.peer_addr().ok())
            .map(|a| a.ip());
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
        ext.insert(Slot {
            limits: self.clone(),
            ip,
            over,
        });
    }
}

/// Answers requests on a connection over a cap with 503 and closes it. Batch sub-requests
/// (the server calling itself) are let through.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let over = req.conn_data::<Slot>().and_then(|s| s.over);
    let internal = req.extensions().contains::<super::batch::Subrequest>();
    let Some(over) = over.filter(|_| !internal) else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    crate::metrics::rate_limited(match over {
        Over::Address => "connections_per_ip",
        Over::Server => "connections_total",
    });
    let message = match over {
        Over::Address => "Too many open connections from this address; retry shortly",
        Over::Server => "The server is at its connection limit; retry shortly",
    };
    let mut resp = ApiError::Unavailable(message.into()).error_response();
    resp.head_mut().set_connection_type(ConnectionType::Close);
    Ok(req.into_response(resp).map_into_right_body())
}
