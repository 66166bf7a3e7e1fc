//! The OpenAPI document and docs page, and that its schemas match what the server really sends.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{spawn_app, spawn_app_with, test_config};

/// The component a schema refers to, directly or through an array, `oneOf` (nullable) or `allOf`.
fn referenced(schema: &Value) -> Option<String> {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().map(str::to_owned);
    }
    if schema["items"].is_object() {
        return referenced(&schema["items"]);
    }
    for key in ["oneOf", "allOf", "anyOf"] {
        if let Some(list) = schema[key].as_array()
            && let Some(name) = list.iter().find_map(referenced)
        {
            return Some(name);
        }
    }
    None
}

/// Asserts `value` has exactly the shape of component `name`: no property the schema lacks, every
/// required one present, nested components checked the same way.
fn conforms(doc: &Value, name: &str, value: &Value, at: &str) {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no component {name}");
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, name, item, &format!("{at}[{i}]"));
            }
        }
        Value::Object(fields) => {
            let props = schema["properties"].as_object().expect("properties");
            for (key, v) in fields {
                let prop = props
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is sent but not in schema {name}"));
                if let Some(inner) = referenced(prop)
                    && !v.is_null()
                {
                    conforms(doc, &inner, v, &format!("{at}.{key}"));
                }
            }
            for req in schema["required"].as_array().into_iter().flatten() {
                let req = req.as_str().expect("name");
                assert!(
                    fields.contains_key(req),
                    "{at}.{req} is required by schema {name} but not sent"
                );
            }
        }
        _ => {}
    }
}

