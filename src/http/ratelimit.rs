//! Rate limiting (governor GCRA), keyed per user when the request carries a valid bearer token,
//! per client IP otherwise; sets `X-RateLimit-*` on every limited response.
//!
//! Limits (each a configuration knob):
//! - every request under `/api/` and `/ws`: `FECHATTER_RATE_LIMIT_PER_HOUR` per key (burst = the
//!   whole hourly amount, replenished evenly over the hour);
//! - `/api/search/*` additionally: `FECHATTER_SEARCH_RATE_PER_MIN` per key;
//! - login and register additionally: `FECHATTER_AUTH_RATE_PER_MIN` per client IP
//!   ([`RateLimits::check_auth`], called by those handlers).
//!
//! Backends: each node's own governor buckets (one node), or in cluster mode (`REDIS_URL`) one
//! GCRA bucket per key in Redis shared by every node (`cluster::limits`, same arithmetic, same
//! headers). When Redis does not answer, the node falls back to its own buckets (still limited,
//! per node) rather than refusing or waving requests through.
//!
//! `X-RateLimit-Reset` is the unix second at which the key's quota is fully replenished (all of
//! `X-RateLimit-Limit` available again) if it makes no further requests. Exempt: `/api/health`,
//! `/metrics`, `/admin/*` when it takes its own token, and the static API docs; a request with a non-standard
//! method never gets here (`http::unknown_method` answers it first).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, ResponseError, web};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{NotUntil, Quota, RateLimiter};

use super::error::{ApiError, ApiResult};
use super::extract::bearer_token;
use crate::cluster::Cluster;
use crate::cluster::limits::SharedLimiter;
use crate::config::Config;
use crate::state::AppState;

pub const LIMIT_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const REMAINING_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const RESET_HEADER: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whom a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateKey {
    User(i64),
    Ip(IpAddr),
}

type Instant = <DefaultClock as Clock>::Instant;
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One keyed limiter and the numbers its headers report.
pub struct Limiter<K: std::hash::Hash + Eq + Clone> {
    inner: Keyed<K>,
    /// Cells in a full bucket (`X-RateLimit-Limit`).
    burst: u32,
    /// Time to replenish one cell.
    per_cell: Duration,
    /// Which limit (a metrics label).
    name: &'static str,
}

/// A decision with what the headers need.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_in: Duration,
    /// Until the next request may pass (zero when allowed).
    pub retry_after: Duration,
    pub limiter: &'static str,
}

impl Decision {
    /// The refusal as the contract's 429.
    pub fn error(&self) -> ApiError {
        let secs = ceil_secs(self.retry_after).max(1);
        ApiError::RateLimited {
            message: format!(
                "Too many requests ({} limit); retry in {secs} s",
                self.limiter
            ),
            retry_after_secs: secs,
        }
    }

