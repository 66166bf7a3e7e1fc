//! PostgreSQL faults: stopped or frozen, every transport answers 503 SERVICE_UNAVAILABLE with
//! Retry-After within the configured bound, and the server recovers by itself when it returns.
//!
//! Each test runs its own PostgreSQL cluster (the shared test cluster serves every other test
//! of the run and must never be stopped or frozen).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fechatter::embedded_pg::{Durability, EmbeddedPostgres};
use nix::sys::signal::Signal;
use reqwest::Method;
use serde_json::json;

use crate::common::ws::WsClient;
use crate::common::{Resp, TestApp, TestUser, spawn_app_on, test_config};

/// The reply watchdog of the fault tests' server: the bound on every request.
const REPLY_TIMEOUT_MS: u64 = 1500;
/// Slack over the bound for a loaded CI machine.
const MARGIN: Duration = Duration::from_millis(2500);

/// A private cluster, thawed and stopped (and its directory removed) on drop.
struct PrivatePg {
    pg: EmbeddedPostgres,
    root: PathBuf,
}

impl PrivatePg {
    fn start() -> PrivatePg {
        let root = PathBuf::from(format!(
            "/tmp/fechatter-faults-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&root).expect("fault cluster root");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let pg = EmbeddedPostgres::start(
            &root.join("pg"),
            &root.join("run"),
            5432,
            Durability::Throwaway,
        )
        .expect("start the fault tests' own cluster");
        PrivatePg { pg, root }
    }

    fn restart(&mut self) {
        self.pg = EmbeddedPostgres::start(
            &self.pg.pgdata,
            &self.pg.socket_dir,
            self.pg.port,
            Durability::Throwaway,
        )
        .expect("restart the fault cluster");
    }

    fn freeze(&self) {
        let n = self.pg.signal_all(Signal::SIGSTOP);
        assert!(n >= 2, "froze {n} PostgreSQL processes");
    }

    fn thaw(&self) {
        self.pg.signal_all(Signal::SIGCONT);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        self.thaw();
        self.pg.stop_immediate();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The server with short database bounds, against the private cluster's `postgres` database.
async fn spawn_on(pg: &PrivatePg) -> TestApp {
    let reply = REPLY_TIMEOUT_MS.to_string();
    let config = test_config(&[
        "--db-pool-timeout-ms",
        "500",
        "--db-connect-timeout-ms",
        "500",
        "--db-statement-timeout-ms",
        "1000",
        "--db-reply-timeout-ms",
        &reply,
    ]);
    let mut app = spawn_app_on(config, pg.pg.connection_string("postgres")).await;
    // A client that gives up well after the bound: a hang fails the test, not the harness.
    app.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    app
}

/// A user with a workspace and a channel (whose room is loaded by one sent message).
async fn setup(app: &TestApp) -> (TestUser, i64) {
    let user = app.register("fault").await;
    let ws = app.create_workspace(&user, "faults").await;
    let chat = app.create_channel(&user, ws, "general").await;
    app.send(&user, chat, "before").await;
    (user, chat)
}

#[track_caller]
fn assert_unavailable(what: &str, resp: Resp) {
    assert_eq!(resp.status.as_u16(), 503, "{what}: body {}", resp.body);
    assert_eq!(
        resp.body["error"]["code"], "SERVICE_UNAVAILABLE",
        "{what}: body {}",
        resp.body
    );
    let retry = resp
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(retry.is_some_and(|s| s >= 1), "{what}: Retry-After missing");
}

/// Every transport once, each timed: (what, response, elapsed).
async fn probe_all(app: &TestApp, user: &TestUser, chat: i64) -> Vec<(String, Duration)> {
    let mut timings = Vec::new();
    let started = Instant::now();
    let send = app
        .post(
            "/api/messages",
            &user.token,
            json!({"chat_id": chat, "content": "during the fault", "idempotency_key": uuid::Uuid::new_v4().to_string()}),
        )
        .await;
    timings.push(("send".to_string(), started.elapsed()));
    assert_unavailable("send", send);

    let started = Instant::now();
    let list = app
        .get(&format!("/api/messages?chat_id={chat}"), &user.token)
        .await;
    timings.push(("list messages".to_string(), started.elapsed()));
    assert_unavailable("list messages", list);

    let started = Instant::now();
    let chats = app.get("/api/chats", &user.token).await;
    timings.push(("list chats".to_string(), started.elapsed()));
    assert_unavailable("list chats", chats);

    let started = Instant::now();
    let login = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"email": user.email, "password": user.password})),
        )
        .await;
    timings.push(("login".to_string(), started.elapsed()));
    assert_unavailable("login", login);

    let started = Instant::now();
    let sse = app
        .http
        .get(app.url("/api/events"))
        .bearer_auth(&user.token)
        .header("Accept", "text/event-stream")
        .send()
        .await
        .expect("sse request");
    timings.push(("sse".to_string(), started.elapsed()));
    let status = sse.status().as_u16();
    let headers = sse.headers().clone();
    let body = serde_json::from_slice(&sse.bytes().await.unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    assert_unavailable(
        "sse",
        Resp {
            status: reqwest::StatusCode::from_u16(status).expect("status"),
            headers,
            body,
        },
    );

    let started = Instant::now();
    let mut ws = WsClient::connect_raw(app).await;
    ws.send(json!({"type": "auth", "token": format!("Bearer {}", user.token)}))
        .await;
    let frame = ws
        .next_within(Duration::from_secs(20))
        .await
        .expect("an error frame before the close");
    timings.push(("websocket auth".to_string(), started.elapsed()));
    assert_eq!(frame["type"], "error", "frame {frame}");
    assert_eq!(
        frame["data"]["code"], "SERVICE_UNAVAILABLE",
        "frame {frame}"
    );
    let _ = ws.closed().await;
    timings
}

