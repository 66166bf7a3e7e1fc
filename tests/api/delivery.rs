//! The delivery guarantee under hostile ids and faults: replay shows nothing REST would not,
//! deleted or superseded text never comes back, a refused op fails alone, typing floods are
//! limited, sockets close on revocation and expiry, and rooms or session starts that fail
//! (fault hooks) lose nothing and leak nothing.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::common::ws::WsClient;
use crate::common::{TestApp, spawn_app, spawn_app_on, spawn_app_with, test_config};
use crate::messages::fixture;

/// Reads frames until a `message.created` with `content` arrives; returns everything before.
async fn until_marker(ws: &mut WsClient, content: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let v = ws.next().await;
        if v["type"] == "message.created" && v["data"]["message"]["content"] == content {
            return seen;
        }
        seen.push(v);
    }
}

async fn sql(app: &TestApp, statement: &str) {
    let (client, conn) = tokio_postgres::connect(&app.database, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client.batch_execute(statement).await.expect("sql");
}

/// A client resuming from before a message was edited and then deleted is never shown the
/// original or the edited text; an edited (live) message is replayed with today's text only.
#[actix_web::test]
async fn superseded_and_deleted_text_is_never_replayed() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let ws = WsClient::connect(&app, &f.member.token, None).await;
    let resume = ws.last_event_id.clone().expect("id");
    ws.close().await;
    let doomed = app.send(&f.owner, f.chat, "original secret").await["id"].clone();
    let url = format!("/api/messages/{doomed}");
    app.put(&url, &f.owner.token, json!({"content": "edited secret"}))
        .await
        .ok(200);
    app.post(
        &format!("{url}/reactions"),
        &f.member.token,
        json!({"emoji": "👍"}),
    )
    .await
    .ok(201);
    app.delete(&url, &f.owner.token).await.ok(200);
    let kept = app.send(&f.owner, f.chat, "v1").await["id"].clone();
    let kurl = format!("/api/messages/{kept}");
    app.put(&kurl, &f.owner.token, json!({"content": "v2"}))
        .await
        .ok(200);
    app.put(&kurl, &f.owner.token, json!({"content": "v3"}))
        .await
        .ok(200);
    app.send(&f.owner, f.chat, "marker").await;

    let mut back = WsClient::connect(&app, &f.member.token, Some(&resume)).await;
    let replayed = until_marker(&mut back, "marker").await;
    let text = serde_json::to_string(&replayed).expect("json");
    for secret in ["original secret", "edited secret", "\"v1\"", "\"v2\""] {
        assert!(!text.contains(secret), "{secret} replayed: {text}");
    }
    let kinds: Vec<&str> = replayed.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"message.deleted"), "{kinds:?}");
    let kept_frames: Vec<&Value> = replayed
        .iter()
        .filter(|e| e["data"]["message"]["id"] == kept)
        .collect();
    assert!(!kept_frames.is_empty(), "{text}");
    assert!(
        kept_frames
            .iter()
            .all(|e| e["data"]["message"]["content"] == "v3"),
        "{text}"
    );
    // Nothing about the deleted message except its deletion.
    assert!(
        replayed
            .iter()
            .filter(|e| e["data"]["message"]["id"] == doomed || e["data"]["message_id"] == doomed)
            .all(|e| e["type"] == "message.deleted"),
        "{text}"
    );
}