    /// Writes `X-RateLimit-Limit/Remaining/Reset`.
    pub fn write_headers(&self, headers: &mut actix_web::http::header::HeaderMap) {
        let reset = SystemTime::now()
            .checked_add(self.reset_in)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(ceil_secs)
            .unwrap_or(0);
        headers.insert(LIMIT_HEADER, HeaderValue::from(self.limit));
        headers.insert(REMAINING_HEADER, HeaderValue::from(self.remaining));
        headers.insert(RESET_HEADER, HeaderValue::from(reset));
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// `burst` requests, the whole bucket replenished over `period`.
    fn new(name: &'static str, burst: u32, period: Duration) -> Self {
        let burst_nz = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let per_cell = period / burst_nz.get();
        let quota = Quota::with_period(per_cell.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst_nz);
        Limiter {
            inner: RateLimiter::dashmap(quota).with_middleware::<StateInformationMiddleware>(),
            burst: burst_nz.get(),
            per_cell,
            name,
        }
    }

    /// Takes one cell for `key` if it can.
    pub fn check(&self, key: &K) -> Decision {
        match self.inner.check_key(key) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: self.burst,
                    remaining,
                    // Full again after the used cells replenish (an upper bound within one cell).
                    reset_in: self.per_cell * (self.burst - remaining.min(self.burst)),
                    retry_after: Duration::ZERO,
                    limiter: self.name,
                }
            }
            Err(not_until) => self.refused(&not_until),
        }
    }

    fn refused(&self, not_until: &NotUntil<Instant>) -> Decision {
        let wait = not_until.wait_time_from(self.inner.clock().now());
        Decision {
            allowed: false,
            limit: self.burst,
            remaining: 0,
            // The next cell frees after `wait`; the rest of the bucket after that.
            reset_in: wait + self.per_cell * (self.burst - 1),
            retry_after: wait,
            limiter: self.name,
        }
    }

    /// Takes one cell for `key` from the cluster's shared bucket (`shared` is the key's name in
    /// Redis); the local bucket when there is no cluster or Redis fails.
    pub async fn check_in(&self, shared: Option<&SharedLimiter>, key: &K, name: &str) -> Decision {
        let Some(shared) = shared else {
            return self.check(key);
        };
        match shared
            .check(self.name, name, self.burst, self.per_cell)
            .await
        {
            Ok(v) => Decision {
                allowed: v.allowed,
                limit: self.burst,
                remaining: v.remaining.min(self.burst),
                reset_in: v.reset_in,
                retry_after: v.retry_after,
                limiter: self.name,
            },
            Err(e) => {
                tracing::debug!(error = %e, limiter = self.name, "shared rate limit unavailable; using this node's");
                ::metrics::counter!("fechatter_rate_limit_fallbacks_total", "limit" => self.name)
                    .increment(1);
                self.check(key)
            }
        }
    }

    /// Forgets keys whose bucket is full again (indistinguishable from a new key).
    pub fn evict_idle(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// The server's rate limiters.
pub struct RateLimits {
    /// Per user (valid bearer token).
    pub general: Limiter<RateKey>,
    /// Per client IP, for requests without a valid token.
    pub anonymous: Limiter<RateKey>,
    pub search: Limiter<RateKey>,
    pub auth: Limiter<IpAddr>,
    /// Cluster mode: the buckets in Redis (the local ones above are the fallback).
    shared: Option<SharedLimiter>,
}

impl RateKey {
    /// The key's name in the shared buckets.
    fn name(&self) -> String {
        match self {
            RateKey::User(id) => format!("u:{id}"),
            RateKey::Ip(ip) => format!("ip:{ip}"),
        }
    }
}

impl RateLimits {
    pub fn new(config: &Config, cluster: Option<&Cluster>) -> Self {
        RateLimits {
            shared: cluster.map(|c| SharedLimiter::new(c.clone())),
            general: Limiter::new(
                "general",
                config.rate_limit_per_hour,
                Duration::from_secs(3600),
            ),
            anonymous: Limiter::new(
                "anonymous",
                config.ip_rate_limit_per_hour,
                Duration::from_secs(3600),
            ),
            search: Limiter::new(
                "search",
                config.search_rate_per_min,
                Duration::from_secs(60),
            ),
            auth: Limiter::new("auth", config.auth_rate_per_min, Duration::from_secs(60)),
        }
    }

    /// Login/register attempts per client IP.
    pub async fn check_auth(&self, ip: IpAddr) -> ApiResult<()> {
        let d = self
            .auth
            .check_in(self.shared.as_ref(), &ip, &format!("ip:{ip}"))
            .await;
        if d.allowed {
            Ok(())
        } else {
            crate::metrics::rate_limited(d.limiter);
            Err(d.error())
        }
    }

    /// Drops idle keys from every limiter, so memory follows the active keys, not all keys ever
    /// seen. Run periodically (see `app.rs`).
    pub fn evict_idle(&self) {
        self.general.evict_idle();
        self.anonymous.evict_idle();
        self.search.evict_idle();
        self.auth.evict_idle();
    }

    /// Keys held over all limiters.
    pub fn keys(&self) -> usize {
        self.general.len() + self.anonymous.len() + self.search.len() + self.auth.len()
    }

    /// Counts one request against `key`: the general limit, and the search limit on search
    /// paths. The decision whose headers are reported is the refusal, or else the tighter one.
    pub async fn check_request(&self, key: RateKey, search: bool) -> Decision {
        let shared = self.shared.as_ref();
        let name = key.name();
        let general = match key {
            RateKey::User(_) => self.general.check_in(shared, &key, &name).await,
            RateKey::Ip(_) => self.anonymous.check_in(shared, &key, &name).await,
        };
        if !general.allowed || !search {
            return general;
        }
        let search = self.search.check_in(shared, &key, &name).await;
        if !search.allowed || search.remaining <= general.remaining {
            search
        } else {
            general
        }
    }
}

/// Paths not counted: liveness, scraping, the static docs, and admin when it takes its own
/// token (`admin_token_set`; without one any signed-in user may call it, so it is counted like
/// the API: each call probes the database and the search engine).
fn exempt(path: &str, admin_token_set: bool) -> bool {
    if path == "/admin" || path.starts_with("/admin/") {
        return admin_token_set;
    }
    // Only the API and the real-time endpoints are limited (the web client's files are not).
    let limited =
        path == "/api" || path.starts_with("/api/") || path == "/ws" || path.starts_with("/ws/");
    !limited
        || path == "/api/health"
        || path == "/metrics"
        || path == "/api/openapi.json"
        || path == "/api/docs"
        || path.starts_with("/api/docs/")
}

/// Applies the per-user/per-IP limits and sets the `X-RateLimit-*` headers. A valid bearer token
/// is authenticated here once (the `AuthUser` extractor reuses it); an invalid one is keyed by IP
/// and left for the handler to refuse.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return next.call(req).await.map(|r| r.map_into_left_body());
    };
    // Before anything reads the peer: a batch sub-request carries its caller's address.
    super::batch::accept_subrequest(&mut req, &state);
    if exempt(req.path(), state.config.admin_token.is_some()) {
        return next.call(req).await.map(|r| r.map_into_left_body());
    }
    let key = match request_token(&req) {
        Some(token) => match state.authenticate(&token).await {
            Ok(user) => {
                req.extensions_mut().insert(user);
                RateKey::User(user.id)
            }
            Err(_) => RateKey::Ip(super::client_ip::client_ip(req.request())),
        },
        None => RateKey::Ip(super::client_ip::client_ip(req.request())),
    };
    let search = req.path().starts_with("/api/search/");
    let decision = state.limits.check_request(key, search).await;
    if !decision.allowed {
        crate::metrics::rate_limited(decision.limiter);
        let mut resp = decision.error().error_response();
        decision.write_headers(resp.headers_mut());
        return Ok(req.into_response(resp).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    decision.write_headers(res.headers_mut());
    Ok(res.map_into_left_body())
}

/// The access token a request authenticates with: the bearer header, or for the SSE stream
/// (which browsers cannot give headers) its `access_token` query parameter.
fn request_token(req: &ServiceRequest) -> Option<String> {
    if let Some(t) = bearer_token(req.request()) {
        return Some(t.to_owned());
    }
    if req.path() != "/api/events" {
        return None;
    }
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
}

/// Evicts idle limiter keys every `every` for as long as the state lives.
pub fn spawn_eviction(state: &web::Data<AppState>, every: Duration) {
    let weak = Arc::downgrade(&state.clone().into_inner());
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { break };
            state.limits.evict_idle();
            crate::metrics::run_upkeep();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers' numbers: remaining counts down, the refusal says when to retry, and the
    /// reset is the time to refill the used cells.
    #[test]
    fn decisions_count_down_then_refuse() {
        let l: Limiter<u32> = Limiter::new("t", 3, Duration::from_secs(3600));
        let a = l.check(&1);
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining), (3, 2));
        assert_eq!(a.reset_in, Duration::from_secs(1200));
        assert_eq!(l.check(&1).remaining, 1);
        assert_eq!(l.check(&1).remaining, 0);
        let refused = l.check(&1);
        assert!(!refused.allowed);
        assert!(refused.retry_after > Duration::from_secs(1100));
        assert!(refused.retry_after <= Duration::from_secs(1200));
        assert!(refused.reset_in > Duration::from_secs(3500));
        assert_eq!(l.check(&2).remaining, 2, "another key has its own bucket");
    }

    /// Eviction drops keys whose bucket is full again and keeps the others.
    #[test]
    fn eviction_keeps_only_recent_keys() {
        let l: Limiter<u32> = Limiter::new("t", 1000, Duration::from_millis(1000));
        for k in 0..10_000 {
            l.check(&k);
        }
        assert_eq!(l.len(), 10_000);
        std::thread::sleep(Duration::from_millis(5));
        l.evict_idle();
        assert_eq!(l.len(), 0);
        let hot: Limiter<u32> = Limiter::new("t", 2, Duration::from_secs(3600));
        hot.check(&7);
        hot.evict_idle();
        assert_eq!(hot.len(), 1);
    }
}
