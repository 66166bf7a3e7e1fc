//! Cluster mode, as clients see it: one chat, one order, on every node. Writers on three
//! nodes into one chat at once and readers on all three see the same gap-free sequence; a
//! client resumes on another node with its last id; a join on one node is followed by the
//! user's connections on another; a password change on one node closes sockets on another.

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::cluster::node;
use crate::common::redis::RedisServer;
use crate::common::ws::WsClient;
use crate::common::{TestApp, TestUser, fresh_database};

/// An owner and a second user in one workspace, with a channel; `joined`: the second user is
/// a member of it. Set up through node `app`.
async fn two_users(app: &TestApp, second: &str, joined: bool) -> (TestUser, TestUser, i64, i64) {
    let owner = app.register("owner").await;
    let other = app.register(second).await;
    let ws_id = app.create_workspace(&owner, "Acme").await;
    app.add_to_workspace(&owner, ws_id, &other).await;
    let chat = app.create_channel(&owner, ws_id, "general").await;
    if joined {
        app.join(&other, chat).await;
    }
    (owner, other, ws_id, chat)
}

/// Message ids of the next `n` `message.created` frames, with their seqs from the ids.
async fn created(ws: &mut WsClient, n: usize) -> Vec<Value> {
    ws.collect("message.created", n)
        .await
        .iter()
        .map(|e| e["data"]["message"]["id"].clone())
        .collect()
}

#[actix_web::test]
async fn every_node_delivers_one_chat_in_one_order() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let nodes = [
        node(&redis, &db, "node-a", &[]).await,
        node(&redis, &db, "node-b", &[]).await,
        node(&redis, &db, "node-c", &[]).await,
    ];
    let owner = nodes[0].register("owner").await;
    let ws_id = nodes[0].create_workspace(&owner, "Acme").await;
    let mut writers = vec![];
    for (i, n) in nodes.iter().enumerate() {
        let u = n.register(&format!("writer{i}")).await;
        nodes[0].add_to_workspace(&owner, ws_id, &u).await;
        writers.push(u);
    }
    let chat = nodes[1].create_channel(&owner, ws_id, "general").await;
    for (i, w) in writers.iter().enumerate() {
        nodes[i].join(w, chat).await;
    }
    // A reader on every node (each writer reads on its own node).
    let mut readers = Vec::new();
    for (i, w) in writers.iter().enumerate() {
        readers.push(WsClient::connect(&nodes[i], &w.token, None).await);
    }
    const PER_WRITER: usize = 30;
    let sends = writers.iter().enumerate().flat_map(|(i, w)| {
        let n = &nodes[i];
        (0..PER_WRITER)
            .map(move |k| async move { n.send(w, chat, &format!("w{i}-{k}")).await["id"].clone() })
    });
    let mut acked: Vec<Value> = join_all(sends).await;
    let total = writers.len() * PER_WRITER;
    let mut seen = Vec::new();
    for r in &mut readers {
        seen.push(created(r, total).await);
    }
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s, &seen[0], "reader {i} saw another order");
    }
    let mut got = seen[0].clone();
    got.sort_by_key(|v| v.as_i64());
    acked.sort_by_key(|v| v.as_i64());
    assert_eq!(got, acked, "every acknowledged message, exactly once");
    // The per-chat sequence is gap-free: history lists them in the delivered order.
    let list = nodes[2]
        .get(
            &format!("/api/messages?chat_id={chat}&limit=100&order=asc"),
            &owner.token,
        )
        .await
        .ok(200);
    let listed: Vec<Value> = list["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(listed, seen[0]);
}

#[actix_web::test]
async fn a_client_resumes_on_another_node() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let c = node(&redis, &db, "node-c", &[]).await;
    let (owner, reader, _, chat) = two_users(&a, "reader", true).await;
    let mut ws = WsClient::connect(&a, &reader.token, None).await;
    b.send(&owner, chat, "first").await;
    ws.next_of("message.created").await;
    let resume = ws.last_event_id.clone().expect("id");
    ws.close().await;
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(b.send(&owner, chat, &format!("away {i}")).await["id"].clone());
    }
    let mut back = WsClient::connect(&c, &reader.token, Some(&resume)).await;
    assert_eq!(created(&mut back, 20).await, sent);
    let live = a.send(&owner, chat, "live").await;
    assert_eq!(created(&mut back, 1).await, vec![live["id"].clone()]);
}