/// A crafted resume id asking for everything from seq 0 of the member's chat, and of a chat
/// the user is not in, replays exactly what `GET /api/messages` shows that user.
#[actix_web::test]
async fn crafted_resume_ids_show_no_more_than_rest() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let private = app
        .create_channel(&f.owner, f.workspace, "secret-room")
        .await;
    app.send(&f.owner, private, "not for the member").await;
    for i in 0..5 {
        let m = app.send(&f.owner, f.chat, &format!("m{i}")).await;
        if i % 2 == 0 {
            let url = format!("/api/messages/{}", m["id"]);
            app.put(&url, &f.owner.token, json!({"content": format!("e{i}")}))
                .await
                .ok(200);
        }
        if i == 3 {
            app.delete(&format!("/api/messages/{}", m["id"]), &f.owner.token)
                .await
                .ok(200);
        }
    }
    app.send(&f.owner, f.chat, "marker").await;
    let crafted = format!("{}.0-{}.0", f.chat.min(private), f.chat.max(private));
    let mut ws = WsClient::connect(&app, &f.member.token, Some(&crafted)).await;
    let replayed = until_marker(&mut ws, "marker").await;
    let text = serde_json::to_string(&replayed).expect("json");
    assert!(!text.contains("not for the member"), "{text}");
    assert!(
        replayed
            .iter()
            .all(|e| e["data"]["chat_id"] != private && e["data"]["message"]["chat_id"] != private),
        "{text}"
    );
    let rest = app
        .get(
            &format!("/api/messages?chat_id={}&limit=100", f.chat),
            &f.member.token,
        )
        .await
        .ok(200);
    let mut shown: Vec<(i64, String)> = rest["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["content"] != "marker")
        .map(|m| {
            let id = m["id"].as_i64().expect("id");
            (id, m["content"].as_str().expect("content").to_string())
        })
        .collect();
    shown.sort();
    let mut replayed_messages: Vec<(i64, String)> = replayed
        .iter()
        .filter(|e| e["type"] == "message.created")
        .map(|e| {
            let m = &e["data"]["message"];
            let id = m["id"].as_i64().expect("id");
            (id, m["content"].as_str().expect("content").to_string())
        })
        .collect();
    replayed_messages.sort();
    assert_eq!(replayed_messages, shown);
    // Every edit frame shows the message exactly as REST does now.
    for e in replayed.iter().filter(|e| e["type"] == "message.updated") {
        let id = e["data"]["message"]["id"].as_i64().expect("id");
        let now = shown.iter().find(|(i, _)| *i == id).expect("visible");
        assert_eq!(e["data"]["message"]["content"], now.1.as_str(), "{text}");
    }
}

/// An idempotency key is scoped to (sender, chat): the same key in another chat is another
/// message, delivered there; in the same chat it returns the first.
#[actix_web::test]
async fn idempotency_keys_are_scoped_to_the_chat() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let other = app.create_channel(&f.owner, f.workspace, "other").await;
    app.join(&f.member, other).await;
    let mut ws = WsClient::connect(&app, &f.owner.token, None).await;
    let send = |chat: i64, content: &str| json!({"chat_id": chat, "content": content, "idempotency_key": "same-key"});
    let first = app
        .post("/api/messages", &f.member.token, send(f.chat, "in general"))
        .await
        .ok(201);
    let second = app
        .post("/api/messages", &f.member.token, send(other, "in other"))
        .await
        .ok(201);
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["chat_id"], other);
    assert_eq!(second["content"], "in other");
    let again = app
        .post("/api/messages", &f.member.token, send(f.chat, "retry"))
        .await;
    assert!(again.status.is_success());
    let again = again.body;
    assert_eq!(again["id"], first["id"]);
    let got = ws.collect("message.created", 2).await;
    assert_eq!(got[1]["data"]["message"]["content"], "in other");
}

