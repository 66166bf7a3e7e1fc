//! `fechatter-load fault meili`: the real Meilisearch binary (a subprocess on a random loopback
//! port, throwaway data directory) killed with SIGKILL under chat load, then restarted. Sends
//! must stay unaffected (every one acknowledged, nothing lost), a search must answer 503
//! `SERVICE_UNAVAILABLE` with `Retry-After` while it is down (never another status, never
//! slower than the configured bound), and once it is back the indexer must drain the outbox
//! and make every acknowledged message findable by search within 30 s.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::args::{FaultArgs, FaultScenario};
use super::checker::{Acked, Stamp, StreamKey};
use super::fault::{
    ADMIN_TOKEN, Harness, Load, LoadSpec, Report, base_figures, delivery_failures, sizes,
};
use super::setup::Population;

/// Every acknowledged message must be findable this long after Meilisearch is back.
const CATCH_UP: Duration = Duration::from_secs(30);
/// Pause between two probe searches.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Pause between two outbox samples.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Slack over the configured search bound (scheduling on a loaded machine).
const BOUND_SLACK: Duration = Duration::from_millis(500);
/// A word of every load message's filler (`Stamp::content`), so one query finds them all.
const QUERY: &str = "benchmark";
/// Results per search page (the API's maximum).
const PAGE: usize = 100;

/// The Meilisearch server binary: `--meili-bin`, else the source tree's
/// `../shared/meilisearch/meilisearch`, else `meilisearch` on PATH.
fn meili_bin(a: &FaultArgs) -> Option<PathBuf> {
    if let Some(b) = &a.meili_bin {
        return Some(b.clone());
    }
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/meilisearch/meilisearch");
    if shared.is_file() {
        return Some(shared);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("meilisearch"))
        .find(|p| p.is_file())
}

/// A Meilisearch server run as a subprocess, restartable on the same port and data.
pub struct MeiliProcess {
    bin: PathBuf,
    root: PathBuf,
    remove_root: bool,
    pub addr: SocketAddr,
    pub key: String,
    child: Option<Child>,
}

