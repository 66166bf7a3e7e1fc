//! WebSocket clients of the server's real-time protocol: connect from a chosen loopback source
//! address, authenticate with the auth frame, then read until told to stop, feeding each
//! `message.created` into the client's [`ClientLog`] and the latency histogram.
//!
//! Reading never stops while a client is held (even an "idle" one): tungstenite answers the
//! server's pings while reading, and a client that does not is dropped after the server's
//! heartbeat timeout.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use indicatif::ProgressBar;
use serde::Deserialize;
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::checker::{ClientLog, Observation, Stamp, StreamKey};
use super::latency::{Recorder, SharedLatency, now_nanos};
use super::nats;
use super::target::{Target, source_ip};

/// Longest a connection may take from TCP connect to `auth.success`.
const OPEN_DEADLINE: Duration = Duration::from_secs(30);
/// Longest a client waits for its close handshake when stopping.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

pub type Ws = WebSocketStream<TcpStream>;

/// How clients reach the server.
#[derive(Debug, Clone)]
pub struct Dial {
    /// Connection `i` goes to `targets[i % len]` (never empty).
    pub targets: Vec<Target>,
    /// Connections are spread over 127.0.0.1 … 127.0.0.`source_ips`.
    pub source_ips: u8,
    /// tokio-tungstenite's read buffer per connection (its default, 128 KiB, costs ~138 KB
    /// of client RSS per idle connection).
    pub read_buffer: usize,
    /// What the server speaks.
    pub protocol: Protocol,
}

/// The protocol of the clients' server.
#[derive(Debug, Clone, Default)]
pub enum Protocol {
    /// Fechatter's (and `baseline-server`'s): auth frame, JSON text frames.
    #[default]
    Fechatter,
    /// The NATS server's WebSocket listener: subscribe to `subject`; every `MSG` payload is a
    /// frame of Fechatter's protocol ([`super::nats`]).
    Nats { subject: String },
}

/// Opens connection number `i` and authenticates with `token`.
pub async fn open(dial: &Dial, i: usize, token: &str) -> anyhow::Result<Ws> {
    let opening = async {
        match &dial.protocol {
            Protocol::Fechatter => {
                open_inner(
                    dial,
                    &dial.targets[i % dial.targets.len()],
                    source_ip(i, dial.source_ips),
                    token,
                )
                .await
            }
            Protocol::Nats { subject } => nats::open(dial, i, Some(subject)).await,
        }
    };
    tokio::time::timeout(OPEN_DEADLINE, opening)
        .await
        .map_err(|_| anyhow::anyhow!("no auth.success within {OPEN_DEADLINE:?}"))?
}

/// A WebSocket handshake with `url` at `addr`, from the source address `source`.
pub(super) async fn handshake(
    dial: &Dial,
    addr: SocketAddr,
    url: &str,
    source: Ipv4Addr,
) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4().context("socket")?;
    socket
        .bind(SocketAddr::new(source.into(), 0))
        .with_context(|| format!("bind {source}"))?;
    let stream = socket.connect(addr).await.context("connect")?;
    stream.set_nodelay(true)?;
    let config = WebSocketConfig::default().read_buffer_size(dial.read_buffer);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .context("handshake")?;
    Ok(ws)
}

async fn open_inner(
    dial: &Dial,
    target: &Target,
    source: Ipv4Addr,
    token: &str,
) -> anyhow::Result<Ws> {
    let mut ws = handshake(dial, target.addr, &target.ws_url(), source).await?;
    let auth = json!({"type": "auth", "token": format!("Bearer {token}")}).to_string();
    ws.send(Message::text(auth)).await.context("auth frame")?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match frame_kind(&t).as_deref() {
                Some("auth.success") => return Ok(ws),
                Some("error") => bail!("refused: {t}"),
                _ => continue,
            },
            Some(Ok(Message::Close(frame))) => {
                bail!("closed before auth.success: {}", close_text(frame.as_ref()))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("before auth.success: {e}"),
            None => bail!("closed before auth.success"),
        }
    }
}

fn close_text(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    frame.map_or_else(
        || "no close frame".into(),
        |f| format!("{} {}", u16::from(f.code), f.reason),
    )
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

fn frame_kind(text: &str) -> Option<String> {
    serde_json::from_str::<Kind>(text)
        .ok()
        .map(|k| k.kind.into_owned())
}

#[derive(Deserialize)]
struct Created<'a> {
    #[serde(borrow)]
    data: CreatedData<'a>,
}

