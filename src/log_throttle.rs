//! Log throttling: a client cannot make the server write logs without bound. WARN and ERROR
//! lines are limited per call site to `FECHATTER_LOG_REPEAT_PER_10S` per 10 s; the rest are
//! counted and summarised in one WARN line per 10 s. Connection-level errors of actix-http
//! (malformed request lines, resets: client mistakes) are never written at ERROR: they are
//! only counted into that summary, with the last one's text.

use std::collections::HashMap;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// The summary period (and the per-call-site window).
const PERIOD: Duration = Duration::from_secs(10);

static LIMIT: AtomicU32 = AtomicU32::new(10);
static CLIENT_ERRORS: AtomicU64 = AtomicU64::new(0);
static LAST_CLIENT_ERROR: Mutex<String> = Mutex::new(String::new());
static SITES: Mutex<Option<HashMap<Identifier, Site>>> = Mutex::new(None);

struct Site {
    window: Instant,
    written: u32,
    suppressed: u64,
    name: &'static str,
}

/// Sets the per-call-site limit (`FECHATTER_LOG_REPEAT_PER_10S`).
pub fn set_limit(per_10s: u32) {
    LIMIT.store(per_10s.max(1), Ordering::Relaxed);
}

/// Client mistakes counted so far (connection-level errors not written).
pub fn client_errors() -> u64 {
    CLIENT_ERRORS.load(Ordering::Relaxed)
}

/// The filter to put on the log layer.
pub struct Throttle;

impl Throttle {
    pub fn new() -> Self {
        static SUMMARY: Once = Once::new();
        SUMMARY.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("log-throttle".into())
                .spawn(summarise);
        });
        Throttle
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new()
    }
}

fn is_client_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target().starts_with("actix_http::h1")
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S> Filter<S> for Throttle {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let meta = event.metadata();
        if is_client_error(meta) {
            CLIENT_ERRORS.fetch_add(1, Ordering::Relaxed);
            let mut m = Message(String::new());
            event.record(&mut m);
            m.0.truncate(200);
            *LAST_CLIENT_ERROR.lock() = m.0;
            return false;
        }
        if *meta.level() > Level::WARN || meta.target() == module_path!() {
            return true;
        }
        let limit = LIMIT.load(Ordering::Relaxed);
        let mut sites = SITES.lock();
        let site = sites
            .get_or_insert_with(HashMap::new)
            .entry(meta.callsite())
            .or_insert_with(|| Site {
                window: Instant::now(),
                written: 0,
                suppressed: 0,
                name: meta.name(),
            });
        if site.window.elapsed() >= PERIOD {
            site.window = Instant::now();
            site.written = 0;
        }
        if site.written < limit {
            site.written += 1;
            true
        } else {
            site.suppressed += 1;
            false
        }
    }
}

/// Every period: one WARN line with what was suppressed, if anything was.
fn summarise() {
    let mut client_seen = 0;
    loop {
        std::thread::sleep(PERIOD);
        let mut suppressed: Vec<(&'static str, u64)> = Vec::new();
        if let Some(sites) = SITES.lock().as_mut() {
            for site in sites.values_mut() {
                if site.suppressed > 0 {
                    suppressed.push((site.name, site.suppressed));
                    site.suppressed = 0;
                }
            }
            sites.retain(|_, s| s.window.elapsed() < PERIOD * 6);
        }
        let client = client_errors();
        let new_client = client - client_seen;
        client_seen = client;
        if !suppressed.is_empty() {
            let total: u64 = suppressed.iter().map(|(_, n)| n).sum();
            let sites: Vec<String> = suppressed
                .iter()
                .map(|(name, n)| format!("{name}×{n}"))
                .collect();
            tracing::warn!(
                suppressed = total,
                sites = %sites.join(", "),
                "repeated log lines suppressed in the last 10 s"
            );
        }
        if new_client > 0 {
            let last = LAST_CLIENT_ERROR.lock().clone();
            tracing::warn!(
                count = new_client,
                last = %last,
                "client connection errors (malformed requests, resets) in the last 10 s"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use tracing_subscriber::layer::{Layer, SubscriberExt as _};

    use super::*;

    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// 50 identical WARN lines write the limit; INFO lines are not throttled; actix-http's
    /// connection errors are only counted.
    #[test]
    fn repeats_are_counted_not_written() {
        set_limit(10);
        let written = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(Count(written.clone()).with_filter(Throttle::new()));
        let before = client_errors();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..50 {
                tracing::warn!("the same complaint");
            }
            for _ in 0..20 {
                tracing::info!("routine");
            }
            for _ in 0..5 {
                tracing::error!(target: "actix_http::h1::dispatcher", "stream error: bad request line");
            }
        });
        assert_eq!(written.load(Ordering::Relaxed), 10 + 20);
        assert!(client_errors() - before >= 5);
    }
}
