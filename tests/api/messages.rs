//! Messages: send, history, edit, delete, reactions, idempotency and ordering.

use futures_util::future::join_all;
use serde_json::json;

use crate::common::{TestApp, TestUser, spawn_app, spawn_app_on, test_config};

/// A workspace with a channel: `owner` created both, `member` joined the channel, `outsider`
/// is in the workspace but not in the channel.
pub struct Fixture {
    pub owner: TestUser,
    pub member: TestUser,
    pub outsider: TestUser,
    pub workspace: i64,
    pub chat: i64,
}

pub async fn fixture(app: &TestApp) -> Fixture {
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let outsider = app.register("outsider").await;
    let workspace = app.create_workspace(&owner, "Acme").await;
    app.add_to_workspace(&owner, workspace, &member).await;
    app.add_to_workspace(&owner, workspace, &outsider).await;
    let chat = app.create_channel(&owner, workspace, "general").await;
    app.join(&member, chat).await;
    Fixture {
        owner,
        member,
        outsider,
        workspace,
        chat,
    }
}

/// A sent message has the contract's fields, and is listed with its sender.
#[actix_web::test]
async fn send_and_list() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let m = app.send(&f.member, f.chat, "Hello everyone!").await;
    assert!(m["id"].is_i64());
    assert_eq!(m["chat_id"], f.chat);
    assert_eq!(m["sender_id"], f.member.id);
    assert_eq!(m["content"], "Hello everyone!");
    assert!(m["created_at"].is_string() && m["updated_at"].is_string());
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["has_more"], false);
    let msgs = list["messages"].as_array().expect("messages");
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["id"], m["id"]);
    assert_eq!(msgs[0]["sender"]["id"], f.member.id);
    assert_eq!(msgs[0]["sender"]["username"], "member");
    assert!(msgs[0]["sender"].get("avatar_url").is_some());
    assert_eq!(msgs[0]["reactions"], json!([]));
}

/// Content is kept byte-exact; empty, blank, oversized and NUL content is refused.
#[actix_web::test]
async fn content_rules() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    for text in [
        "  padded  ",
        "emoji 👍🏽 family 👨‍👩‍👧",
        "עברית RTL",
        "e\u{301} combining",
        "line1\nline2\ttab",
    ] {
        let m = app.send(&f.owner, f.chat, text).await;
        assert_eq!(m["content"], text);
        let list = app
            .get(
                &format!("/api/messages?chat_id={}&limit=1", f.chat),
                &f.owner.token,
            )
            .await
            .ok(200);
        assert_eq!(list["messages"][0]["content"], text);
    }
    let max = "字".repeat(4000);
    assert_eq!(app.send(&f.owner, f.chat, &max).await["content"], max);
    for bad in [
        json!(""),
        json!("   \n "),
        json!("x".repeat(4001)),
        json!("nul\u{0}byte"),
        json!(5),
        json!(null),
    ] {
        let err = app
            .post(
                "/api/messages",
                &f.owner.token,
                json!({"chat_id": f.chat, "content": bad}),
            )
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "content");
    }
}

