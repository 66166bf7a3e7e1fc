//! `fanout`: one room, N member connections, one sender posting messages one after the other.
//! Measures deliveries per second (from the first send to the last arrival) and, per message,
//! the time until the last member had it. With `--baseline-url` the same measurement runs
//! against the plain broadcast server (`baseline-server`) right after, and the ratio is
//! reported: the cost of everything the real server does on top of a bare broadcast. With
//! `--nats-ws-url` it runs once more through a NATS server's WebSocket listener (a widely used
//! broker: one subject, one publisher; [`super::nats`]), with the same receivers and checker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use super::api::Api;
use super::args::FanoutArgs;
use super::checker::{self, Acked, Stamp, StreamKey, Tally};
use super::latency::{Percentiles, SharedLatency, now_nanos};
use super::setup::{self, SetupOptions, Shape};
use super::target::Target;
use super::wsclient::{self, ConnPlan, Dial, Protocol, ReaderShared};
use super::{baseline, nats, progress, report, rss};

/// Pause after the connections are up, so the presence frames of the connect burst are out of
/// the way before the first send.
const SETTLE: Duration = Duration::from_secs(2);

/// One fan-out measurement against one server.
#[derive(Debug, Serialize)]
pub struct FanoutResult {
    pub server: String,
    /// `fechatter`, `baseline` (the actix-ws broadcast) or `nats`.
    pub kind: &'static str,
    pub baseline: bool,
    pub members: usize,
    pub connections: u64,
    pub connection_failures: BTreeMap<String, u64>,
    pub dropped: BTreeMap<String, u64>,
    pub messages: u64,
    pub acknowledged: u64,
    pub message_bytes: usize,
    pub deliveries_per_sec: f64,
    /// Per message: last member's arrival − send time; median and worst over the messages.
    pub time_to_last_member_median_ms: f64,
    pub time_to_last_member_max_ms: f64,
    /// First send → last arrival.
    pub elapsed_secs: f64,
    /// The server's CPU time per delivery over the send phase (with `--server-pid`).
    pub server_cpu_us_per_delivery: Option<f64>,
    #[serde(flatten)]
    pub tally: Tally,
    pub latency: Percentiles,
    pub clean: bool,
}

#[derive(Debug, Serialize)]
pub struct FanoutSummary {
    pub scenario: &'static str,
    pub fechatter: FanoutResult,
    pub baseline: Option<FanoutResult>,
    /// fechatter deliveries/s ÷ baseline deliveries/s.
    pub ratio: Option<f64>,
    /// The NATS server's run (`--nats-ws-url`).
    pub broker: Option<FanoutResult>,
    /// fechatter deliveries/s ÷ the broker's.
    pub broker_ratio: Option<f64>,
    pub clean: bool,
}

/// What a measurement runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fechatter,
    Baseline,
    Nats,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Fechatter => "fechatter",
            Kind::Baseline => "baseline",
            Kind::Nats => "nats",
        }
    }
}

pub async fn run(a: &FanoutArgs) -> anyhow::Result<FanoutSummary> {
    let kind = if a.baseline {
        Kind::Baseline
    } else {
        Kind::Fechatter
    };
    let main = measure(a, &a.common.server, kind, a.server_pid).await?;
    let baseline = match &a.baseline_url {
        Some(url) => Some(measure(a, url, Kind::Baseline, a.baseline_pid).await?),
        None => None,
    };
    let broker = match &a.nats_ws_url {
        Some(url) => Some(measure(a, url, Kind::Nats, a.nats_pid).await?),
        None => None,
    };
    let ratio_to = |other: &Option<FanoutResult>| {
        other
            .as_ref()
            .filter(|b| b.deliveries_per_sec > 0.0)
            .map(|b| main.deliveries_per_sec / b.deliveries_per_sec)
    };
    let ratio = ratio_to(&baseline);
    let broker_ratio = ratio_to(&broker);
    Ok(FanoutSummary {
        scenario: "fanout",
        clean: main.clean
            && baseline.as_ref().is_none_or(|b| b.clean)
            && broker.as_ref().is_none_or(|b| b.clean),
        fechatter: main,
        baseline,
        ratio,
        broker,
        broker_ratio,
    })
}

/// Posts the sender's messages: to the server's REST API, or as the broker's publisher.
enum Sender {
    Http {
        api: Api,
        token: String,
    },
    Nats {
        publisher: Box<nats::Publisher>,
        subject: String,
        seq: i64,
    },
}

