//! Live HTTP counters for the admin endpoints (per server) and per-route Prometheus metrics: a
//! middleware counts every request, its status class and latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use parking_lot::Mutex;

use crate::state::AppState;

/// Width of the requests-per-second window, seconds.
pub const RPS_WINDOW: u64 = 60;

/// One second of the ring: which second it holds and its count.
#[derive(Default)]
struct Slot {
    second: AtomicU64,
    count: AtomicU64,
}

/// Request counters of one server.
pub struct Stats {
    started: Instant,
    ring: [Slot; RPS_WINDOW as usize],
    total: AtomicU64,
    /// 1xx..5xx.
    by_class: [AtomicU64; 5],
    /// Request latency since start, microseconds.
    latency: Mutex<hdrhistogram::Histogram<u64>>,
    /// (when, process CPU time then, the last computed usage) for CPU usage between samples.
    cpu: Mutex<(Instant, Duration, f64)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            ring: std::array::from_fn(|_| Slot::default()),
            total: AtomicU64::new(0),
            by_class: Default::default(),
            latency: Mutex::new(
                hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .unwrap_or_else(|_| hdrhistogram::Histogram::new(2).expect("2 sig figs")),
            ),
            cpu: Mutex::new((
                Instant::now(),
                crate::metrics::process::cpu_time().unwrap_or_default(),
                0.0,
            )),
        }
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Stats {
    fn second(&self) -> u64 {
        // Offset by one so a zeroed slot never looks like the current second.
        self.started.elapsed().as_secs() + 1
    }

    /// Counts one finished request.
    pub fn record(&self, status: u16, elapsed: Duration) {
        let now = self.second();
        let slot = &self.ring[(now % RPS_WINDOW) as usize];
        let held = slot.second.load(Ordering::Acquire);
        if held != now
            && slot
                .second
                .compare_exchange(held, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            slot.count.store(0, Ordering::Release);
        }
        slot.count.fetch_add(1, Ordering::AcqRel);
        self.total.fetch_add(1, Ordering::Relaxed);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        let micros = (elapsed.as_micros() as u64).max(1);
        let _ = self.latency.lock().record(micros);
    }

    /// Mean requests per second over the last [`RPS_WINDOW`] seconds (or since start, if
    /// shorter), the current second included.
    pub fn requests_per_second(&self) -> f64 {
        let now = self.second();
        let oldest = now.saturating_sub(RPS_WINDOW - 1);
        let sum: u64 = self
            .ring
            .iter()
            .filter(|s| {
                let sec = s.second.load(Ordering::Acquire);
                sec >= oldest && sec <= now
            })
            .map(|s| s.count.load(Ordering::Acquire))
            .sum();
        let span = self
            .started
            .elapsed()
            .as_secs_f64()
            .clamp(1.0, RPS_WINDOW as f64);
        sum as f64 / span
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Requests per status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub fn by_class(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.by_class[i].load(Ordering::Relaxed))
    }

    pub fn latency(&self) -> Percentiles {
        let h = self.latency.lock();
        let ms = |micros: u64| micros as f64 / 1000.0;
        Percentiles {
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }

    /// Process CPU usage in percent of one core, averaged since the previous sample (at least
    /// one second apart; a call sooner returns the last value).
    pub fn cpu_usage_percent(&self) -> f64 {
        let mut cpu = self.cpu.lock();
        let (at, used, last) = *cpu;
        let wall = at.elapsed();
        if wall < Duration::from_secs(1) && last > 0.0 {
            return last;
        }
        let Some(now_used) = crate::metrics::process::cpu_time() else {
            return last;
        };
        let percent = if wall.is_zero() {
            0.0
        } else {
            now_used.saturating_sub(used).as_secs_f64() / wall.as_secs_f64() * 100.0
        };
        if wall >= Duration::from_secs(1) {
            *cpu = (Instant::now(), now_used, percent);
        }
        percent
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The method as a metric label: the standard methods, `other` for every made-up token (each new
/// label value would be a new series: a client could grow `/metrics` without bound).
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The status as a metric label: the code the server chose (a closed set), `other` beyond.
fn status_label(status: u16) -> String {
    if (100..600).contains(&status) {
        status.to_string()
    } else {
        "other".to_string()
    }
}

/// Counts every request (per server for the admin endpoints, per route pattern for Prometheus).
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let method = req.method().clone();
    let res = next.call(req).await?;
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    if let Some(state) = state {
        state.stats.record(status, elapsed);
    }
    // The pattern, not the path: ids in paths would make a series per resource (patterns are
    // the route table's, a closed set).
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let labels = [
        ("method", method_label(&method).to_string()),
        ("route", route),
        ("status", status_label(status)),
    ];
    ::metrics::counter!("fechatter_http_requests_total", &labels).increment(1);
    ::metrics::histogram!("fechatter_http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts land in the current second and status classes; percentiles follow the latencies.
    #[test]
    fn records_rate_classes_and_latency() {
        let s = Stats::default();
        for i in 0..10 {
            s.record(if i < 7 { 200 } else { 404 }, Duration::from_millis(i + 1));
        }
        s.record(503, Duration::from_millis(100));
        assert_eq!(s.total(), 11);
        assert_eq!(s.by_class(), [0, 7, 0, 3, 1]);
        assert!(s.requests_per_second() >= 11.0 / RPS_WINDOW as f64);
        let p = s.latency();
        assert!(p.p50_ms >= 4.0 && p.p50_ms <= 7.0, "{p:?}");
        assert!(p.max_ms >= 99.0, "{p:?}");
    }
}
