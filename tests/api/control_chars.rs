//! Control characters in text input: refused with 422 naming the field wherever they make no
//! sense, NUL refused everywhere (PostgreSQL cannot store it: it must never become a 500 or a
//! 503), newlines and tabs kept in message content.

use reqwest::Method;
use serde_json::json;

use crate::common::spawn_app;

/// Every single-line text input, with NUL and with another control character: 422 on the field.
#[actix_web::test]
async fn control_characters_are_422_naming_the_field() {
    let app = spawn_app().await;
    let owner = app.register("ctrl").await;
    let ws = app.create_workspace(&owner, "ctrl").await;
    let chat = app.create_channel(&owner, ws, "general").await;
    let sent = app.send(&owner, chat, "hello").await;
    let mid = sent["id"].as_i64().expect("id");
    let t = owner.token.as_str();
    for bad in ["\u{0}", "\u{1b}", "\u{7f}", "\u{85}", "\n"] {
        let cases: Vec<(Method, String, Option<serde_json::Value>, &str)> = vec![
            (
                Method::POST,
                "/api/auth/register".into(),
                Some(
                    json!({"email": format!("a{bad}b@example.test"), "username": "abc", "password": "password-123"}),
                ),
                "email",
            ),
            (
                Method::POST,
                "/api/auth/register".into(),
                Some(
                    json!({"email": "ok@example.test", "username": format!("ab{bad}c"), "password": "password-123"}),
                ),
                "username",
            ),
            (
                Method::POST,
                "/api/auth/register".into(),
                Some(
                    json!({"email": "ok2@example.test", "username": "abc", "password": format!("password{bad}123")}),
                ),
                "password",
            ),
            (
                Method::POST,
                "/api/auth/login".into(),
                Some(json!({"email": format!("a{bad}b@example.test"), "password": "password-123"})),
                "email",
            ),
            (
                Method::PUT,
                "/api/users/me".into(),
                Some(json!({"avatar_url": format!("https://img.example/a{bad}.png")})),
                "avatar_url",
            ),
            (
                Method::PUT,
                "/api/users/me".into(),
                Some(json!({"username": format!("x{bad}y")})),
                "username",
            ),
            (
                Method::POST,
                "/api/workspaces".into(),
                Some(json!({"name": format!("w{bad}s")})),
                "name",
            ),
            (
                Method::POST,
                "/api/workspaces".into(),
                Some(json!({"name": "ws", "logo_url": format!("https://img.example/a{bad}b")})),
                "logo_url",
            ),
            (
                Method::POST,
                format!("/api/workspaces/{ws}/invites"),
                Some(json!({"email": format!("in{bad}v@example.test")})),
                "email",
            ),
            (
                Method::POST,
                "/api/chats".into(),
                Some(json!({"workspace_id": ws, "name": format!("c{bad}h")})),
                "name",
            ),
            (
                Method::POST,
                "/api/messages".into(),
                Some(
                    json!({"chat_id": chat, "content": "hi", "idempotency_key": format!("key{bad}1")}),
                ),
                "idempotency_key",
            ),
            (
                Method::POST,
                format!("/api/messages/{mid}/reactions"),
                Some(json!({"emoji": format!("👍{bad}👍")})),
                "emoji",
            ),
            (
                Method::POST,
                "/api/search/messages".into(),
                Some(json!({"query": format!("he{bad}llo"), "workspace_id": ws})),
                "query",
            ),
        ];
        for (method, path, body, field) in cases {
            let err = app
                .call(method.clone(), &path, Some(t), body.clone())
                .await
                .err(422, "VALIDATION_ERROR");
            assert_eq!(
                err["error"]["details"]["field"], field,
                "{method} {path} {body:?}: {err}"
            );
        }
        let q: String = url_escape(&format!("a{bad}b"));
        let err = app
            .get(&format!("/api/search/users?workspace_id={ws}&q={q}"), t)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "q", "{err}");
        let err = app
            .post(&format!("/api/invites/AB{q}CD/accept"), t, json!({}))
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "code", "{err}");
    }
}

/// Multi-line text keeps newlines and tabs; NUL in it is a 422, never a database error.
#[actix_web::test]
async fn multi_line_text_keeps_newlines_and_refuses_nul() {
    let app = spawn_app().await;
    let owner = app.register("lines").await;
    let ws = app.create_workspace(&owner, "lines").await;
    let chat = app.create_channel(&owner, ws, "general").await;
    let t = owner.token.as_str();
    let sent = app.send(&owner, chat, "line one\n\tline two").await;
    assert_eq!(sent["content"], "line one\n\tline two");
    let mid = sent["id"].as_i64().expect("id");
    for (method, path, body, field) in [
        (
            Method::POST,
            "/api/messages".to_string(),
            json!({"chat_id": chat, "content": "a\u{0}b"}),
            "content",
        ),
        (
            Method::PUT,
            format!("/api/messages/{mid}"),
            json!({"content": "a\u{0}b"}),
            "content",
        ),
        (
            Method::POST,
            "/api/chats".to_string(),
            json!({"workspace_id": ws, "name": "d", "description": "x\u{0}"}),
            "description",
        ),
        (
            Method::POST,
            "/api/workspaces".to_string(),
            json!({"name": "d", "description": "x\u{0}"}),
            "description",
        ),
    ] {
        let err = app
            .call(method.clone(), &path, Some(t), Some(body))
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{method} {path}");
    }
    let made = app
        .post(
            "/api/chats",
            t,
            json!({"workspace_id": ws, "name": "multi", "description": "one\ntwo"}),
        )
        .await
        .ok(201);
    assert_eq!(made["description"], "one\ntwo");
    // The chat still works for everyone: a refused key never reached the commit batch.
    let after = app.send(&owner, chat, "still fine").await;
    assert_eq!(after["content"], "still fine");
}

/// Percent-encodes every byte that is not unreserved.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
