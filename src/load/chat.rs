//! `chat`: U users in R rooms, each user one WebSocket client and one sender. Senders post
//! stamped messages (REST, `POST /api/messages`) at an even share of the total rate for the
//! duration, over at most `--http-connections` HTTP connections shared by all senders (a send
//! waits for one when all are busy); then the run drains (until every expected delivery
//! arrived, or the drain limit); then every client's log goes through the delivery checker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Semaphore, watch};

use super::api::Api;
use super::args::ChatArgs;
use super::checker::{self, Acked, Stamp, StreamKey, Tally};
use super::latency::{Percentiles, SharedLatency, now_nanos};
use super::setup::{self, SetupOptions, Shape};
use super::shard::ShardDigest;
use super::target::Target;
use super::wsclient::{self, ConnPlan, Dial, Protocol, ReaderShared};
use super::{progress, report};

#[derive(Debug, Serialize)]
pub struct ChatSummary {
    pub scenario: &'static str,
    pub users: usize,
    pub rooms: usize,
    pub rooms_per_user: usize,
    pub target_rate: f64,
    pub duration_secs: u64,
    pub connections: u64,
    pub connection_failures: BTreeMap<String, u64>,
    /// Clients whose connection ended before the run did, by reason.
    pub dropped: BTreeMap<String, u64>,
    pub sent: u64,
    pub acknowledged: u64,
    /// Failed sends by HTTP status (0: no response).
    pub send_errors: BTreeMap<u16, u64>,
    pub acknowledged_per_sec: f64,
    pub deliveries_per_sec: f64,
    pub drain_secs: f64,
    #[serde(flatten)]
    pub tally: Tally,
    /// Send (content stamp) → receive, every delivery.
    pub latency: Percentiles,
    /// `POST /api/messages`: from the send's scheduled time to its reply (waiting for an HTTP
    /// connection, and a sender running behind its schedule, count).
    pub ack_latency: Percentiles,
    /// HTTP connections the senders shared (`--http-connections`, per process).
    pub http_connections: u32,
    /// How long each send waited for one of them, every send.
    pub connection_wait: Percentiles,
    pub clean: bool,
    /// With `--shard I/N` (N > 1): what `merge` needs from this shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardDigest>,
}

/// What one sender did.
#[derive(Default)]
struct SenderOutcome {
    sent: u64,
    acked: Acked,
    errors: BTreeMap<u16, u64>,
}