#[derive(Deserialize)]
struct CreatedData<'a> {
    #[serde(borrow)]
    message: CreatedMessage<'a>,
}

#[derive(Deserialize)]
struct CreatedMessage<'a> {
    chat_id: i64,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

/// A `message.created` frame of the tool: its chat and stamp.
pub fn parse_delivery(text: &str) -> Option<(i64, Stamp)> {
    // Every other frame kind is skipped without parsing.
    if !text.starts_with(r#"{"type":"message.created""#) {
        return None;
    }
    let created: Created = serde_json::from_str(text).ok()?;
    let stamp = Stamp::parse(&created.data.message.content)?;
    Some((created.data.message.chat_id, stamp))
}

/// Shared by every reader of a run.
#[derive(Clone)]
pub struct ReaderShared {
    pub run: u32,
    /// Distinct deliveries of this run's messages (for the drain phase's early exit).
    pub delivered: Arc<AtomicU64>,
    pub latency: SharedLatency,
    /// Keep `(n, receive time)` per delivery (fan-out needs it per message).
    pub keep_arrivals: bool,
}

/// What one client saw.
pub struct ReaderOutcome {
    pub log: ClientLog,
    /// `(n, unix nanos)` per delivery when `keep_arrivals`.
    pub arrivals: Vec<(u64, u64)>,
    /// Why the connection ended before the stop signal, if it did.
    pub ended_early: Option<String>,
}

/// What a reader has seen so far.
struct Seen {
    log: ClientLog,
    latency: Recorder,
    arrivals: Vec<(u64, u64)>,
}

impl Seen {
    /// One frame of Fechatter's protocol.
    fn frame(&mut self, shared: &ReaderShared, text: &str) {
        let Some((chat_id, stamp)) = parse_delivery(text) else {
            return;
        };
        if stamp.run != shared.run {
            return;
        }
        let now = now_nanos();
        let key = StreamKey {
            room: chat_id,
            sender: stamp.sender,
        };
        if self.log.record(key, stamp.n) != Observation::Duplicate {
            shared.delivered.fetch_add(1, Ordering::Relaxed);
        }
        self.latency
            .record(now.saturating_sub(stamp.sent_nanos) / 1000);
        if shared.keep_arrivals {
            self.arrivals.push((stamp.n, now));
        }
    }
}

/// Reads `ws` until `stop` turns true (or the connection ends), then closes it. `protocol`
/// says how frames carry Fechatter's (see [`Protocol`]).
pub async fn read_until(
    mut ws: Ws,
    rooms: Vec<i64>,
    shared: ReaderShared,
    protocol: Protocol,
    mut stop: watch::Receiver<bool>,
) -> ReaderOutcome {
    let mut seen = Seen {
        log: ClientLog::new(rooms),
        latency: shared.latency.recorder(),
        arrivals: Vec::new(),
    };
    let mut nats = match protocol {
        Protocol::Fechatter => None,
        Protocol::Nats { .. } => Some(nats::Parser::default()),
    };
    let mut ended_early = None;
    while !*stop.borrow() {
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        match msg {
            Some(Ok(Message::Close(frame))) => {
                ended_early = Some(format!(
                    "closed by the server: {}",
                    close_text(frame.as_ref())
                ));
                break;
            }
            Some(Ok(msg)) => {
                let Some(parser) = nats.as_mut() else {
                    if let Message::Text(t) = &msg {
                        seen.frame(&shared, t);
                    }
                    continue;
                };
                let Some(bytes) = nats::frame_bytes(&msg) else {
                    continue;
                };
                let mut pings = 0;
                match parser.feed(bytes) {
                    Ok(ops) => {
                        for op in ops {
                            match op {
                                nats::Op::Msg(payload) => {
                                    if let Ok(text) = std::str::from_utf8(&payload) {
                                        seen.frame(&shared, text);
                                    }
                                }
                                nats::Op::Ping => pings += 1,
                                nats::Op::Err(e) => ended_early = Some(format!("server: {e}")),
                                nats::Op::Pong | nats::Op::Other => {}
                            }
                        }
                    }
                    Err(e) => ended_early = Some(format!("protocol: {e:#}")),
                }
                for _ in 0..pings {
                    if ws.send(nats::pong()).await.is_err() {
                        ended_early = Some("connection error: PONG".into());
                    }
                }
                if ended_early.is_some() {
                    break;
                }
            }
            Some(Err(e)) => {
                ended_early = Some(format!("connection error: {e}"));
                break;
            }
            None => {
                ended_early = Some("connection ended".into());
                break;
            }
        }
    }
    if ended_early.is_none() {
        let _ = tokio::time::timeout(CLOSE_DEADLINE, ws.close(None)).await;
    }
    ReaderOutcome {
        log: seen.log,
        arrivals: seen.arrivals,
        ended_early,
    }
}

