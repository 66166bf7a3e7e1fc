//! The binary's stop: SIGTERM to a real `fechatter serve` process (against the test cluster)
//! finishes open work, records the `last_seen` of the users online and exits 0 — through the
//! server's own signal handling and the stop bound of `src/shutdown.rs` listening beside it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{JWT_SECRET, admin_client, fresh_database};

/// How long the server may take to answer its health check after starting, and to exit.
const BOUND: Duration = Duration::from_secs(60);

#[actix_web::test]
async fn sigterm_stops_the_binary_gracefully() {
    let database = fresh_database().await;
    let data = tempfile::tempdir().expect("data dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter"))
        .arg("serve")
        .env("DATABASE_URL", &database)
        .env("FECHATTER_ADDR", format!("127.0.0.1:{port}"))
        .env("FECHATTER_DATA", data.path().join("data"))
        .env("JWT_SECRET", JWT_SECRET)
        .env("FECHATTER_SHUTDOWN_TIMEOUT_SECS", "2")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("start the server");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Up when its health check answers (the process is polled, not slept on blindly).
    let up = tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(r) = http.get(format!("{base}/api/health")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "the server did not come up:\n{}", log_text());

    let registered: Value = http
        .post(format!("{base}/api/auth/register"))
        .json(
            &json!({"email": "term@example.test", "username": "term", "password": "password-123"}),
        )
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register body");
    let user_id = registered["user"]["id"].as_i64().expect("user id");
    let token = registered["token"].as_str().expect("token").to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .expect("ws connect");
    let auth = json!({"type": "auth", "token": format!("Bearer {token}")}).to_string();
    ws.send(Message::text(auth)).await.expect("auth frame");
    let first = tokio::time::timeout(BOUND, ws.next())
        .await
        .expect("an answer to auth")
        .expect("a frame")
        .expect("a readable frame");
    let first: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(first["type"], "auth.success", "{first}");

    let before = chrono::Utc::now();
    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");

    // The WebSocket ends (closed by the stop), and the process exits 0 in time.
    let ended = tokio::time::timeout(BOUND, async {
        while let Some(Ok(frame)) = ws.next().await {
            if frame.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the WebSocket outlived the stop");
    let status = tokio::time::timeout(BOUND, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the server did not exit after SIGTERM:\n{}", log_text()))
        .expect("wait");
    assert!(status.success(), "exit {status}:\n{}", log_text());

    let db = admin_client(&database).await;
    let seen: Option<chrono::DateTime<chrono::Utc>> = db
        .query_one("SELECT last_seen_at FROM users WHERE id = $1", &[&user_id])
        .await
        .expect("last_seen_at")
        .get(0);
    assert!(
        seen.is_some_and(|t| t >= before),
        "last_seen {seen:?}, stopped after {before}"
    );
}

/// A start-up that fails after the actors were created (here: the port is taken) exits with
/// the error, not with a panic: the actors a failed start created are dropped while no
/// runtime runs, and one that had not started yet used to arm its timers there and panic
/// ("there is no reactor running"), skipping the embedded PostgreSQL's stop.
#[actix_web::test]
async fn a_failed_start_exits_with_its_error_not_a_panic() {
    let database = fresh_database().await;
    let data = tempfile::tempdir().expect("data dir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to occupy");
    let port = taken.local_addr().expect("its address").port();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter"))
        .arg("serve")
        .env("DATABASE_URL", &database)
        .env("FECHATTER_ADDR", format!("127.0.0.1:{port}"))
        .env("FECHATTER_DATA", data.path().join("data"))
        .env("JWT_SECRET", JWT_SECRET)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(BOUND, run)
        .await
        .expect("the server gave up within the bound")
        .expect("ran the server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{stderr}");
    assert!(
        stderr.contains("binding 127.0.0.1:"),
        "names the cause:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
    drop(taken);
}
