//! Admin health and metrics (token-protected) and the Prometheus scrape endpoint.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::ws::WsClient;
use crate::common::{TestApp, spawn_app, spawn_app_with, test_config};

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn admin_app(extra: &[&str]) -> TestApp {
    let mut args = vec!["--admin-token", ADMIN];
    args.extend_from_slice(extra);
    spawn_app_with(test_config(&args)).await
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// With no admin token configured the admin routes take any signed-in user's access token
/// (before: 404, so a client of the contract found no production health at all); no token or a
/// made-up one is 401.
#[actix_web::test]
async fn without_a_configured_token_a_signed_in_user_may_read_admin_figures() {
    let app = spawn_app().await;
    let user = app.register("operator").await;
    for path in ["/admin/production/health", "/admin/production/metrics/http"] {
        app.call(Method::GET, path, None, None)
            .await
            .err(401, "UNAUTHORIZED");
        app.get(path, ADMIN).await.err(401, "UNAUTHORIZED");
        app.get(path, &user.token).await.ok(200);
    }
}

/// With an admin token configured, a user's access token is not enough.
#[actix_web::test]
async fn a_configured_admin_token_is_the_only_key() {
    let app = admin_app(&[]).await;
    let user = app.register("someone").await;
    app.get("/admin/production/health", &user.token)
        .await
        .err(403, "FORBIDDEN");
}

/// No bearer token is 401, a wrong one 403, the right one 200.
#[actix_web::test]
async fn admin_requires_the_token() {
    let app = admin_app(&[]).await;
    for path in [
        "/admin/production/health",
        "/admin/production/metrics/system",
    ] {
        app.call(Method::GET, path, None, None)
            .await
            .err(401, "UNAUTHORIZED");
        app.get(path, "admin-token-0123456789abcdeX")
            .await
            .err(403, "FORBIDDEN");
        app.get(path, "short").await.err(403, "FORBIDDEN");
        app.get(path, ADMIN).await.ok(200);
    }
}

/// Health reports each real dependency with a measured latency and the server's load figures.
#[actix_web::test]
async fn health_reports_dependencies_and_load() {
    let app = admin_app(&[]).await;
    let body = app.get("/admin/production/health", ADMIN).await.ok(200);
    assert_eq!(body["status"], "healthy", "{body}");
    assert!(
        body["timestamp"]
            .as_u64()
            .is_some_and(|t| t > 1_700_000_000)
    );
    let services = body["services"].as_object().expect("services");
    // One node uses no Redis: said so, not faked as healthy, and it does not degrade health.
    assert_eq!(services["redis"]["status"], "disabled", "{body}");
    // Every service has the contract's `latency_ms`, `null` where there is nothing to time.
    assert!(services["redis"]["latency_ms"].is_null(), "{body}");
    assert!(services["redis"].get("latency_ms").is_some(), "{body}");
    for name in ["database", "search"] {
        assert_eq!(services[name]["status"], "healthy", "{body}");
        // Whole milliseconds as the contract shows them; the microseconds beside them.
        assert!(services[name]["latency_ms"].is_u64(), "{body}");
        assert!(services[name]["latency_us"].as_u64().is_some_and(|l| l > 0));
    }
    assert_eq!(services["search"]["engine"], "postgres");
    let m = &body["metrics"];
    assert!(m["requests_per_second"].is_number(), "{body}");
    assert!(m["active_connections"].as_i64().is_some_and(|n| n >= 0));
    assert!(m["cpu_usage_percent"].as_f64().is_some_and(|c| c >= 0.0));
    assert!(
        m["memory_usage_mb"].as_u64().is_some_and(|mb| mb > 1),
        "{body}"
    );
}

/// An unreachable search engine makes health `degraded` (the server still starts and serves).
#[actix_web::test]
async fn health_is_degraded_when_search_is_unreachable() {
    let meili = format!("http://127.0.0.1:{}", closed_port());
    let app = admin_app(&["--meili-url", &meili, "--meili-master-key", "master-key"]).await;
    let body = app.get("/admin/production/health", ADMIN).await.ok(200);
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["services"]["database"]["status"], "healthy");
    assert_eq!(body["services"]["search"]["status"], "unhealthy");
    // The failed probe still has the contract's `latency_ms` (before: absent).
    assert!(body["services"]["search"]["latency_ms"].is_null(), "{body}");
    assert!(
        body["services"]["search"].get("latency_ms").is_some(),
        "{body}"
    );
    assert_eq!(body["services"]["search"]["engine"], "meilisearch");
    assert!(body["services"]["search"]["error"].is_string());
    let search = app
        .get("/admin/production/metrics/search", ADMIN)
        .await
        .ok(200);
    assert_eq!(search["metrics"]["status"], "unhealthy");
}

/// Every service has metrics; an unknown service is a 404 envelope.
#[actix_web::test]
async fn service_metrics_by_name() {
    let app = admin_app(&[]).await;
    for name in [
        "database",
        "search",
        "http",
        "realtime",
        "websocket",
        "system",
    ] {
        let body = app
            .get(&format!("/admin/production/metrics/{name}"), ADMIN)
            .await
            .ok(200);
        assert_eq!(body["service"], name);
        assert!(body["metrics"].is_object(), "{body}");
    }
    let db = app
        .get("/admin/production/metrics/database", ADMIN)
        .await
        .ok(200);
    let pool = &db["metrics"]["pool"];
    assert!(pool["max"].as_u64().is_some_and(|m| m > 0), "{db}");
    assert!(pool["open"].as_u64().is_some_and(|o| o >= 1), "{db}");
    let sys = app
        .get("/admin/production/metrics/system", ADMIN)
        .await
        .ok(200);
    assert!(sys["metrics"]["open_fds"].as_u64().is_some_and(|n| n > 0));
    assert!(sys["metrics"]["rss_bytes"].as_u64().is_some_and(|n| n > 0));
    app.get("/admin/production/metrics/redis", ADMIN)
        .await
        .err(404, "NOT_FOUND");
}

