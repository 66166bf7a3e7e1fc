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
        // 12 senders over 2 HTTP connections: a send may wait for one; every send is counted.
        "--http-connections",
        "2",
    ];
    let (out, s) = load(&args).await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["scenario"], "chat");
    assert_eq!(s["connections"], 12, "{s:#}");
    assert_clean(&s);
    assert!(s["latency"]["count"].as_u64().unwrap_or(0) > 0, "{s:#}");
    assert_eq!(s["http_connections"], 2, "{s:#}");
    assert_eq!(s["connection_wait"]["count"], s["sent"], "{s:#}");

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

/// Two `--shard I/2` processes drive one chat run over two server URLs (here the same server
/// twice); `merge` checks delivery across both shards' senders and clients.
#[actix_web::test]
async fn sharded_chat_merges_into_one_clean_summary() {
    let app = spawn_app_with(test_config(&[])).await;
    let servers = format!("{0},{0}", app.base);
    let dir = tempfile::tempdir().expect("tempdir");
    let reuse = dir.path().join("setup.json");
    let reuse = reuse.to_str().expect("utf-8 path").to_string();
    let base = |extra: &[&str]| {
        let mut v: Vec<String> = [
            "chat",
            "--url",
            &servers,
            "--users",
            "10",
            "--rooms",
            "2",
            "--rooms-per-user",
            "1",
            "--rate",
            "20",
            "--drain-secs",
            "30",
            "--reuse",
            &reuse,
            "--run-id",
            "4242",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // The set-up first (sends nothing), so both shards use the same users.
    let setup = base(&["--duration-secs", "0"]);
    let setup: Vec<&str> = setup.iter().map(String::as_str).collect();
    let (out, _) = load(&setup).await;
    assert!(out.status.success(), "{out:?}");

    let a = base(&["--duration-secs", "2", "--shard", "0/2"]);
    let b = base(&["--duration-secs", "2", "--shard", "1/2"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    let ((out_a, sa), (out_b, sb)) = tokio::join!(load(&a), load(&b));
    assert!(
        out_a.status.success() && out_b.status.success(),
        "{sa:#} {sb:#}"
    );
    assert_eq!(sa["connections"], 5, "{sa:#}");
    assert_eq!(sb["shard"]["index"], 1, "{sb:#}");

    let files: Vec<std::path::PathBuf> = ["a.json", "b.json"]
        .iter()
        .map(|n| dir.path().join(n))
        .collect();
    std::fs::write(&files[0], sa.to_string()).expect("write a");
    std::fs::write(&files[1], sb.to_string()).expect("write b");
    let merged = dir.path().join("merged.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter-load"))
        .arg("merge")
        .args(&files)
        .arg("--json")
        .arg(&merged)
        .output()
        .await
        .expect("run merge");
    assert!(out.status.success(), "{out:?}");
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(&merged).expect("merged")).expect("JSON");
    assert_eq!(m["connections"], 10, "{m:#}");
    assert_clean(&m);
    // Every client was checked against both shards' senders.
    let acked = m["acknowledged"].as_u64().expect("acknowledged");
    assert_eq!(m["expected"].as_u64(), Some(acked * 5), "{m:#}");

    // A shard of another run does not merge with these.
    let mut other = sb.clone();
    other["shard"]["run_id"] = 1.into();
    std::fs::write(&files[1], other.to_string()).expect("write b");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fechatter-load"))
        .arg("merge")
        .args(&files)
        .output()
        .await
        .expect("run merge");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `ramp` runs chat steps at rising rates and reports each step and the knee.
#[actix_web::test]
async fn ramp_reports_steps_and_a_knee() {
    let app = spawn_app_with(test_config(&[])).await;
    let (out, s) = load(&[
        "ramp",
        "--server",
        &app.base,
        "--users",
        "4",
        "--rooms",
        "2",
        "--duration-secs",
        "2",
        "--drain-secs",
        "30",
        "--start-rate",
        "20",
        "--factor",
        "2",
        "--max-rate",
        "40",
        "--p99-ms",
        "10000",
    ])
    .await;
    assert!(out.status.success(), "{s:#}");
    assert_eq!(s["scenario"], "ramp");
    let steps = s["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{s:#}");
    assert_eq!(steps[1]["target_rate"], 40.0);
    assert!(steps.iter().all(|t| t["lost"] == 0), "{s:#}");
    assert!(
        s["knee_acked_per_sec"].as_f64().unwrap_or(0.0) > 0.0,
        "{s:#}"
    );
}
