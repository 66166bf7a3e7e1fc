//! `connect`: N authenticated idle WebSocket connections, spread over users (the server caps
//! connections per user) and loopback source addresses; held for a while. Reports the connect
//! rate, failures, connections still open at the end, and — with `--server-pid` — the server's
//! resident memory per connection (VmRSS after the connections are up minus before, divided by
//! the connections).
//!
//! Limits of one process: at most ~19.9k sockets (20k file descriptors), for this tool and for
//! the server alike. More connections from the tool: run several `connect` processes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use super::api::Api;
use super::args::ConnectArgs;
use super::latency::SharedLatency;
use super::rss;
use super::setup::{self, SetupOptions, Shape};
use super::target::Target;
use super::wsclient::{self, ConnPlan, Dial, Protocol, ReaderShared};
use super::{progress, report};

/// Wait after the last connection opened before reading the server's memory.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize)]
pub struct ConnectSummary {
    pub scenario: &'static str,
    pub requested: usize,
    pub opened: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub connect_secs: f64,
    pub connects_per_sec: f64,
    pub hold_secs: u64,
    /// Open at the end of the hold.
    pub held: u64,
    pub dropped: BTreeMap<String, u64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    pub server_rss_per_conn_kib: Option<f64>,
    pub client_rss_per_conn_kib: Option<f64>,
    /// CPU time over the connect phase, per connection opened: the server (`--server-pid`),
    /// PostgreSQL (`--db-pid`, its process tree) and this tool.
    pub server_cpu_us_per_conn: Option<f64>,
    pub db_cpu_us_per_conn: Option<f64>,
    pub client_cpu_us_per_conn: Option<f64>,
}

pub async fn run(a: &ConnectArgs) -> anyhow::Result<ConnectSummary> {
    let c = &a.common;
    let targets = Target::parse_all(&c.server)?;
    let target = targets[0].clone();
    let api = Api::new(&target)?;
    let per_user = a.conns_per_user.max(1);
    let shape = Shape {
        users: a.conns.div_ceil(per_user),
        rooms: 1,
        rooms_per_user: 1,
    };
    let opts = SetupOptions {
        api: &api,
        server: &target.base,
        prefix: c.prefix.as_deref(),
        reuse: c.reuse.as_deref(),
        concurrency: c.setup_concurrency,
        quiet: c.quiet,
    };
    let pop = setup::population(&opts, shape).await?;
    let dial = Dial {
        targets,
        source_ips: c.source_ips,
        read_buffer: c.read_buffer,
        protocol: Protocol::Fechatter,
    };
    let shared = ReaderShared {
        run: rand::random(),
        delivered: Arc::new(AtomicU64::new(0)),
        latency: SharedLatency::default(),
        keep_arrivals: false,
    };
    let plans: Vec<ConnPlan> = (0..a.conns)
        .map(|j| ConnPlan {
            token: pop.users[j / per_user].token.clone(),
            rooms: Vec::new(),
        })
        .collect();
    let server_before = a.server_pid.and_then(rss::rss_kib);
    let client_before = rss::own_rss_kib();
    let (stop_tx, stop_rx) = watch::channel(false);
    let bar = progress::bar(c.quiet, plans.len() as u64, "connect");
    let cpu = |pid: Option<u32>, tree: bool| {
        pid.and_then(|p| {
            if tree {
                rss::tree_cpu_micros(p)
            } else {
                rss::cpu_micros(p)
            }
        })
    };
    let me = Some(std::process::id());
    let cpu_before = [
        cpu(a.server_pid, false),
        cpu(a.db_pid, true),
        cpu(me, false),
    ];
    let opened =
        wsclient::open_all(&dial, plans, c.connect_concurrency, &shared, &stop_rx, &bar).await;
    let cpu_after = [
        cpu(a.server_pid, false),
        cpu(a.db_pid, true),
        cpu(me, false),
    ];
    bar.finish_and_clear();
    tokio::time::sleep(SETTLE).await;
    let server_after = a.server_pid.and_then(rss::rss_kib);
    let client_after = rss::own_rss_kib();
    let n = opened.readers.len() as u64;
    let per_conn = |before: Option<u64>, after: Option<u64>| match (before, after) {
        (Some(b), Some(a)) if n > 0 => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    let cpu_per_conn = |i: usize| match (cpu_before[i], cpu_after[i]) {
        (Some(b), Some(a)) if n > 0 => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };

    let bar = progress::timer(c.quiet, a.hold_secs, "hold");
    tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    bar.finish_and_clear();
    let _ = stop_tx.send(true);
    let failed = opened.failed();
    let connect_secs = opened.elapsed.as_secs_f64();
    let outcomes = wsclient::join_readers(opened.readers).await;
    let mut dropped = BTreeMap::new();
    for o in &outcomes {
        if let Some(why) = &o.ended_early {
            *dropped.entry(why.clone()).or_insert(0) += 1;
        }
    }
    Ok(ConnectSummary {
        scenario: "connect",
        requested: a.conns,
        opened: n,
        failed,
        failures: opened.failures,
        connect_secs,
        connects_per_sec: report::rate(n, connect_secs),
        hold_secs: a.hold_secs,
        held: n - dropped.values().sum::<u64>(),
        dropped,
        server_rss_before_kib: server_before,
        server_rss_after_kib: server_after,
        server_rss_per_conn_kib: per_conn(server_before, server_after),
        client_rss_per_conn_kib: per_conn(client_before, client_after),
        server_cpu_us_per_conn: cpu_per_conn(0),
        db_cpu_us_per_conn: cpu_per_conn(1),
        client_cpu_us_per_conn: cpu_per_conn(2),
    })
}

/// A memory figure per connection, or `n/a`.
pub(super) fn kib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.1} KiB"))
}

/// The "opened" row of a connect summary (one run or several merged).
pub(super) fn opened_row(
    opened: impl std::fmt::Display,
    requested: impl std::fmt::Display,
    secs: f64,
    per_sec: f64,
    failed: impl std::fmt::Display,
) -> (&'static str, String) {
    (
        "opened",
        format!("{opened} of {requested} in {secs:.1} s ({per_sec:.0}/s), {failed} failed"),
    )
}

pub fn print(s: &ConnectSummary) {
    let us = |v: Option<f64>| v.map_or_else(|| "n/a".into(), |v| format!("{v:.0} µs"));
    let mut rows = vec![
        opened_row(
            s.opened,
            s.requested,
            s.connect_secs,
            s.connects_per_sec,
            s.failed,
        ),
        (
            "held",
            format!(
                "{} after {} s ({} dropped)",
                s.held,
                s.hold_secs,
                s.opened - s.held
            ),
        ),
        ("server RSS/conn", kib(s.server_rss_per_conn_kib)),
        ("client RSS/conn", kib(s.client_rss_per_conn_kib)),
        (
            "CPU per connect",
            format!(
                "server {}, PostgreSQL {}, this tool {}",
                us(s.server_cpu_us_per_conn),
                us(s.db_cpu_us_per_conn),
                us(s.client_cpu_us_per_conn)
            ),
        ),
    ];
    for (why, count) in &s.failures {
        rows.push(("failure", format!("{count} × {why}")));
    }
    report::print_table(&format!("connect: {} connections", s.requested), &rows);
}