/// An op the database refuses fails alone; the other ops of the same group-commit batch are
/// stored and answered (here a NUL byte in an idempotency key, which PostgreSQL rejects —
/// sent straight to the unit of work, below the HTTP layer's validation).
#[actix_web::test]
async fn a_refused_op_fails_alone_in_its_batch() {
    use fechatter::actors::commit::{CommitSpec, commit};
    use fechatter::actors::room::{Op, OpOutcome};
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let send = |user: i64, content: &str, key: Option<&str>| Op::Send {
        sender_id: user,
        content: content.into(),
        idempotency_key: key.map(str::to_owned),
    };
    let spec = CommitSpec {
        store: app.state.store.clone(),
        chat_id: f.chat,
        db_orders_writers: true,
        resolve_for: std::time::Duration::from_secs(2),
        faults: Arc::new(Default::default()),
        committer: None,
        max_ops: 500,
    };
    let ops = vec![
        send(f.owner.id, "first", Some("k1")),
        send(f.member.id, "poison", Some("bad\0key")),
        send(f.member.id, "third", None),
    ];
    let done = commit(&spec, 0, ops).await.expect("batch answered");
    assert!(
        matches!(&done.outcomes[0], Ok(OpOutcome::Sent { .. })),
        "{:?}",
        done.outcomes[0]
    );
    assert!(done.outcomes[1].is_err(), "{:?}", done.outcomes[1]);
    assert!(
        matches!(&done.outcomes[2], Ok(OpOutcome::Sent { .. })),
        "{:?}",
        done.outcomes[2]
    );
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    let contents: Vec<&str> = list["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(contents.contains(&"first") && contents.contains(&"third"));
}

/// Alternating typing.start/typing.stop 25 times (within the inbound frame budget) relays one
/// start and one stop, not 50 events: a stop never resets the once-per-interval limit.
#[actix_web::test]
async fn typing_floods_are_not_relayed() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut watcher = WsClient::connect(&app, &f.owner.token, None).await;
    let mut typist = WsClient::connect(&app, &f.member.token, None).await;
    for _ in 0..25 {
        typist
            .send(json!({"type": "typing.start", "chat_id": f.chat}))
            .await;
        typist
            .send(json!({"type": "typing.stop", "chat_id": f.chat}))
            .await;
    }
    // Every frame before the pong was handled (and forwarded) by the session.
    typist.send(json!({"type": "ping"})).await;
    typist.next_of("pong").await;
    app.send(&f.owner, f.chat, "marker").await;
    let before = until_marker(&mut watcher, "marker").await;
    let starts = before
        .iter()
        .filter(|e| e["type"] == "typing.start")
        .count();
    let stops = before.iter().filter(|e| e["type"] == "typing.stop").count();
    assert!(starts <= 1 && stops <= 1, "{starts} starts, {stops} stops");
    assert_eq!(starts, 1);
}

/// After a password change the user's sockets opened with older tokens close (4004), and a
/// socket closes when its token expires (4003).
#[actix_web::test]
async fn sockets_close_on_revocation_and_expiry() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.member.token, None).await;
    let mut sse = crate::common::ws::SseClient::connect(&app, &f.member.token, None, false)
        .await
        .expect("sse");
    app.put(
        "/api/auth/change-password",
        &f.member.token,
        json!({"current_password": f.member.password, "new_password": "an0ther-passw0rd"}),
    )
    .await
    .ok(200);
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4004, "{frame:?}");
    assert!(sse.ended().await, "the SSE stream ends too");

    let short = spawn_app_with(test_config(&["--access-token-ttl-secs", "2"])).await;
    let u = short.register("brief").await;
    let mut ws = WsClient::connect(&short, &u.token, None).await;
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4003, "{frame:?}");
}

/// A client dropped as a slow consumer can resume: a gap much larger than the outbound queue
/// (but within FECHATTER_REPLAY_MAX) is streamed as the client reads, never cut off.
#[actix_web::test]
async fn replay_larger_than_the_queue_is_paced_not_cut() {
    let app = spawn_app_with(test_config(&["--outbound-queue", "16"])).await;
    let f = fixture(&app).await;
    let ws = WsClient::connect(&app, &f.member.token, None).await;
    let resume = ws.last_event_id.clone().expect("id");
    ws.close().await;
    let mut sent = Vec::new();
    for i in 0..300 {
        sent.push(app.send(&f.owner, f.chat, &format!("away {i}")).await["id"].clone());
    }
    let mut back = WsClient::connect(&app, &f.member.token, Some(&resume)).await;
    let got: Vec<Value> = back
        .collect("message.created", 300)
        .await
        .iter()
        .map(|e| e["data"]["message"]["id"].clone())
        .collect();
    assert_eq!(got, sent);
    app.send(&f.owner, f.chat, "live").await;
    assert_eq!(
        back.next_of("message.created").await["data"]["message"]["content"],
        "live"
    );
}

/// A room that stops while it has subscribers (its commit was fenced by another writer)
/// does not leave them silent: they follow the new room and fill the gap.
#[actix_web::test]
async fn followers_survive_a_fenced_room() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.member.token, None).await;
    app.send(&f.owner, f.chat, "before").await;
    ws.next_of("message.created").await;
    // Another writer moves the chat: the room's next commit is fenced and the room restarts.
    sql(
        &app,
        &format!(
            "UPDATE chats SET last_seq = last_seq + 1 WHERE id = {}",
            f.chat
        ),
    )
    .await;
    let body = json!({"chat_id": f.chat, "content": "fenced"});
    let fenced = app.post("/api/messages", &f.owner.token, body).await;
    assert_eq!(fenced.status.as_u16(), 503, "{}", fenced.body);
    app.send(&f.owner, f.chat, "after").await;
    let got = ws.next_of("message.created").await;
    assert_eq!(got["data"]["message"]["content"], "after");
}

