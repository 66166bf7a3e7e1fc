//! Process-wide counters and gauges, recorded from anywhere (actors, handlers) and read by
//! `/metrics` (Prometheus) and the admin endpoints; plus the process's own CPU, memory and fds.
//!
//! The hooks only touch atomics (cheap on hot paths); `/metrics` copies them into the Prometheus
//! recorder at scrape time. Per-request HTTP metrics go straight to the recorder (they carry
//! route labels). The recorder is global and installed once per process ([`prometheus`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static WS_ACTIVE: AtomicI64 = AtomicI64::new(0);
static SSE_ACTIVE: AtomicI64 = AtomicI64::new(0);
static MESSAGES_PERSISTED: AtomicU64 = AtomicU64::new(0);
static FANOUT_DELIVERIES: AtomicU64 = AtomicU64::new(0);
static SLOW_CONSUMERS_DROPPED: AtomicU64 = AtomicU64::new(0);
static SEARCH_QUERIES: AtomicU64 = AtomicU64::new(0);
/// Latency of the last search query, microseconds.
static SEARCH_LAST_MICROS: AtomicU64 = AtomicU64::new(0);
static SEARCH_TOTAL_MICROS: AtomicU64 = AtomicU64::new(0);

/// A WebSocket connection was authenticated and registered.
pub fn ws_opened() {
    WS_ACTIVE.fetch_add(1, Ordering::Relaxed);
}
/// A WebSocket connection closed.
pub fn ws_closed() {
    WS_ACTIVE.fetch_sub(1, Ordering::Relaxed);
}
/// An SSE stream opened.
pub fn sse_opened() {
    SSE_ACTIVE.fetch_add(1, Ordering::Relaxed);
}
/// An SSE stream closed.
pub fn sse_closed() {
    SSE_ACTIVE.fetch_sub(1, Ordering::Relaxed);
}
/// `n` messages were persisted in one group commit of one room.
pub fn messages_persisted(n: usize) {
    MESSAGES_PERSISTED.fetch_add(n as u64, Ordering::Relaxed);
}
/// `n` events were handed to sessions by a room's fan-out.
pub fn fanout_deliveries(n: usize) {
    FANOUT_DELIVERIES.fetch_add(n as u64, Ordering::Relaxed);
}
/// A slow consumer was cut off.
pub fn slow_consumer_dropped() {
    SLOW_CONSUMERS_DROPPED.fetch_add(1, Ordering::Relaxed);
}
/// A search query took `d` (recorded by the search engines).
pub fn search_latency(d: Duration) {
    let micros = d.as_micros().min(u64::MAX as u128) as u64;
    SEARCH_QUERIES.fetch_add(1, Ordering::Relaxed);
    SEARCH_LAST_MICROS.store(micros, Ordering::Relaxed);
    SEARCH_TOTAL_MICROS.fetch_add(micros, Ordering::Relaxed);
    ::metrics::histogram!("fechatter_search_duration_seconds").record(d.as_secs_f64());
}
/// A request was refused by the named rate limit.
pub fn rate_limited(limiter: &'static str) {
    ::metrics::counter!("fechatter_rate_limited_total", "limit" => limiter).increment(1);
}

/// A snapshot of the real-time counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Realtime {
    pub active_websockets: i64,
    pub active_sse: i64,
    pub messages_persisted: u64,
    pub fanout_deliveries: u64,
    pub slow_consumers_dropped: u64,
}

pub fn realtime() -> Realtime {
    Realtime {
        active_websockets: WS_ACTIVE.load(Ordering::Relaxed),
        active_sse: SSE_ACTIVE.load(Ordering::Relaxed),
        messages_persisted: MESSAGES_PERSISTED.load(Ordering::Relaxed),
        fanout_deliveries: FANOUT_DELIVERIES.load(Ordering::Relaxed),
        slow_consumers_dropped: SLOW_CONSUMERS_DROPPED.load(Ordering::Relaxed),
    }
}