/// The document is OpenAPI 3 with every contract area, and the docs page is served.
#[actix_web::test]
async fn document_and_docs_page_are_served() {
    let app = spawn_app().await;
    let doc = app
        .call(Method::GET, "/api/openapi.json", None, None)
        .await
        .ok(200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for path in [
        "/api/auth/login",
        "/api/messages",
        "/api/search/messages",
        "/api/batch",
        "/admin/production/health",
        "/ws",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    let list = &doc["paths"]["/api/chats"]["get"]["parameters"];
    for p in ["sort", "order", "fields", "page", "limit"] {
        assert!(
            list.as_array()
                .expect("params")
                .iter()
                .any(|x| x["name"] == p),
            "{p}"
        );
    }
    let page = app
        .http
        .get(app.url("/api/docs/"))
        .send()
        .await
        .expect("send");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger"), "{html}");
}

/// The schemas describe the bodies the server really returns, for every main resource.
#[actix_web::test]
async fn schemas_match_real_responses() {
    const ADMIN: &str = "admin-token-0123456789abcdef";
    let app = spawn_app_with(test_config(&["--admin-token", ADMIN])).await;
    let doc = app
        .call(Method::GET, "/api/openapi.json", None, None)
        .await
        .ok(200);
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let registered = app
        .call(
            Method::POST,
            "/api/auth/register",
            None,
            Some(json!({"email": "schema@example.test", "username": "schema", "password": "password-123"})),
        )
        .await
        .ok(201);
    conforms(&doc, "AuthResponse", &registered, "register");
    let ws = app.create_workspace(&owner, "docs").await;
    app.add_to_workspace(&owner, ws, &member).await;
    let chat = app.create_channel(&owner, ws, "general").await;
    app.join(&member, chat).await;
    let sent = app.send(&owner, chat, "hello docs").await;
    conforms(&doc, "Message", &sent, "send");
    let mid = sent["id"].as_i64().expect("id");
    let reacted = app
        .post(
            &format!("/api/messages/{mid}/reactions"),
            &member.token,
            json!({"emoji": "👍"}),
        )
        .await
        .ok(201);
    conforms(&doc, "Reactions", &reacted, "react");
    let t = &owner.token;
    let cases: Vec<(&str, String)> = vec![
        ("Profile", "/api/users/me".into()),
        ("UserList", format!("/api/users?workspace_id={ws}")),
        ("WorkspaceList", "/api/workspaces".into()),
        ("Workspace", format!("/api/workspaces/{ws}")),
        ("ChatList", format!("/api/chats?workspace_id={ws}")),
        ("Chat", format!("/api/chats/{chat}")),
        ("MemberList", format!("/api/chats/{chat}/members")),
        ("MessageList", format!("/api/messages?chat_id={chat}")),
    ];
    for (schema, path) in cases {
        let body = app.get(&path, t).await.ok(200);
        conforms(&doc, schema, &body, &path);
    }
    let found = app
        .post(
            "/api/search/messages",
            t,
            json!({"query": "hello", "workspace_id": ws}),
        )
        .await
        .ok(200);
    conforms(&doc, "SearchResults", &found, "search");
    let batch = app
        .post(
            "/api/batch",
            t,
            json!({"operations": [{"method": "GET", "path": "/api/users/me"}]}),
        )
        .await
        .ok(200);
    conforms(&doc, "BatchResponse", &batch, "batch");
    let health = app
        .call(Method::GET, "/api/health", None, None)
        .await
        .ok(200);
    conforms(&doc, "Health", &health, "health");
    let prod = app.get("/admin/production/health", ADMIN).await.ok(200);
    conforms(&doc, "ProductionHealth", &prod, "production health");
    let err = app.get("/api/nope", t).await.err(404, "NOT_FOUND");
    conforms(&doc, "ErrorEnvelope", &err, "error");
    let metrics = app
        .get("/admin/production/metrics/database", ADMIN)
        .await
        .ok(200);
    conforms(&doc, "ServiceMetrics", &metrics, "service metrics");
    // The rest of the write operations, with the schema each one's 2xx names.
    let invite = app
        .post(&format!("/api/workspaces/{ws}/invites"), t, json!({}))
        .await
        .ok(201);
    conforms(&doc, "Invite", &invite, "invite");
    let third = app.register("third").await;
    let code = invite["invite_code"].as_str().expect("code");
    let accepted = app
        .post(
            &format!("/api/invites/{code}/accept"),
            &third.token,
            json!({}),
        )
        .await
        .ok(200);
    conforms(&doc, "Workspace", &accepted, "accept");
    let added = app
        .post(
            &format!("/api/chats/{chat}/members"),
            t,
            json!({"user_id": third.id}),
        )
        .await
        .ok(201);
    conforms(&doc, "Member", &added, "add member");
    let direct = app
        .post(
            "/api/chats/direct",
            t,
            json!({"workspace_id": ws, "user_ids": [member.id]}),
        )
        .await
        .ok(201);
    conforms(&doc, "Chat", &direct, "direct");
    let read = app
        .post(
            &format!("/api/chats/{chat}/read"),
            &member.token,
            json!({"message_id": mid}),
        )
        .await
        .ok(200);
    conforms(&doc, "ReadMarker", &read, "read");
    let unreacted = app
        .delete(&format!("/api/messages/{mid}/reactions/👍"), &member.token)
        .await
        .ok(200);
    conforms(&doc, "Reactions", &unreacted, "unreact");
    for (schema, path) in [
        (
            "UserSearchResults",
            format!("/api/search/users?workspace_id={ws}&q=mem"),
        ),
        (
            "ChatSearchResults",
            format!("/api/search/chats?workspace_id={ws}&q=gen"),
        ),
    ] {
        let found = app.get(&path, t).await.ok(200);
        conforms(&doc, schema, &found, &path);
    }
    let deleted = app.delete(&format!("/api/messages/{mid}"), t).await.ok(200);
    conforms(&doc, "DeletedMessage", &deleted, "delete");
    let left = app
        .post(&format!("/api/chats/{chat}/leave"), &third.token, json!({}))
        .await
        .ok(200);
    conforms(&doc, "LeftChat", &left, "leave");
    let login = app
        .post(
            "/api/auth/login",
            "",
            json!({"email": owner.email, "password": owner.password}),
        )
        .await
        .ok(200);
    conforms(&doc, "AuthResponse", &login, "login");
    let refreshed = app.post("/api/auth/refresh", t, json!({})).await.ok(200);
    conforms(&doc, "TokenResponse", &refreshed, "refresh");
    let changed = app
        .put(
            "/api/auth/change-password",
            t,
            json!({"current_password": owner.password, "new_password": "another-password-1"}),
        )
        .await
        .ok(200);
    conforms(&doc, "PasswordChanged", &changed, "change password");
    // The check has teeth: an unknown field or a missing required one is caught.
    let extra = json!({"status": "healthy", "version": "1", "uptime_seconds": 1, "extra": 1});
    assert!(std::panic::catch_unwind(|| conforms(&doc, "Health", &extra, "extra")).is_err());
    let missing = json!({"status": "healthy", "version": "1"});
    assert!(std::panic::catch_unwind(|| conforms(&doc, "Health", &missing, "missing")).is_err());
}

/// A known path with a method it does not serve is 405 with `Allow` (from the document); an
/// unknown path stays 404.
#[actix_web::test]
async fn wrong_method_is_405_with_allow() {
    let app = spawn_app().await;
    let user = app.register("methods").await;
    for (method, path, allow) in [
        (Method::DELETE, "/api/chats", "GET, POST"),
        (Method::PATCH, "/api/users/me", "GET, PUT"),
        (Method::GET, "/api/chats/direct", "POST"),
        (Method::GET, "/api/chats/12/join", "POST"),
        (Method::PUT, "/api/messages/3/reactions/x", "DELETE"),
        (Method::POST, "/api/health", "GET"),
        (Method::DELETE, "/api/openapi.json", "GET"),
    ] {
        let resp = app
            .call(method.clone(), path, Some(&user.token), None)
            .await;
        assert_eq!(
            resp.headers.get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}"
        );
        let err = resp.err(405, "METHOD_NOT_ALLOWED");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(allow)),
            "{err}"
        );
    }
    app.call(Method::DELETE, "/api/nope", Some(&user.token), None)
        .await
        .err(404, "NOT_FOUND");
    app.call(Method::GET, "/api/chats/1/nope", Some(&user.token), None)
        .await
        .err(404, "NOT_FOUND");
}
