//! Batch: several API operations in one request (`POST /api/batch`).
//!
//! Each operation is sent, in order, as a real HTTP request to this server over loopback with the
//! caller's `Authorization`, so it meets exactly the handlers, authentication and rate limits of a
//! direct call. The sub-request carries a per-process secret and the caller's address; the rate
//! limiter (the first middleware to look at peers) verifies the secret and restores the caller's
//! address, so per-IP limits and login guards see the real client, not loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use actix_web::dev::ServiceRequest;
use actix_web::http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::error::{ApiError, ApiResult, current_request_id};
use super::extract::AuthUser;
use super::request_id::REQUEST_ID_HEADER;
use crate::state::AppState;

/// Marks a sub-request; its value is the process's secret.
const SUBREQUEST_HEADER: HeaderName = HeaderName::from_static("x-fechatter-batch");
/// The batch caller's socket address, restored as the sub-request's peer.
const CALLER_HEADER: HeaderName = HeaderName::from_static("x-fechatter-batch-caller");
/// Longest one operation may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Inserted in the extensions of a verified sub-request.
#[derive(Debug, Clone, Copy)]
pub struct Subrequest;

/// How the server reaches itself: its bound address, the sub-request secret, a client.
pub struct Loopback {
    addr: OnceLock<SocketAddr>,
    secret: String,
    client: reqwest::Client,
}

impl Default for Loopback {
    fn default() -> Self {
        Loopback {
            addr: OnceLock::new(),
            secret: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
            client: reqwest::Client::builder()
                .timeout(OPERATION_TIMEOUT)
                .no_proxy()
                .build()
                .unwrap_or_default(),
        }
    }
}

impl Loopback {
    /// Records the bound address (once, at start-up); a wildcard address is reached on loopback.
    pub fn set_addr(&self, bound: SocketAddr) {
        let ip = match bound.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let _ = self.addr.set(SocketAddr::new(ip, bound.port()));
    }
}

/// Called by the rate-limit middleware before it reads the peer: a sub-request with the right
/// secret, from loopback, gets its caller's address back and the [`Subrequest`] mark. The
/// internal headers are removed from every request, so handlers never see them.
pub fn accept_subrequest(req: &mut ServiceRequest, state: &AppState) {
    let Some(secret) = req.headers().get(SUBREQUEST_HEADER).cloned() else {
        return;
    };
    let caller = req
        .headers()
        .get(CALLER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<SocketAddr>().ok());
    req.headers_mut().remove(SUBREQUEST_HEADER);
    req.headers_mut().remove(CALLER_HEADER);
    let from_loopback = req.peer_addr().is_some_and(|a| a.ip().is_loopback());
    let genuine = bool::from(secret.as_bytes().ct_eq(state.loopback.secret.as_bytes()));
    if !(from_loopback && genuine) {
        return;
    }
    if let Some(caller) = caller {
        req.head_mut().peer_addr = Some(caller);
    }
    req.extensions_mut().insert(Subrequest);
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BatchRequest {
    /// 1 to `FECHATTER_BATCH_MAX_OPS` operations, run in order.
    #[schema(min_items = 1)]
    pub operations: Vec<Operation>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = BatchOperation)]
pub struct Operation {
    /// GET, POST, PUT, PATCH or DELETE (anything else: that operation's result is a 422).
    pub method: String,
    /// A path under `/api/` (not `/api/batch`), query string allowed (anything else: that
    /// operation's result is a 422).
    pub path: String,
    #[serde(default)]
    pub body: Option<Value>,
}

/// One operation's outcome.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = BatchResult)]
pub struct OpResult {
    pub status: u16,
    /// The operation's JSON body (an error envelope on failure).
    pub body: Value,
}

impl OpResult {
    fn error(e: ApiError) -> Self {
        use actix_web::ResponseError;
        OpResult {
            status: e.status_code().as_u16(),
            body: e.envelope(&current_request_id()),
        }
    }
}

/// Checks an operation's method and path before it is sent.
fn validate(op: &Operation) -> Result<reqwest::Method, ApiError> {
    let method = match op.method.trim().to_ascii_uppercase().as_str() {
        "GET" => reqwest::Method::GET,
        "POST" => reqwest::Method::POST,
        "PUT" => reqwest::Method::PUT,
        "PATCH" => reqwest::Method::PATCH,
        "DELETE" => reqwest::Method::DELETE,
        _ => {
            return Err(ApiError::validation(
                "method",
                "must be one of GET, POST, PUT, PATCH, DELETE",
            ));
        }
    };
    let path = op.path.as_str();
    let (route, _query) = path.split_once('?').unwrap_or((path, ""));
    let shape_ok = path.len() <= 2048
        && !path.contains('#')
        && !path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
    let Some(route) = normalised_route(route).filter(|r| shape_ok && r.starts_with("/api/")) else {
        return Err(ApiError::validation(
            "path",
            "must be an absolute path under /api/ (no dot segments, encoded slashes, \
             fragments or spaces)",
        ));
    };
    let route = route.trim_end_matches('/');
    if route.eq_ignore_ascii_case("/api/batch") {
        return Err(ApiError::validation(
            "path",
            "nested batch requests are not allowed",
        ));
    }
    // A stream never ends, so its operation would hold the batch (and a connection slot)
    // until the sub-request timeout and then fail: refuse it up front.
    if route.eq_ignore_ascii_case("/api/events") {
        return Err(ApiError::validation(
            "path",
            "the event stream cannot run in a batch; open GET /api/events itself",
        ));
    }
    Ok(method)
}