/// Non-members cannot send or read; unknown chats are 404; bad ids are 422.
#[actix_web::test]
async fn authorization_and_bad_ids() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    app.send(&f.owner, f.chat, "secret plans").await;
    let stranger = app.register("stranger").await;
    for u in [&f.outsider, &stranger] {
        let body = app
            .post(
                "/api/messages",
                &u.token,
                json!({"chat_id": f.chat, "content": "hi"}),
            )
            .await
            .err(403, "FORBIDDEN");
        assert!(!body.to_string().contains("secret plans"));
        let body = app
            .get(&format!("/api/messages?chat_id={}", f.chat), &u.token)
            .await
            .err(403, "FORBIDDEN");
        assert!(!body.to_string().contains("secret plans"));
    }
    app.post(
        "/api/messages",
        &f.owner.token,
        json!({"chat_id": 999_999, "content": "hi"}),
    )
    .await
    .err(404, "NOT_FOUND");
    app.get("/api/messages?chat_id=999999", &f.owner.token)
        .await
        .err(404, "NOT_FOUND");
    app.get("/api/messages?chat_id=abc", &f.owner.token)
        .await
        .err(422, "VALIDATION_ERROR");
    app.get("/api/messages", &f.owner.token)
        .await
        .err(422, "VALIDATION_ERROR");
    app.post(
        "/api/messages",
        &f.owner.token,
        json!({"chat_id": "x", "content": "hi"}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
    app.put("/api/messages/abc", &f.owner.token, json!({"content": "x"}))
        .await
        .err(422, "VALIDATION_ERROR");
    app.put(
        "/api/messages/999999",
        &f.owner.token,
        json!({"content": "x"}),
    )
    .await
    .err(404, "NOT_FOUND");
}

/// Pages go backwards with `before_id`; `has_more` is exact at the edges; limits are bounded.
#[actix_web::test]
async fn pagination_edges() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(
            app.send(&f.owner, f.chat, &format!("m{i}")).await["id"]
                .as_i64()
                .expect("id"),
        );
    }
    let page = |q: String| {
        let app = &app;
        let token = f.owner.token.clone();
        async move {
            app.get(&format!("/api/messages?chat_id={}{q}", f.chat), &token)
                .await
        }
    };
    let ids_of = |r: &serde_json::Value| -> Vec<i64> {
        r["messages"]
            .as_array()
            .expect("msgs")
            .iter()
            .map(|m| m["id"].as_i64().expect("id"))
            .collect()
    };
    let p1 = page("&limit=3".into()).await.ok(200);
    let got = ids_of(&p1);
    assert_eq!(got, vec![ids[6], ids[5], ids[4]]);
    assert_eq!(p1["has_more"], true);
    let p2 = page(format!("&limit=3&before_id={}", ids[4])).await.ok(200);
    let got = ids_of(&p2);
    assert_eq!(got, vec![ids[3], ids[2], ids[1]]);
    assert_eq!(p2["has_more"], true);
    let p3 = page(format!("&limit=3&before_id={}", ids[1])).await.ok(200);
    assert_eq!(p3["messages"].as_array().expect("msgs").len(), 1);
    assert_eq!(p3["has_more"], false);
    let exact = page(format!("&limit=1&before_id={}", ids[1])).await.ok(200);
    assert_eq!(exact["has_more"], false);
    let asc = page("&limit=3&order=asc".into()).await.ok(200);
    let got = ids_of(&asc);
    // Oldest first from the chat's beginning (before: the newest page, reversed).
    assert_eq!(got, vec![ids[0], ids[1], ids[2]]);
    assert_eq!(asc["has_more"], true);
    let asc_cursor = page(format!("&limit=3&order=asc&before_id={}", ids[5]))
        .await
        .ok(200);
    let got = ids_of(&asc_cursor);
    assert_eq!(got, vec![ids[0], ids[1], ids[2]]);
    let asc_last = page("&limit=3&order=asc&page=3".into()).await.ok(200);
    let got = ids_of(&asc_last);
    assert_eq!(got, vec![ids[6]]);
    assert_eq!(asc_last["has_more"], false);
    let fields = page("&limit=1&fields=id,content".into()).await.ok(200);
    assert_eq!(fields["messages"][0].as_object().expect("obj").len(), 2);
    // The contract's `page` (before: ignored, so page 2 repeated page 1), also after a cursor.
    let second = page("&page=2&limit=3".into()).await.ok(200);
    assert_eq!(ids_of(&second), vec![ids[3], ids[2], ids[1]]);
    assert_eq!(second["has_more"], true);
    let last = page("&page=3&limit=3".into()).await.ok(200);
    assert_eq!(ids_of(&last), vec![ids[0]]);
    assert_eq!(last["has_more"], false);
    let after_cursor = page(format!("&page=2&limit=2&before_id={}", ids[5]))
        .await
        .ok(200);
    assert_eq!(ids_of(&after_cursor), vec![ids[2], ids[1]]);
    let beyond = page("&page=9&limit=3".into()).await.ok(200);
    assert_eq!(ids_of(&beyond), Vec::<i64>::new());
    assert_eq!(beyond["has_more"], false);
    for bad in [
        "&page=0",
        "&page=-1",
        "&page=x",
        "&page=1000000&limit=100",
        "&limit=0",
        "&limit=101",
        "&limit=x",
        "&before_id=0",
        "&order=up",
        "&fields=password",
        "&sort=content",
    ] {
        page(bad.to_string()).await.err(422, "VALIDATION_ERROR");
    }
    // A message id of another chat is not a valid cursor.
    let other = app.create_channel(&f.owner, f.workspace, "other").await;
    let foreign = app.send(&f.owner, other, "elsewhere").await["id"]
        .as_i64()
        .expect("id");
    page(format!("&before_id={foreign}"))
        .await
        .err(422, "VALIDATION_ERROR");
    assert_eq!(
        page("&limit=100".into()).await.ok(200)["messages"]
            .as_array()
            .expect("msgs")
            .len(),
        7
    );
}

