//! Latency histograms (HDR, microseconds) and their summary in milliseconds.

use std::sync::Arc;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Highest recordable latency: one hour, in microseconds (larger values are clamped).
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // unwrap: constant, valid bounds (low 1, high ≥ 2, 3 significant digits).
        #[allow(clippy::unwrap_used)]
        Latency(Histogram::new_with_bounds(1, MAX_MICROS, 3).unwrap())
    }
}

impl Latency {
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// The recorded values and their counts (exact; a shard digest carries these).
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    /// A histogram of `buckets` (as [`buckets`](Self::buckets) returns).
    pub fn from_buckets(buckets: &[(u64, u64)]) -> Latency {
        let mut l = Latency::default();
        for (value, count) in buckets {
            let _ = l.0.record_n((*value).clamp(1, MAX_MICROS), *count);
        }
        l
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        }
    }
}

/// Percentiles of a latency distribution, in milliseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Percentiles {
    /// `p50/p90/p99/p99.9/max` for a table cell.
    pub fn cell(&self) -> String {
        format!(
            "{:.1}/{:.1}/{:.1}/{:.1}/{:.1} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// A histogram shared by many tasks; each buffers a few samples before taking the lock.
#[derive(Clone, Default)]
pub struct SharedLatency(Arc<Mutex<Latency>>);

impl SharedLatency {
    pub fn recorder(&self) -> Recorder {
        Recorder {
            shared: self.clone(),
            buf: Vec::with_capacity(Recorder::FLUSH_AT),
        }
    }

    pub fn snapshot(&self) -> Latency {
        self.0.lock().clone()
    }
}

/// One task's buffered handle on a [`SharedLatency`]; flushes on drop.
pub struct Recorder {
    shared: SharedLatency,
    buf: Vec<u64>,
}

impl Recorder {
    const FLUSH_AT: usize = 256;

    pub fn record(&mut self, micros: u64) {
        self.buf.push(micros);
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut h = self.shared.0.lock();
        for us in self.buf.drain(..) {
            h.record(us);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Nanoseconds since the Unix epoch (the clock stamps are written with).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
