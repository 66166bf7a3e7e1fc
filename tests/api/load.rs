//! `fechatter-load`: every scenario at small scale against the spawned server; the JSON summary
//! parses and shows nothing lost, duplicated or reordered. No timing is asserted.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::common::{spawn_app_with, test_config};

/// Runs the tool with `args` (plus `--json`, `--quiet`); returns its output and JSON summary.
async fn load(args: &[&str]) -> (Output, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("summary.json");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter-load"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--quiet")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run fechatter-load");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no summary ({e}); stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let summary = serde_json::from_str(&text).expect("summary is JSON");
    (output, summary)
}

#[track_caller]
fn assert_clean(s: &Value) {
    for field in ["lost", "duplicated", "out_of_order"] {
        assert_eq!(s[field], 0, "{field}: {s:#}");
    }
    assert_eq!(s["clean"], true, "{s:#}");
    assert!(s["acknowledged"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert_eq!(s["delivered"], s["expected"], "{s:#}");
    assert!(s["expected"].as_u64().unwrap_or(0) > 0, "{s:#}");
}

/// Users in overlapping rooms each send for a moment; every client gets every message of its
/// rooms once, in order. A second run with `--reuse` skips the set-up.
#[actix_web::test]
async fn chat_delivers_everything_once_in_order() {
    let app = spawn_app_with(test_config(&[])).await;
    let server = app.base.clone();
    let reuse = tempfile::NamedTempFile::new().expect("tempfile");
    std::fs::remove_file(reuse.path()).expect("start without a set-up file");
    let reuse = reuse.path().to_str().expect("utf-8 path").to_string();
    let args = [
        "chat",
        "--server",
        &server,
        "--users",
        "12",
        "--rooms",
        "3",
        "--rooms-per-user",
        "2",
        "--rate",
        "30",
        "--duration-secs",
        "2",
        "--drain-secs",
        "30",
        "--reuse",
        &reuse,
    ];
    let (out, s) = load(&args).await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["scenario"], "chat");
    assert_eq!(s["connections"], 12, "{s:#}");
    assert_clean(&s);
    assert!(s["latency"]["count"].as_u64().unwrap_or(0) > 0, "{s:#}");

    let (out, s) = load(&args).await;
    assert!(out.status.success(), "{s:#}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reusing the set-up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_clean(&s);
}

/// Idle connections open, spread over users and source addresses, and stay open.
#[actix_web::test]
async fn connect_holds_idle_connections() {
    let app = spawn_app_with(test_config(&[])).await;
    let pid = std::process::id().to_string();
    let (out, s) = load(&[
        "connect",
        "--server",
        &app.base,
        "--conns",
        "25",
        "--conns-per-user",
        "5",
        "--hold-secs",
        "1",
        "--server-pid",
        &pid,
    ])
    .await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["opened"], 25, "{s:#}");
    assert_eq!(s["failed"], 0, "{s:#}");
    assert_eq!(s["held"], 25, "{s:#}");
    assert!(s["server_rss_after_kib"].as_u64().is_some(), "{s:#}");
}

/// Fan-out to one room, against the server and against the baseline broadcast server.
#[actix_web::test]
async fn fanout_reaches_every_member_and_compares_with_the_baseline() {
    let app = spawn_app_with(test_config(&[])).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let baseline_addr = format!("127.0.0.1:{port}");
    let mut baseline = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter-load"))
        .args([
            "baseline-server",
            "--addr",
            &baseline_addr,
            "--workers",
            "1",
        ])
        .kill_on_drop(true)
        .spawn()
        .expect("start the baseline server");
    let baseline_url = format!("http://{baseline_addr}");
    let health = format!("{baseline_url}/api/health");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&health)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "baseline server did not start");

    let (out, s) = load(&[
        "fanout",
        "--server",
        &app.base,
        "--members",
        "20",
        "--conns-per-user",
        "5",
        "--messages",
        "5",
        "--baseline-url",
        &baseline_url,
    ])
    .await;
    let _ = baseline.kill().await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["scenario"], "fanout");
    assert_clean(&s["fechatter"]);
    assert_clean(&s["baseline"]);
    assert_eq!(s["fechatter"]["delivered"], 100, "{s:#}");
    assert!(s["ratio"].as_f64().is_some(), "{s:#}");
}

/// The REST mix runs every route without errors.
#[actix_web::test]
async fn http_mix_runs_every_route() {
    let app = spawn_app_with(test_config(&[])).await;
    let (out, s) = load(&[
        "http",
        "--server",
        &app.base,
        "--users",
        "4",
        "--rooms",
        "2",
        "--concurrency",
        "4",
        "--duration-secs",
        "2",
    ])
    .await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["errors"], 0, "{s:#}");
    for route in ["login", "list_chats", "send", "list_messages", "search"] {
        assert!(
            s["routes"][route]["requests"].as_u64().unwrap_or(0) > 0,
            "{route}: {s:#}"
        );
    }
}
