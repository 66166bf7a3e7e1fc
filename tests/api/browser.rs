//! The web client: how the server serves it (content types, caching, SPA fallback that never
//! shadows the API), and the browser suite `web/tests/e2e.mjs` (Playwright driving Debian's
//! Chromium) against the real server, which this test restarts on the same port when the
//! script asks (`@@stop` / `@@start` lines on its stdout, answered on its stdin).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::common::{TestApp, spawn_app, spawn_app_on, spawn_app_with, test_config};

const CHROMIUM: &str = "/usr/bin/chromium";
const SUITE_TIMEOUT: Duration = Duration::from_secs(180);

async fn fetch(app: &TestApp, method: Method, path: &str) -> reqwest::Response {
    app.http
        .request(method, app.url(path))
        .send()
        .await
        .expect("request")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `/` is the client's index.html, never cached, with a restrictive CSP; its hashed assets are
/// immutable with their real content types; a client route falls back to index.html.
#[actix_web::test]
async fn serves_the_client_with_types_and_caching() {
    let app = spawn_app().await;
    let index = fetch(&app, Method::GET, "/").await;
    assert_eq!(index.status(), 200);
    assert!(header(&index, "content-type").starts_with("text/html"));
    assert_eq!(header(&index, "cache-control"), "no-cache");
    assert!(header(&index, "content-security-policy").contains("default-src 'self'"));
    let etag = header(&index, "etag").to_string();
    assert!(etag.starts_with('"'), "etag {etag:?}");
    let html = index.text().await.expect("body");
    assert!(html.contains("<div id=\"app\">"), "{html}");

    // Every asset the page references is served, immutable, with its type.
    let assets: Vec<&str> = html
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect();
    assert!(!assets.is_empty(), "no assets in {html}");
    for asset in assets {
        let r = fetch(&app, Method::GET, asset).await;
        assert_eq!(r.status(), 200, "{asset}");
        assert_eq!(
            header(&r, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        let ct = header(&r, "content-type");
        if asset.ends_with(".js") {
            assert!(ct.starts_with("text/javascript"), "{asset}: {ct}");
        } else if asset.ends_with(".css") {
            assert!(ct.starts_with("text/css"), "{asset}: {ct}");
        }
    }

    // Conditional GET.
    let again = app
        .http
        .get(app.url("/"))
        .header("If-None-Match", &etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), 304);

    // Client routes, GET and HEAD.
    for path in ["/login", "/w/1/c/2", "/invite/ABCDEFGH12345678"] {
        let r = fetch(&app, Method::GET, path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.expect("body"), html, "{path}");
        let r = fetch(&app, Method::HEAD, path).await;
        assert_eq!(r.status(), 200, "HEAD {path}");
        assert!(header(&r, "content-type").starts_with("text/html"));
    }
}

/// The fallback never shadows the server: unknown API paths, other methods and missing hashed
/// assets keep the JSON 404 envelope.
#[actix_web::test]
async fn api_paths_and_missing_assets_keep_the_404_envelope() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/api/nope"),
        (Method::GET, "/api"),
        (Method::HEAD, "/api/nope/deeper"),
        (Method::GET, "/admin/nope"),
        (Method::GET, "/ws/nope"),
        (Method::GET, "/metrics/nope"),
        (Method::GET, "/assets/missing-0000.js"),
        (Method::POST, "/"),
        (Method::DELETE, "/login"),
    ] {
        let r = app.call(method.clone(), path, None, None).await;
        if method == Method::HEAD {
            assert_eq!(r.status, 404, "{method} {path}");
        } else {
            r.err(404, "NOT_FOUND");
        }
    }
}

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

/// Whether the browser suite can run; `Err` explains what is missing.
fn browser_prerequisites() -> Result<(), String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} is missing (apt-get install chromium; scripts/test does)"
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Err("node is missing (apt-get install nodejs npm)".into());
    }
    if !web_dir().join("node_modules/playwright-core").exists() {
        return Err("web/node_modules is missing (build.rs runs `npm ci`)".into());
    }
    Ok(())
}

/// Two users in two browser contexts: live chat both ways, typing, presence, edit, delete,
/// reactions, scroll-back, a server restart mid-conversation, search highlights, and markup
/// rendered as text. See `web/tests/e2e.mjs` for each step and what it asserts.
#[actix_web::test]
async fn browser_suite_in_chromium() {
    if let Err(missing) = browser_prerequisites() {
        if std::env::var("FECHATTER_SKIP_BROWSER").is_ok_and(|v| v == "1") {
            println!("skipping: {missing} (FECHATTER_SKIP_BROWSER=1)");
            return;
        }
        panic!("browser suite cannot run: {missing}; set FECHATTER_SKIP_BROWSER=1 to skip it");
    }
    let mut app = spawn_app_with(suite_config()).await;
    let addr = app.addr;
    let database = app.database.clone();

    let mut child = tokio::process::Command::new("node")
        .arg(web_dir().join("tests/e2e.mjs"))
        .arg(&app.base)
        .env("CHROMIUM", CHROMIUM)
        .env("FECHATTER_E2E_SHORT_TOKENS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn node");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();

    let run = async {
        while let Some(line) = lines.next_line().await.expect("read suite output") {
            println!("{line}");
            match line.trim() {
                "@@stop" => {
                    app.handle.stop(false).await;
                    stdin.write_all(b"stopped\n").await.expect("reply");
                }
                "@@start" => {
                    app = restart_on(addr, &database).await;
                    stdin.write_all(b"started\n").await.expect("reply");
                }
                _ => {}
            }
        }
        child.wait().await.expect("wait for node")
    };
    let status = tokio::time::timeout(SUITE_TIMEOUT, run)
        .await
        .expect("browser suite timed out");
    assert!(status.success(), "browser suite failed: {status}");
}

/// Tokens live 65 s, so the page refreshes its token after 5 s (a minute before expiry); a
/// resume replays at most 20 events per chat, so the suite can cause `resync.required`.
fn suite_config() -> fechatter::config::Config {
    test_config(&["--access-token-ttl-secs", "65", "--replay-max", "20"])
}

/// Starts the server again on the same address and database, once the port is free again.
async fn restart_on(addr: std::net::SocketAddr, database: &str) -> TestApp {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpListener::bind(addr).is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "port {addr} not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut config = suite_config();
    config.addr = addr;
    spawn_app_on(config, database.to_string()).await
}