impl Sender {
    /// Sends `content` to `room`; true once acknowledged (201, or the broker's `PONG`).
    async fn send(&mut self, room: i64, content: String) -> bool {
        match self {
            Sender::Http { api, token } => {
                let body = json!({"chat_id": room, "content": content});
                let reply = api
                    .call(Method::POST, "/api/messages", Some(token), Some(&body))
                    .await;
                reply.is_ok_and(|r| r.status == 201)
            }
            Sender::Nats {
                publisher,
                subject,
                seq,
            } => {
                *seq += 1;
                let (_, frame) = baseline::created(*seq, room, &content);
                publisher.publish(subject, &frame).await.is_ok()
            }
        }
    }

    async fn close(self) {
        if let Sender::Nats { publisher, .. } = self {
            publisher.close().await;
        }
    }
}

/// The sender, the room and a token per connection.
struct Cast {
    sender_id: i64,
    sender_token: String,
    room: i64,
    tokens: Vec<String>,
}

async fn cast(a: &FanoutArgs, api: &Api, target: &Target, kind: Kind) -> anyhow::Result<Cast> {
    let per_user = a.conns_per_user.max(1);
    if kind != Kind::Fechatter {
        return Ok(Cast {
            sender_id: 1,
            sender_token: "baseline".into(),
            room: 1,
            tokens: vec!["baseline".into(); a.members],
        });
    }
    let c = &a.common;
    let shape = Shape {
        users: a.members.div_ceil(per_user),
        rooms: 1,
        rooms_per_user: 1,
    };
    let opts = SetupOptions {
        api,
        server: &target.base,
        prefix: c.prefix.as_deref(),
        reuse: c.reuse.as_deref(),
        concurrency: c.setup_concurrency,
        quiet: c.quiet,
    };
    let pop = setup::population(&opts, shape).await?;
    Ok(Cast {
        sender_id: pop.owner.id,
        sender_token: pop.owner.token.clone(),
        room: pop.rooms[0],
        tokens: (0..a.members)
            .map(|j| pop.users[j / per_user].token.clone())
            .collect(),
    })
}

async fn measure(
    a: &FanoutArgs,
    server: &str,
    kind: Kind,
    pid: Option<u32>,
) -> anyhow::Result<FanoutResult> {
    let c = &a.common;
    let run: u32 = rand::random();
    let (targets, protocol) = match kind {
        Kind::Nats => (
            vec![nats::parse_target(server)?],
            Protocol::Nats {
                subject: format!("fechatter.fanout.{run}"),
            },
        ),
        Kind::Fechatter | Kind::Baseline => (Target::parse_all(server)?, Protocol::Fechatter),
    };
    let target = targets[0].clone();
    let api = Api::new(&target)?;
    let cast = cast(a, &api, &target, kind).await?;
    let dial = Dial {
        targets,
        source_ips: c.source_ips,
        read_buffer: c.read_buffer,
        protocol: protocol.clone(),
    };
    let mut sender = match &protocol {
        Protocol::Nats { subject } => Sender::Nats {
            publisher: Box::new(nats::Publisher::open(&dial, cast.tokens.len()).await?),
            subject: subject.clone(),
            seq: 0,
        },
        Protocol::Fechatter => Sender::Http {
            api,
            token: cast.sender_token.clone(),
        },
    };
    let shared = ReaderShared {
        run,
        delivered: Arc::new(AtomicU64::new(0)),
        latency: SharedLatency::default(),
        keep_arrivals: true,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let plans = cast
        .tokens
        .iter()
        .map(|t| ConnPlan {
            token: t.clone(),
            rooms: vec![cast.room],
        })
        .collect::<Vec<_>>();
    let bar = progress::bar(c.quiet, plans.len() as u64, "connect");
    let opened =
        wsclient::open_all(&dial, plans, c.connect_concurrency, &shared, &stop_rx, &bar).await;
    bar.finish_and_clear();
    let connections = opened.readers.len() as u64;
    tokio::time::sleep(SETTLE).await;

    let bar = progress::bar(c.quiet, a.messages, "send");
    let cpu_before = pid.and_then(rss::cpu_micros);
    let mut acked = Acked::default();
    let mut sent_at = BTreeMap::new();
    for n in 0..a.messages {
        let stamp = Stamp {
            run: shared.run,
            sender: cast.sender_id,
            n,
            sent_nanos: now_nanos(),
        };
        if sender.send(cast.room, stamp.content(a.message_bytes)).await {
            acked.insert(
                StreamKey {
                    room: cast.room,
                    sender: cast.sender_id,
                },
                n,
            );
            sent_at.insert(n, stamp.sent_nanos);
        }
        bar.inc(1);
        if a.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
        }
    }
    bar.finish_and_clear();
    let expected = acked.total() * connections;
    wsclient::drain(
        &shared.delivered,
        expected,
        Duration::from_secs(a.drain_secs),
    )
    .await;
    let cpu_used = pid
        .and_then(rss::cpu_micros)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let _ = stop_tx.send(true);
    sender.close().await;
    let outcomes = wsclient::join_readers(opened.readers).await;
    let tally = checker::tally(&acked, outcomes.iter().map(|o| &o.log));

    let mut last_arrival: BTreeMap<u64, u64> = BTreeMap::new();
    for (n, at) in outcomes.iter().flat_map(|o| o.arrivals.iter()) {
        let e = last_arrival.entry(*n).or_insert(0);
        *e = (*e).max(*at);
    }
    let mut to_last: Vec<f64> = last_arrival
        .iter()
        .filter_map(|(n, at)| sent_at.get(n).map(|s| at.saturating_sub(*s) as f64 / 1e6))
        .collect();
    to_last.sort_by(f64::total_cmp);
    let first_send = sent_at.values().min().copied().unwrap_or(0);
    let last = last_arrival.values().max().copied().unwrap_or(first_send);
    let elapsed_secs = last.saturating_sub(first_send) as f64 / 1e9;
    let mut dropped = BTreeMap::new();
    for o in &outcomes {
        if let Some(why) = &o.ended_early {
            *dropped.entry(why.clone()).or_insert(0) += 1;
        }
    }
    Ok(FanoutResult {
        server: target.base.clone(),
        kind: kind.name(),
        baseline: kind == Kind::Baseline,
        members: a.members,
        connections,
        connection_failures: opened.failures,
        dropped,
        messages: a.messages,
        acknowledged: acked.total(),
        message_bytes: a.message_bytes,
        deliveries_per_sec: report::rate(tally.delivered, elapsed_secs),
        time_to_last_member_median_ms: to_last.get(to_last.len() / 2).copied().unwrap_or(0.0),
        time_to_last_member_max_ms: to_last.last().copied().unwrap_or(0.0),
        elapsed_secs,
        server_cpu_us_per_delivery: cpu_used
            .filter(|_| tally.delivered > 0)
            .map(|us| us as f64 / tally.delivered as f64),
        clean: tally.is_clean(),
        tally,
        latency: shared.latency.snapshot().summary(),
    })
}