#[actix_web::test]
async fn a_join_on_one_node_is_followed_on_another() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (owner, joiner, _, chat) = two_users(&a, "joiner", false).await;
    // The joiner's socket is on B, which has no room for the chat; the join happens on A.
    let mut ws = WsClient::connect(&b, &joiner.token, None).await;
    a.join(&joiner, chat).await;
    ws.next_of("chat.member_joined").await;
    a.send(&owner, chat, "welcome").await;
    let got = ws.next_of("message.created").await;
    assert_eq!(got["data"]["message"]["content"], "welcome");
}

#[actix_web::test]
async fn a_password_change_closes_sockets_on_every_node() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let u = a.register("rotating").await;
    let mut ws = WsClient::connect(&b, &u.token, None).await;
    a.put(
        "/api/auth/change-password",
        &u.token,
        json!({"current_password": u.password, "new_password": "n3w-password-x"}),
    )
    .await
    .ok(200);
    let frame = ws.closed().await.expect("close frame");
    assert_eq!(u16::from(frame.code), 4004, "{frame:?}");
}

#[actix_web::test]
async fn the_connection_limit_and_presence_span_the_nodes() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let limit = ["--max-ws-per-user", "2", "--presence-coalesce-ms", "0"];
    let a = node(&redis, &db, "node-a", &limit).await;
    let b = node(&redis, &db, "node-b", &limit).await;
    let owner = a.register("watcher").await;
    let roamer = a.register("roamer").await;
    let ws_id = a.create_workspace(&owner, "Acme").await;
    a.add_to_workspace(&owner, ws_id, &roamer).await;
    let mut watcher = WsClient::connect(&b, &owner.token, None).await;
    // The roamer's first connection (on A) is seen online by the watcher on B.
    let first = WsClient::connect(&a, &roamer.token, None).await;
    let online = watcher.next_of("presence.update").await;
    assert_eq!(online["data"]["user_id"], roamer.id);
    assert_eq!(online["data"]["status"], "online");
    // A second tab on B: still one presence, and the limit (2) is now reached on every node.
    let second = WsClient::connect(&b, &roamer.token, None).await;
    let mut third = WsClient::connect_raw(&a).await;
    third
        .send(json!({"type": "auth", "token": format!("Bearer {}", roamer.token)}))
        .await;
    let refused = third.next_of("error").await;
    assert_eq!(refused["data"]["code"], "RATE_LIMITED", "{refused}");
    // Closing one tab is not going offline; closing the last one is.
    first.close().await;
    second.close().await;
    let offline = watcher.next_of("presence.update").await;
    assert_eq!(offline["data"]["user_id"], roamer.id);
    assert_eq!(offline["data"]["status"], "offline", "{offline}");
}

/// Redis restarted while one node writes and another reads: delivery resumes by itself, the
/// gap is filled from PostgreSQL, nothing acknowledged is lost, duplicated or reordered.
#[actix_web::test]
async fn a_redis_restart_under_load_loses_nothing() {
    let mut redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (owner, reader, _, chat) = two_users(&a, "reader", true).await;
    let mut ws = WsClient::connect(&b, &reader.token, None).await;
    let mut acked = Vec::new();
    for i in 0..60 {
        if i == 20 {
            redis.kill();
        }
        if i == 40 {
            redis.restart();
        }
        acked.push(a.send(&owner, chat, &format!("m{i}")).await["id"].clone());
    }
    assert_eq!(created(&mut ws, acked.len()).await, acked);
    let after = a.send(&owner, chat, "after").await;
    assert_eq!(created(&mut ws, 1).await, vec![after["id"].clone()]);
}

/// A node that commits and dies before it publishes: the other nodes see it leave the live
/// set and their rooms catch up from PostgreSQL, so their readers get the event without
/// waiting for the chat's next one.
#[actix_web::test]
async fn a_node_dying_between_commit_and_publish_loses_nothing() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let a = node(&redis, &db, "node-a", &["--fault-unpublished-commits", "1"]).await;
    let (owner, reader, _, chat) = two_users(&b, "reader", true).await;
    let mut ws = WsClient::connect(&b, &reader.token, None).await;
    // Node A's first commit is this send: stored, answered, never published.
    let sent = a.send(&owner, chat, "committed, unpublished").await;
    let quiet_until = tokio::time::Instant::now() + std::time::Duration::from_millis(1500);
    while let Some(frame) = ws
        .next_within(quiet_until.saturating_duration_since(tokio::time::Instant::now()))
        .await
    {
        assert_ne!(
            frame["type"], "message.created",
            "not published: node B cannot have heard of it yet"
        );
    }
    // A goes away (as a killed node does once swept): B notices and catches up.
    a.state.cluster.as_ref().expect("cluster").leave().await;
    let got = ws.next_of("message.created").await;
    assert_eq!(got["data"]["message"]["id"], sent["id"]);
}
