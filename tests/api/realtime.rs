//! Real time: WebSocket and SSE delivery, auth, limits, typing, presence, replay, backpressure.

use serde_json::json;

use crate::common::ws::{SseClient, WsClient};
use crate::common::{spawn_app, spawn_app_with, test_config};
use crate::messages::fixture;

/// A sender's idempotency key is theirs: their `POST /api/messages` answer echoes it, but no
/// event, replay or history shows it to the chat's other members (before: every
/// `message.created` carried it to every member).
#[actix_web::test]
async fn the_idempotency_key_stays_with_the_sender() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut owner = WsClient::connect(&app, &f.owner.token, None).await;
    let sent = app
        .post(
            "/api/messages",
            &f.member.token,
            json!({"chat_id": f.chat, "content": "keyed", "idempotency_key": "secret-key-1"}),
        )
        .await
        .ok(201);
    assert_eq!(sent["idempotency_key"], "secret-key-1", "{sent}");
    let created = owner.next_of("message.created").await;
    let edited = app
        .put(
            &format!("/api/messages/{}", sent["id"]),
            &f.member.token,
            json!({"content": "keyed, edited"}),
        )
        .await
        .ok(200);
    let updated = owner.next_of("message.updated").await;
    let resume = created["id"].as_str().expect("resume id").to_string();
    let mut replay = WsClient::connect(&app, &f.owner.token, Some(&resume)).await;
    let replayed = replay.next_of("message.updated").await;
    let history = app
        .get(&format!("/api/messages?chat_id={}", f.chat), &f.owner.token)
        .await
        .ok(200);
    for seen in [&created, &updated, &replayed, &edited, &history] {
        assert!(
            !seen.to_string().contains("secret-key-1"),
            "the key leaked: {seen}"
        );
    }
    owner.close().await;
    replay.close().await;
}

/// Members get `message.created` with the full message; a non-member of the chat does not.
#[actix_web::test]
async fn delivery_to_members_only() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut owner = WsClient::connect(&app, &f.owner.token, None).await;
    let mut member = WsClient::connect(&app, &f.member.token, None).await;
    let mut outsider = WsClient::connect(&app, &f.outsider.token, None).await;
    let sent = app.send(&f.member, f.chat, "hello realtime").await;
    for ws in [&mut owner, &mut member] {
        let ev = ws.next_of("message.created").await;
        assert_eq!(ev["data"]["message"]["id"], sent["id"]);
        assert_eq!(ev["data"]["message"]["content"], "hello realtime");
        assert_eq!(ev["data"]["message"]["sender_id"], f.member.id);
        assert_eq!(ev["data"]["message"]["chat_id"], f.chat);
        assert!(ev["id"].is_string(), "persisted events carry a resume id");
    }
    // Marker: a chat the outsider is in. It must arrive without the secret before it.
    let side = app.create_channel(&f.owner, f.workspace, "side").await;
    app.join(&f.outsider, side).await;
    app.send(&f.owner, side, "marker").await;
    let ev = outsider.next_of("message.created").await;
    assert_eq!(ev["data"]["message"]["content"], "marker");
}

/// A chat joined while connected starts delivering; a chat left stops.
#[actix_web::test]
async fn join_and_leave_change_subscriptions() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.outsider.token, None).await;
    let mut owner = WsClient::connect(&app, &f.owner.token, None).await;
    app.join(&f.outsider, f.chat).await;
    let joined = owner.next_of("chat.member_joined").await;
    assert_eq!(joined["data"]["user_id"], f.outsider.id);
    app.send(&f.owner, f.chat, "welcome").await;
    assert_eq!(
        ws.next_of("message.created").await["data"]["message"]["content"],
        "welcome"
    );
    app.post(
        &format!("/api/chats/{}/leave", f.chat),
        &f.outsider.token,
        json!({}),
    )
    .await
    .ok(200);
    let left = owner.next_of("chat.member_left").await;
    assert_eq!(left["data"]["user_id"], f.outsider.id);
    // The leaver's own connection sees its leave before it stops following the chat.
    let mine = ws.next_of("chat.member_left").await;
    assert_eq!(mine["data"]["user_id"], f.outsider.id);
    app.send(&f.owner, f.chat, "after you left").await;
    let side = app.create_channel(&f.owner, f.workspace, "side").await;
    app.join(&f.outsider, side).await;
    app.send(&f.owner, side, "marker").await;
    loop {
        let ev = ws.next_of("message.created").await;
        assert_ne!(ev["data"]["message"]["content"], "after you left");
        if ev["data"]["message"]["content"] == "marker" {
            break;
        }
    }
}

