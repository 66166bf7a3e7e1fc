//! `POST /api/batch`: operations run in order through the real handlers, one result each.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{spawn_app, spawn_app_with, test_config};

fn statuses(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_u64().expect("status"))
        .collect()
}

/// Successes and failures come back in order; a failing operation does not stop the others, and
/// writes made by earlier operations are seen by later ones.
#[actix_web::test]
async fn mixed_results_in_order() {
    let app = spawn_app().await;
    let u = app.register("batcher").await;
    let body = app
        .post(
            "/api/batch",
            &u.token,
            json!({"operations": [
                {"method": "GET", "path": "/api/users/me"},
                {"method": "GET", "path": "/api/no-such-thing"},
                {"method": "PUT", "path": "/api/users/me", "body": {"username": "x"}},
                {"method": "PUT", "path": "/api/users/me", "body": {"username": "renamed"}},
                {"method": "get", "path": "/api/users/me"},
                {"method": "GET", "path": "/metrics"},
            ]}),
        )
        .await
        .ok(200);
    assert_eq!(statuses(&body), [200, 404, 422, 200, 200, 422], "{body}");
    let r = &body["results"];
    assert_eq!(r[0]["body"]["id"], u.id);
    assert_eq!(r[1]["body"]["error"]["code"], "NOT_FOUND");
    assert_eq!(r[2]["body"]["error"]["details"]["field"], "username");
    assert_eq!(r[4]["body"]["username"], "renamed");
    assert_eq!(r[5]["body"]["error"]["details"]["field"], "path");
}

/// A batch without the caller's token is 401 itself (not 200 with a 401 per operation).
#[actix_web::test]
async fn unauthenticated_batch_is_401() {
    let app = spawn_app().await;
    // Without a token the batch itself is refused: nothing runs.
    let body = app
        .call(
            Method::POST,
            "/api/batch",
            None,
            Some(json!({"operations": [{"method": "GET", "path": "/api/users/me"}]})),
        )
        .await
        .err(401, "UNAUTHORIZED");
    assert!(body.get("results").is_none(), "{body}");
    // With one, each operation runs as that caller.
    let u = app.register("batcher").await;
    let body = app
        .post(
            "/api/batch",
            &u.token,
            json!({"operations": [{"method": "GET", "path": "/api/users/me"}]}),
        )
        .await
        .ok(200);
    assert_eq!(statuses(&body), [200]);
    assert_eq!(body["results"][0]["body"]["id"], u.id);
}

/// Operations may not leave `/api/` however the path is spelled: percent-encoded dots,
/// double encoding, encoded slashes, backslashes and empty segments are all 422 and never
/// reach `/metrics` or `/admin`.
#[actix_web::test]
async fn operations_cannot_escape_the_api() {
    let app = spawn_app().await;
    let u = app.register("escaper").await;
    let paths = [
        "/api/%2e%2e/metrics",
        "/api/%2E%2E/metrics",
        "/api/.%2e/metrics",
        "/api/%252e%252e/metrics",
        "/api/users/%2f..%2f..%2fmetrics",
        "/api//metrics",
        "/api/%5c..%5cmetrics",
        "/api/%2e%2e/admin/production/health",
    ];
    let ops: Vec<_> = paths
        .iter()
        .map(|p| json!({"method": "GET", "path": p}))
        .collect();
    let body = app
        .post("/api/batch", &u.token, json!({ "operations": ops }))
        .await
        .ok(200);
    for (i, status) in statuses(&body).into_iter().enumerate() {
        assert_eq!(status, 422, "{}: {body}", paths[i]);
        let text = body["results"][i]["body"].to_string();
        assert!(!text.contains("fechatter_http_requests_total"), "{text}");
    }
}

