//! Rate limits: `X-RateLimit-*` headers, 429 with `Retry-After`, per-user and per-IP keys, the
//! separate search and login/register limits, and the exempt paths.

use reqwest::Method;
use serde_json::json;

use crate::common::{Resp, spawn_app_with, test_config};

fn header(r: &Resp, name: &str) -> u64 {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}: {:?}", r.headers))
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Successful responses carry the limit, a remaining count that goes down by one per request,
/// and a reset time in the future no later than a full period away.
#[actix_web::test]
async fn headers_present_and_decreasing() {
    let app = spawn_app_with(test_config(&["--rate-limit-per-hour", "5"])).await;
    let u = app.register("counter").await;
    let first = app.get("/api/users/me", &u.token).await;
    let second = app.get("/api/users/me", &u.token).await;
    assert_eq!(header(&first, "x-ratelimit-limit"), 5);
    assert_eq!(header(&first, "x-ratelimit-remaining"), 4);
    assert_eq!(header(&second, "x-ratelimit-remaining"), 3);
    let reset = header(&second, "x-ratelimit-reset");
    let now = unix_now();
    assert!(
        reset > now && reset <= now + 3600 + 1,
        "reset {reset} now {now}"
    );
    assert!(header(&second, "x-ratelimit-reset") >= header(&first, "x-ratelimit-reset"));
    first.ok(200);
}

/// Past the limit a request is refused with 429 RATE_LIMITED, `Retry-After` and the headers
/// showing nothing remains; other users keep their own quota.
#[actix_web::test]
async fn refused_after_limit_and_independent_per_user() {
    let app = spawn_app_with(test_config(&["--rate-limit-per-hour", "3"])).await;
    let a = app.register("alice").await;
    let b = app.register("bob").await;
    for _ in 0..3 {
        app.get("/api/users/me", &a.token).await.ok(200);
    }
    let refused = app.get("/api/users/me", &a.token).await;
    assert_eq!(header(&refused, "x-ratelimit-remaining"), 0);
    assert_eq!(header(&refused, "x-ratelimit-limit"), 3);
    let retry = header(&refused, "retry-after");
    assert!((1..=1200).contains(&retry), "retry-after {retry}");
    assert!(header(&refused, "x-ratelimit-reset") >= unix_now() + retry);
    let body = refused.err(429, "RATE_LIMITED");
    assert!(body["error"]["details"]["retry_after_seconds"].is_u64());

    let other = app.get("/api/users/me", &b.token).await;
    assert_eq!(header(&other, "x-ratelimit-remaining"), 2);
    other.ok(200);
}

/// Without a (valid) token requests are counted per client IP (FECHATTER_IP_RATE_LIMIT_PER_HOUR), errors and 404s included, and an
/// invalid token falls into the same per-IP bucket (the handler then answers 401).
#[actix_web::test]
async fn unauthenticated_requests_count_per_ip() {
    let app = spawn_app_with(test_config(&["--ip-rate-limit-per-hour", "3"])).await;
    let missing = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(header(&missing, "x-ratelimit-remaining"), 2);
    missing.err(404, "NOT_FOUND");
    let bad = app.get("/api/users/me", "not-a-token").await;
    assert_eq!(header(&bad, "x-ratelimit-remaining"), 1);
    bad.err(401, "UNAUTHORIZED");
    app.call(Method::GET, "/api/users/me", None, None)
        .await
        .err(401, "UNAUTHORIZED");
    app.call(Method::GET, "/api/nope", None, None)
        .await
        .err(429, "RATE_LIMITED");
}

/// Search endpoints have their own, tighter limit; exhausting it leaves other endpoints usable.
#[actix_web::test]
async fn search_limit_is_separate() {
    let app = spawn_app_with(test_config(&["--search-rate-per-min", "2"])).await;
    let u = app.register("seeker").await;
    for remaining in [1, 0] {
        let r = app.get("/api/search/users?q=see", &u.token).await;
        assert_ne!(r.status.as_u16(), 429, "body: {}", r.body);
        assert_eq!(header(&r, "x-ratelimit-limit"), 2);
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining);
    }
    let refused = app
        .post("/api/search/messages", &u.token, json!({"query": "x"}))
        .await;
    assert!(header(&refused, "retry-after") <= 30);
    refused.err(429, "RATE_LIMITED");
    let other = app.get("/api/users/me", &u.token).await;
    assert_eq!(header(&other, "x-ratelimit-limit"), 1_000_000);
    other.ok(200);
}

