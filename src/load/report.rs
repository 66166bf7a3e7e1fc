//! Output: the JSON summary (`--json FILE`) for machines and a short table for people.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// Writes `summary` as pretty JSON to `path`.
pub fn write_json(path: &Path, summary: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(summary)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Prints `rows` as a two-column table under `title`.
pub fn print_table(title: &str, rows: &[(&str, String)]) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    println!("{title}");
    for (k, v) in rows {
        println!("  {k:<width$}  {v}");
    }
}

/// `x` per second over `secs`, or 0.
pub fn rate(x: u64, secs: f64) -> f64 {
    if secs > 0.0 { x as f64 / secs } else { 0.0 }
}
