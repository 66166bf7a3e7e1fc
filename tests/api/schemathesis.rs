//! schemathesis (property-based API testing from the OpenAPI document) against the real server,
//! authenticated, with every check on: the document and the server must agree on every status,
//! body, header and constraint, and nothing may answer 5xx.
//!
//! The binary is `$FECHATTER_SCHEMATHESIS` (set by `scripts/test`, which installs it) or
//! `schemathesis` on PATH. Missing, the test is skipped with a message, except under `CI=true`
//! where it fails.

use std::process::Stdio;
use std::time::Duration;

use crate::common::{spawn_app_with, test_config};

/// Test cases per operation and phase: enough to exercise each constraint, small enough that
/// the run takes a minute or two on two cores.
const MAX_EXAMPLES: &str = "30";
/// Upper bound on the whole run.
const RUN_DEADLINE: Duration = Duration::from_secs(600);

fn binary() -> Option<String> {
    if let Ok(path) = std::env::var("FECHATTER_SCHEMATHESIS")
        && std::path::Path::new(&path).exists()
    {
        return Some(path);
    }
    let on_path = std::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| "schemathesis".to_string())
}

#[actix_web::test]
async fn schemathesis_finds_no_failure() {
    let Some(bin) = binary() else {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "schemathesis is missing: scripts/test installs it and sets FECHATTER_SCHEMATHESIS"
        );
        eprintln!("SKIPPED: schemathesis not installed (run scripts/test to install it)");
        return;
    };
    // An admin token (schemathesis.toml sends it to the admin operations), so they are enabled.
    const ADMIN: &str = "schemathesis-admin-token-0123456789";
    let app = spawn_app_with(test_config(&["--admin-token", ADMIN])).await;
    // Ids that exist, so generated requests reach the handlers' logic and not only 404s.
    let owner = app.register("fuzzer").await;
    let other = app.register("fuzzfriend").await;
    let ws = app.create_workspace(&owner, "fuzz").await;
    app.add_to_workspace(&owner, ws, &other).await;
    let chat = app.create_channel(&owner, ws, "general").await;
    app.send(&owner, chat, "hello fuzz").await;
    let report = tempfile::tempdir().expect("report dir");
    let mut cmd = tokio::process::Command::new(&bin);
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/schemathesis.toml");
    cmd.arg("--no-color")
        .args(["--config-file", config])
        .arg("run")
        .arg(app.url("/api/openapi.json"))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", owner.token),
        ])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: hypothesis describes strategies by parsing lambda sources, which CPython
        // 3.11 can fail at from two threads at once ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--generation-database", "none"])
        .args(["--suppress-health-check", "all"])
        // Streams: an endless SSE response and a protocol upgrade (tests/api/realtime.rs).
        .args(["--exclude-path", "/api/events"])
        .args(["--exclude-path", "/ws"])
        .arg("--report-dir")
        .arg(report.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .env("FECHATTER_TEST_ADMIN_TOKEN", ADMIN)
        .current_dir(report.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start schemathesis");
    let out = tokio::time::timeout(RUN_DEADLINE, child.wait_with_output())
        .await
        .expect("schemathesis finished in time")
        .expect("schemathesis ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // The server is still healthy afterwards.
    let health = app.http.get(app.url("/api/health")).send().await;
    assert!(health.is_ok_and(|r| r.status() == 200));
}