/// A batch inside a batch is refused (422 for that operation); the rest still run.
#[actix_web::test]
async fn nested_batch_is_refused() {
    let app = spawn_app().await;
    let u = app.register("nester").await;
    let inner = json!({"operations": [{"method": "GET", "path": "/api/users/me"}]});
    let body = app
        .post(
            "/api/batch",
            &u.token,
            json!({"operations": [
                {"method": "POST", "path": "/api/batch", "body": inner},
                {"method": "POST", "path": "/api/%62atch", "body": inner},
                {"method": "GET", "path": "/api/users/me"},
            ]}),
        )
        .await
        .ok(200);
    let s = statuses(&body);
    assert_eq!(s[0], 422, "{body}");
    assert!(s[1] == 422 || s[1] == 404, "{body}");
    assert_eq!(s[2], 200, "{body}");
}

/// The event stream never ends, so it is refused in a batch (422 for that operation) rather
/// than holding the batch until the sub-request timeout (before: 503 after 30 s).
#[actix_web::test]
async fn event_stream_is_refused_in_a_batch() {
    let app = spawn_app().await;
    let u = app.register("streamer").await;
    let body = app
        .post(
            "/api/batch",
            &u.token,
            json!({"operations": [
                {"method": "GET", "path": "/api/events"},
                {"method": "GET", "path": "/api/events/?x=1"},
                {"method": "GET", "path": "/api/users/me"},
            ]}),
        )
        .await
        .ok(200);
    let s = statuses(&body);
    assert_eq!(&s[..], [422, 422, 200], "{body}");
    assert_eq!(
        body["results"][0]["body"]["error"]["details"]["field"], "path",
        "{body}"
    );
}

/// Empty batches and batches over FECHATTER_BATCH_MAX_OPS are 422 and run nothing.
#[actix_web::test]
async fn operation_count_is_bounded() {
    let app = spawn_app_with(test_config(&["--batch-max-ops", "3"])).await;
    let u = app.register("bounded").await;
    let op = json!({"method": "PUT", "path": "/api/users/me", "body": {"username": "changed"}});
    let err = app
        .post(
            "/api/batch",
            &u.token,
            json!({"operations": [op, op, op, op]}),
        )
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(err["error"]["details"]["field"], "operations");
    app.post("/api/batch", &u.token, json!({"operations": []}))
        .await
        .err(422, "VALIDATION_ERROR");
    app.post("/api/batch", &u.token, json!({"ops": []}))
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(
        app.get("/api/users/me", &u.token).await.ok(200)["username"],
        "bounded"
    );
    let ok = app
        .post("/api/batch", &u.token, json!({"operations": [op, op, op]}))
        .await
        .ok(200);
    assert_eq!(statuses(&ok), [200, 200, 200]);
}

/// Each operation counts against the caller's rate limit, like a direct call.
#[actix_web::test]
async fn operations_count_against_the_rate_limit() {
    let app = spawn_app_with(test_config(&["--rate-limit-per-hour", "3"])).await;
    let u = app.register("limited").await;
    let me = json!({"method": "GET", "path": "/api/users/me"});
    let body = app
        .post("/api/batch", &u.token, json!({"operations": [me, me, me]}))
        .await
        .ok(200);
    // The batch itself took one cell, its first two operations the rest.
    assert_eq!(statuses(&body), [200, 200, 429], "{body}");
    assert_eq!(body["results"][2]["body"]["error"]["code"], "RATE_LIMITED");
    app.get("/api/users/me", &u.token)
        .await
        .err(429, "RATE_LIMITED");
}

/// The internal sub-request marker cannot be forged from outside: a direct call carrying it is an
/// ordinary request.
#[actix_web::test]
async fn forged_subrequest_headers_are_ignored() {
    let app = spawn_app().await;
    let u = app.register("forger").await;
    let r = app
        .http
        .post(app.url("/api/batch"))
        .bearer_auth(&u.token)
        .header("x-fechatter-batch", "guess")
        .header("x-fechatter-batch-caller", "10.1.2.3:4")
        .json(&json!({"operations": [{"method": "GET", "path": "/api/users/me"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(statuses(&body), [200]);
}