/// The same idempotency key fired 20 times at once stores one message; every answer is it.
#[actix_web::test]
async fn idempotent_send_under_concurrency() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let body = json!({"chat_id": f.chat, "content": "once", "idempotency_key": "key-123"});
    let results =
        join_all((0..20).map(|_| app.post("/api/messages", &f.member.token, body.clone()))).await;
    let ids: Vec<i64> = results
        .into_iter()
        .map(|r| r.ok(201)["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["messages"].as_array().expect("msgs").len(), 1);
    // The key is per sender: another user may use it.
    let other = app
        .post(
            "/api/messages",
            &f.owner.token,
            json!({"chat_id": f.chat, "content": "mine", "idempotency_key": "key-123"}),
        )
        .await
        .ok(201);
    assert_ne!(other["id"], ids[0]);
}

/// A repeated key returns the original message even after the server restarts.
#[actix_web::test]
async fn idempotency_survives_restart() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let body = json!({"chat_id": f.chat, "content": "durable", "idempotency_key": "restart-key"});
    let first = app
        .post("/api/messages", &f.member.token, body.clone())
        .await
        .ok(201);
    app.stop().await;
    let app2 = spawn_app_on(test_config(&[]), app.database.clone()).await;
    let again = app2
        .post("/api/messages", &f.member.token, body)
        .await
        .ok(201);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["content"], "durable");
    let list = app2
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["messages"].as_array().expect("msgs").len(), 1);
}

/// 50 concurrent senders: every message stored once, and the list order is the commit order.
#[actix_web::test]
async fn ordering_under_concurrent_senders() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let sends = (0..50).map(|i| {
        let u = if i % 2 == 0 { &f.owner } else { &f.member };
        app.post(
            "/api/messages",
            &u.token,
            json!({"chat_id": f.chat, "content": format!("c{i}")}),
        )
    });
    let results = join_all(sends).await;
    let mut sent: Vec<i64> = results
        .into_iter()
        .map(|r| r.ok(201)["id"].as_i64().expect("id"))
        .collect();
    let list = app
        .get(
            &format!("/api/messages?chat_id={}&limit=100&order=asc", f.chat),
            &f.owner.token,
        )
        .await
        .ok(200);
    let listed: Vec<i64> = list["messages"]
        .as_array()
        .expect("msgs")
        .iter()
        .map(|m| m["id"].as_i64().expect("id"))
        .collect();
    assert_eq!(listed.len(), 50);
    sent.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, sent, "every message exactly once");
    // Seqs are gap-free per chat: 50 messages occupy seqs 1..=50 (after the member's join).
    let client = fechatter_db(&app).await;
    let row = client
        .query_one(
            "SELECT min(seq), max(seq), count(*) FROM messages WHERE chat_id = $1",
            &[&f.chat],
        )
        .await
        .expect("query");
    let (min, max, n): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(n, 50);
    assert_eq!(max - min + 1, 50);
}

pub async fn fechatter_db(app: &TestApp) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&app.database, tokio_postgres::NoTls)
        .await
        .expect("db");
    actix_web::rt::spawn(conn);
    client
}