/// One connection to open: its token and the chats it follows.
pub struct ConnPlan {
    pub token: String,
    pub rooms: Vec<i64>,
}

/// The readers of the connections that opened, and why the others did not.
pub struct Opened {
    /// (index in the plan, reader) of each connection that opened.
    pub readers: Vec<(usize, JoinHandle<ReaderOutcome>)>,
    /// Failure message → count.
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl Opened {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// Opens every planned connection, `concurrency` handshakes at a time, starting each one's
/// reader as soon as it is authenticated.
pub async fn open_all(
    dial: &Dial,
    plans: Vec<ConnPlan>,
    concurrency: usize,
    shared: &ReaderShared,
    stop: &watch::Receiver<bool>,
    bar: &ProgressBar,
) -> Opened {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut attempts = Vec::with_capacity(plans.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let dial = dial.clone();
        let shared = shared.clone();
        let stop = stop.clone();
        let bar = bar.clone();
        attempts.push(tokio::spawn(async move {
            let result = open(&dial, i, &plan.token).await;
            drop(permit);
            bar.inc(1);
            let protocol = dial.protocol.clone();
            result.map(|ws| tokio::spawn(read_until(ws, plan.rooms, shared, protocol, stop)))
        }));
    }
    let mut readers = Vec::with_capacity(attempts.len());
    let mut failures = BTreeMap::new();
    for (i, attempt) in attempts.into_iter().enumerate() {
        match attempt.await {
            Ok(Ok(reader)) => readers.push((i, reader)),
            Ok(Err(e)) => *failures.entry(failure_kind(&e)).or_insert(0) += 1,
            Err(e) => *failures.entry(format!("task: {e}")).or_insert(0) += 1,
        }
    }
    Opened {
        readers,
        failures,
        elapsed: started.elapsed(),
    }
}

/// A failure's message without per-connection details (ports), so equal causes group.
fn failure_kind(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split(" (os error")
        .next()
        .unwrap_or(&text)
        .chars()
        .take(160)
        .collect()
}

/// Waits for every reader (they stop once `stop` is sent).
pub async fn join_readers(readers: Vec<(usize, JoinHandle<ReaderOutcome>)>) -> Vec<ReaderOutcome> {
    let mut out = Vec::with_capacity(readers.len());
    for (_, r) in readers {
        if let Ok(outcome) = r.await {
            out.push(outcome);
        }
    }
    out
}

/// Waits until `delivered` reaches `expected` or `within` has passed; returns the time taken.
pub async fn drain(delivered: &AtomicU64, expected: u64, within: Duration) -> Duration {
    let started = Instant::now();
    while delivered.load(Ordering::Relaxed) < expected && started.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_message_created_frames() {
        let stamp = Stamp {
            run: 1,
            sender: 2,
            n: 3,
            sent_nanos: 4,
        };
        let message = json!({"id": 10, "chat_id": 9, "sender_id": 2,
            "sender": {"id": 2, "username": "u"}, "content": stamp.content(50),
            "created_at": "2026-01-01T00:00:00Z", "reactions": []});
        // As the server writes it: `type` first.
        let frame =
            format!(r#"{{"type":"message.created","id":"9.3","data":{{"message":{message}}}}}"#);
        assert_eq!(parse_delivery(&frame), Some((9, stamp)));
        assert_eq!(
            parse_delivery(r#"{"type":"presence.update","data":{}}"#),
            None
        );
        assert_eq!(
            frame_kind(r#"{"type":"auth.success","data":{}}"#).as_deref(),
            Some("auth.success")
        );
    }
}
