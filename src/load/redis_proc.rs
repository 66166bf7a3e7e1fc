//! A throwaway `redis-server` (Debian's package) for the cluster fault scenarios and the
//! cluster tests (`tests/common/redis.rs` wraps it): on a Unix socket in a private directory,
//! no persistence, killed when dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long Redis may take to answer its first `PING`.
const READY_DEADLINE: Duration = Duration::from_secs(10);

/// A running Redis in `dir`.
pub struct RedisProc {
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisProc {
    /// Starts one in `dir` (created when missing).
    pub fn start(dir: &Path) -> anyhow::Result<RedisProc> {
        std::fs::create_dir_all(dir)?;
        let mut r = RedisProc {
            dir: dir.to_path_buf(),
            child: None,
        };
        r.spawn()?;
        Ok(r)
    }

    /// The URL the nodes connect with.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// Its Unix socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it and starts a new, empty one on the same socket.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
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
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (install Debian's `redis-server`)")?;
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if ping(&self.socket()) {
                return Ok(());
            }
            if started.elapsed() > READY_DEADLINE {
                bail!(
                    "redis-server did not answer within {READY_DEADLINE:?}; see {}",
                    self.dir.join("redis.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGKILL` (every client connection drops at once), keeping the directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok() && buf.starts_with(b"+PONG")
}