/// Only the sender edits; `updated_at` moves; the list shows the new content.
#[actix_web::test]
async fn edit_rules() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let m = app.send(&f.member, f.chat, "draft").await;
    let id = m["id"].as_i64().expect("id");
    app.put(
        &format!("/api/messages/{id}"),
        &f.owner.token,
        json!({"content": "hijack"}),
    )
    .await
    .err(403, "FORBIDDEN");
    app.put(
        &format!("/api/messages/{id}"),
        &f.outsider.token,
        json!({"content": "hijack"}),
    )
    .await
    .err(403, "FORBIDDEN");
    app.put(
        &format!("/api/messages/{id}"),
        &f.member.token,
        json!({"content": ""}),
    )
    .await
    .err(422, "VALIDATION_ERROR");
    let edited = app
        .put(
            &format!("/api/messages/{id}"),
            &f.member.token,
            json!({"content": "final"}),
        )
        .await
        .ok(200);
    assert_eq!(edited["content"], "final");
    assert_eq!(edited["created_at"], m["created_at"]);
    assert_ne!(edited["updated_at"], m["updated_at"]);
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["messages"][0]["content"], "final");
}

/// The sender or the chat owner deletes; another member cannot; deleted messages vanish.
#[actix_web::test]
async fn delete_rules() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let by_member = app.send(&f.member, f.chat, "mine").await["id"]
        .as_i64()
        .expect("id");
    let by_owner = app.send(&f.owner, f.chat, "owner's").await["id"]
        .as_i64()
        .expect("id");
    app.delete(&format!("/api/messages/{by_owner}"), &f.member.token)
        .await
        .err(403, "FORBIDDEN");
    app.delete(&format!("/api/messages/{by_member}"), &f.outsider.token)
        .await
        .err(403, "FORBIDDEN");
    app.delete(&format!("/api/messages/{by_member}"), &f.owner.token)
        .await
        .ok(200);
    app.delete(&format!("/api/messages/{by_owner}"), &f.owner.token)
        .await
        .ok(200);
    app.delete(&format!("/api/messages/{by_owner}"), &f.owner.token)
        .await
        .err(404, "NOT_FOUND");
    app.put(
        &format!("/api/messages/{by_member}"),
        &f.member.token,
        json!({"content": "x"}),
    )
    .await
    .err(404, "NOT_FOUND");
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["messages"], json!([]));
}

/// Reactions aggregate per emoji with counts and users; adding twice is idempotent.
#[actix_web::test]
async fn reactions_aggregate() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let id = app.send(&f.member, f.chat, "react to me").await["id"]
        .as_i64()
        .expect("id");
    let path = format!("/api/messages/{id}/reactions");
    app.post(&path, &f.owner.token, json!({"emoji": "👍"}))
        .await
        .ok(201);
    app.post(&path, &f.owner.token, json!({"emoji": "👍"}))
        .await
        .ok(200);
    app.post(&path, &f.member.token, json!({"emoji": "👍"}))
        .await
        .ok(201);
    let r = app
        .post(&path, &f.member.token, json!({"emoji": "🎉"}))
        .await
        .ok(201);
    assert_eq!(
        r["reactions"][0],
        json!({"emoji": "👍", "count": 2, "users": [f.owner.id, f.member.id]})
    );
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(
        list["messages"][0]["reactions"],
        json!([{"emoji": "👍", "count": 2, "users": [f.owner.id, f.member.id]}, {"emoji": "🎉", "count": 1, "users": [f.member.id]}])
    );
    let r = app
        .delete(&format!("{path}/%F0%9F%91%8D"), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(
        r["reactions"][0],
        json!({"emoji": "👍", "count": 1, "users": [f.member.id]})
    );
    app.post(&path, &f.outsider.token, json!({"emoji": "👍"}))
        .await
        .err(403, "FORBIDDEN");
    for bad in [
        json!({"emoji": ""}),
        json!({"emoji": "has space"}),
        json!({}),
        json!({"emoji": "x".repeat(33)}),
    ] {
        app.post(&path, &f.owner.token, bad)
            .await
            .err(422, "VALIDATION_ERROR");
    }
}