/// HTTP figures move with traffic: totals, status classes, rate and latency percentiles.
#[actix_web::test]
async fn http_metrics_move_after_traffic() {
    let app = admin_app(&[]).await;
    let before = app
        .get("/admin/production/metrics/http", ADMIN)
        .await
        .ok(200);
    let u = app.register("traffic").await;
    for _ in 0..10 {
        app.get("/api/users/me", &u.token).await.ok(200);
        app.get("/api/nope", &u.token).await.err(404, "NOT_FOUND");
    }
    let after = app
        .get("/admin/production/metrics/http", ADMIN)
        .await
        .ok(200);
    let count = |v: &Value, k: &str| v["metrics"]["status_classes"][k].as_u64().expect(k);
    assert!(
        count(&after, "2xx") >= count(&before, "2xx") + 11,
        "{after}"
    );
    assert!(
        count(&after, "4xx") >= count(&before, "4xx") + 10,
        "{after}"
    );
    let total = |v: &Value| v["metrics"]["requests_total"].as_u64().expect("total");
    assert!(total(&after) >= total(&before) + 21);
    assert!(
        after["metrics"]["requests_per_second"]
            .as_f64()
            .expect("rps")
            > 0.0
    );
    assert!(
        after["metrics"]["latency_ms"]["p99_ms"]
            .as_f64()
            .expect("p99")
            > 0.0
    );
    let health = app.get("/admin/production/health", ADMIN).await.ok(200);
    assert!(
        health["metrics"]["requests_per_second"]
            .as_f64()
            .expect("rps")
            > 0.0
    );
}

/// `/metrics` is Prometheus text: every sample line parses, and the expected families appear
/// with route patterns (not raw paths) as labels.
#[actix_web::test]
async fn prometheus_text_is_parseable() {
    let app = spawn_app().await;
    let u = app.register("scraped").await;
    app.get("/api/users/me", &u.token).await.ok(200);
    app.get("/api/workspaces/12345", &u.token).await;
    let r = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let ctype = r.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = r.text().await.expect("text");
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (_, value) = line.rsplit_once(' ').expect("sample line");
        assert!(value.parse::<f64>().is_ok(), "bad sample: {line}");
        let name_end = line.find(['{', ' ']).expect("name");
        assert!(
            line[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
    }
    for family in [
        "fechatter_http_requests_total",
        "fechatter_http_request_duration_seconds_bucket",
        "fechatter_db_pool_connections",
        "fechatter_websocket_connections",
        "fechatter_sse_connections",
        "fechatter_messages_persisted_total",
        "fechatter_fanout_deliveries_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }
    assert!(text.contains(r#"route="/api/users/me""#), "{text}");
    assert!(
        text.contains(r#"route="/api/workspaces/{workspace_id}""#),
        "{text}"
    );
    assert!(
        !text.contains("/api/workspaces/12345"),
        "raw paths leak into labels"
    );
}

async fn service(app: &TestApp, name: &str) -> Value {
    app.get(&format!("/admin/production/metrics/{name}"), ADMIN)
        .await
        .ok(200)["metrics"]
        .clone()
}

fn num(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// Real-time figures move with real traffic: an open WebSocket is an active connection, and
/// sent messages count as persisted and as fan-out deliveries (counters are process-wide, so
/// the test compares against the figures before its own traffic).
#[actix_web::test]
async fn realtime_metrics_move_after_traffic() {
    let app = admin_app(&[]).await;
    let u = app.register("live").await;
    let workspace = app.create_workspace(&u, "live").await;
    let chat = app.create_channel(&u, workspace, "general").await;
    let before = service(&app, "realtime").await;
    let mut ws = WsClient::connect(&app, &u.token, None).await;
    for i in 0..3 {
        app.send(&u, chat, &format!("hello {i}")).await;
        ws.next_of("message.created").await;
    }
    let after = service(&app, "websocket").await;
    assert!(num(&after, "active_websockets") >= 1, "{after}");
    assert!(num(&after, "active_connections") >= 1, "{after}");
    assert!(
        num(&after, "messages_persisted") >= num(&before, "messages_persisted") + 3,
        "{before} {after}"
    );
    assert!(
        num(&after, "fanout_deliveries") >= num(&before, "fanout_deliveries") + 3,
        "{before} {after}"
    );
    let health = app.get("/admin/production/health", ADMIN).await.ok(200);
    assert!(
        num(&health["metrics"], "active_connections") >= 1,
        "{health}"
    );
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    let sample = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} sample:\n{text}"))
    };
    assert!(sample("fechatter_messages_persisted_total") >= 3.0);
    assert!(sample("fechatter_websocket_connections") >= 1.0);
}

/// A search query is timed: the search service reports it and `/metrics` has the histogram.
#[actix_web::test]
async fn search_latency_is_recorded() {
    let app = admin_app(&[]).await;
    let u = app.register("finder").await;
    let workspace = app.create_workspace(&u, "finders").await;
    let chat = app.create_channel(&u, workspace, "general").await;
    app.send(&u, chat, "the quarterly launch plan").await;
    app.post(
        "/api/search/messages",
        &u.token,
        json!({"query": "launch", "workspace_id": workspace}),
    )
    .await
    .ok(200);
    let search = service(&app, "search").await;
    assert_eq!(search["engine"], "postgres");
    assert!(num(&search, "queries") >= 1, "{search}");
    assert!(
        search["mean_query_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{search}"
    );
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("fechatter_search_duration_seconds_count"),
        "{text}"
    );
}
