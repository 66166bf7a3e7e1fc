//! Cluster mode: several in-process nodes on one database and one real Redis (started per test,
//! `tests/common/redis.rs`). Shared rate limits, revocation, cluster-wide connection counts and
//! dead-node cleanup, health, and the broker's resubscription after a Redis restart.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fechatter::cluster::broker::ChatEventRef;
use fechatter::cluster::presence::Admit;
use fechatter::cluster::{ChatDelivery, Cluster};
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::redis::RedisServer;
use crate::common::{TestApp, fresh_database, spawn_app_on, test_config};

const ADMIN: &str = "admin-token-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(10);

/// A node of the test cluster: `id`, a short node TTL (3 s, heartbeat every second).
pub async fn node(redis: &RedisServer, database: &str, id: &str, extra: &[&str]) -> TestApp {
    let url = redis.url();
    let mut args = vec![
        "--redis-url",
        &url,
        "--node-id",
        id,
        "--node-ttl-secs",
        "3",
        "--node-heartbeat-secs",
        "1",
        "--admin-token",
        ADMIN,
    ];
    args.extend_from_slice(extra);
    spawn_app_on(test_config(&args), database.to_string()).await
}

fn cluster(app: &TestApp) -> &Cluster {
    app.state.cluster.as_ref().expect("cluster mode")
}

fn remaining(r: &crate::common::Resp) -> u64 {
    r.headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no x-ratelimit-remaining: {:?}", r.headers))
}

/// One bucket per user across nodes: requests on A and B draw from the same quota, the headers
/// count down across both, and the request past the quota is refused on whichever node.
#[actix_web::test]
async fn rate_limit_is_shared_across_nodes() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &["--rate-limit-per-hour", "4"]).await;
    let b = node(&redis, &db, "node-b", &["--rate-limit-per-hour", "4"]).await;
    let u = a.register("limited").await;
    let counts = [
        remaining(&a.get("/api/users/me", &u.token).await),
        remaining(&b.get("/api/users/me", &u.token).await),
        remaining(&a.get("/api/users/me", &u.token).await),
        remaining(&b.get("/api/users/me", &u.token).await),
    ];
    assert_eq!(counts, [3, 2, 1, 0]);
    let refused = a.get("/api/users/me", &u.token).await;
    assert_eq!(remaining(&refused), 0);
    refused.err(429, "RATE_LIMITED");
    b.get("/api/users/me", &u.token)
        .await
        .err(429, "RATE_LIMITED");
}

/// After a password change on A, node B refuses the old token on the very next request and is
/// told (over Redis) to close the user's sockets well within a second.
#[actix_web::test]
async fn revocation_reaches_every_node() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let u = a.register("revoked").await;
    b.get("/api/users/me", &u.token).await.ok(200);
    let (tx, mut rx) = mpsc::unbounded_channel();
    cluster(&b).revocation().on_revoke(move |user, _version| {
        let _ = tx.send((user, Instant::now()));
    });
    let r = a
        .put(
            "/api/auth/change-password",
            &u.token,
            json!({"current_password": u.password, "new_password": "new-password-1"}),
        )
        .await
        .ok(200);
    let changed = Instant::now();
    b.get("/api/users/me", &u.token)
        .await
        .err(401, "UNAUTHORIZED");
    let new_token = r["token"].as_str().expect("new token");
    b.get("/api/users/me", new_token).await.ok(200);
    let (user, at) = tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("node B told within a second")
        .expect("handler alive");
    assert_eq!(user, u.id);
    assert!(at.duration_since(changed) < Duration::from_secs(1));
}

