//! Structured logging with `tracing`: text for people, JSON for machines; filtered by RUST_LOG
//! and throttled (`log_throttle`: repeated WARN/ERROR lines are counted, not written).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Installs the global subscriber once; later calls (tests start many servers) are no-ops.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn,refinery_core=warn"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = if format == "json" {
        layer.json().boxed()
    } else {
        layer.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(
            layer
                .with_filter(crate::log_throttle::Throttle::new())
                .with_filter(filter),
        )
        .try_init();
}