/// Edits, deletes and reactions reach members as their own event types.
#[actix_web::test]
async fn all_message_event_types() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.owner.token, None).await;
    let id = app.send(&f.member, f.chat, "v1").await["id"]
        .as_i64()
        .expect("id");
    ws.next_of("message.created").await;
    app.put(
        &format!("/api/messages/{id}"),
        &f.member.token,
        json!({"content": "v2"}),
    )
    .await
    .ok(200);
    let ev = ws.next_of("message.updated").await;
    assert_eq!(ev["data"]["message"]["content"], "v2");
    app.post(
        &format!("/api/messages/{id}/reactions"),
        &f.member.token,
        json!({"emoji": "🔥"}),
    )
    .await
    .ok(201);
    let ev = ws.next_of("reaction.added").await;
    assert_eq!(ev["data"]["emoji"], "🔥");
    assert_eq!(ev["data"]["message_id"], id);
    assert_eq!(ev["data"]["reactions"][0]["count"], 1);
    app.delete(
        &format!("/api/messages/{id}/reactions/%F0%9F%94%A5"),
        &f.member.token,
    )
    .await
    .ok(200);
    assert_eq!(
        ws.next_of("reaction.removed").await["data"]["user_id"],
        f.member.id
    );
    app.delete(&format!("/api/messages/{id}"), &f.member.token)
        .await
        .ok(200);
    let ev = ws.next_of("message.deleted").await;
    assert_eq!(ev["data"]["message_id"], id);
    assert_eq!(ev["data"]["chat_id"], f.chat);
}

/// No auth frame in time → close 4000; a bad token → error frame and close 4001; a first frame
/// that is not auth → close 4000.
#[actix_web::test]
async fn websocket_auth_failures() {
    let app = spawn_app_with(test_config(&["--ws-auth-timeout-secs", "1"])).await;
    let mut silent = WsClient::connect_raw(&app).await;
    let err = silent.next().await;
    assert_eq!(err["type"], "error");
    assert_eq!(silent.closed().await.map(|c| u16::from(c.code)), Some(4000));

    let mut bad = WsClient::connect_raw(&app).await;
    bad.send(json!({"type": "auth", "token": "Bearer nonsense"}))
        .await;
    assert_eq!(bad.next().await["data"]["code"], "UNAUTHORIZED");
    assert_eq!(bad.closed().await.map(|c| u16::from(c.code)), Some(4001));

    let mut wrong = WsClient::connect_raw(&app).await;
    wrong.send(json!({"type": "ping"})).await;
    assert_eq!(wrong.next().await["type"], "error");
    assert_eq!(wrong.closed().await.map(|c| u16::from(c.code)), Some(4000));
}

/// The connection over the per-user limit is refused (WebSocket 4029, SSE 429); others are not.
#[actix_web::test]
async fn connection_limit_per_user() {
    let app = spawn_app_with(test_config(&["--max-ws-per-user", "2"])).await;
    let u = app.register("busy").await;
    let other = app.register("other").await;
    let _a = WsClient::connect(&app, &u.token, None).await;
    let _b = SseClient::connect(&app, &u.token, None, false)
        .await
        .expect("second connection");
    let mut c = WsClient::connect_raw(&app).await;
    c.send(json!({"type": "auth", "token": format!("Bearer {}", u.token)}))
        .await;
    let err = c.next().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["data"]["code"], "RATE_LIMITED");
    assert_eq!(c.closed().await.map(|c| u16::from(c.code)), Some(4029));
    assert_eq!(
        SseClient::connect(&app, &u.token, None, false)
            .await
            .err()
            .map(|s| s.as_u16()),
        Some(429)
    );
    let _ok = WsClient::connect(&app, &other.token, None).await;
}

/// The auth frame's `Bearer` scheme is case-insensitive and may be followed by more than one
/// space, as in the HTTP `Authorization` header (before: `"bearer <token>"` was refused, 4001).
#[actix_web::test]
async fn the_auth_frames_scheme_is_read_as_http_reads_it() {
    let app = spawn_app().await;
    let u = app.register("casual").await;
    for token in [
        format!("bearer {}", u.token),
        format!("BEARER  {}", u.token),
        u.token.clone(),
    ] {
        let mut c = WsClient::connect_raw(&app).await;
        c.send(json!({"type": "auth", "token": token})).await;
        let ok = c.next_of("auth.success").await;
        assert_eq!(ok["type"], "auth.success", "{token}: {ok}");
        c.close().await;
    }
}

/// ping → pong; malformed and unknown frames get an error frame and the connection stays.
#[actix_web::test]
async fn client_frames() {
    let app = spawn_app().await;
    let u = app.register("pinger").await;
    let mut ws = WsClient::connect(&app, &u.token, None).await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");
    ws.send(json!({"type": "dance"})).await;
    assert_eq!(ws.next().await["data"]["code"], "VALIDATION_ERROR");
    ws.send(json!("just a string")).await;
    assert_eq!(ws.next().await["type"], "error");
    ws.send(json!({"type": "typing.start"})).await;
    assert_eq!(ws.next().await["type"], "error");
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");
}