/// The connection limit counts every node's connections, presence is one per user, and a node
/// that stops heartbeating stops counting and is swept away.
#[actix_web::test]
async fn connections_count_across_nodes_and_dead_nodes_are_forgotten() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (pa, pb) = (cluster(&a).presence(), cluster(&b).presence());
    assert_eq!(
        pa.connect(1, 3).await.unwrap(),
        Admit::Admitted {
            first: true,
            total: 1
        }
    );
    assert_eq!(
        pb.connect(1, 3).await.unwrap(),
        Admit::Admitted {
            first: false,
            total: 2
        }
    );
    assert_eq!(
        pa.connect(1, 3).await.unwrap(),
        Admit::Admitted {
            first: false,
            total: 3
        }
    );
    assert_eq!(pb.connect(1, 3).await.unwrap(), Admit::Refused { total: 3 });
    assert_eq!(pa.connect(1, 3).await.unwrap(), Admit::Refused { total: 3 });
    let online = pb.online_among(&[1, 2]).await.unwrap();
    assert_eq!(online.into_iter().collect::<Vec<_>>(), vec![1]);
    assert_eq!(pb.disconnect(1).await.unwrap(), 2);
    assert_eq!(pa.disconnect(1).await.unwrap(), 1);
    assert_eq!(pa.disconnect(1).await.unwrap(), 0);
    assert!(pa.online_among(&[1]).await.unwrap().is_empty());

    // A node that died with 4 connections of user 5 (its last heartbeat long ago).
    let prefix = "fechatter";
    redis.command(&format!("ZADD {prefix}:nodes 1 ghost"));
    redis.command(&format!("HSET {prefix}:uconn:5 ghost 4"));
    redis.command(&format!("SADD {prefix}:nusers:ghost 5"));
    assert_eq!(
        pa.connections(5).await.unwrap(),
        0,
        "dead nodes do not count"
    );
    assert!(matches!(
        pb.connect(5, 1).await.unwrap(),
        Admit::Admitted { first: true, .. }
    ));
    let deadline = Instant::now() + DEADLINE;
    while redis.command(&format!("EXISTS {prefix}:nusers:ghost")) != ":0\r\n" {
        assert!(
            Instant::now() < deadline,
            "the sweep never forgot the dead node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        redis.command(&format!("ZSCORE {prefix}:nodes ghost")),
        "$-1\r\n"
    );
}

/// Health names Redis with a measured latency and the live nodes; `/metrics` has the broker.
#[actix_web::test]
async fn health_reports_redis_and_the_live_nodes() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let _b = node(&redis, &db, "node-b", &[]).await;
    let h = a.get("/admin/production/health", ADMIN).await.ok(200);
    let r = &h["services"]["redis"];
    assert_eq!(r["status"], "healthy", "{h}");
    assert!(r["latency_ms"].as_f64().is_some_and(|l| l >= 0.0), "{h}");
    assert_eq!(r["node"], "node-a");
    assert_eq!(r["nodes"], json!(["node-a", "node-b"]));
    let text = a
        .http
        .get(a.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(text.contains("fechatter_broker_published"), "{text}");
    assert!(text.contains("fechatter_broker_gaps_filled"), "{text}");

    // Redis gone: the node still serves, health says degraded and why.
    drop(redis);
    let h = a.get("/admin/production/health", ADMIN).await.ok(200);
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["services"]["redis"]["status"], "unhealthy", "{h}");
}

async fn next(rx: &mut mpsc::UnboundedReceiver<ChatDelivery>) -> ChatDelivery {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("a broker delivery in time")
        .expect("subscription alive")
}

/// Publishes `seq` from `from` until `rx` has it (Redis may be coming back).
async fn deliver(from: &Cluster, rx: &mut mpsc::UnboundedReceiver<ChatDelivery>, seq: i64) {
    let data = Bytes::from(format!("{{\"n\":{seq}}}"));
    let deadline = Instant::now() + DEADLINE;
    loop {
        from.broker().publish_chat([ChatEventRef {
            chat_id: 7,
            seq: Some(seq),
            kind: "message.created",
            data: &data,
        }]);
        if let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            match d {
                ChatDelivery::Event(e) if e.seq == Some(seq) => {
                    assert_eq!((e.chat_id, e.node.as_str(), &e.data), (7, "node-b", &data));
                    return;
                }
                _ => continue,
            }
        }
        assert!(Instant::now() < deadline, "seq {seq} never arrived");
    }
}