/// The route as the server will route it: percent-decoded (repeatedly, so no encoding of a
/// dot or a slash survives) with every segment checked. `None` for a path that has dot
/// segments, empty segments, encoded slashes or backslashes, or does not decode to UTF-8 —
/// whatever could end up outside the path it seems to name.
fn normalised_route(route: &str) -> Option<String> {
    if !route.starts_with('/') {
        return None;
    }
    let mut current = route.to_string();
    for _ in 0..4 {
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8()
            .ok()?
            .into_owned();
        if decoded == current {
            break;
        }
        current = decoded;
    }
    if current.contains('%') || current.contains('\\') || current.chars().any(char::is_control) {
        return None;
    }
    let body = current.trim_end_matches('/');
    let clean = body
        .split('/')
        .skip(1)
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    clean.then_some(current)
}

/// `POST /api/batch`: runs each operation in order and returns one `{status, body}` per
/// operation. A failing operation does not stop the others.
#[utoipa::path(post, path = "/api/batch", tag = "batch",
    summary = "Run up to FECHATTER_BATCH_MAX_OPS operations in order", request_body = BatchRequest,
    responses((status = 200, body = crate::http::openapi::BatchResponse)))]
pub async fn batch(
    state: web::Data<AppState>,
    // Unauthenticated batches are 401 themselves, not 200 with a 401 per operation.
    _caller: AuthUser,
    req: HttpRequest,
    body: web::Json<BatchRequest>,
) -> ApiResult<HttpResponse> {
    if req.extensions().get::<Subrequest>().is_some() {
        return Err(ApiError::validation(
            "path",
            "nested batch requests are not allowed",
        ));
    }
    let ops = body.into_inner().operations;
    let max = state.config.batch_max_ops;
    if ops.is_empty() || ops.len() > max {
        return Err(ApiError::validation(
            "operations",
            format!("must hold between 1 and {max} operations"),
        ));
    }
    let addr = *state
        .loopback
        .addr
        .get()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("bound address not recorded")))?;
    // The client's address (a trusted proxy's forwarded one included), not the TCP peer's.
    let caller = HeaderValue::from_str(
        &SocketAddr::new(
            super::client_ip::client_ip(&req),
            req.peer_addr().map_or(0, |a| a.port()),
        )
        .to_string(),
    )
    .ok();
    let authorization = req.headers().get(AUTHORIZATION).cloned();
    let batch_id = current_request_id();
    let mut results = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let method = match validate(op) {
            Ok(m) => m,
            Err(e) => {
                results.push(OpResult::error(e));
                continue;
            }
        };
        let mut sub = state
            .loopback
            .client
            .request(method, format!("http://{addr}{}", op.path))
            .header(SUBREQUEST_HEADER.as_str(), state.loopback.secret.as_str())
            .header(REQUEST_ID_HEADER.as_str(), sub_request_id(&batch_id, i));
        if let Some(caller) = &caller {
            sub = sub.header(CALLER_HEADER.as_str(), caller.as_bytes());
        }
        if let Some(auth) = &authorization {
            sub = sub.header(AUTHORIZATION.as_str(), auth.as_bytes());
        }
        if let Some(body) = &op.body {
            sub = sub.json(body);
        }
        results.push(match send(sub).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, operation = i, "batch operation failed to run");
                OpResult::error(ApiError::Unavailable(
                    "Operation could not be run, retry shortly".into(),
                ))
            }
        });
    }
    Ok(HttpResponse::Ok().json(json!({ "results": results })))
}

/// `<batch request id>-<index>` when that stays a valid request id, else a fresh one.
fn sub_request_id(batch_id: &str, i: usize) -> String {
    let id = format!("{batch_id}-{i}");
    if id.len() <= 64 {
        id
    } else {
        super::error::new_request_id()
    }
}

async fn send(sub: reqwest::RequestBuilder) -> Result<OpResult, reqwest::Error> {
    let resp = sub.send().await?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Ok(OpResult { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: &str, path: &str) -> Operation {
        Operation {
            method: method.into(),
            path: path.into(),
            body: None,
        }
    }

    /// Only API paths with known methods pass; traversal and nested batches do not.
    #[test]
    fn validates_operations() {
        assert!(validate(&op("get", "/api/users/me")).is_ok());
        assert!(validate(&op("POST", "/api/messages?x=1")).is_ok());
        for bad in [
            "/metrics",
            "/admin/production/health",
            "/api/../metrics",
            "/api/./batch",
            "http://evil/api/x",
            "/api/batch",
            "/api/batch/",
            "/api/BATCH?x=1",
            "/api/users me",
            "/api/%2e%2e/metrics",
            "/api/%2E%2E/admin/production/health",
            "/api/%252e%252e/metrics",
            "/api/users/%2f..%2f..%2fmetrics",
            "/api/.%2e/metrics",
            "/api//metrics",
            "/api/%5c../metrics",
            "/api\\..\\metrics",
            "/api/%ff",
            "/api/%2fbatch",
            "/api/%62atch",
        ] {
            assert!(validate(&op("GET", bad)).is_err(), "{bad}");
        }
        assert!(validate(&op("TRACE", "/api/users/me")).is_err());
    }
}
