//! `fechatter-load fault cluster-kill9`: `kill -9` of one node of a cluster under load. A
//! throwaway durable PostgreSQL, one `redis-server` and `--nodes` (3) real server processes in
//! cluster mode; chat load with every user's reader on one node and its sender on the next;
//! each cycle kills one node (round robin) with SIGKILL and restarts it. Its readers reconnect
//! to the other nodes and resume with their last id, its senders retry unacknowledged messages
//! on the next node under the same idempotency key. Fails on any acknowledged message lost,
//! duplicated or reordered, a seq gap seen by a reader, or a chat whose stored positions are
//! not exactly 1..=`last_seq` (audited in PostgreSQL after the run).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::args::FaultArgs;
use super::fault::{Load, LoadSpec, Report, base_figures, delivery_failures};
use super::redis_proc::RedisProc;
use crate::embedded_pg::EmbeddedPostgres;
use crate::store::Store;

const JWT_SECRET: &str = "fault-suite-secret-0123456789-0123456789";

/// One server process of the cluster.
struct Node {
    id: String,
    port: u16,
    child: Option<Child>,
}

/// How the nodes run.
#[derive(Debug, Clone, Default)]
pub struct NodeSpec {
    /// The fault suite's database bound (FECHATTER_DB_REPLY_TIMEOUT_MS; pool and connect
    /// timeouts a third, statement timeout two thirds). `None`: the server's defaults.
    pub db_bound_ms: Option<u64>,
    /// Node `k` listens on 127.0.0.1:`base_port + k` (default: free ports).
    pub base_port: Option<u16>,
    /// More environment for every node (applied last: overrides the defaults).
    pub env: Vec<(String, String)>,
}

/// PostgreSQL, Redis and the nodes.
pub struct ClusterHarness {
    pg: EmbeddedPostgres,
    redis: RedisProc,
    root: PathBuf,
    remove_root: bool,
    bin: PathBuf,
    spec: NodeSpec,
    nodes: Vec<Node>,
}

impl ClusterHarness {
    /// Starts PostgreSQL (durable), Redis and `nodes` nodes (the first alone: it migrates).
    /// In `work_dir` (kept, so a second start finds the same database) or a new directory
    /// under /tmp (removed on drop).
    pub async fn start(
        bin: &Path,
        work_dir: Option<&Path>,
        nodes: usize,
        spec: NodeSpec,
    ) -> anyhow::Result<ClusterHarness> {
        let (root, remove_root, pg) =
            super::fault::durable_postgres(work_dir, "fechatter-cluster-fault").await?;
        let redis = RedisProc::start(&root.join("redis"))?;
        let mut ports = Vec::new();
        for k in 0..nodes.max(1) {
            ports.push(match spec.base_port {
                Some(p) => p + k as u16,
                None => std::net::TcpListener::bind("127.0.0.1:0")?
                    .local_addr()?
                    .port(),
            });
        }
        let mut h = ClusterHarness {
            pg,
            redis,
            root,
            remove_root,
            bin: bin.to_path_buf(),
            spec,
            nodes: ports
                .into_iter()
                .enumerate()
                .map(|(k, port)| Node {
                    id: format!("node-{k}"),
                    port,
                    child: None,
                })
                .collect(),
        };
        h.start_node(0).await?;
        for k in 1..h.nodes.len() {
            h.start_node(k).await?;
        }
        Ok(h)
    }

