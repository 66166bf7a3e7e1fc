//! Health, request ids, and the error envelope for malformed requests.

use reqwest::Method;
use serde_json::json;

use crate::common::spawn_app;

/// Health reports status, the crate version and uptime, with a request id header.
#[actix_web::test]
async fn health_reports_version_and_uptime() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/api/health", None, None).await;
    assert!(r.headers.get("x-request-id").is_some());
    let body = r.ok(200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
}

/// Unknown routes get the 404 envelope, whose request_id matches the header.
#[actix_web::test]
async fn unknown_route_is_a_404_envelope() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/api/nope", None, None).await;
    let header = r.headers["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let body = r.err(404, "NOT_FOUND");
    assert_eq!(body["request_id"], header);
}

/// A client-chosen request id is echoed back.
#[actix_web::test]
async fn client_request_id_is_echoed() {
    let app = spawn_app().await;
    let r = app
        .http
        .get(app.url("/api/nope"))
        .header("X-Request-Id", "abc-123")
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["request_id"], "abc-123");
}

/// Malformed, wrongly typed and oversized JSON are 422 envelopes, never 500s.
#[actix_web::test]
async fn malformed_and_oversized_json_are_422() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(app.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "VALIDATION_ERROR");

    app.call(
        Method::POST,
        "/api/auth/login",
        None,
        Some(json!({"email": 5, "password": []})),
    )
    .await
    .err(422, "VALIDATION_ERROR");

    let huge = "x".repeat(200 * 1024);
    app.call(
        Method::POST,
        "/api/auth/register",
        None,
        Some(json!({"email": "a@b.io", "username": "abc", "password": huge})),
    )
    .await
    .err(422, "VALIDATION_ERROR");
}
