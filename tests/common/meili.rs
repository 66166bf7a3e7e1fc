//! A real Meilisearch for the tests: the one named by `MEILI_URL`/`MEILI_MASTER_KEY` when set,
//! otherwise one started per test run from `../shared/meilisearch/meilisearch` (relative to the
//! project root) on a free loopback port with a throwaway `--db-path` and a master key. Like the
//! PostgreSQL cluster, the first test process of a run starts it under a lock and a reaper stops
//! it when the run ends. Tests give each app its own index name, so they never collide.
//! Where neither exists, [`meili`] is `None` and Meilisearch tests skip with a printed reason.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where a Meilisearch server answers.
#[derive(Debug, Clone)]
pub struct Meili {
    pub url: String,
    pub key: String,
    pub addr: SocketAddr,
}

static MEILI: OnceLock<Option<Meili>> = OnceLock::new();

/// The wrapper script that unpacks (once) and execs the server.
fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/meilisearch/meilisearch")
}

/// The run's Meilisearch, or `None` (with the reason printed) when there is none.
pub fn meili() -> Option<&'static Meili> {
    let found = MEILI.get_or_init(|| {
        if let (Ok(url), Ok(key)) = (
            std::env::var("MEILI_URL"),
            std::env::var("MEILI_MASTER_KEY"),
        ) {
            let parsed = url::Url::parse(&url).expect("MEILI_URL");
            let addr = parsed
                .socket_addrs(|| Some(7700))
                .expect("MEILI_URL address")[0];
            return Some(Meili { url, key, addr });
        }
        if !binary().exists() {
            return None;
        }
        Some(start_for_run())
    });
    if found.is_none() {
        println!("skipping: ../shared/meilisearch not found and MEILI_URL not set");
    }
    found.as_ref()
}

fn start_for_run() -> Meili {
    let root = PathBuf::from(format!("/tmp/fechatter-meili-{}", super::run_key()));
    std::fs::create_dir_all(&root).expect("create meili root");
    let lock = File::create(root.join("lock")).expect("lock file");
    let guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock meili root");
    let ready = root.join("ready");
    let meili = match std::fs::read_to_string(&ready) {
        Ok(s) => {
            let mut lines = s.lines();
            let addr: SocketAddr = lines.next().expect("addr").parse().expect("addr");
            let key = lines.next().expect("key").to_string();
            Meili {
                url: format!("http://{addr}"),
                key,
                addr,
            }
        }
        Err(_) => {
            let meili = spawn_server(&root);
            std::fs::write(&ready, format!("{}\n{}\n", meili.addr, meili.key)).expect("ready");
            meili
        }
    };
    drop(guard);
    meili
}

/// Starts the server detached (a reaper stops it), waits for `/health`.
fn spawn_server(root: &Path) -> Meili {
    // The wrapper unpacks into a shared cache on first use: serialise first starts machine-wide.
    let unpack = File::create("/tmp/fechatter-meili-unpack.lock").expect("unpack lock");
    let unpack = nix::fcntl::Flock::lock(unpack, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock unpack");
    let addr = free_port();
    let key = format!("test-master-key-{}", uuid::Uuid::new_v4().simple());
    let log = File::create(root.join("meili.log")).expect("meili log");
    let child = std::process::Command::new(binary())
        .arg("--db-path")
        .arg(root.join("data"))
        .args(["--http-addr", &addr.to_string(), "--master-key", &key])
        .args([
            "--no-analytics",
            "--env",
            "development",
            "--log-level",
            "WARN",
        ])
        .args([
            "--max-indexing-threads",
            "1",
            "--max-indexing-memory",
            "512Mb",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("start meilisearch");
    spawn_reaper(root, child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    while !healthy(addr) {
        assert!(
            Instant::now() < deadline,
            "meilisearch did not become healthy; see {}/meili.log",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(unpack);
    // The reaper owns the process from here on.
    std::mem::forget(child);
    Meili {
        url: format!("http://{addr}"),
        key,
        addr,
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// `GET /health` answers `available`.
fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("available")
}

/// Kills the server and removes its directory when the run's owner process exits.
fn spawn_reaper(root: &Path, pid: u32) {
    let watched = if std::env::var_os("NEXTEST_RUN_ID").is_some() {
        nix::unistd::getppid().as_raw()
    } else {
        std::process::id() as i32
    };
    let script = format!(
        "while kill -0 {watched} 2>/dev/null; do sleep 1; done; \
         kill {pid} 2>/dev/null; sleep 2; kill -9 {pid} 2>/dev/null; rm -rf {}",
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

/// A TCP proxy in front of Meilisearch that can play dead: while down it accepts and drops
/// every connection (as a crashed or restarting server would); while up it forwards.
pub struct Switch {
    pub url: String,
    up: Arc<AtomicBool>,
}

impl Switch {
    /// Starts the proxy (down) on the current runtime.
    pub async fn start(upstream: SocketAddr) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(false));
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Switch {
            url: format!("http://{addr}"),
            up,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}
