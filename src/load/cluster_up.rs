//! `fechatter-load cluster-up`: a local cluster for the cluster figures of BENCHMARKS.md — one
//! durable PostgreSQL, one `redis-server` and `--nodes` real server processes (the fault suite's
//! [`ClusterHarness`], with the server's own database timeouts and raised rate limits) on
//! 127.0.0.1:`base-port`…, held until Ctrl-C, SIGTERM or `--hold-secs`. The data stays in
//! `--work-dir`, so `--reuse` set-ups made against it stay valid across restarts.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;

use super::fault_cluster::{ClusterHarness, NodeSpec};

#[derive(Args, Debug, Clone)]
pub struct ClusterUpArgs {
    /// Server nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=32))]
    pub nodes: u8,

    /// Directory of the database, Redis and node logs (kept).
    #[arg(long)]
    pub work_dir: PathBuf,

    /// Node `k` listens on 127.0.0.1:`base-port + k`.
    #[arg(long, default_value_t = 18101)]
    pub base_port: u16,

    /// The server binary (default: `fechatter` beside this binary; use the release build).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// More environment for every node, `NAME=value` (repeatable), e.g.
    /// `--env FECHATTER_MAX_WS_PER_USER=2000`.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Most seconds to hold the cluster up (bounded: it is a benchmark fixture).
    #[arg(long, default_value_t = 3600)]
    pub hold_secs: u64,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=value, got `{s}`")),
    }
}

/// Starts the cluster, writes `nodes.json` (URLs and pids) into the work dir, holds it.
pub async fn run(a: &ClusterUpArgs) -> anyhow::Result<()> {
    let bin = match &a.server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("fechatter"),
    };
    if !bin.is_file() {
        bail!("no server binary at {} (pass --server-bin)", bin.display());
    }
    let spec = NodeSpec {
        db_bound_ms: None,
        base_port: Some(a.base_port),
        env: a.env.clone(),
    };
    let h = ClusterHarness::start(&bin, Some(&a.work_dir), a.nodes as usize, spec).await?;
    let pids: Vec<u32> = h.pids().into_iter().flatten().collect();
    let info = json!({"urls": h.bases(), "pids": pids});
    std::fs::write(h.root().join("nodes.json"), info.to_string()).context("writing nodes.json")?;
    println!("URLS={}", h.bases());
    println!(
        "PIDS={}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    println!("cluster up; Ctrl-C or SIGTERM stops it");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(a.hold_secs)) => {}
    }
    drop(h);
    println!("cluster stopped");
    Ok(())
}