/// A subscriber gets `Resync` once live, other nodes' events (not its own), and after Redis
/// restarts: the subscription back, and `Resync` (gap possible) before new events.
#[actix_web::test]
async fn broker_resubscribes_and_signals_a_gap_after_a_redis_restart() {
    let mut redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _sub = cluster(&a).broker().subscribe_chat(7, move |d| {
        let _ = tx.send(d);
    });
    assert!(matches!(next(&mut rx).await, ChatDelivery::Resync));
    // A's own publications are not delivered back to it.
    let own = Bytes::from_static(b"{}");
    cluster(&a).broker().publish_chat([ChatEventRef {
        chat_id: 7,
        seq: Some(1),
        kind: "message.created",
        data: &own,
    }]);
    deliver(cluster(&b), &mut rx, 2).await;
    // Typing is relayed like the rest, without a seq (never logged, never refilled).
    let typing = Bytes::from_static(br#"{"user_id":1}"#);
    cluster(&b).broker().publish_chat([ChatEventRef {
        chat_id: 7,
        seq: None,
        kind: "typing.start",
        data: &typing,
    }]);
    match next(&mut rx).await {
        ChatDelivery::Event(e) => {
            assert_eq!(
                (e.seq, e.kind.as_str(), &e.data),
                (None, "typing.start", &typing)
            )
        }
        other => panic!("expected the typing event, got {other:?}"),
    }
    // An idle subscription stays up: its pings are answered, nothing reconnects (a ping reply
    // misread while subscribed once dropped the connection every ping).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = cluster(&a).broker().stats();
    assert!(before.connected && before.received >= 2, "{before:?}");
    assert_eq!(before.reconnects, 0, "{before:?}");

    redis.restart();
    match next(&mut rx).await {
        ChatDelivery::Resync => {}
        ChatDelivery::Event(e) => panic!("event before the gap signal: {e:?}"),
    }
    deliver(cluster(&b), &mut rx, 3).await;
    let after = cluster(&a).broker().stats();
    assert_eq!(after.reconnects, before.reconnects + 1, "{after:?}");
    assert!(after.connected);
}

/// The cluster-mode seq base: a second writer's `lock_seq` waits for the first one's commit and
/// then starts after its last seq, so writers on two nodes cannot take the same seqs.
#[actix_web::test]
async fn the_chat_row_lock_serialises_writers_and_hands_out_the_committed_base() {
    use fechatter::store::events::{advance_seq, lock_seq};
    let app = crate::common::spawn_app().await;
    let owner = app.register("locker").await;
    let ws = app.create_workspace(&owner, "locks").await;
    let chat = app.create_channel(&owner, ws, "locked").await;
    let store = app.state.store.clone();
    let mut first = store.client().await.expect("client");
    let tx = first.transaction().await.expect("tx");
    let base = lock_seq(&tx, chat)
        .await
        .expect("lock")
        .expect("chat exists");
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            let mut c = store.client().await.expect("client");
            let tx = c.transaction().await.expect("tx");
            let seen = lock_seq(&tx, chat).await.expect("lock").expect("chat");
            tx.commit().await.expect("commit");
            (seen, Instant::now())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second writer must wait for the lock"
    );
    advance_seq(&tx, chat, base, base + 3)
        .await
        .expect("advance");
    let committed = Instant::now();
    tx.commit().await.expect("commit");
    let (seen, at) = second.await.expect("second writer");
    assert_eq!(seen, base + 3);
    assert!(at >= committed);
    assert_eq!(lock_seq_missing(&store).await, None);
}

async fn lock_seq_missing(store: &fechatter::store::Store) -> Option<i64> {
    let mut c = store.client().await.expect("client");
    let tx = c.transaction().await.expect("tx");
    fechatter::store::events::lock_seq(&tx, i64::MAX)
        .await
        .expect("query")
}