/// Login and register share a per-IP limit of their own, tighter than the general one.
#[actix_web::test]
async fn login_and_register_are_limited_per_ip() {
    let app = spawn_app_with(test_config(&["--auth-rate-per-min", "2"])).await;
    let u = app.register("first").await;
    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": u.email, "password": u.password})),
    )
    .await
    .ok(200);
    let refused = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "x@example.test", "username": "xx", "password": "password-123"})),
        )
        .await;
    assert!(header(&refused, "retry-after") >= 1);
    refused.err(429, "RATE_LIMITED");
    // The rest of the API is unaffected.
    app.get("/api/users/me", &u.token).await.ok(200);
}

/// Health and the Prometheus endpoint are never limited and carry no rate-limit headers.
#[actix_web::test]
async fn health_and_metrics_are_exempt() {
    let app = spawn_app_with(test_config(&["--ip-rate-limit-per-hour", "1"])).await;
    for _ in 0..5 {
        let r = app.call(Method::GET, "/api/health", None, None).await;
        assert!(r.headers.get("x-ratelimit-limit").is_none());
        r.ok(200);
        let m = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("send");
        assert_eq!(m.status(), 200);
    }
    let counted = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(header(&counted, "x-ratelimit-remaining"), 0);
}

/// Without an admin token any signed-in user may call `/admin/*`, so it is counted against the
/// user's limit like the API (each call probes the database and the search engine); with one
/// it is the operators' and not limited.
#[actix_web::test]
async fn admin_is_limited_when_users_may_call_it() {
    let app = spawn_app_with(test_config(&["--rate-limit-per-hour", "2"])).await;
    let u = app.register("curious").await;
    for left in [1, 0] {
        let r = app.get("/admin/production/health", &u.token).await;
        assert_eq!(header(&r, "x-ratelimit-remaining"), left);
        r.ok(200);
    }
    app.get("/admin/production/health", &u.token)
        .await
        .err(429, "RATE_LIMITED");

    let token = "admin-token-0123456789abcdef";
    let app = spawn_app_with(test_config(&[
        "--rate-limit-per-hour",
        "1",
        "--ip-rate-limit-per-hour",
        "1",
        "--admin-token",
        token,
    ]))
    .await;
    for _ in 0..3 {
        let r = app.get("/admin/production/health", token).await;
        assert!(r.headers.get("x-ratelimit-limit").is_none());
        r.ok(200);
    }
}

/// The WebSocket endpoint counts as one request against the caller's limit.
#[actix_web::test]
async fn websocket_upgrade_counts_once() {
    let app = spawn_app_with(test_config(&["--ip-rate-limit-per-hour", "2"])).await;
    let r = app.call(Method::GET, "/ws", None, None).await;
    assert_eq!(header(&r, "x-ratelimit-remaining"), 1);
}

/// The SSE stream's `?access_token=` counts against the user, not the client IP.
#[actix_web::test]
async fn sse_query_token_is_keyed_per_user() {
    let app = spawn_app_with(test_config(&[
        "--rate-limit-per-hour",
        "5",
        "--ip-rate-limit-per-hour",
        "5",
    ]))
    .await;
    let u = app.register("streamer").await;
    let ip_bucket = app.call(Method::GET, "/api/nope", None, None).await;
    assert_eq!(
        header(&ip_bucket, "x-ratelimit-remaining"),
        3,
        "register + this"
    );
    let stream = app
        .http
        .get(app.url(&format!("/api/events?access_token={}", u.token)))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("send");
    assert_eq!(stream.status(), 200);
    let remaining = stream.headers()["x-ratelimit-remaining"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(remaining, "4", "the user's own bucket");
}
