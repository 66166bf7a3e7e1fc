//! Admin: production health and per-service metrics behind `FECHATTER_ADMIN_TOKEN` (or, with
//! none configured, any signed-in user's token), and the Prometheus scrape endpoint `/metrics`.
//!
//! Every figure is measured when asked: dependency latencies by a round trip, CPU and memory from
//! `/proc/self`, request rates from the [`Stats`] ring the stats middleware fills.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, bearer_token};
use crate::state::AppState;

pub use super::stats::Stats;

/// How long a dependency may take to answer a health probe before it counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Lets the request through with `Authorization: Bearer <FECHATTER_ADMIN_TOKEN>` when an admin
/// token is configured (401 without a bearer token, 403 with a wrong one; the comparison takes
/// the same time wherever the tokens differ). With none configured, any signed-in user's access
/// token is accepted (401 otherwise): the figures are the server's load and its dependencies'
/// health, no user's data; production sets the token to keep them to operators.
async fn authorize(req: &HttpRequest, state: &AppState) -> ApiResult<()> {
    let Some(expected) = state.config.admin_token.as_deref() else {
        return AuthUser::extract(req).await.map(|_| ());
    };
    let token = bearer_token(req).ok_or_else(|| {
        ApiError::unauthorized("Missing admin bearer token (Authorization: Bearer <token>)")
    })?;
    if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::forbidden("Invalid admin token"))
    }
}

/// The status of one dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One probe's outcome.
struct Probe {
    status: Health,
    latency: Option<Duration>,
    error: Option<String>,
}

impl Probe {
    fn from_result(r: Result<Duration, String>) -> Self {
        match r {
            Ok(latency) => Probe {
                status: Health::Healthy,
                latency: Some(latency),
                error: None,
            },
            Err(e) => Probe {
                status: Health::Unhealthy,
                latency: None,
                error: Some(e),
            },
        }
    }

    /// `latency_ms` is whole milliseconds as the contract shows them (rounded; a healthy
    /// sub-millisecond answer reads 0), `latency_us` the same round trip in microseconds; both
    /// `null` when the probe failed (always present, so a client reads one shape).
    fn json(&self) -> Value {
        let mut v = json!({ "status": self.status, "latency_ms": null, "latency_us": null });
        if let Some(latency) = self.latency {
            v["latency_ms"] = json!(millis(latency));
            v["latency_us"] = json!(latency.as_micros() as u64);
        }
        if let Some(e) = &self.error {
            v["error"] = json!(e);
        }
        v
    }
}

/// Whole milliseconds, rounded.
fn millis(d: Duration) -> u64 {
    (d.as_micros() as u64 + 500) / 1000
}

/// Milliseconds with microsecond precision.
fn fine_millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn probe_database(state: &AppState) -> Probe {
    let r = match tokio::time::timeout(PROBE_TIMEOUT, state.store.ping()).await {
        Ok(Ok(latency)) => Ok(latency),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    };
    Probe::from_result(r)
}

/// Which search engine serves queries.
fn search_engine(state: &AppState) -> &'static str {
    state.search.engine_name()
}

/// The search engine's round trip: Meilisearch's `/health`, or for PostgreSQL full-text search
/// the database itself (the same dependency, probed once).
async fn probe_search(state: &AppState, database: &Probe) -> Probe {
    let Some(base) = state.config.meili_url.as_deref() else {
        return Probe {
            status: database.status,
            latency: database.latency,
            error: database.error.clone(),
        };
    };
    let url = format!("{}/health", base.trim_end_matches('/'));
    let started = Instant::now();
    let r = match probe_client().get(&url).send().await {
        Ok(resp) if resp.status().is_success() => Ok(started.elapsed()),
        Ok(resp) => Err(format!("Meilisearch answered {}", resp.status())),
        Err(e) if e.is_timeout() => Err(format!(
            "Meilisearch: no answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
        Err(e) if e.is_connect() => Err("Meilisearch: connection refused".to_string()),
        Err(e) => Err(format!("Meilisearch: {e}")),
    };
    Probe::from_result(r)
}

fn probe_client() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default()
    })
}

