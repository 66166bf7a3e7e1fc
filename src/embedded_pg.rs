//! The embedded default database: a PostgreSQL cluster started from the installed binaries
//! (`initdb`, `pg_ctl`) under a data directory, reached over a private unix socket.
//!
//! Used by `fechatter serve` when no `DATABASE_URL` is given, and by the test harness (one
//! throwaway cluster per test run). PostgreSQL refuses to run as root, so when we are root the
//! cluster runs as the `postgres` system user and its directories are handed to that user.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// A running cluster. Dropping it does not stop it: call [`EmbeddedPostgres::stop`].
/// A clone names the same cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    /// The cluster's data directory (PGDATA).
    pub pgdata: PathBuf,
    /// Directory holding the unix socket `.s.PGSQL.<port>`.
    pub socket_dir: PathBuf,
    pub port: u16,
    /// Unix user and group the cluster runs as, when we are root.
    run_as: Option<(u32, u32)>,
    /// False when we found the cluster already running and merely attached to it.
    started_here: bool,
}

/// How the cluster is tuned: durable for `serve`, fast for throwaway test clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Durable,
    Throwaway,
}

impl EmbeddedPostgres {
    /// Finds `initdb`/`pg_ctl`: on PATH, else the newest `/usr/lib/postgresql/*/bin`.
    pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                    return Ok(dir);
                }
            }
        }
        let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        candidates.sort();
        match candidates.pop() {
            Some((_, bin)) => Ok(bin),
            None => bail!(
                "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql; \
                 install them (apt-get install -y postgresql) or set DATABASE_URL"
            ),
        }
    }

    /// Starts (creating on first use) the cluster in `pgdata`, with its socket in `socket_dir`.
    pub fn start(
        pgdata: &Path,
        socket_dir: &Path,
        port: u16,
        durability: Durability,
    ) -> anyhow::Result<Self> {
        let bin_dir = Self::find_bin_dir()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .context("looking up the postgres user")?
                .context("running as root, but there is no `postgres` user to run PostgreSQL as")?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let mut pg = EmbeddedPostgres {
            bin_dir,
            pgdata: pgdata.to_path_buf(),
            socket_dir: socket_dir.to_path_buf(),
            port,
            run_as,
            started_here: true,
        };
        for dir in [pgdata, socket_dir] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            pg.hand_over(dir)?;
        }
        if !pgdata.join("PG_VERSION").exists() {
            tracing::info!(pgdata = %pgdata.display(), "initialising embedded PostgreSQL cluster");
            let out = pg
                .command("initdb")
                .arg("-D")
                .arg(pgdata)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .output()
                .context("running initdb")?;
            if !out.status.success() {
                bail!(
                    "initdb failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        if pg.is_running() {
            tracing::info!(pgdata = %pgdata.display(), "embedded PostgreSQL already running; attaching");
            pg.started_here = false;
            return Ok(pg);
        }
        let mut opts = format!(
            "-p {port} -k {} -c listen_addresses='' -c max_connections=300 -c shared_buffers=128MB",
            socket_dir.display()
        );
        if durability == Durability::Throwaway {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        let log = pgdata.join("postgres.log");
        let out = pg
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(pgdata)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &opts])
            .output()
            .context("running pg_ctl start")?;
        if !out.status.success() {
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            bail!(
                "pg_ctl start failed: {} {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            );
        }
        tracing::info!(pgdata = %pgdata.display(), port, "embedded PostgreSQL started");
        Ok(pg)
    }

    /// Connection settings for `dbname` as a libpq keyword string.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user=postgres dbname={dbname}",
            self.socket_dir.display(),
            self.port
        )
    }

    /// Stops the cluster (fast shutdown: running transactions roll back, committed data is kept).
    /// A no-op for a cluster we attached to rather than started.
    pub fn stop(&self) {
        if !self.started_here {
            return;
        }
        let result = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "fast", "-w", "-t", "30"])
            .output();
        match result {
            Ok(out) if out.status.success() => tracing::info!("embedded PostgreSQL stopped"),
            Ok(out) => tracing::warn!(
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "pg_ctl stop failed"
            ),
            Err(e) => tracing::warn!(error = %e, "could not run pg_ctl stop"),
        }
    }

    /// Stops the cluster at once (`-m immediate`: like a crash, recovered at the next start).
    pub fn stop_immediate(&self) {
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&self.pgdata)
            .args(["-m", "immediate", "-w", "-t", "30"])
            .output();
    }

    /// The postmaster's pid (from `postmaster.pid`), when the cluster runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pgdata.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// The postmaster and every process it started (backends, checkpointer, walwriter...):
    /// what must be stopped together to freeze the server (fault tests).
    pub fn pids(&self) -> Vec<i32> {
        let Some(master) = self.postmaster_pid() else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // Fields after the parenthesised command name: state, ppid, ...
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(master) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Sends `signal` to the postmaster and all its children (SIGSTOP freezes the server,
    /// SIGCONT thaws it). Returns how many processes were signalled.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> usize {
        let pids = self.pids();
        for pid in &pids {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), signal);
        }
        pids.len()
    }

    fn is_running(&self) -> bool {
        self.command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(&self.pgdata)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
            // The postgres user may not be able to enter the caller's working directory.
            cmd.current_dir("/");
        }
        cmd
    }

    /// Gives `dir` to the cluster's user (0700), checking that user can reach it.
    fn hand_over(&self, dir: &Path) -> anyhow::Result<()> {
        let Some((uid, gid)) = self.run_as else {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
            return Ok(());
        };
        let dir = dir.canonicalize()?;
        nix::unistd::chown(
            &dir,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .with_context(|| format!("handing {} to the postgres user", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        for ancestor in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(ancestor)?;
            let others_x = meta.mode() & 0o001 != 0;
            if !others_x && meta.uid() != uid {
                bail!(
                    "the postgres user cannot reach {} ({} is not world-executable); \
                     choose another FECHATTER_DATA",
                    dir.display(),
                    ancestor.display()
                );
            }
        }
        Ok(())
    }
}

/// Where `serve` keeps its embedded cluster: `<data>/pg`, unless we are root and the postgres
/// user cannot reach that path (e.g. under /root), then a stable directory under /var/lib.
pub fn default_layout(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    let reachable = data_dir.ancestors().all(|a| {
        std::fs::metadata(a)
            .map(|m| m.mode() & 0o001 != 0)
            .unwrap_or(false)
    });
    let base = if nix::unistd::geteuid().is_root() && !reachable {
        let tag = data_dir
            .to_string_lossy()
            .bytes()
            .fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
        let base = PathBuf::from(format!("/var/lib/fechatter/{tag:016x}"));
        std::fs::create_dir_all(&base)?;
        std::fs::set_permissions("/var/lib/fechatter", std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
        base
    } else {
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))?;
        data_dir
    };
    Ok((base.join("pg"), base.join("run")))
}