    /// Every node's base URL, comma-separated (the load tool's several-servers form).
    pub fn bases(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("http://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Process ids of the running nodes, by node (`None`: not running).
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.nodes
            .iter()
            .map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Starts node `k` and waits until its `/api/health` answers; the time that took.
    pub async fn start_node(&mut self, k: usize) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let (id, port) = (self.nodes[k].id.clone(), self.nodes[k].port);
        let log_path = self.root.join(format!("{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .env("DATABASE_URL", self.pg.connection_string("postgres"))
            .env("REDIS_URL", self.redis.url())
            .env("FECHATTER_NODE_ID", &id)
            // A killed node stops counting (presence, connection limit) within seconds.
            .env("FECHATTER_NODE_TTL_SECS", "3")
            .env("FECHATTER_NODE_HEARTBEAT_SECS", "1")
            .env("FECHATTER_ADDR", format!("127.0.0.1:{port}"))
            .env("FECHATTER_DATA", self.root.join(format!("data-{id}")))
            .env("JWT_SECRET", JWT_SECRET)
            .env("FECHATTER_RATE_LIMIT_PER_HOUR", "1000000000")
            .env("FECHATTER_IP_RATE_LIMIT_PER_HOUR", "1000000000")
            .env("FECHATTER_AUTH_RATE_PER_MIN", "100000000")
            .env("FECHATTER_SEARCH_RATE_PER_MIN", "100000000")
            .env("FECHATTER_MAX_WS_PER_USER", "1000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(bound) = self.spec.db_bound_ms {
            let third = (bound / 3).max(100).to_string();
            cmd.env("FECHATTER_DB_POOL_TIMEOUT_MS", &third)
                .env("FECHATTER_DB_CONNECT_TIMEOUT_MS", &third)
                .env(
                    "FECHATTER_DB_STATEMENT_TIMEOUT_MS",
                    (bound * 2 / 3).to_string(),
                )
                .env("FECHATTER_DB_REPLY_TIMEOUT_MS", bound.to_string());
        }
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        self.nodes[k].child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?,
        );
        super::fault::await_ready(
            started,
            &mut self.nodes[k].child,
            &format!("http://127.0.0.1:{port}/api/health"),
            super::fault::Ready::Success,
            &format!("node {id}"),
            &log_path,
        )
        .await
    }

    /// `kill -9` of node `k`.
    pub fn kill9(&mut self, k: usize) {
        if let Some(mut c) = self.nodes[k].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Chats whose stored positions are not exactly 1..=`last_seq`, and chats whose kept
    /// live-message count is not their rows'.
    async fn audit(
        &self,
    ) -> anyhow::Result<(
        Vec<crate::store::audit::SeqHole>,
        Vec<crate::store::audit::CountDrift>,
    )> {
        let config: tokio_postgres::Config = self
            .pg
            .connection_string("postgres")
            .parse()
            .context("audit connection")?;
        let store = Store::new(config, 1, Duration::from_secs(10))?;
        Ok((store.seq_holes().await?, store.live_count_drifts().await?))
    }
}

impl Drop for ClusterHarness {
    fn drop(&mut self) {
        for k in 0..self.nodes.len() {
            self.kill9(k);
        }
        self.redis.kill();
        self.pg.stop_immediate();
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// The scenario. `--no-resume` (the suite's self-check) reconnects readers without their last
/// id, so the run must report losses.
pub async fn kill9(a: &FaultArgs, bin: &Path) -> anyhow::Result<Report> {
    let users = a.users.unwrap_or(if a.quick { 12 } else { 60 });
    let rooms = a.rooms.unwrap_or((users / 6).max(1));
    let rate = a.rate.unwrap_or(if a.quick { 60.0 } else { 150.0 });
    let cycles = a.cycles.unwrap_or(if a.quick { 2 } else { 9 });
    let (up, down) = if a.quick {
        (Duration::from_millis(1500), Duration::from_millis(800))
    } else {
        (Duration::from_secs(3), Duration::from_secs(2))
    };
    let spec = NodeSpec {
        db_bound_ms: Some(a.db_bound_ms),
        ..NodeSpec::default()
    };
    let mut h = ClusterHarness::start(bin, a.work_dir.as_deref(), a.nodes as usize, spec).await?;
    let spec = LoadSpec {
        resume: !a.no_resume,
        ..LoadSpec::chat(users, rooms, rate)
    };
    let load = Load::start(&h.bases(), spec).await?;
    let mut restarts = Vec::new();
    for c in 0..cycles as usize {
        tokio::time::sleep(up).await;
        let victim = c % h.len();
        h.kill9(victim);
        // The load runs on the other nodes while this one is away.
        tokio::time::sleep(down).await;
        restarts.push(h.start_node(victim).await?.as_secs_f64());
    }
    // Every node serves again before the sends stop: an event the killed node committed but
    // never published is revealed to the others by its chat's next event.
    tokio::time::sleep(up).await;
    // The self-check's losses never arrive: no point waiting long for them.
    let drain = Duration::from_secs(if a.no_resume { 3 } else { 30 });
    let o = load.finish(drain).await;
    let (holes, drifts) = h.audit().await?;

    let mut failures = delivery_failures(&o);
    if o.resumes() < cycles as u64 {
        failures.push(format!(
            "only {} reconnects over {cycles} kills: the killed nodes' readers did not move",
            o.resumes()
        ));
    }
    if !holes.is_empty() {
        failures.push(format!(
            "{} chats' stored positions are not 1..=last_seq: {holes:?}",
            holes.len()
        ));
    }
    if !drifts.is_empty() {
        failures.push(format!(
            "{} chats' kept message counts differ from their rows: {drifts:?}",
            drifts.len()
        ));
    }
    restarts.sort_by(f64::total_cmp);
    let mut figures = base_figures(&o);
    figures["nodes"] = json!(h.len());
    figures["users"] = json!(users);
    figures["rooms"] = json!(rooms);
    figures["rate"] = json!(rate);
    figures["cycles"] = json!(cycles);
    figures["resumed_with_last_id"] = json!(!a.no_resume);
    figures["send_failovers_to_next_node"] = json!(o.failovers);
    figures["chats_with_seq_holes_in_db"] = json!(holes.len());
    figures["chats_with_count_drift_in_db"] = json!(drifts.len());
    figures["restart_secs_median"] = json!(restarts.get(restarts.len() / 2));
    figures["restart_secs_max"] = json!(restarts.last());
    Ok(Report {
        scenario: "cluster-kill9",
        clean: failures.is_empty(),
        failures,
        figures,
    })
}