/// Active WebSocket plus SSE connections.
pub fn active_connections() -> i64 {
    let r = realtime();
    r.active_websockets.max(0) + r.active_sse.max(0)
}

/// Search queries recorded so far: (count, last latency, mean latency).
pub fn search_stats() -> (u64, Option<Duration>, Option<Duration>) {
    let n = SEARCH_QUERIES.load(Ordering::Relaxed);
    if n == 0 {
        return (0, None, None);
    }
    let last = Duration::from_micros(SEARCH_LAST_MICROS.load(Ordering::Relaxed));
    let mean = Duration::from_micros(SEARCH_TOTAL_MICROS.load(Ordering::Relaxed) / n);
    (n, Some(last), Some(mean))
}

/// HTTP request duration buckets, seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's Prometheus recorder, installed on first use. Tests start many servers in one
/// process, so installation happens once and every server shares the handle.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder.set_buckets(LATENCY_BUCKETS) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "histogram buckets rejected; using summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = ::metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
        }
        handle
    })
}

/// Drains histogram buffers so the recorder's memory stays bounded between scrapes.
pub fn run_upkeep() {
    prometheus().run_upkeep();
}

/// Copies the atomics and process figures into the recorder (called at scrape time).
pub fn publish_gauges() {
    use ::metrics::{counter, gauge};
    let r = realtime();
    gauge!("fechatter_websocket_connections").set(r.active_websockets as f64);
    gauge!("fechatter_sse_connections").set(r.active_sse as f64);
    counter!("fechatter_messages_persisted_total").absolute(r.messages_persisted);
    counter!("fechatter_fanout_deliveries_total").absolute(r.fanout_deliveries);
    counter!("fechatter_slow_consumers_dropped_total").absolute(r.slow_consumers_dropped);
    if let Some(cpu) = process::cpu_time() {
        gauge!("process_cpu_seconds_total").set(cpu.as_secs_f64());
    }
    if let Some(rss) = process::rss_bytes() {
        gauge!("process_resident_memory_bytes").set(rss as f64);
    }
    if let Some(fds) = process::open_fds() {
        gauge!("process_open_fds").set(fds as f64);
    }
}

/// This process's resource use, from `/proc/self` (Linux).
pub mod process {
    use std::time::Duration;

    /// CPU time (user + system) used so far.
    pub fn cpu_time() -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        parse_cpu_ticks(&stat).map(|ticks| {
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            let hz = if hz > 0 { hz as u64 } else { 100 };
            Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
        })
    }

    /// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
    /// command name (field 2) may contain spaces, so fields are counted after its `)`.
    pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(utime + stime)
    }

    /// Resident set size (VmRSS), bytes.
    pub fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss_kb(&status).map(|kb| kb * 1024)
    }

    pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds() -> Option<usize> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
    }
}

#[cfg(test)]
mod tests {
    use super::process::*;

    /// `/proc` parsing copes with spaces and parentheses in the command name.
    #[test]
    fn parses_proc_stat_and_status() {
        let stat = "1234 (my (weird) cmd) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t  5120 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(5120));
        assert!(rss_bytes().is_some_and(|b| b > 0));
        assert!(cpu_time().is_some());
        assert!(open_fds().is_some_and(|n| n > 0));
    }

    /// The hooks move the counters the admin endpoints and `/metrics` read.
    #[test]
    fn hooks_move_counters() {
        let before = super::realtime();
        super::ws_opened();
        super::sse_opened();
        super::messages_persisted(3);
        super::fanout_deliveries(7);
        super::slow_consumer_dropped();
        let after = super::realtime();
        assert_eq!(after.messages_persisted - before.messages_persisted, 3);
        assert_eq!(after.fanout_deliveries - before.fanout_deliveries, 7);
        assert_eq!(
            after.slow_consumers_dropped - before.slow_consumers_dropped,
            1
        );
        super::ws_closed();
        super::sse_closed();
    }
}