pub async fn run(a: &ChatArgs) -> anyhow::Result<ChatSummary> {
    let c = &a.common;
    let targets = Target::parse_all(&c.server)?;
    let target = targets[0].clone();
    let api = Api::new(&target)?;
    // Sender `i` posts to `apis[i % len]`, as its connection goes to `targets[i % len]`; all
    // senders share `http_connections` requests in flight (so at most about that many
    // connections), whichever server they go to.
    let http_connections = a.http_connections as usize; // at least 1 (the argument's range)
    let apis = targets
        .iter()
        .map(|t| Api::with_idle(t, http_connections))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = Arc::new(Semaphore::new(http_connections));
    let shape = Shape {
        users: a.users,
        rooms: a.rooms,
        rooms_per_user: a.rooms_per_user,
    };
    let opts = SetupOptions {
        api: &api,
        server: &target.base,
        prefix: c.prefix.as_deref(),
        reuse: c.reuse.as_deref(),
        concurrency: c.setup_concurrency,
        quiet: c.quiet,
    };
    let shard = a.shard;
    if !shard.is_whole() {
        anyhow::ensure!(
            c.reuse.as_deref().is_some_and(|p| p.exists()) && a.run_id.is_some(),
            "--shard needs an existing --reuse file (every shard must use the same users) \
             and a --run-id shared by all shards"
        );
    }
    let pop = setup::population(&opts, shape).await?;
    // The users this process drives (all of them unless sharded).
    let mine: Vec<usize> = (0..pop.users.len()).filter(|i| shard.owns(*i)).collect();
    let dial = Dial {
        targets,
        source_ips: c.source_ips,
        read_buffer: c.read_buffer,
        protocol: Protocol::Fechatter,
    };
    let shared = ReaderShared {
        run: a.run_id.unwrap_or_else(rand::random),
        delivered: Arc::new(AtomicU64::new(0)),
        latency: SharedLatency::default(),
        keep_arrivals: false,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let plans: Vec<ConnPlan> = mine
        .iter()
        .map(|&i| ConnPlan {
            token: pop.users[i].token.clone(),
            rooms: pop.rooms_of(i),
        })
        .collect();
    let bar = progress::bar(c.quiet, plans.len() as u64, "connect");
    let opened =
        wsclient::open_all(&dial, plans, c.connect_concurrency, &shared, &stop_rx, &bar).await;
    bar.finish_and_clear();
    let connected: Vec<usize> = opened.readers.iter().map(|(i, _)| mine[*i]).collect();

    if a.warmup_secs > 0 {
        // Not synchronisation: the connect wave's own work (sessions, presence) settles
        // before the schedule starts, so it is not measured as the sends' latency.
        tokio::time::sleep(Duration::from_secs(a.warmup_secs)).await;
    }
    let ack_latency = SharedLatency::default();
    let connection_wait = SharedLatency::default();
    let duration = Duration::from_secs(a.duration_secs);
    let bar = progress::timer(c.quiet, a.duration_secs, "send");
    let started = Instant::now();
    let started_wall = now_nanos();
    let senders: Vec<_> = mine
        .iter()
        .map(|&i| {
            tokio::spawn(send_for(
                apis[i % apis.len()].clone(),
                pop.users[i].clone(),
                pop.rooms_of(i),
                Schedule::new(a, i, started, started_wall, duration),
                shared.run,
                a.message_bytes,
                Gate {
                    permits: gate.clone(),
                    ack_latency: ack_latency.clone(),
                    wait: connection_wait.clone(),
                },
            ))
        })
        .collect();
    let mut sent = SenderOutcome::default();
    for s in senders {
        if let Ok(o) = s.await {
            sent.sent += o.sent;
            sent.acked.merge(o.acked);
            for (k, v) in o.errors {
                *sent.errors.entry(k).or_insert(0) += v;
            }
        }
    }
    let send_secs = started.elapsed().as_secs_f64();
    bar.finish_and_clear();

    let expected: u64 = connected
        .iter()
        .flat_map(|i| pop.rooms_of(*i))
        .map(|room| sent.acked.in_room(room))
        .sum();
    let drained = if shard.is_whole() {
        wsclient::drain(
            &shared.delivered,
            expected,
            Duration::from_secs(a.drain_secs),
        )
        .await
    } else {
        // Other shards' messages arrive too, in numbers this process does not know: wait
        // until deliveries stop for a while (or the drain limit).
        drain_quiet(&shared.delivered, Duration::from_secs(a.drain_secs)).await
    };
    let _ = stop_tx.send(true);
    let outcomes = wsclient::join_readers(opened.readers).await;
    let tally = checker::tally(&sent.acked, outcomes.iter().map(|o| &o.log));
    let mut dropped = BTreeMap::new();
    for o in &outcomes {
        if let Some(why) = &o.ended_early {
            *dropped.entry(why.clone()).or_insert(0) += 1;
        }
    }
    let acknowledged = sent.acked.total();
    let latency = shared.latency.snapshot();
    let ack_latency = ack_latency.snapshot();
    let connection_wait = connection_wait.snapshot();
    let digest = (!shard.is_whole()).then(|| ShardDigest {
        index: shard.index,
        count: shard.count,
        run_id: shared.run,
        acked: sent.acked.digest(),
        clients: outcomes.iter().map(|o| o.log.digest()).collect(),
        latency: latency.buckets(),
        ack_latency: ack_latency.buckets(),
        connection_wait: connection_wait.buckets(),
    });
    Ok(ChatSummary {
        scenario: "chat",
        users: a.users,
        rooms: a.rooms,
        rooms_per_user: a.rooms_per_user,
        target_rate: a.rate,
        duration_secs: a.duration_secs,
        connections: outcomes.len() as u64,
        connection_failures: opened.failures,
        dropped,
        sent: sent.sent,
        acknowledged,
        send_errors: sent.errors,
        acknowledged_per_sec: report::rate(acknowledged, send_secs),
        deliveries_per_sec: report::rate(tally.delivered, send_secs + drained.as_secs_f64()),
        drain_secs: drained.as_secs_f64(),
        clean: tally.is_clean(),
        tally,
        latency: latency.summary(),
        ack_latency: ack_latency.summary(),
        http_connections: a.http_connections,
        connection_wait: connection_wait.summary(),
        shard: digest,
    })
}

/// How long deliveries must pause before a shard's drain ends.
const QUIET: Duration = Duration::from_secs(2);

/// Waits until `delivered` has not moved for [`QUIET`], at most `max`; returns the time taken.
async fn drain_quiet(delivered: &AtomicU64, max: Duration) -> Duration {
    let started = Instant::now();
    let mut last = delivered.load(std::sync::atomic::Ordering::Relaxed);
    let mut still_since = Instant::now();
    while started.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = delivered.load(std::sync::atomic::Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= QUIET {
            break;
        }
    }
    started.elapsed()
}

/// When one sender sends: an even share of the total rate, senders staggered over one period.
/// Send `k` is due at `first + k × period`; a sender running late sends at once (catching up)
/// and its latencies still run from the due time (no coordinated omission).
struct Schedule {
    first: tokio::time::Instant,
    period: Duration,
    until: tokio::time::Instant,
    /// `started` on the clock stamps are written with (ns since the Unix epoch).
    start: tokio::time::Instant,
    start_wall: u64,
}

impl Schedule {
    fn new(
        a: &ChatArgs,
        i: usize,
        started: Instant,
        started_wall: u64,
        duration: Duration,
    ) -> Schedule {
        let users = a.users.max(1) as f64;
        let period = Duration::from_secs_f64((users / a.rate.max(0.001)).max(0.001));
        let start = tokio::time::Instant::from_std(started);
        Schedule {
            first: start + period.mul_f64(i as f64 / users),
            period,
            until: start + duration,
            start,
            start_wall: started_wall,
        }
    }

    /// When send `k` is due.
    fn due(&self, k: u64) -> tokio::time::Instant {
        self.first + self.period.mul_f64(k as f64)
    }

    /// `at` as stamp time (ns since the Unix epoch).
    fn wall_nanos(&self, at: tokio::time::Instant) -> u64 {
        self.start_wall + at.saturating_duration_since(self.start).as_nanos() as u64
    }
}

/// The HTTP connections all senders share, and what the senders record about their sends.
struct Gate {
    /// One permit per connection: a send holds one while its request is in flight.
    permits: Arc<Semaphore>,
    /// Due time → reply.
    ack_latency: SharedLatency,
    /// Time spent waiting for a permit.
    wait: SharedLatency,
}

async fn send_for(
    api: Api,
    user: setup::User,
    rooms: Vec<i64>,
    schedule: Schedule,
    run: u32,
    message_bytes: usize,
    gate: Gate,
) -> SenderOutcome {
    let mut out = SenderOutcome::default();
    let mut next_n: BTreeMap<i64, u64> = BTreeMap::new();
    let mut latency = gate.ack_latency.recorder();
    let mut waits = gate.wait.recorder();
    for k in 0u64.. {
        let due = schedule.due(k);
        if due >= schedule.until || rooms.is_empty() {
            break;
        }
        tokio::time::sleep_until(due).await;
        let room = rooms[k as usize % rooms.len()];
        let counter = next_n.entry(room).or_insert(0);
        let n = *counter;
        *counter += 1;
        // Send→receive runs from the due time too: the stamp carries it.
        let stamp = Stamp {
            run,
            sender: user.id,
            n,
            sent_nanos: schedule.wall_nanos(due),
        };
        let body = json!({"chat_id": room, "content": stamp.content(message_bytes)});
        out.sent += 1;
        let asked = Instant::now();
        // The semaphore is never closed; without a permit (cannot happen) the send goes anyway.
        let permit = gate.permits.acquire().await.ok();
        waits.record(asked.elapsed().as_micros() as u64);
        let reply = api
            .call(
                Method::POST,
                "/api/messages",
                Some(&user.token),
                Some(&body),
            )
            .await;
        drop(permit);
        match reply {
            Ok(r) if r.status == 201 => {
                latency.record(
                    tokio::time::Instant::now()
                        .saturating_duration_since(due)
                        .as_micros() as u64,
                );
                out.acked.insert(
                    StreamKey {
                        room,
                        sender: user.id,
                    },
                    n,
                );
            }
            Ok(r) => *out.errors.entry(r.status).or_insert(0) += 1,
            Err(_) => *out.errors.entry(0).or_insert(0) += 1,
        }
    }
    out
}

/// Prints the table for people.
pub fn print(s: &ChatSummary) {
    let errors: u64 = s.send_errors.values().sum();
    report::print_table(
        &format!(
            "chat: {} users in {} rooms ({} each), {} msg/s for {} s",
            s.users, s.rooms, s.rooms_per_user, s.target_rate, s.duration_secs
        ),
        &[
            (
                "connections",
                format!(
                    "{} open, {} failed, {} dropped",
                    s.connections,
                    s.connection_failures.values().sum::<u64>(),
                    s.dropped.values().sum::<u64>()
                ),
            ),
            (
                "sent / acked",
                format!(
                    "{} / {} ({:.1} acked/s, {} errors {:?})",
                    s.sent, s.acknowledged, s.acknowledged_per_sec, errors, s.send_errors
                ),
            ),
            (
                "delivered",
                format!(
                    "{} of {} expected ({:.0}/s, drain {:.1} s)",
                    s.tally.delivered, s.tally.expected, s.deliveries_per_sec, s.drain_secs
                ),
            ),
            (
                "lost / dup / reordered",
                format!(
                    "{} / {} / {}",
                    s.tally.lost, s.tally.duplicated, s.tally.out_of_order
                ),
            ),
            ("send→receive", s.latency.cell()),
            ("send ack", s.ack_latency.cell()),
            (
                "connection wait",
                // Waits are recorded at 1 µs at least: under 10 µs is no wait.
                if s.connection_wait.max_ms >= 0.01 {
                    format!(
                        "{} (of {} HTTP connections)",
                        s.connection_wait.cell(),
                        s.http_connections
                    )
                } else {
                    format!("none (of {} HTTP connections)", s.http_connections)
                },
            ),
            ("verdict", if s.clean { "clean" } else { "FAILED" }.into()),
        ],
    );
}
