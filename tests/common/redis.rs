//! A real `redis-server` for cluster tests (Debian's package; `scripts/test` installs it when
//! missing): one per test, on a Unix socket in a private directory, so tests never share keys and
//! a test may restart its Redis. Dropping the handle stops it; a reaper stops it too if the test
//! process dies first.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Redis and its private directory.
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one; panics with the reason when `redis-server` is missing or does not come up.
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("fechatter-redis-")
            .tempdir()
            .expect("redis temp dir");
        let mut server = RedisServer { dir, child: None };
        server.spawn();
        server
    }

    /// The URL the nodes connect with.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found: install Debian's `redis-server` (scripts/test does)");
        spawn_reaper(child.id());
        self.child = Some(child);
        wait_ready(&self.socket(), dir);
    }

    /// Kills it (`SIGKILL`: every client connection drops at once), keeping the directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Kills it and starts a new, empty one on the same socket.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// One command over a raw connection (RESP inline), for assertions: the reply's text.
    pub fn command(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.socket()).expect("connect to test redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(format!("{line}\r\n").as_bytes())
            .expect("write to test redis");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_ready(socket: &Path, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut s) = UnixStream::connect(socket) {
            s.set_read_timeout(Some(Duration::from_secs(1))).ok();
            let mut buf = [0u8; 16];
            if s.write_all(b"PING\r\n").is_ok()
                && s.read(&mut buf).is_ok()
                && buf.starts_with(b"+PONG")
            {
                return;
            }
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default();
            panic!("redis-server did not come up within 10 s:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills `pid` when this test process is gone (the handle's drop does it in the normal case).
fn spawn_reaper(pid: u32) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         kill -9 {pid} 2>/dev/null"
    );
    // The reaper must outlive this process, so it is deliberately never waited for.
    #[allow(clippy::zombie_processes)]
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