fn rows(r: &FanoutResult) -> Vec<(&'static str, String)> {
    vec![
        (
            "connections",
            format!(
                "{} open, {} failed, {} dropped",
                r.connections,
                r.connection_failures.values().sum::<u64>(),
                r.dropped.values().sum::<u64>()
            ),
        ),
        (
            "messages acked",
            format!("{} of {}", r.acknowledged, r.messages),
        ),
        (
            "deliveries",
            format!(
                "{} of {} expected, {:.0}/s over {:.2} s",
                r.tally.delivered, r.tally.expected, r.deliveries_per_sec, r.elapsed_secs
            ),
        ),
        (
            "to last member",
            format!(
                "median {:.1} ms, max {:.1} ms",
                r.time_to_last_member_median_ms, r.time_to_last_member_max_ms
            ),
        ),
        ("send→receive", r.latency.cell()),
        (
            "server CPU per delivery",
            r.server_cpu_us_per_delivery
                .map_or("-".into(), |us| format!("{us:.2} µs")),
        ),
        (
            "lost / dup / reordered",
            format!(
                "{} / {} / {}",
                r.tally.lost, r.tally.duplicated, r.tally.out_of_order
            ),
        ),
    ]
}

pub fn print(s: &FanoutSummary) {
    let r = &s.fechatter;
    report::print_table(
        &format!(
            "fanout: {} members, {} messages of {} bytes ({})",
            r.members, r.messages, r.message_bytes, r.server
        ),
        &rows(r),
    );
    if let Some(b) = &s.baseline {
        report::print_table(&format!("baseline ({})", b.server), &rows(b));
    }
    if let Some(b) = &s.broker {
        report::print_table(&format!("broker: NATS ({})", b.server), &rows(b));
    }
    if let Some(ratio) = s.ratio {
        println!("  fechatter / baseline deliveries/s: {ratio:.3}");
    }
    if let Some(ratio) = s.broker_ratio {
        println!("  fechatter / NATS deliveries/s: {ratio:.3}");
    }
    println!("  verdict: {}", if s.clean { "clean" } else { "FAILED" });
}
