//! `ramp`: persisted HTTP sends ramped to saturation. Runs the `chat` scenario (same clients,
//! same delivery checks) at rising rates, one step after another on one set-up, and reports the
//! knee: the highest acknowledged msg/s at which the send→receive p99 stays within the bound
//! (and the server kept up with the offered rate).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::args::ChatArgs;
use super::chat::{self, ChatSummary};
use super::report;

#[derive(Args, Debug, Clone)]
pub struct RampArgs {
    /// The chat scenario run at each step (`--rate` is ignored: the ramp sets it;
    /// `--duration-secs` is each step's length).
    #[command(flatten)]
    pub chat: ChatArgs,

    /// First step's rate, messages per second (all users together).
    #[arg(long, default_value_t = 500.0)]
    pub start_rate: f64,

    /// Each step's rate is the previous one's times this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,

    /// Highest rate tried.
    #[arg(long, default_value_t = 20_000.0)]
    pub max_rate: f64,

    /// The latency bound: send→receive p99, milliseconds.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,

    /// A step keeps up when it acknowledged at least this share of its offered rate.
    #[arg(long, default_value_t = 0.95)]
    pub keep_up: f64,
}

/// One step of the ramp.
#[derive(Debug, Serialize)]
pub struct Step {
    pub target_rate: f64,
    /// Sends acknowledged ÷ the time until the last sender finished: what the server persisted
    /// per second (senders behind their schedule keep sending past `--duration-secs` until
    /// every due send went out, so a server that does not keep up shows a lower rate here).
    pub acknowledged_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub ack_p99_ms: f64,
    pub lost: u64,
    pub send_errors: u64,
    /// Within the bound and keeping up.
    pub within: bool,
}

#[derive(Debug, Serialize)]
pub struct RampSummary {
    pub scenario: &'static str,
    pub users: usize,
    pub rooms: usize,
    pub step_secs: u64,
    pub p99_bound_ms: f64,
    pub steps: Vec<Step>,
    /// The highest acknowledged msg/s of a step within the bound (0: none was).
    pub knee_acked_per_sec: f64,
    /// The highest acknowledged msg/s of any step.
    pub peak_acked_per_sec: f64,
    pub clean: bool,
}

impl Step {
    fn of(s: &ChatSummary, a: &RampArgs) -> Step {
        let acked_per_sec = s.acknowledged_per_sec;
        let within =
            s.latency.p99_ms <= a.p99_ms && acked_per_sec >= a.keep_up * s.target_rate && s.clean;
        Step {
            target_rate: s.target_rate,
            acknowledged_per_sec: acked_per_sec,
            deliveries_per_sec: s.deliveries_per_sec,
            p50_ms: s.latency.p50_ms,
            p99_ms: s.latency.p99_ms,
            p999_ms: s.latency.p999_ms,
            ack_p99_ms: s.ack_latency.p99_ms,
            lost: s.tally.lost,
            send_errors: s.send_errors.values().sum(),
            within,
        }
    }
}

pub async fn run(a: &RampArgs) -> anyhow::Result<RampSummary> {
    anyhow::ensure!(a.factor > 1.0, "--factor must exceed 1");
    anyhow::ensure!(a.start_rate > 0.0, "--start-rate must be positive");
    let mut chat = a.chat.clone();
    // Every step reuses the first step's users and rooms.
    let temp_reuse: Option<PathBuf> =
        chat.common.reuse.is_none().then(|| {
            std::env::temp_dir().join(format!("fechatter-ramp-{}.json", std::process::id()))
        });
    if let Some(p) = &temp_reuse {
        chat.common.reuse = Some(p.clone());
    }
    let json = chat.common.json.take();
    let mut steps = Vec::new();
    let mut clean = true;
    let mut rate = a.start_rate;
    let result = async {
        while rate <= a.max_rate {
            chat.rate = rate;
            let s = chat::run(&chat).await?;
            if !a.chat.common.quiet {
                chat::print(&s);
            }
            clean &= s.clean;
            let step = Step::of(&s, a);
            // Past saturation: the server no longer keeps up, or latency is far past the bound.
            let saturated = step.acknowledged_per_sec < 0.8 * rate || step.p99_ms > 4.0 * a.p99_ms;
            steps.push(step);
            if saturated {
                break;
            }
            rate *= a.factor;
        }
        anyhow::Ok(())
    }
    .await;
    if let Some(p) = &temp_reuse {
        let _ = std::fs::remove_file(p);
    }
    result?;
    let knee = steps
        .iter()
        .filter(|s| s.within)
        .map(|s| s.acknowledged_per_sec)
        .fold(0.0, f64::max);
    let peak = steps
        .iter()
        .map(|s| s.acknowledged_per_sec)
        .fold(0.0, f64::max);
    let summary = RampSummary {
        scenario: "ramp",
        users: a.chat.users,
        rooms: a.chat.rooms,
        step_secs: a.chat.duration_secs,
        p99_bound_ms: a.p99_ms,
        steps,
        knee_acked_per_sec: knee,
        peak_acked_per_sec: peak,
        clean,
    };
    if let Some(path) = &json {
        report::write_json(path, &summary)?;
    }
    Ok(summary)
}

/// Prints the steps and the knee for people.
pub fn print(s: &RampSummary) {
    println!(
        "ramp: {} users in {} rooms, {} s per step, bound p99 ≤ {} ms",
        s.users, s.rooms, s.step_secs, s.p99_bound_ms
    );
    println!(
        "  {:>9} {:>9} {:>11} {:>8} {:>8} {:>8} {:>8} {:>5} {:>6}",
        "offered",
        "acked/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "ack p99",
        "lost",
        "within"
    );
    for t in &s.steps {
        println!(
            "  {:>9.0} {:>9.0} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>5} {:>6}",
            t.target_rate,
            t.acknowledged_per_sec,
            t.deliveries_per_sec,
            t.p50_ms,
            t.p99_ms,
            t.p999_ms,
            t.ack_p99_ms,
            t.lost,
            if t.within { "yes" } else { "no" }
        );
    }
    println!(
        "  knee: {:.0} acked msg/s within the bound; peak {:.0} acked msg/s; verdict {}",
        s.knee_acked_per_sec,
        s.peak_acked_per_sec,
        if s.clean { "clean" } else { "FAILED" }
    );
}
