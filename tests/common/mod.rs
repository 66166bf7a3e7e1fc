//! Test harness: one throwaway PostgreSQL cluster per test run, a fresh database per test, and
//! the real server on a random loopback port, plus typed helpers to talk to it as a client.
//!
//! The cluster lives in `/tmp/fechatter-test-<run>` where `<run>` is nextest's run id (tests of
//! one run are separate processes and share it) or this process id under `cargo test`. The first
//! process to take the lock creates it and a migrated template database; a reaper process stops
//! the cluster and removes the directory when the run (nextest) or the process ends.
//! Set `TEST_LOG=1` to see the server's logs.

#![allow(dead_code)]

pub mod meili;
pub mod redis;
pub mod ws;

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use fechatter::app::Application;
use fechatter::config::Config;
use fechatter::embedded_pg::{Durability, EmbeddedPostgres};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TEMPLATE_DB: &str = "fechatter_template";
pub const JWT_SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// Connection settings of the shared test cluster: (socket dir, port).
struct Cluster {
    socket_dir: PathBuf,
    port: u16,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn run_key() -> String {
    std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid{}", std::process::id()))
}

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            fechatter::telemetry::init("text");
        }
        let root = PathBuf::from(format!("/tmp/fechatter-test-{}", run_key()));
        std::fs::create_dir_all(&root).expect("create test root");
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let lock = File::create(root.join("lock")).expect("lock file");
        nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map(|guard| {
                let pgdata = root.join("pg");
                let socket_dir = root.join("run");
                let port = 5432;
                let ready = root.join("ready");
                if !ready.exists() {
                    let pg =
                        EmbeddedPostgres::start(&pgdata, &socket_dir, port, Durability::Throwaway)
                            .expect("start test cluster");
                    spawn_reaper(&root);
                    make_template(&pg);
                    std::fs::write(&ready, b"1").expect("mark ready");
                }
                drop(guard);
                Cluster { socket_dir, port }
            })
            .map_err(|(_, e)| e)
            .expect("lock test root")
    })
}

/// Stops the cluster and removes its directory when the run's owner process exits: nextest's
/// process (our parent) under nextest, this process otherwise.
fn spawn_reaper(root: &std::path::Path) {
    let watched = if std::env::var_os("NEXTEST_RUN_ID").is_some() {
        nix::unistd::getppid().as_raw()
    } else {
        std::process::id() as i32
    };
    let bin = EmbeddedPostgres::find_bin_dir().expect("pg bin dir");
    let run_as = if nix::unistd::geteuid().is_root() {
        "runuser -u postgres -- "
    } else {
        ""
    };
    let script = format!(
        "while kill -0 {watched} 2>/dev/null; do sleep 1; done; \
         {run_as}{}/pg_ctl stop -D {}/pg -m immediate >/dev/null 2>&1; rm -rf {}",
        bin.display(),
        root.display(),
        root.display()
    );
    // The reaper must outlive this process, so it is deliberately never waited for.
    #[allow(clippy::zombie_processes)]
    let _reaper = std::process::Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn reaper");
}

/// Runs `f` to completion on a runtime of its own, in a thread of its own (callers may already be
/// inside a runtime).
fn block_on<F: std::future::Future + Send + 'static>(f: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    })
    .join()
    .expect("setup thread")
}

pub async fn admin_client(c: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(c, tokio_postgres::NoTls)
        .await
        .expect("connect to test cluster");
    tokio::spawn(conn);
    client
}

/// Creates the template database and applies the migrations to it once per run.
fn make_template(pg: &EmbeddedPostgres) {
    let admin = pg.connection_string("postgres");
    let template = pg.connection_string(TEMPLATE_DB);
    block_on(async move {
        let client = admin_client(&admin).await;
        client
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE_DB}"))
            .await
            .expect("create template");
        let store = fechatter::store::Store::new(
            template.parse().expect("conn string"),
            2,
            Duration::from_secs(5),
        )
        .expect("store");
        store.migrate().await.expect("migrate template");
    });
}