/// After PostgreSQL returns, the very next requests succeed, without restarting the server.
async fn assert_recovered(app: &TestApp, user: &TestUser, chat: i64) {
    let sent = app.send(user, chat, "after").await;
    assert_eq!(sent["content"], "after");
    let list = app
        .get(&format!("/api/messages?chat_id={chat}"), &user.token)
        .await
        .ok(200);
    let contents: Vec<&str> = list["messages"]
        .as_array()
        .expect("page")
        .iter()
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        contents.contains(&"before") && contents.contains(&"after"),
        "{list}"
    );
    assert!(
        !contents.contains(&"during the fault"),
        "a send answered 503 was stored: {list}"
    );
    let ws = WsClient::connect(app, &user.token, None).await;
    ws.close().await;
}

#[actix_web::test]
async fn postgres_stopped_answers_503_with_retry_after_then_recovers() {
    let mut pg = PrivatePg::start();
    let app = spawn_on(&pg).await;
    let (user, chat) = setup(&app).await;

    pg.pg.stop();
    for (what, took) in probe_all(&app, &user, chat).await {
        assert!(
            took < Duration::from_millis(REPLY_TIMEOUT_MS) + MARGIN,
            "{what} took {took:?} with PostgreSQL stopped"
        );
    }

    pg.restart();
    assert_recovered(&app, &user, chat).await;
    app.stop().await;
}

#[actix_web::test]
async fn postgres_frozen_answers_503_within_the_bound_then_recovers() {
    let pg = PrivatePg::start();
    let app = spawn_on(&pg).await;
    let (user, chat) = setup(&app).await;

    pg.freeze();
    // Twice: first on pooled connections (caught by the reply watchdog), then on new ones
    // (caught by the connect timeout).
    let mut slowest = Duration::ZERO;
    for _ in 0..2 {
        for (what, took) in probe_all(&app, &user, chat).await {
            slowest = slowest.max(took);
            assert!(
                took < Duration::from_millis(REPLY_TIMEOUT_MS) + MARGIN,
                "{what} took {took:?} with PostgreSQL frozen"
            );
        }
    }
    eprintln!("slowest answer with PostgreSQL frozen: {slowest:?}");

    pg.thaw();
    assert_recovered(&app, &user, chat).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_value_the_database_refuses_is_a_client_error_not_500() {
    let pg = PrivatePg::start();
    let app = spawn_on(&pg).await;
    let (user, chat) = setup(&app).await;
    // A NUL byte cannot be stored in PostgreSQL text (22021/22P05): whatever layer refuses it,
    // the answer is the client's error.
    let resp = app
        .post(
            "/api/messages",
            &user.token,
            json!({"chat_id": chat, "content": "nul \u{0} byte"}),
        )
        .await;
    assert_eq!(resp.status.as_u16(), 422, "body {}", resp.body);
    assert_eq!(resp.body["error"]["code"], "VALIDATION_ERROR");
    app.stop().await;
}

/// The fault suite in its small, fast version (`fechatter-load fault all --quick`): a durable
/// throwaway PostgreSQL, the real server binary, kill -9 cycles, PostgreSQL stopped and frozen,
/// a reconnect storm, a slow consumer and a short soak; nothing acknowledged may be lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_fault_suite_is_clean() {
    use clap::Parser;
    use fechatter::load::args::{Cli, Command};
    let cli = Cli::try_parse_from([
        "fechatter-load",
        "fault",
        "all",
        "--quick",
        // Its own test below (it needs Meilisearch).
        "--skip",
        "meili",
        "--server-bin",
        env!("CARGO_BIN_EXE_fechatter"),
    ])
    .expect("fault arguments");
    let Command::Fault(args) = cli.command else {
        panic!("not the fault command");
    };
    let reports = fechatter::load::fault::run_reports(&args)
        .await
        .expect("the fault suite ran");
    assert_eq!(reports.len(), 6, "every scenario ran");
    let failed: Vec<String> = reports
        .iter()
        .filter(|r| !r.clean)
        .map(|r| format!("{}: {:?}", r.scenario, r.failures))
        .collect();
    assert!(failed.is_empty(), "fault scenarios failed: {failed:?}");
}

