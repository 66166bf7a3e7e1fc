//! Several load processes driving one scenario: `--shard I/N` gives process I the users with
//! index ≡ I (mod N) (their connections and senders), and `merge` combines the shards' JSON
//! summaries into one, re-running the delivery checker over every shard's acknowledged sends
//! and every client's receipts (exchanged as ranges), and merging the latency histograms
//! exactly.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::chat::ChatSummary;
use super::checker::{self, Acked, ClientDigest, ClientLog, StreamRanges};
use super::latency::Latency;
use super::report;

/// Which part of a scenario this process runs: `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn whole() -> Shard {
        Shard { index: 0, count: 1 }
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Whether user (or connection) number `i` belongs to this shard.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("expected I/N with 0 ≤ I < N (e.g. 0/4), got `{s}`");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: usize = i.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// What a shard's summary carries for `merge`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardDigest {
    pub index: usize,
    pub count: usize,
    pub run_id: u32,
    /// This shard's acknowledged sends.
    pub acked: Vec<StreamRanges>,
    /// What each of this shard's clients received (from every shard's senders).
    pub clients: Vec<ClientDigest>,
    /// Send→receive and send-ack latencies, `(µs, count)`.
    pub latency: Vec<(u64, u64)>,
    pub ack_latency: Vec<(u64, u64)>,
    /// Waits for an HTTP connection, `(µs, count)`.
    #[serde(default)]
    pub connection_wait: Vec<(u64, u64)>,
}

#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// The shards' `--json` summaries (every shard of one run, once each).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,

    /// Write the merged summary here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The fields of a shard's chat summary that `merge` reads.
#[derive(Deserialize)]
struct ShardFile {
    scenario: String,
    users: usize,
    rooms: usize,
    rooms_per_user: usize,
    target_rate: f64,
    duration_secs: u64,
    connections: u64,
    connection_failures: BTreeMap<String, u64>,
    dropped: BTreeMap<String, u64>,
    sent: u64,
    send_errors: BTreeMap<u16, u64>,
    acknowledged_per_sec: f64,
    deliveries_per_sec: f64,
    drain_secs: f64,
    #[serde(default)]
    http_connections: u32,
    shard: Option<ShardDigest>,
}

fn add<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_insert(0) += v;
    }
}

/// Merges shard summaries of one `chat` run.
pub fn merge(a: &MergeArgs) -> anyhow::Result<ChatSummary> {
    let mut files = Vec::new();
    for path in &a.files {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let f: ShardFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        anyhow::ensure!(
            f.scenario == "chat",
            "{}: only chat runs merge",
            path.display()
        );
        anyhow::ensure!(
            f.shard.is_some(),
            "{}: not a shard (run it with --shard I/N)",
            path.display()
        );
        files.push(f);
    }
    let digests: Vec<&ShardDigest> = files.iter().filter_map(|f| f.shard.as_ref()).collect();
    let count = digests[0].count;
    let mut seen: Vec<usize> = digests.iter().map(|d| d.index).collect();
    seen.sort_unstable();
    anyhow::ensure!(
        seen == (0..count).collect::<Vec<_>>() && digests.iter().all(|d| d.count == count),
        "need each shard 0..{count} exactly once, got {seen:?}"
    );
    anyhow::ensure!(
        digests.iter().all(|d| d.run_id == digests[0].run_id),
        "the shards ran with different --run-id values"
    );
    let mut acked = Acked::default();
    let mut latency = Latency::default();
    let mut ack_latency = Latency::default();
    let mut connection_wait = Latency::default();
    for d in &digests {
        connection_wait.merge(&Latency::from_buckets(&d.connection_wait));
        acked.absorb(&d.acked);
        latency.merge(&Latency::from_buckets(&d.latency));
        ack_latency.merge(&Latency::from_buckets(&d.ack_latency));
    }
    let logs: Vec<ClientLog> = digests
        .iter()
        .flat_map(|d| d.clients.iter().map(ClientLog::from_digest))
        .collect();
    let tally = checker::tally(&acked, logs.iter());
    let first = &files[0];
    let mut summary = ChatSummary {
        scenario: "chat",
        users: first.users,
        rooms: first.rooms,
        rooms_per_user: first.rooms_per_user,
        target_rate: first.target_rate,
        duration_secs: first.duration_secs,
        connections: files.iter().map(|f| f.connections).sum(),
        connection_failures: BTreeMap::new(),
        dropped: BTreeMap::new(),
        sent: files.iter().map(|f| f.sent).sum(),
        acknowledged: acked.total(),
        send_errors: BTreeMap::new(),
        // The shards ran at the same time: their rates add up.
        acknowledged_per_sec: files.iter().map(|f| f.acknowledged_per_sec).sum(),
        deliveries_per_sec: files.iter().map(|f| f.deliveries_per_sec).sum(),
        drain_secs: files.iter().map(|f| f.drain_secs).fold(0.0, f64::max),
        clean: tally.is_clean(),
        tally,
        latency: latency.summary(),
        ack_latency: ack_latency.summary(),
        // Each shard had its own connections: they add up.
        http_connections: files.iter().map(|f| f.http_connections).sum(),
        connection_wait: connection_wait.summary(),
        shard: None,
    };
    for f in &files {
        add(&mut summary.connection_failures, &f.connection_failures);
        add(&mut summary.dropped, &f.dropped);
        add(&mut summary.send_errors, &f.send_errors);
    }
    if let Some(path) = &a.json {
        report::write_json(path, &summary)?;
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shards() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        for bad in ["4/4", "0/0", "x/2", "1", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let s: Shard = "1/3".parse().expect("shard");
        assert_eq!(
            (0..7).filter(|i| s.owns(*i)).collect::<Vec<_>>(),
            vec![1, 4]
        );
    }
}