fn connection_string(db: &str) -> String {
    let c = cluster();
    format!(
        "host={} port={} user=postgres dbname={db}",
        c.socket_dir.display(),
        c.port
    )
}

/// A fresh database cloned from the migrated template.
pub async fn fresh_database() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_client(&connection_string("postgres")).await;
    let mut tries = 0;
    loop {
        match admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))
            .await
        {
            Ok(()) => break,
            // Another test may be cloning the template at this instant.
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("create test database: {e}"),
        }
    }
    connection_string(&name)
}

/// A running server and a client for it.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub database: String,
    pub handle: fechatter::shutdown::StopHandle,
    pub state: actix_web::web::Data<fechatter::state::AppState>,
    /// `Application::run`, which ends after the server stopped and its shutdown work is done.
    run: std::sync::Mutex<Option<actix_web::rt::task::JoinHandle<std::io::Result<()>>>>,
}

/// A registered user.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub password: String,
    pub token: String,
}

/// Default test configuration: port 0, high limits (tests that exercise a limit lower it).
pub fn test_config(extra: &[&str]) -> Config {
    let mut args: Vec<String> = vec![
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--workers".into(),
        "2".into(),
        "--rate-limit-per-hour".into(),
        "1000000".into(),
        "--search-rate-per-min".into(),
        "1000000".into(),
        "--auth-rate-per-min".into(),
        "1000000".into(),
        "--hash-concurrency".into(),
        "4".into(),
        "--public-url".into(),
        "https://chat.example.test".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Config::from_args(args).expect("test config")
}

/// How long a test server may take to build or to stop gracefully (normally well under a
/// second: a graceful stop closes idle keep-alive connections at once).
const LIFECYCLE_BOUND: Duration = Duration::from_secs(60);

/// Awaits one step of a test server's life, failing the test loudly (instead of hanging the
/// whole run until CI's limit) when it takes longer than [`LIFECYCLE_BOUND`].
async fn bounded<T>(what: &str, step: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIFECYCLE_BOUND, step).await {
        Ok(done) => done,
        Err(_) => {
            dump_threads(what);
            panic!("{what} did not finish within {LIFECYCLE_BOUND:?}")
        }
    }
}

/// Prints every thread's stack (with `gdb`, when it is installed) so that a hung step can be
/// diagnosed from the test's output alone.
fn dump_threads(what: &str) {
    let pid = std::process::id().to_string();
    let dump = std::process::Command::new("gdb")
        .args(["-p", &pid, "-batch", "-nx", "-ex", "thread apply all bt"])
        .output();
    match dump {
        Ok(out) => eprintln!(
            "--- threads while {what} hung ---\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("no thread dump while {what} hung (gdb: {e})"),
    }
}

/// Starts the server against a fresh database with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_config(&[])).await
}

/// Starts the server with `config` against a fresh database.
pub async fn spawn_app_with(config: Config) -> TestApp {
    let database = fresh_database().await;
    spawn_app_on(config, database).await
}

/// Starts the server with `config` against an existing database (restart tests).
pub async fn spawn_app_on(config: Config, database: String) -> TestApp {
    let build = Application::build(config, &database, JWT_SECRET.as_bytes().to_vec());
    let app = bounded("building the app", build).await.expect("build app");
    let addr = app.addr();
    let handle = app.handle();
    let state = app.state();
    let run = actix_web::rt::spawn(app.run());
    TestApp {
        addr,
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        database,
        handle,
        state,
        run: std::sync::Mutex::new(Some(run)),
    }
}

