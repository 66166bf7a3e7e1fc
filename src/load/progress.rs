//! Progress bars for the long phases (hidden with `--quiet` or when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `label`.
pub fn bar(quiet: bool, len: u64, label: &'static str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label);
    bar
}

/// A bar that fills over `secs` seconds of a timed phase; it stops by itself at the end.
pub fn timer(quiet: bool, secs: u64, label: &'static str) -> ProgressBar {
    let bar = self::bar(quiet, secs, label);
    let ticker = bar.clone();
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for s in 1..=secs {
            tokio::time::sleep_until(start + std::time::Duration::from_secs(s)).await;
            ticker.set_position(s);
        }
    });
    bar
}