/// A commit whose reply is lost (committed on the server) is resolved by asking PostgreSQL:
/// the send is answered with the stored message, delivered once, and the room goes on.
#[actix_web::test]
async fn a_lost_commit_reply_is_resolved() {
    let app = spawn_app_with(test_config(&["--fault-lose-commit-replies", "1"])).await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.member.token, None).await;
    let first = app.send(&f.owner, f.chat, "lost reply").await;
    assert_eq!(first["content"], "lost reply");
    let second = app.send(&f.owner, f.chat, "next").await;
    assert_eq!(second["content"], "next");
    let got = ws.collect("message.created", 2).await;
    assert_eq!(got[0]["data"]["message"]["id"], first["id"]);
    assert_eq!(got[1]["data"]["message"]["id"], second["id"]);
    let list = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    assert_eq!(list["messages"].as_array().expect("messages").len(), 2);
}

/// A chat joined while the session is starting (after it registered, before it read the
/// user's chats) is followed.
#[actix_web::test]
async fn a_chat_joined_during_session_start_is_followed() {
    let app = spawn_app_with(test_config(&["--fault-session-start-delay-ms", "1500"])).await;
    let f = fixture(&app).await;
    let late = app.create_channel(&f.owner, f.workspace, "late").await;
    let connecting = {
        let token = f.outsider.token.clone();
        let app = &app;
        async move { WsClient::connect(app, &token, None).await }
    };
    let joining = async {
        // The session is paused in its start-up while this join commits.
        app.join(&f.outsider, late).await;
    };
    let (mut ws, ()) = futures_util::join!(connecting, joining);
    app.send(&f.owner, late, "to the late joiner").await;
    let got = ws.next_of("message.created").await;
    assert_eq!(got["data"]["message"]["content"], "to the late joiner");
}

/// Rooms that fail to load at session start are retried; the chat is not silently dropped.
#[actix_web::test]
async fn failed_room_loads_do_not_drop_the_chat() {
    let setup = spawn_app().await;
    let f = fixture(&setup).await;
    setup.stop().await;
    // A fresh server whose first four room loads fail: the member's session start meets them.
    let config = test_config(&["--fault-room-load-failures", "4"]);
    let app = spawn_app_on(config, setup.database.clone()).await;
    let mut ws = WsClient::connect(&app, &f.member.token, None).await;
    let sent = app.send(&f.owner, f.chat, "after the failures").await;
    let got = ws.next_of("message.created").await;
    assert_eq!(got["data"]["message"]["id"], sent["id"]);
}

/// Session starts that fail after registering with presence give their connection slot
/// back: twelve failures, then a connection still succeeds under a limit of ten.
#[actix_web::test]
async fn failed_session_starts_do_not_leak_slots() {
    let app = spawn_app_with(test_config(&["--fault-session-start-failures", "12"])).await;
    let u = app.register("unlucky").await;
    let refused = join_all((0..12).map(|_| async {
        let mut ws = WsClient::connect_raw(&app).await;
        ws.send(json!({"type": "auth", "token": format!("Bearer {}", u.token)}))
            .await;
        ws.next_of("error").await
    }))
    .await;
    assert!(
        refused
            .iter()
            .all(|e| e["data"]["code"] == "SERVICE_UNAVAILABLE"),
        "{refused:?}"
    );
    // Presence handles the disconnects in order after the refusals.
    let mut ok = None;
    for _ in 0..50 {
        let mut ws = WsClient::connect_raw(&app).await;
        ws.send(json!({"type": "auth", "token": format!("Bearer {}", u.token)}))
            .await;
        let first = ws.next().await;
        if first["type"] == "auth.success" {
            ok = Some(first);
            break;
        }
        assert_eq!(first["data"]["code"], "RATE_LIMITED", "{first}");
    }
    assert!(ok.is_some(), "a slot was leaked");
}