/// typing.start reaches the other members (not the typist) and expires by itself.
#[actix_web::test]
async fn typing_relay_and_expiry() {
    let app = spawn_app_with(test_config(&["--typing-ttl-secs", "1"])).await;
    let f = fixture(&app).await;
    let mut typist = WsClient::connect(&app, &f.member.token, None).await;
    let mut watcher = WsClient::connect(&app, &f.owner.token, None).await;
    typist
        .send(json!({"type": "typing.start", "chat_id": f.chat}))
        .await;
    let ev = watcher.next_of("typing.start").await;
    assert_eq!(
        ev["data"],
        json!({"chat_id": f.chat, "user_id": f.member.id, "username": "member"})
    );
    assert!(
        ev.get("id").is_none(),
        "ephemeral events carry no resume id"
    );
    let stop = watcher.next_of("typing.stop").await;
    assert_eq!(stop["data"]["user_id"], f.member.id);
    // The typist saw neither: nothing typing-related before the pong.
    typist.send(json!({"type": "ping"})).await;
    loop {
        let frame = typist.next().await;
        assert!(
            !frame["type"].as_str().unwrap_or("").starts_with("typing."),
            "{frame}"
        );
        if frame["type"] == "pong" {
            break;
        }
    }
    // Typing in a chat one is not in is refused.
    let side = app.create_channel(&f.owner, f.workspace, "side").await;
    typist
        .send(json!({"type": "typing.start", "chat_id": side}))
        .await;
    assert_eq!(typist.next().await["data"]["code"], "FORBIDDEN");
}

/// Two tabs are one presence: online when the first opens, offline when the last closes.
#[actix_web::test]
async fn presence_across_tabs() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut watcher = WsClient::connect(&app, &f.owner.token, None).await;
    let tab1 = WsClient::connect(&app, &f.member.token, None).await;
    let ev = watcher.next_of("presence.update").await;
    assert_eq!(ev["data"]["user_id"], f.member.id);
    assert_eq!(ev["data"]["status"], "online");
    assert!(ev["data"]["last_seen"].is_string());
    let tab2 = WsClient::connect(&app, &f.member.token, None).await;
    tab1.close().await;
    let users = app
        .get(
            &format!("/api/users?workspace_id={}", f.workspace),
            &f.owner.token,
        )
        .await
        .ok(200);
    let member = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .find(|u| u["id"] == f.member.id)
        .cloned();
    assert_eq!(member.expect("member listed")["status"], "online");
    tab2.close().await;
    let ev = watcher.next_of("presence.update").await;
    assert_eq!(ev["data"]["user_id"], f.member.id);
    assert_eq!(
        ev["data"]["status"], "offline",
        "no second online/offline pair for the second tab"
    );
}

/// A peer that stops answering pings is dropped (4002) and goes offline.
#[actix_web::test]
async fn heartbeat_timeout_drops_silent_peers() {
    let app = spawn_app_with(test_config(&[
        "--ws-ping-secs",
        "1",
        "--ws-timeout-secs",
        "2",
    ]))
    .await;
    let f = fixture(&app).await;
    let mut watcher = WsClient::connect(&app, &f.owner.token, None).await;
    let mut silent = WsClient::connect(&app, &f.member.token, None).await;
    assert_eq!(
        watcher.next_of("presence.update").await["data"]["status"],
        "online"
    );
    // `silent` reads nothing (so answers no ping) while the watcher keeps reading (and
    // answering) until it sees the silent peer go offline.
    let ev = watcher.next_of("presence.update").await;
    assert_eq!(ev["data"]["user_id"], f.member.id);
    assert_eq!(ev["data"]["status"], "offline");
    // The close frame says 4002, unless the client's own late pongs made the kernel reset the
    // socket before it read the frame (the offline event above already proves the drop).
    let code = silent.closed().await.map(|c| u16::from(c.code));
    assert!(matches!(code, Some(4002) | None), "{code:?}");
}

/// 100 messages sent while a client is away are replayed in order, exactly once, then live.
#[actix_web::test]
async fn websocket_resume_replays_the_gap() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut ws = WsClient::connect(&app, &f.member.token, None).await;
    app.send(&f.owner, f.chat, "before").await;
    ws.next_of("message.created").await;
    let resume = ws.last_event_id.clone().expect("resume id");
    ws.close().await;
    let mut sent = Vec::new();
    for i in 0..100 {
        sent.push(app.send(&f.owner, f.chat, &format!("away {i}")).await["id"].clone());
    }
    let mut back = WsClient::connect(&app, &f.member.token, Some(&resume)).await;
    let replayed = back.collect("message.created", 100).await;
    let got: Vec<_> = replayed
        .iter()
        .map(|e| e["data"]["message"]["id"].clone())
        .collect();
    assert_eq!(got, sent);
    app.send(&f.owner, f.chat, "live").await;
    let live = back.next_of("message.created").await;
    assert_eq!(
        live["data"]["message"]["content"], "live",
        "no duplicate after the replay"
    );
}