/// A response's status and JSON body (`Value::Null` when the body is not JSON).
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn ok(self, expected: u16) -> Value {
        assert_eq!(self.status.as_u16(), expected, "body: {}", self.body);
        self.body
    }

    /// Asserts an error envelope with `status` and `code`; returns the body.
    #[track_caller]
    pub fn err(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"].is_string(),
            "body: {}",
            self.body
        );
        assert!(
            self.body["request_id"]
                .as_str()
                .is_some_and(|s| !s.is_empty()),
            "body: {}",
            self.body
        );
        self.body
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Searches messages for `query` in `ws` as `user` every 50 ms until an answer satisfies
    /// `done` or `within` has passed; returns the last answer (the caller asserts on it).
    pub async fn search_until(
        &self,
        user: &TestUser,
        ws: i64,
        query: &str,
        within: Duration,
        done: impl Fn(&Resp) -> bool,
    ) -> Resp {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self
                .post(
                    "/api/search/messages",
                    &user.token,
                    json!({"query": query, "workspace_id": ws}),
                )
                .await;
            if done(&r) || tokio::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Registers a user with a unique email derived from `name`.
    pub async fn register(&self, name: &str) -> TestUser {
        let email = format!("{name}-{}@example.test", uuid::Uuid::new_v4().simple());
        let password = "password-123".to_string();
        let body = self
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "username": name, "password": password})),
            )
            .await
            .ok(201);
        TestUser {
            id: body["user"]["id"].as_i64().expect("user id"),
            email,
            username: name.to_string(),
            password,
            token: body["token"].as_str().expect("token").to_string(),
        }
    }

    /// Creates a workspace owned by `owner`; returns its id.
    pub async fn create_workspace(&self, owner: &TestUser, name: &str) -> i64 {
        let body = self
            .post("/api/workspaces", &owner.token, json!({"name": name}))
            .await
            .ok(201);
        body["id"].as_i64().expect("workspace id")
    }

    /// Invites `user` into `workspace` (as `inviter`, an owner or admin) and accepts it.
    pub async fn add_to_workspace(&self, inviter: &TestUser, workspace: i64, user: &TestUser) {
        let invite = self
            .post(
                &format!("/api/workspaces/{workspace}/invites"),
                &inviter.token,
                json!({"email": user.email, "role": "member", "expires_in_days": 7}),
            )
            .await
            .ok(201);
        let code = invite["invite_code"].as_str().expect("invite code");
        self.post(
            &format!("/api/invites/{code}/accept"),
            &user.token,
            json!({}),
        )
        .await
        .ok(200);
    }

    /// Creates a public channel in `workspace`; returns its id.
    pub async fn create_channel(&self, owner: &TestUser, workspace: i64, name: &str) -> i64 {
        let body = self
            .post(
                "/api/chats",
                &owner.token,
                json!({"workspace_id": workspace, "name": name, "type": "channel", "is_private": false}),
            )
            .await
            .ok(201);
        body["id"].as_i64().expect("chat id")
    }

    /// `user` joins `chat`.
    pub async fn join(&self, user: &TestUser, chat: i64) {
        self.post(&format!("/api/chats/{chat}/join"), &user.token, json!({}))
            .await
            .ok(200);
    }

    /// Sends a message; returns the response body.
    pub async fn send(&self, user: &TestUser, chat: i64, content: &str) -> Value {
        self.post(
            "/api/messages",
            &user.token,
            json!({"chat_id": chat, "content": content}),
        )
        .await
        .ok(201)
    }

    /// Stops the server gracefully.
    pub async fn stop(&self) {
        bounded("a graceful stop", self.handle.stop(true)).await;
        self.fail_if_the_stop_overran();
    }

    /// The server's own bound on a stop (`src/shutdown.rs`) gives up on workers that never
    /// report back, which would hide the hang from the test: fail with every thread's stack.
    fn fail_if_the_stop_overran(&self) {
        if self.handle.overran() {
            dump_threads("a graceful stop");
            panic!("a graceful stop overran the server's bound (threads above)");
        }
    }

    /// Stops the server gracefully and waits until `Application::run` has returned (its
    /// shutdown work done), as the binary's `serve` does before it exits.
    pub async fn shutdown(&self) {
        bounded("a graceful stop", self.handle.stop(true)).await;
        self.fail_if_the_stop_overran();
        let run = self.run.lock().expect("run handle").take();
        if let Some(run) = run {
            run.await.expect("run task").expect("server");
        }
    }

    /// A connection of its own to the app's database (outside the app's pool).
    pub async fn db(&self) -> tokio_postgres::Client {
        admin_client(&self.database).await
    }
}
