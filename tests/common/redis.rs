//! A real `redis-server` for cluster tests (Debian's package; `scripts/test` installs it when
//! missing): one per test, on a Unix socket in a private directory, so tests never share keys and
//! a test may restart its Redis. The process itself is the load tool's
//! [`fechatter::load::redis_proc::RedisProc`]; this adds the temporary directory, a reaper that
//! stops it if the test process dies first, and raw commands for assertions.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use fechatter::load::redis_proc::RedisProc;

/// A running Redis and its private directory (the process is stopped before the directory goes).
pub struct RedisServer {
    proc: RedisProc,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one; panics with the reason when `redis-server` is missing or does not come up.
    pub fn start() -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("fechatter-redis-")
            .tempdir()
            .expect("redis temp dir");
        let proc = RedisProc::start(dir.path()).unwrap_or_else(|e| panic!("{e:#}"));
        let server = RedisServer { proc, _dir: dir };
        server.reap();
        server
    }

    /// The URL the nodes connect with.
    pub fn url(&self) -> String {
        self.proc.url()
    }

    /// Kills it (`SIGKILL`: every client connection drops at once), keeping the directory.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Kills it and starts a new, empty one on the same socket.
    pub fn restart(&mut self) {
        self.proc
            .restart()
            .unwrap_or_else(|e| panic!("restarting redis: {e:#}"));
        self.reap();
    }

    /// One command over a raw connection (RESP inline), for assertions: the reply's text.
    pub fn command(&self, line: &str) -> String {
        let mut s = UnixStream::connect(self.proc.socket()).expect("connect to test redis");
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(format!("{line}\r\n").as_bytes())
            .expect("write to test redis");
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Kills the process when this test process is gone (dropping the handle does it in the
    /// normal case).
    fn reap(&self) {
        let Some(pid) = self.proc.pid() else {
            return;
        };
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
}