/// SSE: `event:`/`id:`/`data:` frames (data as the contract shows), `?access_token=`, and
/// `Last-Event-ID` resume including edits and deletes.
#[actix_web::test]
async fn sse_stream_and_resume() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut sse = SseClient::connect(&app, &f.member.token, None, true)
        .await
        .expect("sse");
    let id = app.send(&f.owner, f.chat, "over sse").await["id"]
        .as_i64()
        .expect("id");
    let ev = sse.next_of("message.created").await;
    assert_eq!(ev.data["message"]["content"], "over sse");
    assert!(!ev.id.is_empty());
    let resume = ev.id.clone();
    drop(sse);
    app.put(
        &format!("/api/messages/{id}"),
        &f.owner.token,
        json!({"content": "edited"}),
    )
    .await
    .ok(200);
    let id2 = app.send(&f.owner, f.chat, "second").await["id"]
        .as_i64()
        .expect("id");
    app.delete(&format!("/api/messages/{id2}"), &f.owner.token)
        .await
        .ok(200);
    let mut back = SseClient::connect(&app, &f.member.token, Some(&resume), false)
        .await
        .expect("sse");
    let e1 = back.next_persisted().await;
    assert_eq!(e1.event, "message.updated");
    assert_eq!(e1.data["message"]["content"], "edited");
    let e2 = back.next_persisted().await;
    assert_eq!(e2.event, "message.deleted");
    assert_eq!(e2.data["message_id"], id2);
    let refused = SseClient::connect(&app, "bad-token", None, false)
        .await
        .err();
    assert_eq!(refused.map(|s| s.as_u16()), Some(401));
}

/// A gap larger than the replay budget yields `resync.required` instead of a partial replay.
#[actix_web::test]
async fn resync_when_gap_too_large() {
    let app = spawn_app_with(test_config(&["--replay-max", "5"])).await;
    let f = fixture(&app).await;
    let ws = WsClient::connect(&app, &f.member.token, None).await;
    let resume = ws.last_event_id.clone().expect("id");
    ws.close().await;
    for i in 0..10 {
        app.send(&f.owner, f.chat, &format!("m{i}")).await;
    }
    let mut back = WsClient::connect(&app, &f.member.token, Some(&resume)).await;
    let ev = back.next_of("resync.required").await;
    assert_eq!(ev["data"]["chat_id"], f.chat);
    app.send(&f.owner, f.chat, "after resync").await;
    assert_eq!(
        back.next_of("message.created").await["data"]["message"]["content"],
        "after resync"
    );
    let mut garbage = WsClient::connect(&app, &f.member.token, Some("not-a-position")).await;
    assert_eq!(
        garbage.next_of("resync.required").await["data"]["reason"],
        "invalid_last_event_id"
    );
}

/// A client that never reads does not delay delivery to one that does.
#[actix_web::test]
async fn non_reader_does_not_delay_readers() {
    let app = spawn_app_with(test_config(&["--outbound-queue", "16"])).await;
    let f = fixture(&app).await;
    let _stalled = WsClient::connect(&app, &f.outsider.token, None).await;
    app.join(&f.outsider, f.chat).await;
    let mut reader = WsClient::connect(&app, &f.member.token, None).await;
    let big = "x".repeat(3000);
    // The reader reads while the messages are sent (a reader that stops reading for 900 KB
    // is a slow consumer itself: the socket's send buffer is capped).
    let sends = async {
        for i in 0..300 {
            app.send(&f.owner, f.chat, &format!("{i} {big}")).await;
        }
    };
    let ((), got) = tokio::join!(sends, reader.collect("message.created", 300));
    assert!(
        got[299]["data"]["message"]["content"]
            .as_str()
            .expect("content")
            .starts_with("299 ")
    );
}

/// An owner who creates a workspace while online sees its members come online.
#[actix_web::test]
async fn presence_follows_a_workspace_created_while_online() {
    let app = spawn_app().await;
    let owner = app.register("founder").await;
    let joiner = app.register("joiner").await;
    let mut watcher = WsClient::connect(&app, &owner.token, None).await;
    let workspace = app.create_workspace(&owner, "Fresh").await;
    app.add_to_workspace(&owner, workspace, &joiner).await;
    let _tab = WsClient::connect(&app, &joiner.token, None).await;
    let ev = watcher.next_of("presence.update").await;
    assert_eq!(ev["data"]["user_id"], joiner.id);
    assert_eq!(ev["data"]["status"], "online");
}