/// The GCRA script's numbers are governor's: remaining counts down, a refusal says when the next
/// cell frees (one period/limit after the first), and the reset is the time to refill the used
/// cells. Another key has its own bucket.
#[actix_web::test]
async fn the_gcra_script_answers_like_the_local_limiter() {
    use fechatter::cluster::limits::SharedLimiter;
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let limiter = SharedLimiter::new(cluster(&a).clone());
    let per_cell = Duration::from_secs(1200);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let v = limiter.check("t", "k", 3, per_cell).await.unwrap();
        assert!(v.allowed);
        seen.push((v.remaining, v.reset_in.as_secs_f64().round() as u64));
    }
    assert_eq!(seen, [(2, 1200), (1, 2400), (0, 3600)]);
    let refused = limiter.check("t", "k", 3, per_cell).await.unwrap();
    assert!(!refused.allowed);
    assert!(refused.retry_after > Duration::from_secs(1190));
    assert!(refused.retry_after <= Duration::from_secs(1200));
    assert!(refused.reset_in > Duration::from_secs(3590));
    let other = limiter.check("t", "other", 3, per_cell).await.unwrap();
    assert_eq!((other.allowed, other.remaining), (true, 2));
    // The bucket expires when it would be full again (no key kept for idle clients).
    let ttl: i64 = redis
        .command("PTTL fechatter:rl:t:k")
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{ttl}");
}

/// Presence changes published on one node reach the others (not the publisher itself).
#[actix_web::test]
async fn presence_changes_reach_the_other_nodes() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tx_a = tx.clone();
    let _on_b = cluster(&b).presence().subscribe_changes(move |c| {
        let _ = tx.send(("b", c));
    });
    let _on_a = cluster(&a).presence().subscribe_changes(move |c| {
        let _ = tx_a.send(("a", c));
    });
    // The subscriptions take effect asynchronously: publish until one arrives.
    let deadline = Instant::now() + DEADLINE;
    let (at, change) = loop {
        cluster(&a).presence().publish_change(11, true, &[4, 5]);
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            break got;
        }
        assert!(Instant::now() < deadline, "no presence change arrived");
    };
    assert_eq!(at, "b", "the publishing node does not hear itself");
    assert_eq!(
        (
            change.node.as_str(),
            change.user_id,
            change.online,
            change.workspaces
        ),
        ("node-a", 11, true, vec![4, 5])
    );
}

/// Redis gone: requests are still limited (by the node's own buckets, with the same headers)
/// rather than refused or waved through, and the shared buckets are back once Redis is.
#[actix_web::test]
async fn rate_limits_fall_back_to_the_node_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &["--rate-limit-per-hour", "3"]).await;
    let u = a.register("fallback").await;
    assert_eq!(remaining(&a.get("/api/users/me", &u.token).await), 2);
    redis.kill();
    // The node's own bucket has not been touched yet: it starts full.
    let counts = [
        remaining(&a.get("/api/users/me", &u.token).await),
        remaining(&a.get("/api/users/me", &u.token).await),
        remaining(&a.get("/api/users/me", &u.token).await),
    ];
    assert_eq!(counts, [2, 1, 0]);
    a.get("/api/users/me", &u.token)
        .await
        .err(429, "RATE_LIMITED");
    redis.restart();
    // A fresh Redis has a fresh bucket: once it answers again, the shared count resumes.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = a.get("/api/users/me", &u.token).await;
        if r.status == 200 && remaining(&r) == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "shared buckets never came back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A node that stops cleanly leaves at once: out of the live nodes, its connections uncounted.
#[actix_web::test]
async fn a_stopped_node_leaves_the_cluster() {
    let redis = RedisServer::start();
    let db = fresh_database().await;
    let a = node(&redis, &db, "node-a", &[]).await;
    let b = node(&redis, &db, "node-b", &[]).await;
    let (ca, cb) = (cluster(&a).clone(), cluster(&b).clone());
    assert!(matches!(
        cb.presence().connect(3, 10).await.unwrap(),
        Admit::Admitted { .. }
    ));
    assert_eq!(ca.presence().connections(3).await.unwrap(), 1);
    assert_eq!(ca.live_nodes().await.unwrap(), ["node-a", "node-b"]);
    b.stop().await;
    let deadline = Instant::now() + DEADLINE;
    while ca.live_nodes().await.unwrap() != ["node-a"] {
        assert!(Instant::now() < deadline, "node-b never left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ca.presence().connections(3).await.unwrap(), 0);
    // Well past a heartbeat: it stays gone.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(ca.live_nodes().await.unwrap(), ["node-a"]);
}