impl MeiliProcess {
    /// Starts it on a free loopback port with a fresh data directory under `root`.
    pub async fn start(bin: &Path, root: PathBuf, remove_root: bool) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut m = MeiliProcess {
            bin: bin.to_path_buf(),
            root,
            remove_root,
            addr,
            key: format!("fault-suite-meili-key-{}", uuid::Uuid::new_v4().simple()),
            child: None,
        };
        m.spawn().await?;
        Ok(m)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server (again) and waits until `/health` answers `available`.
    pub async fn spawn(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("meili.log"))?;
        let child = Command::new(&self.bin)
            .arg("--db-path")
            .arg(self.root.join("data"))
            .args(["--http-addr", &self.addr.to_string()])
            .args(["--master-key", &self.key])
            .args(["--no-analytics", "--env", "development"])
            .args(["--log-level", "WARN"])
            .args(["--max-indexing-threads", "1"])
            .args(["--max-indexing-memory", "512Mb"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        let health = format!("{}/health", self.url());
        let log = self.root.join("meili.log");
        super::fault::await_ready(
            started,
            &mut self.child,
            &health,
            super::fault::Ready::BodyContains("available"),
            "Meilisearch",
            &log,
        )
        .await
    }

    /// SIGSTOP (a hung server: connections are accepted by the kernel, never answered).
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT after [`MeiliProcess::freeze`].
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
        }
    }

    /// SIGKILL, and reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for MeiliProcess {
    fn drop(&mut self) {
        self.kill9();
        if self.remove_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

/// One probe search as the client saw it.
#[derive(Debug, Clone)]
struct Probe {
    /// Since the start of the load.
    at: Duration,
    /// 0: no answer (refused, reset, or the client's own timeout).
    status: u16,
    took: Duration,
    retry_after: bool,
    code: Option<String>,
}

/// Searches the whole workspace as its owner every [`PROBE_EVERY`] until `stop`.
async fn probe_searches(
    http: reqwest::Client,
    base: String,
    pop: Population,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<Probe> {
    let mut out = Vec::new();
    let body = json!({"query": QUERY, "workspace_id": pop.workspace_id, "limit": 1});
    while !*stop.borrow() {
        let t0 = Instant::now();
        let reply = http
            .post(format!("{base}/api/search/messages"))
            .bearer_auth(&pop.owner.token)
            .json(&body)
            .send()
            .await;
        let mut p = Probe {
            at: t0.duration_since(started),
            status: 0,
            took: Duration::ZERO,
            retry_after: false,
            code: None,
        };
        if let Ok(r) = reply {
            p.status = r.status().as_u16();
            p.retry_after = r.headers().contains_key("retry-after");
            let v: Value = r.json().await.unwrap_or(Value::Null);
            p.code = v["error"]["code"].as_str().map(str::to_string);
        }
        p.took = t0.elapsed();
        out.push(p);
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    out
}

/// Rows waiting in the server's search outbox (admin metrics), `None` when it did not say.
async fn outbox_pending(http: &reqwest::Client, base: &str) -> Option<i64> {
    let v: Value = http
        .get(format!("{base}/admin/production/metrics/search"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["metrics"]["outbox_pending"].as_i64()
}

/// Samples the outbox every [`SAMPLE_EVERY`] until `stop`: (since the start, pending).
async fn sample_outbox(
    http: reqwest::Client,
    base: String,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Vec<(Duration, Option<i64>)> {
    let mut out = Vec::new();
    while !*stop.borrow() {
        let at = started.elapsed();
        out.push((at, outbox_pending(&http, &base).await));
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE_EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    out
}

/// What a search of every room found: the acknowledged messages among the results, and the
/// results in all.
#[derive(Debug, Default)]
struct Found {
    acked_found: u64,
    results: u64,
}

/// Pages through a search of each room (as the owner, a member of all) and counts the
/// acknowledged messages among the results. `Err` when a search did not answer 200.
async fn find_all(
    http: &reqwest::Client,
    base: &str,
    pop: &Population,
    acked: &Acked,
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    for &room in &pop.rooms {
        let mut page = 1;
        loop {
            let body = json!({"query": QUERY, "workspace_id": pop.workspace_id,
                "filters": {"chat_ids": [room]}, "page": page, "limit": PAGE});
            let r = http
                .post(format!("{base}/api/search/messages"))
                .bearer_auth(&pop.owner.token)
                .json(&body)
                .send()
                .await?;
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            if status != 200 {
                bail!("search answered {status}: {v}");
            }
            let results = v["results"].as_array().cloned().unwrap_or_default();
            for hit in &results {
                found.results += 1;
                let content = hit["content"].as_str().unwrap_or("");
                let plain = content.replace("<mark>", "").replace("</mark>", "");
                let Some(stamp) = Stamp::parse(plain.trim_start_matches('…')) else {
                    continue;
                };
                let key = StreamKey {
                    room,
                    sender: stamp.sender,
                };
                if acked.contains(key, stamp.n) {
                    found.acked_found += 1;
                }
            }
            let total = v["total"].as_u64().unwrap_or(0);
            if results.len() < PAGE || (page * PAGE) as u64 >= total {
                break;
            }
            page += 1;
        }
    }
    Ok(found)
}

/// Nearest-rank percentile of `v` (sorted), milliseconds.
fn pct_ms(v: &[Duration], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    Some((v[i].as_secs_f64() * 1e4).round() / 10.0)
}

fn latency_figures(mut v: Vec<Duration>) -> Value {
    v.sort_unstable();
    json!({"count": v.len(), "p50_ms": pct_ms(&v, 0.5), "p99_ms": pct_ms(&v, 0.99),
        "max_ms": pct_ms(&v, 1.0)})
}

/// The scenario; a skip report (loud) when `all` runs it without a Meilisearch binary.
pub async fn run(a: &FaultArgs, bin: &Path) -> anyhow::Result<Report> {
    let Some(meili_bin) = meili_bin(a) else {
        let why = "no Meilisearch binary (--meili-bin, FECHATTER_MEILI_BIN, \
                   ../shared/meilisearch/meilisearch or meilisearch on PATH)";
        if a.scenario == FaultScenario::Meili {
            bail!("fault meili: {why}");
        }
        eprintln!("fault meili: SKIPPED: {why}");
        return Ok(Report {
            scenario: "meili",
            clean: true,
            failures: vec![],
            figures: json!({"skipped": why}),
        });
    };
    let s = sizes(a);
    let outage = Duration::from_secs(a.outage_secs.unwrap_or(if a.quick { 3 } else { 10 }));
    let after = Duration::from_secs(if a.quick { 2 } else { 5 });
    // Meilisearch is down for seconds only: the search bound is the database bound's.
    let search_bound = Duration::from_millis(a.db_bound_ms);
    let (root, remove_root) = match &a.work_dir {
        Some(d) => (d.join("meili"), false),
        None => (
            PathBuf::from(format!(
                "/tmp/fechatter-fault-meili-{}",
                uuid::Uuid::new_v4().simple()
            )),
            true,
        ),
    };
    let mut meili = MeiliProcess::start(&meili_bin, root, remove_root).await?;
    let env = vec![
        ("MEILI_URL".to_string(), meili.url()),
        ("MEILI_MASTER_KEY".to_string(), meili.key.clone()),
        ("MEILI_INDEX".to_string(), "fault_messages".to_string()),
        (
            "FECHATTER_SEARCH_TIMEOUT_MS".to_string(),
            search_bound.as_millis().to_string(),
        ),
    ];
    let h = Harness::start(bin, a.work_dir.as_deref(), a.db_bound_ms, env).await?;
    let load = Load::start(&h.base, LoadSpec::chat(s.users, s.rooms, s.rate)).await?;
    let pop = load.population.clone();
    let http = reqwest::Client::builder()
        .no_proxy()
        // Far above the bound: a hang shows as a slow answer, not as the client giving up.
        .timeout(Duration::from_secs(30))
        .build()?;
    let (stop_probe, stop_rx) = watch::channel(false);
    let probes = tokio::spawn(probe_searches(
        http.clone(),
        h.base.clone(),
        pop.clone(),
        load.started,
        stop_rx.clone(),
    ));
    let samples = tokio::spawn(sample_outbox(
        http.clone(),
        h.base.clone(),
        load.started,
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let down_at = load.started.elapsed();
    meili.kill9();
    tokio::time::sleep(outage).await;
    let restart_at = load.started.elapsed();
    let restart = meili.spawn().await?;
    let back = Instant::now();
    let back_at = load.started.elapsed();
    tokio::time::sleep(after).await;
    let o = load.finish(Duration::from_secs(30)).await;
    let sends_stopped_at = back.elapsed();

    // Caught up: the outbox empty and every acknowledged message found, within CATCH_UP.
    let mut drained_after: Option<Duration> = None;
    let mut found = Found::default();
    let mut found_after: Option<Duration> = None;
    let mut last_error = None;
    loop {
        if drained_after.is_none() && outbox_pending(&http, &h.base).await == Some(0) {
            drained_after = Some(back.elapsed());
        }
        if drained_after.is_some() {
            match find_all(&http, &h.base, &pop, &o.acked).await {
                Ok(f) => {
                    let done = f.acked_found >= o.acked.total();
                    found = f;
                    if done {
                        found_after = Some(back.elapsed());
                        break;
                    }
                }
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        if back.elapsed() > CATCH_UP {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = stop_probe.send(true);
    let probes = probes.await.unwrap_or_default();
    let samples = samples.await.unwrap_or_default();

    let mut failures = delivery_failures(&o);
    // Sends: every attempt acknowledged first time, whatever Meilisearch did.
    let not_201 = o.attempts.iter().filter(|t| t.status != 201).count();
    if not_201 > 0 || o.abandoned > 0 {
        failures.push(format!(
            "sends affected: {not_201} attempts not 201 ({:?}), {} abandoned",
            o.statuses(),
            o.abandoned
        ));
    }
    // Searches: 200 or 503 + SERVICE_UNAVAILABLE + Retry-After, always within the bound; while
    // Meilisearch was dead (killed, not yet restarting) only the 503.
    let bound = search_bound + BOUND_SLACK;
    let mut by_status = std::collections::BTreeMap::<u16, u64>::new();
    let (mut wrong, mut slow, mut not_503_while_down, mut down_503) = (0, 0, 0, 0);
    for p in &probes {
        *by_status.entry(p.status).or_insert(0) += 1;
        let unavailable =
            p.status == 503 && p.retry_after && p.code.as_deref() == Some("SERVICE_UNAVAILABLE");
        if !(p.status == 200 || unavailable) {
            wrong += 1;
        }
        if p.took > bound {
            slow += 1;
        }
        if p.at >= down_at && p.at + p.took < restart_at {
            if unavailable {
                down_503 += 1;
            } else {
                not_503_while_down += 1;
            }
        }
    }
    let slowest = probes.iter().map(|p| p.took).max().unwrap_or_default();
    if wrong > 0 {
        failures.push(format!(
            "{wrong} searches answered neither 200 nor 503 SERVICE_UNAVAILABLE + Retry-After: \
             {by_status:?}"
        ));
    }
    if slow > 0 {
        failures.push(format!(
            "{slow} searches slower than {bound:?} (slowest {slowest:?})"
        ));
    }
    if not_503_while_down > 0 || down_503 == 0 {
        failures.push(format!(
            "while Meilisearch was down {down_503} searches answered 503, \
             {not_503_while_down} something else"
        ));
    }
    let search_back = probes
        .iter()
        .filter(|p| p.status == 200 && p.at >= restart_at)
        .map(|p| (p.at + p.took).saturating_sub(back_at))
        .min();
    match (drained_after, found_after) {
        (Some(_), Some(_)) => {}
        _ => failures.push(format!(
            "not caught up {CATCH_UP:?} after Meilisearch's return: outbox drained after \
             {drained_after:?}, {} of {} acknowledged messages findable{}",
            found.acked_found,
            o.acked.total(),
            last_error.map_or(String::new(), |e| format!(" (last error: {e})"))
        )),
    }
    let phase = |from: Duration, to: Duration| {
        latency_figures(
            o.attempts
                .iter()
                .filter(|t| t.at >= from && t.at < to)
                .map(|t| t.took)
                .collect(),
        )
    };
    // The backlog is back to its level before the outage (the steady state under load).
    let normal = samples
        .iter()
        .filter(|(at, _)| *at < down_at)
        .filter_map(|(_, n)| *n)
        .max()
        .unwrap_or_default();
    let backlog_cleared = samples
        .iter()
        .find(|(at, n)| *at >= back_at && n.is_some_and(|n| n <= normal))
        .map(|(at, _)| at.saturating_sub(back_at));
    let backlog_max = samples
        .iter()
        .filter_map(|(_, n)| *n)
        .max()
        .unwrap_or_default();
    let mut figures = base_figures(&o);
    figures["outage_secs"] = json!(outage.as_secs());
    figures["meili_restart_to_healthy_ms"] = json!(restart.as_millis() as u64);
    figures["send_latency_before"] = phase(Duration::ZERO, down_at);
    figures["send_latency_meili_down"] = phase(down_at, back_at);
    figures["send_latency_after_return"] = phase(back_at, Duration::MAX);
    figures["searches_by_status"] = json!(by_status);
    figures["searches_503_while_down"] = json!(down_503);
    figures["search_slowest_ms"] = json!(slowest.as_millis() as u64);
    figures["search_bound_ms"] = json!(bound.as_millis() as u64);
    figures["search_200_after_return_ms"] = json!(search_back.map(|d| d.as_millis() as u64));
    figures["outbox_backlog_max"] = json!(backlog_max);
    figures["outbox_backlog_before_outage_max"] = json!(normal);
    figures["outbox_backlog_cleared_after_return_secs"] =
        json!(backlog_cleared.map(|d| d.as_secs_f64()));
    figures["sends_stopped_after_return_secs"] = json!(sends_stopped_at.as_secs_f64());
    figures["outbox_drained_after_return_secs"] = json!(drained_after.map(|d| d.as_secs_f64()));
    figures["all_findable_after_return_secs"] = json!(found_after.map(|d| d.as_secs_f64()));
    figures["acknowledged_findable"] = json!(found.acked_found);
    figures["search_results"] = json!(found.results);
    Ok(Report {
        scenario: "meili",
        clean: failures.is_empty(),
        failures,
        figures,
    })
}