/// The Meilisearch server binary for the tests that kill or freeze their own:
/// `FECHATTER_MEILI_BIN`, else `../shared/meilisearch/meilisearch` of the source tree; `None`
/// (and `test` says on stderr that it skips) when there is none.
fn meili_bin(test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os("FECHATTER_MEILI_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/meilisearch/meilisearch")
        });
    if bin.is_file() {
        return Some(bin);
    }
    eprintln!(
        "SKIPPED {test}: no Meilisearch binary at {} (set FECHATTER_MEILI_BIN)",
        bin.display()
    );
    None
}

/// A hung Meilisearch (SIGSTOP: the kernel accepts connections, nobody answers): a search
/// answers 503 `SERVICE_UNAVAILABLE` + `Retry-After` within `FECHATTER_SEARCH_TIMEOUT_MS`
/// (before the knob: a fixed 5 s), sends are unaffected, and after SIGCONT the indexer
/// catches up.
#[actix_web::test]
async fn a_hung_meilisearch_answers_503_within_the_search_timeout_then_catches_up() {
    let test = "a_hung_meilisearch_answers_503_within_the_search_timeout_then_catches_up";
    let Some(bin) = meili_bin(test) else { return };
    let root = PathBuf::from(format!(
        "/tmp/fechatter-faults-meili-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let meili = fechatter::load::fault_meili::MeiliProcess::start(&bin, root, true)
        .await
        .expect("start a Meilisearch of this test's own");
    let mut config = test_config(&["--search-timeout-ms", "1000"]);
    config.meili_url = Some(meili.url());
    config.meili_master_key = Some(meili.key.clone());
    config.meili_index = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut app = crate::common::spawn_app_with(config).await;
    app.http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let user = app.register("hung").await;
    let ws = app.create_workspace(&user, "hung").await;
    let chat = app.create_channel(&user, ws, "general").await;
    app.send(&user, chat, "penguin before").await;
    let r = app
        .search_until(&user, ws, "penguin", Duration::from_secs(10), |r| {
            r.body["total"] == 1
        })
        .await;
    assert_eq!(r.body["total"], 1, "indexed before the freeze: {}", r.body);

    meili.freeze();
    let started = Instant::now();
    let r = app
        .post(
            "/api/search/messages",
            &user.token,
            json!({"query": "penguin", "workspace_id": ws}),
        )
        .await;
    let took = started.elapsed();
    assert_unavailable("search with Meilisearch hung", r);
    assert!(
        took < Duration::from_millis(1000) + MARGIN,
        "search took {took:?} with a 1000 ms search timeout"
    );
    let started = Instant::now();
    app.send(&user, chat, "penguin during").await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a send waited {:?} on the hung index",
        started.elapsed()
    );

    meili.thaw();
    let r = app
        .search_until(&user, ws, "penguin", Duration::from_secs(10), |r| {
            r.body["total"] == 2
        })
        .await;
    assert_eq!(r.body["total"], 2, "caught up after the thaw: {}", r.body);
    app.stop().await;
}

/// The Meilisearch fault in its quick version (`fechatter-load fault meili --quick`): the real
/// Meilisearch binary killed with SIGKILL under chat load for 3 s and restarted; sends all
/// acknowledged first time, searches 503 `SERVICE_UNAVAILABLE` + `Retry-After` within the
/// bound while it is down, and every acknowledged message findable within 30 s of its return.
/// Skipped (loudly) where there is no Meilisearch binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_meilisearch_fault_is_clean() {
    use clap::Parser;
    use fechatter::load::args::{Cli, Command};
    let Some(meili) = meili_bin("the_quick_meilisearch_fault_is_clean") else {
        return;
    };
    let meili = meili.to_string_lossy().into_owned();
    let cli = Cli::try_parse_from([
        "fechatter-load",
        "fault",
        "meili",
        "--quick",
        "--meili-bin",
        &meili,
        "--server-bin",
        env!("CARGO_BIN_EXE_fechatter"),
    ])
    .expect("fault arguments");
    let Command::Fault(args) = cli.command else {
        panic!("not the fault command");
    };
    let reports = fechatter::load::fault::run_reports(&args)
        .await
        .expect("the meili fault ran");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert!(r.clean, "meili fault failed: {:?}", r.failures);
    assert!(
        r.figures["searches_503_while_down"].as_u64() > Some(0),
        "{}",
        r.figures
    );
}