/// Resident memory in whole MiB, rounded (0 where `/proc` cannot be read).
fn memory_mb() -> u64 {
    crate::metrics::process::rss_bytes().map_or(0, |b| (b + 512 * 1024) / (1024 * 1024))
}

/// `GET /admin/production/health`: each dependency with its status and measured latency, and the
/// server's load. `unhealthy` (HTTP 503) when the database is down; `degraded` when search (or,
/// in cluster mode, Redis) is.
#[utoipa::path(get, path = "/admin/production/health", tag = "admin",
    summary = "Dependencies and load (admin token; a user's token when none is configured)",
    security(("admin" = []), ("bearer" = [])),
    responses((status = 200, body = crate::http::openapi::ProductionHealth),
        (status = 503, description = "The database is down", body = crate::http::openapi::ProductionHealth),
        (status = 401, description = "Missing bearer token"),
        (status = 403, description = "Wrong admin token")))]
pub async fn health(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    authorize(&req, &state).await?;
    let database = probe_database(&state).await;
    let search = probe_search(&state, &database).await;
    let redis = probe_redis(&state).await;
    let redis_down = redis
        .as_ref()
        .is_some_and(|r| r["status"] != json!(Health::Healthy));
    let status = if database.status != Health::Healthy {
        Health::Unhealthy
    } else if search.status != Health::Healthy || redis_down {
        Health::Degraded
    } else {
        Health::Healthy
    };
    let mut search_json = search.json();
    search_json["engine"] = json!(search_engine(&state));
    let mut services = json!({
        "database": database.json(),
        "search": search_json,
    });
    services["redis"] = redis.unwrap_or_else(|| {
        json!({
            "status": "disabled",
            "latency_ms": null,
            "latency_us": null,
            "reason": "one node: no REDIS_URL, no cluster state to reach",
        })
    });
    let body = json!({
        "status": status,
        "timestamp": unix_now(),
        "services": services,
        "metrics": {
            "requests_per_second": round2(state.stats.requests_per_second()),
            "active_connections": crate::metrics::active_connections(),
            "cpu_usage_percent": round2(state.stats.cpu_usage_percent()),
            "memory_usage_mb": memory_mb(),
        },
    });
    Ok(if status == Health::Unhealthy {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// Cluster mode: Redis's `PING` round trip, this node's id and the live nodes; `None` on one
/// node (no Redis).
async fn probe_redis(state: &AppState) -> Option<Value> {
    let cluster = state.cluster.as_ref()?;
    let mut v = Probe::from_result(cluster.ping().await).json();
    v["node"] = json!(cluster.node_id());
    v["nodes"] = match cluster.live_nodes().await {
        Ok(nodes) => json!(nodes),
        Err(_) => Value::Null,
    };
    v["broker"] = json!(cluster.broker().stats());
    Some(v)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The services `GET /admin/production/metrics/{service_name}` knows.
pub const SERVICES: &[&str] = &[
    "database",
    "search",
    "http",
    "realtime",
    "websocket",
    "system",
];

/// `GET /admin/production/metrics/{service_name}`: one service's figures; unknown name → 404.
#[utoipa::path(get, path = "/admin/production/metrics/{service_name}", tag = "admin",
    summary = "One service's figures (admin token; a user's token when none is configured)",
    security(("admin" = []), ("bearer" = [])),
    params(("service_name" = String, Path, pattern = "^(database|search|http|realtime|websocket|system)$")),
    responses((status = 200, body = crate::http::openapi::ServiceMetrics),
        (status = 401, description = "Missing bearer token"),
        (status = 403, description = "Wrong admin token"),
        (status = 404, description = "Unknown service")))]
pub async fn metrics(
    state: web::Data<AppState>,
    req: HttpRequest,
    name: web::Path<String>,
) -> ApiResult<HttpResponse> {
    authorize(&req, &state).await?;
    let name = name.into_inner();
    let figures = match name.as_str() {
        "database" => {
            let probe = probe_database(&state).await;
            let (in_use, open, max) = state.store.pool_status();
            let mut v = probe.json();
            v["pool"] = json!({ "in_use": in_use, "open": open, "max": max });
            v
        }
        "search" => {
            let database = if state.config.meili_url.is_none() {
                probe_database(&state).await
            } else {
                Probe::from_result(Ok(Duration::ZERO))
            };
            let probe = probe_search(&state, &database).await;
            let (queries, last, mean) = crate::metrics::search_stats();
            let mut v = probe.json();
            v["engine"] = json!(search_engine(&state));
            v["queries"] = json!(queries);
            v["last_query_ms"] = json!(last.map(fine_millis));
            v["mean_query_ms"] = json!(mean.map(fine_millis));
            // Message changes committed but not yet in the engine (the indexer's backlog).
            v["outbox_pending"] = json!(state.store.outbox_len().await.ok());
            v
        }
        "http" => {
            let [c1, c2, c3, c4, c5] = state.stats.by_class();
            json!({
                "requests_per_second": round2(state.stats.requests_per_second()),
                "requests_total": state.stats.total(),
                "status_classes": { "1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5 },
                "latency_ms": state.stats.latency(),
                "rate_limiter_keys": state.limits.keys(),
            })
        }
        "realtime" | "websocket" => {
            let r = crate::metrics::realtime();
            let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
            v["active_connections"] = json!(crate::metrics::active_connections());
            v
        }
        "system" => {
            let cpu = crate::metrics::process::cpu_time();
            json!({
                "cpu_usage_percent": round2(state.stats.cpu_usage_percent()),
                "cpu_seconds_total": cpu.map(|d| round2(d.as_secs_f64())),
                "memory_usage_mb": memory_mb(),
                "rss_bytes": crate::metrics::process::rss_bytes(),
                "open_fds": crate::metrics::process::open_fds(),
                "uptime_seconds": state.stats.uptime().as_secs(),
            })
        }
        _ => {
            return Err(ApiError::NotFound(format!(
                "Unknown service `{name}`; known: {}",
                SERVICES.join(", ")
            )));
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "service": name,
        "timestamp": unix_now(),
        "metrics": figures,
    })))
}

/// `GET /metrics`: Prometheus text format. Unauthenticated (scrapers rarely carry tokens) and not
/// rate limited; operators should keep it off the public network (firewall or proxy rule).
#[utoipa::path(get, path = "/metrics", tag = "admin", summary = "Prometheus text format (firewall it)",
    security(()), responses((status = 200, description = "Prometheus exposition format", content_type = "text/plain", body = String)))]
pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    let (in_use, open, max) = state.store.pool_status();
    ::metrics::gauge!("fechatter_db_pool_connections", "state" => "in_use").set(in_use as f64);
    ::metrics::gauge!("fechatter_db_pool_connections", "state" => "open").set(open as f64);
    ::metrics::gauge!("fechatter_db_pool_connections", "state" => "max").set(max as f64);
    ::metrics::gauge!("fechatter_uptime_seconds").set(state.started_at.elapsed().as_secs_f64());
    ::metrics::gauge!("fechatter_rate_limiter_keys").set(state.limits.keys() as f64);
    if let Some(cluster) = &state.cluster {
        let b = cluster.broker().stats();
        ::metrics::gauge!("fechatter_broker_published").set(b.published as f64);
        ::metrics::gauge!("fechatter_broker_publish_failed").set(b.publish_failed as f64);
        ::metrics::gauge!("fechatter_broker_received").set(b.received as f64);
        ::metrics::gauge!("fechatter_broker_gaps_filled").set(b.gaps_filled as f64);
        ::metrics::gauge!("fechatter_broker_resyncs").set(b.resyncs as f64);
        ::metrics::gauge!("fechatter_broker_reconnects").set(b.reconnects as f64);
        ::metrics::gauge!("fechatter_broker_subscriptions").set(b.subscriptions as f64);
        ::metrics::gauge!("fechatter_broker_connected").set(f64::from(u8::from(b.connected)));
    }
    crate::metrics::publish_gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::prometheus().render())
}
