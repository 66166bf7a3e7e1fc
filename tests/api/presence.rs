//! Presence: coalesced `presence.update` frames (one per workspace per window), their wire
//! shape, and a connection storm in which no change is lost.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::common::ws::{EVENT_DEADLINE, WsClient};
use crate::common::{TestApp, TestUser, spawn_app_with, test_config};

/// A workspace owned by the first of `n` new users, the others invited and accepted.
async fn workspace_of(app: &TestApp, n: usize) -> (i64, Vec<TestUser>) {
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        users.push(app.register(&format!("p{i}")).await);
    }
    let ws = app.create_workspace(&users[0], "storm").await;
    for u in &users[1..] {
        app.add_to_workspace(&users[0], ws, u).await;
    }
    (ws, users)
}

/// The users `viewer` sees online in `ws` (`GET /api/users`).
async fn online_now(app: &TestApp, viewer: &TestUser, ws: i64) -> HashSet<i64> {
    let r = app
        .get(
            &format!("/api/users?workspace_id={ws}&limit=100"),
            &viewer.token,
        )
        .await
        .ok(200);
    r["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter(|u| u["status"] == "online")
        .filter_map(|u| u["id"].as_i64())
        .collect()
}

/// The changes a `presence.update` frame carries, checking its shape: one change is exactly
/// `{user_id, status, last_seen}`; several add `changes`, with the top-level fields equal to
/// the last of them.
fn changes_of(frame: &Value) -> Vec<(i64, String)> {
    let data = &frame["data"];
    let obj = data.as_object().expect("data object");
    let one = |c: &Value| {
        assert!(c["last_seen"].is_string(), "{c}");
        (
            c["user_id"].as_i64().expect("user_id"),
            c["status"].as_str().expect("status").to_string(),
        )
    };
    match data.get("changes") {
        None => {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["last_seen", "status", "user_id"], "{frame}");
            vec![one(data)]
        }
        Some(list) => {
            let list = list.as_array().expect("changes array");
            assert!(list.len() > 1, "a list only for several changes: {frame}");
            let last = list.last().expect("non-empty");
            assert_eq!(data["user_id"], last["user_id"], "{frame}");
            assert_eq!(data["status"], last["status"], "{frame}");
            assert_eq!(data["last_seen"], last["last_seen"], "{frame}");
            list.iter().map(one).collect()
        }
    }
}

/// 40 users of one workspace connect at once. Each learns of every other: those online before
/// it registered from `GET /api/users` right after connecting, the rest from pushed frames.
#[actix_web::test]
async fn a_connection_storm_loses_no_change() {
    const USERS: usize = 40;
    let app = spawn_app_with(test_config(&[
        "--presence-coalesce-ms",
        "100",
        "--presence-separate-frames",
        "0",
    ]))
    .await;
    let (ws, users) = workspace_of(&app, USERS).await;
    let all: HashSet<i64> = users.iter().map(|u| u.id).collect();
    let app = &app;
    let views = futures_util::future::join_all(users.iter().map(|u| {
        let all = &all;
        async move {
            let mut client = WsClient::connect(app, &u.token, None).await;
            let mut status: HashMap<i64, String> = online_now(app, u, ws)
                .await
                .into_iter()
                .map(|id| (id, "online".to_string()))
                .collect();
            status.insert(u.id, "online".into());
            let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
            let mut frames = 0;
            while status.len() < all.len() {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let Some(frame) = client.next_within(left).await else {
                    break;
                };
                if frame["type"] != "presence.update" {
                    continue;
                }
                frames += 1;
                for (id, s) in changes_of(&frame) {
                    status.insert(id, s);
                }
            }
            (u.id, status, frames, client)
        }
    }))
    .await;
    let mut total_frames = 0;
    for (user, status, frames, _) in &views {
        let missing: Vec<i64> = all
            .difference(&status.keys().copied().collect())
            .copied()
            .collect();
        assert!(
            missing.is_empty(),
            "user {user} never learned of {missing:?}"
        );
        assert!(
            status.values().all(|s| s == "online"),
            "user {user}: {status:?}"
        );
        total_frames += frames;
    }
    // Coalesced: far fewer frames than one per (recipient, change) pair.
    assert!(
        total_frames < USERS * (USERS - 1) / 2,
        "{total_frames} presence frames for {USERS} users"
    );
    for (_, _, _, client) in views {
        client.close().await;
    }
}

/// Changes inside one window whose separate frames would cost more than
/// `--presence-separate-frames` go out as one frame listing them in order; a lone change later
/// keeps the contract's three-field shape.
#[actix_web::test]
async fn a_costly_window_is_one_frame_listing_its_changes() {
    let app = spawn_app_with(test_config(&[
        "--presence-coalesce-ms",
        "3000",
        "--presence-separate-frames",
        "0",
    ]))
    .await;
    let (_, users) = workspace_of(&app, 3).await;
    let mut watcher = WsClient::connect(&app, &users[0].token, None).await;
    let a = WsClient::connect(&app, &users[1].token, None).await;
    let b = WsClient::connect(&app, &users[2].token, None).await;
    let frame = watcher.next_of("presence.update").await;
    let expected: Vec<(i64, String)> = users.iter().map(|u| (u.id, "online".to_string())).collect();
    assert_eq!(changes_of(&frame), expected, "{frame}");
    assert!(frame["data"]["changes"].is_array(), "{frame}");

    a.close().await;
    let frame = watcher.next_of("presence.update").await;
    assert_eq!(changes_of(&frame), [(users[1].id, "offline".to_string())]);
    assert!(frame["data"].get("changes").is_none(), "{frame}");
    b.close().await;
}

