//! `merge` of `connect` summaries: several `connect` processes run at once (each under the
//! 20,000-descriptor limit, typically one per server node with that node's `--server-pid`).
//! Totals; the combined connect rate (all connections ÷ the slowest process's connect time,
//! the processes having started together); server memory per connection as every measured
//! server's growth ÷ the connections of the processes that measured one.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::connect::{kib, opened_row};
use super::report;
use super::shard::MergeArgs;

/// The fields of a `connect` summary that `merge` reads.
#[derive(Deserialize)]
struct ConnectFile {
    scenario: String,
    requested: usize,
    opened: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    connect_secs: f64,
    hold_secs: u64,
    held: u64,
    dropped: BTreeMap<String, u64>,
    server_rss_before_kib: Option<u64>,
    server_rss_after_kib: Option<u64>,
    client_rss_per_conn_kib: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct MergedConnect {
    pub scenario: &'static str,
    pub processes: usize,
    pub requested: usize,
    pub opened: u64,
    pub failed: u64,
    pub failures: BTreeMap<String, u64>,
    pub held: u64,
    pub dropped: BTreeMap<String, u64>,
    pub hold_secs: u64,
    /// The slowest process's time to open its connections.
    pub connect_secs: f64,
    pub connects_per_sec: f64,
    /// Processes that read their server's memory (`--server-pid`).
    pub servers_measured: usize,
    pub server_rss_growth_kib: u64,
    pub server_rss_after_kib: u64,
    pub server_rss_per_conn_kib: Option<f64>,
    pub client_rss_per_conn_kib: Option<f64>,
}

/// Whether `path` holds a `connect` summary.
pub fn is_connect(path: &Path) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(v["scenario"] == "connect")
}

pub fn merge(a: &MergeArgs) -> anyhow::Result<MergedConnect> {
    let mut files = Vec::new();
    for path in &a.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: ConnectFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            f.scenario == "connect",
            "{}: not a connect summary (merge one scenario at a time)",
            path.display()
        );
        files.push(f);
    }
    let s = combine(&files);
    if let Some(path) = &a.json {
        report::write_json(path, &s)?;
    }
    Ok(s)
}

fn combine(files: &[ConnectFile]) -> MergedConnect {
    let mut failures = BTreeMap::new();
    let mut dropped = BTreeMap::new();
    for f in files {
        for (k, v) in &f.failures {
            *failures.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &f.dropped {
            *dropped.entry(k.clone()).or_insert(0) += v;
        }
    }
    let opened: u64 = files.iter().map(|f| f.opened).sum();
    let connect_secs = files.iter().map(|f| f.connect_secs).fold(0.0, f64::max);
    let measured: Vec<(&ConnectFile, u64, u64)> = files
        .iter()
        .filter_map(|f| Some((f, f.server_rss_before_kib?, f.server_rss_after_kib?)))
        .collect();
    let growth: u64 = measured.iter().map(|(_, b, a)| a.saturating_sub(*b)).sum();
    let measured_conns: u64 = measured.iter().map(|(f, _, _)| f.opened).sum();
    let client: Vec<(f64, u64)> = files
        .iter()
        .filter_map(|f| Some((f.client_rss_per_conn_kib?, f.opened)))
        .collect();
    let client_conns: u64 = client.iter().map(|(_, n)| n).sum();
    MergedConnect {
        scenario: "connect",
        processes: files.len(),
        requested: files.iter().map(|f| f.requested).sum(),
        opened,
        failed: files.iter().map(|f| f.failed).sum(),
        failures,
        held: files.iter().map(|f| f.held).sum(),
        dropped,
        hold_secs: files.iter().map(|f| f.hold_secs).min().unwrap_or(0),
        connect_secs,
        connects_per_sec: report::rate(opened, connect_secs),
        servers_measured: measured.len(),
        server_rss_growth_kib: growth,
        server_rss_after_kib: measured.iter().map(|(_, _, a)| a).sum(),
        server_rss_per_conn_kib: (measured_conns > 0)
            .then(|| growth as f64 / measured_conns as f64),
        client_rss_per_conn_kib: (client_conns > 0)
            .then(|| client.iter().map(|(k, n)| k * *n as f64).sum::<f64>() / client_conns as f64),
    }
}

pub fn print(s: &MergedConnect) {
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
            format!("{} ({} dropped)", s.held, s.opened - s.held.min(s.opened)),
        ),
        (
            "server RSS/conn",
            format!(
                "{} ({} servers, +{} KiB)",
                kib(s.server_rss_per_conn_kib),
                s.servers_measured,
                s.server_rss_growth_kib
            ),
        ),
        ("client RSS/conn", kib(s.client_rss_per_conn_kib)),
    ];
    for (why, count) in &s.failures {
        rows.push(("failure", format!("{count} × {why}")));
    }
    report::print_table(&format!("connect: {} processes merged", s.processes), &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(opened: u64, secs: f64, rss: Option<(u64, u64)>) -> ConnectFile {
        ConnectFile {
            scenario: "connect".into(),
            requested: opened as usize,
            opened,
            failed: 0,
            failures: BTreeMap::from([("x".to_string(), 1)]),
            connect_secs: secs,
            hold_secs: 5,
            held: opened,
            dropped: BTreeMap::new(),
            server_rss_before_kib: rss.map(|r| r.0),
            server_rss_after_kib: rss.map(|r| r.1),
            client_rss_per_conn_kib: Some(10.0),
        }
    }

    #[test]
    fn totals_rate_and_memory_per_connection() {
        let s = combine(&[
            file(1000, 2.0, Some((100, 20_100))),
            file(3000, 4.0, Some((100, 60_100))),
            file(1000, 1.0, None),
        ]);
        assert_eq!((s.opened, s.requested, s.processes), (5000, 5000, 3));
        assert_eq!(s.failures["x"], 3);
        assert_eq!(s.connects_per_sec, 1250.0);
        // Only the measured processes' connections divide the measured growth.
        assert_eq!(s.server_rss_growth_kib, 80_000);
        assert_eq!(s.server_rss_per_conn_kib, Some(20.0));
        assert_eq!(s.client_rss_per_conn_kib, Some(10.0));
    }
}