/// Three users of one workspace connect with presence window `window_ms`: the first sees the
/// other two come online as two frames, each exactly the contract's three-field shape.
async fn each_change_arrives_as_a_contract_frame(window_ms: &str) {
    let app = spawn_app_with(test_config(&["--presence-coalesce-ms", window_ms])).await;
    let (_, users) = workspace_of(&app, 3).await;
    let mut watcher = WsClient::connect(&app, &users[0].token, None).await;
    let a = WsClient::connect(&app, &users[1].token, None).await;
    let b = WsClient::connect(&app, &users[2].token, None).await;
    let got: Vec<Vec<(i64, String)>> = watcher
        .collect("presence.update", 2)
        .await
        .iter()
        .map(|frame| {
            assert!(frame["data"].get("changes").is_none(), "{frame}");
            changes_of(frame)
        })
        .collect();
    assert_eq!(
        got,
        [
            vec![(users[1].id, "online".to_string())],
            vec![(users[2].id, "online".to_string())]
        ]
    );
    a.close().await;
    b.close().await;
}

/// A window with a few changes in a small workspace sends each of them as its own frame in the
/// contract's three-field shape, to everyone but the user who changed (before: one frame whose
/// top-level fields named only the last change, so a client reading the contract's shape never
/// learned that the other user came online).
#[actix_web::test]
async fn a_cheap_window_keeps_one_contract_frame_per_change() {
    each_change_arrives_as_a_contract_frame("1000").await;
}

/// With no window each change goes out at once, in the contract's shape.
#[actix_web::test]
async fn zero_window_sends_each_change_at_once() {
    each_change_arrives_as_a_contract_frame("0").await;
}

/// A window longer than the limit is refused at start-up.
#[test]
fn coalesce_window_is_bounded() {
    let config = test_config(&["--presence-coalesce-ms", "60000"]);
    assert!(config.validate().is_err());
}

/// A window whose frames reached many connections stretches the next one, so presence stays
/// under `--presence-frames-per-sec` (here 1/s: after one frame the next window lasts ≥ 1 s
/// instead of 50 ms); the change still arrives.
#[actix_web::test]
async fn a_busy_window_stretches_the_next() {
    let app = spawn_app_with(test_config(&[
        "--presence-coalesce-ms",
        "50",
        "--presence-frames-per-sec",
        "1",
        "--presence-coalesce-max-ms",
        "1500",
    ]))
    .await;
    let (_, users) = workspace_of(&app, 3).await;
    let mut watcher = WsClient::connect(&app, &users[0].token, None).await;
    let a = WsClient::connect(&app, &users[1].token, None).await;
    let first = watcher.next_of("presence.update").await;
    assert!(changes_of(&first).contains(&(users[1].id, "online".to_string())));
    let before = std::time::Instant::now();
    let b = WsClient::connect(&app, &users[2].token, None).await;
    let second = watcher.next_of("presence.update").await;
    assert_eq!(changes_of(&second), [(users[2].id, "online".to_string())]);
    let waited = before.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "the window after a frame should last ≥ 1 s at 1 frame/s, the change came after {waited:?}"
    );
    a.close().await;
    b.close().await;
}

/// A stretched window longer than the limit is refused at start-up.
#[test]
fn stretched_window_is_bounded() {
    let config = test_config(&["--presence-coalesce-max-ms", "60000"]);
    assert!(config.validate().is_err());
}

/// A graceful stop records the `last_seen` of the users still online before `run` returns
/// (before: their sessions' offline writes were cut off with the workers' runtimes, "connection
/// closed", so a user online at a restart kept an old `last_seen`).
#[actix_web::test]
async fn graceful_stop_records_last_seen_of_users_online() {
    let app = spawn_app_with(test_config(&["--shutdown-timeout-secs", "1"])).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let _a = WsClient::connect(&app, &alice.token, None).await;
    let _b = WsClient::connect(&app, &bob.token, None).await;
    let before = chrono::Utc::now();
    app.shutdown().await;
    let db = app.db().await;
    for user in [&alice, &bob] {
        let seen: Option<chrono::DateTime<chrono::Utc>> = db
            .query_one("SELECT last_seen_at FROM users WHERE id = $1", &[&user.id])
            .await
            .expect("last_seen_at")
            .get(0);
        assert!(
            seen.is_some_and(|t| t >= before),
            "{}: last_seen {seen:?}, stopped after {before}",
            user.username
        );
    }
}
