//! The clients of the fault suite, which survive the faults they are put through: a sender
//! retries an unacknowledged message with the same idempotency key until it is acknowledged
//! (or the run ends); a reader reconnects after every drop and resumes with its last event id,
//! checking every message (the delivery checker) and every chat's sequence (gap-free).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use super::checker::{Acked, ClientLog, Observation, Stamp, StreamKey};
use super::latency::now_nanos;
use super::wsclient::parse_delivery;

/// Pause before a retry or a reconnect.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One send attempt as the sender saw it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// Since the start of the run.
    pub at: Duration,
    /// HTTP status, 0 when there was no response (connection refused or reset).
    pub status: u16,
    pub took: Duration,
    /// A 503 carried `Retry-After`.
    pub retry_after: bool,
}

/// What one sender did.
#[derive(Debug, Default)]
pub struct SendLog {
    pub acked: Acked,
    pub attempts: Vec<Attempt>,
    /// Messages given up unacknowledged (a client error, or the run ended).
    pub abandoned: u64,
    /// Retries sent to the next base after no answer or a 5xx (a no-op with one base).
    pub failovers: u64,
}

/// A sender: posts stamped messages to `rooms` in turn, one every `period`, until `stop`.
/// It talks to `bases[0]` and moves to the next base (a cluster's next node) whenever an
/// attempt gets no answer or a 5xx, retrying there under the same idempotency key.
pub struct Sender {
    pub http: reqwest::Client,
    /// Server base URLs (never empty; one for a single server).
    pub bases: Vec<String>,
    pub token: String,
    pub user_id: i64,
    pub rooms: Vec<i64>,
    pub run: u32,
    pub period: Duration,
    pub message_bytes: usize,
    pub started: Instant,
    /// Most messages to send (then the sender idles until stopped).
    pub limit: u64,
}

impl Sender {
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> SendLog {
        let mut log = SendLog::default();
        let mut at_base = 0usize;
        let mut next_n: BTreeMap<i64, u64> = BTreeMap::new();
        let mut ticks = tokio::time::interval(self.period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut k = 0usize;
        'messages: while !*stop.borrow() && !self.rooms.is_empty() && (k as u64) < self.limit {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.changed() => break,
            }
            let room = self.rooms[k % self.rooms.len()];
            k += 1;
            let counter = next_n.entry(room).or_insert(0);
            let n = *counter;
            let stamp = Stamp {
                run: self.run,
                sender: self.user_id,
                n,
                sent_nanos: now_nanos(),
            };
            let body = json!({
                "chat_id": room,
                "content": stamp.content(self.message_bytes),
                "idempotency_key": format!("{}-{}-{room}-{n}", self.run, self.user_id),
            });
            loop {
                let t0 = Instant::now();
                let reply = self
                    .http
                    .post(format!(
                        "{}/api/messages",
                        self.bases[at_base % self.bases.len()]
                    ))
                    .bearer_auth(&self.token)
                    .json(&body)
                    .send()
                    .await;
                let (status, retry_after) = match &reply {
                    Ok(r) => (r.status().as_u16(), r.headers().contains_key("retry-after")),
                    Err(_) => (0, false),
                };
                if let Ok(r) = reply {
                    let _ = r.bytes().await;
                }
                log.attempts.push(Attempt {
                    at: t0.duration_since(self.started),
                    status,
                    took: t0.elapsed(),
                    retry_after,
                });
                match status {
                    201 => {
                        log.acked.insert(
                            StreamKey {
                                room,
                                sender: self.user_id,
                            },
                            n,
                        );
                        *counter += 1;
                        continue 'messages;
                    }
                    // Unavailable, server gone or restarting: the same message again, same key.
                    0 | 502 | 503 | 504 | 429 => {
                        if *stop.borrow() {
                            log.abandoned += 1;
                            break 'messages;
                        }
                        if status != 429 {
                            at_base += 1;
                            log.failovers += 1;
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    _ => {
                        // A refusal: this number is never acknowledged; the stream goes on
                        // after it (the checker sees a gap, not a loss).
                        log.abandoned += 1;
                        *counter += 1;
                        continue 'messages;
                    }
                }
            }
        }
        log
    }
}

/// Counters every reader of a run shares.
#[derive(Clone, Default)]
pub struct ReaderStats {
    /// Distinct deliveries of this run's messages.
    pub delivered: Arc<AtomicU64>,
    /// Successful authentications (first connects and resumes).
    pub authed: Arc<AtomicU64>,
    /// Readers currently connected and authenticated.
    pub connected: Arc<AtomicU64>,
}

/// What one reader saw.
#[derive(Debug)]
pub struct ReadLog {
    pub log: ClientLog,
    /// Resumes (reconnects after the first connect).
    pub resumes: u64,
    /// `resync.required` frames received.
    pub resyncs: u64,
    /// A chat's seq advanced by more than one between consecutive events of the connection
    /// (or went backwards).
    pub seq_gaps: u64,
    /// Close codes the server sent, by code.
    pub closes: BTreeMap<u16, u64>,
    /// Send → receive of every delivery, microseconds.
    pub latencies_us: Vec<u64>,
    /// This reader was a (deliberately) slow consumer.
    pub stalled: bool,
    /// Frames read before the first close by the server.
    pub frames_before_close: Option<u64>,
}

/// A reader: one WebSocket of `token`, reconnecting (resuming) until `stop`. While `bounce`
/// holds an odd number the reader stays disconnected; it reconnects when it turns even. It
/// connects to `ws_urls[0]` and moves to the next URL (a cluster's next node) after every drop
/// or failed connect.
pub struct Reader {
    /// WebSocket URLs (never empty; one for a single server).
    pub ws_urls: Vec<String>,
    /// Resume with the last event id after a drop (always, but for the suite's self-check,
    /// which reconnects without it and must then see losses).
    pub resume: bool,
    pub token: String,
    pub rooms: Vec<i64>,
    pub run: u32,
    pub stats: ReaderStats,
    /// A slow consumer: after each `auth.success`, reads nothing while this holds true.
    pub stall: Option<watch::Receiver<bool>>,
}

impl Reader {
    pub async fn run(
        self,
        mut stop: watch::Receiver<bool>,
        mut bounce: watch::Receiver<u32>,
    ) -> ReadLog {
        let mut out = ReadLog {
            log: ClientLog::new(self.rooms.clone()),
            resumes: 0,
            resyncs: 0,
            seq_gaps: 0,
            closes: BTreeMap::new(),
            latencies_us: Vec::new(),
            stalled: self.stall.is_some(),
            frames_before_close: None,
        };
        let mut frames: u64 = 0;
        let mut last_id: Option<String> = None;
        let mut seqs: BTreeMap<i64, i64> = BTreeMap::new();
        let mut first = true;
        let mut at_url = 0usize;
        while !*stop.borrow() {
            while *bounce.borrow() % 2 == 1 {
                tokio::select! {
                    _ = bounce.changed() => {}
                    _ = stop.changed() => return out,
                }
            }
            let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(
                    self.ws_urls[at_url % self.ws_urls.len()].as_str(),
                ),
            )
            .await
            else {
                at_url += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            };
            let mut auth = json!({"type": "auth", "token": format!("Bearer {}", self.token)});
            if let Some(id) = last_id.as_ref().filter(|_| self.resume) {
                auth["last_event_id"] = json!(id);
            }
            if ws.send(Message::text(auth.to_string())).await.is_err() {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            let mut authed = false;
            loop {
                let msg = tokio::select! {
                    biased;
                    _ = stop.changed() => None,
                    _ = bounce.changed() => None,
                    m = ws.next() => Some(m),
                };
                let Some(msg) = msg else {
                    // Stop, or bounce: drop the socket at once, as a crashed client would.
                    break;
                };
                match msg {
                    Some(Ok(Message::Text(t))) => {
                        frames += 1;
                        let v: Value = match serde_json::from_str(&t) {
                            Ok(v) => v,
                            Err(_) => continue,
                        };
                        match v["type"].as_str() {
                            Some("auth.success") => {
                                authed = true;
                                if !first {
                                    out.resumes += 1;
                                }
                                first = false;
                                self.stats.authed.fetch_add(1, Ordering::Relaxed);
                                self.stats.connected.fetch_add(1, Ordering::Relaxed);
                                if let Some(id) = v["data"]["last_event_id"].as_str() {
                                    track(&mut seqs, id, &mut out.seq_gaps, true);
                                    last_id = Some(id.to_string());
                                }
                                if let Some(stall) = &self.stall {
                                    let mut stall = stall.clone();
                                    while *stall.borrow() && !*stop.borrow() {
                                        tokio::select! {
                                            _ = stall.changed() => {}
                                            _ = stop.changed() => {}
                                        }
                                    }
                                }
                            }
                            Some("resync.required") => out.resyncs += 1,
                            _ => {}
                        }
                        if let Some(id) = v["id"].as_str() {
                            track(&mut seqs, id, &mut out.seq_gaps, false);
                            last_id = Some(id.to_string());
                        }
                        if let Some((chat, stamp)) = parse_delivery(&t)
                            && stamp.run == self.run
                        {
                            let key = StreamKey {
                                room: chat,
                                sender: stamp.sender,
                            };
                            if out.log.record(key, stamp.n) != Observation::Duplicate {
                                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                            }
                            out.latencies_us
                                .push(now_nanos().saturating_sub(stamp.sent_nanos) / 1000);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.map_or(1005, |f| u16::from(f.code));
                        *out.closes.entry(code).or_insert(0) += 1;
                        out.frames_before_close.get_or_insert(frames);
                        break;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => break,
                }
            }
            if authed {
                self.stats.connected.fetch_sub(1, Ordering::Relaxed);
            }
            drop(ws);
            at_url += 1;
            if !*stop.borrow() && (*bounce.borrow()).is_multiple_of(2) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        out
    }
}

/// Follows the per-chat seqs of a position id (the chats it lists): each chat's seq may only
/// grow by one per event
/// (`reset`: the position of a fresh `auth.success`, which may move by any amount forward, as
/// the server replays from the resumed position).
fn track(seqs: &mut BTreeMap<i64, i64>, id: &str, gaps: &mut u64, reset: bool) {
    // A checkpoint id (`<checkpoint>~<chat>.<seq>-…`) lists the chats that moved since it.
    let pairs = id.split_once('~').map_or(id, |(_, moved)| moved);
    for part in pairs.split('-') {
        let Some((chat, seq)) = part.split_once('.') else {
            continue;
        };
        let (Ok(chat), Ok(seq)) = (chat.parse::<i64>(), seq.parse::<i64>()) else {
            continue;
        };
        match seqs.get(&chat) {
            Some(&prev) if !reset && (seq > prev + 1 || seq < prev) => *gaps += 1,
            Some(&prev) if reset && seq < prev => *gaps += 1,
            _ => {}
        }
        seqs.insert(chat, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::track;
    use std::collections::BTreeMap;

    #[test]
    fn seq_tracking_flags_jumps_and_regressions_only() {
        let mut seqs = BTreeMap::new();
        let mut gaps = 0;
        track(&mut seqs, "1.5-2.7", &mut gaps, true);
        track(&mut seqs, "1.6-2.7", &mut gaps, false);
        track(&mut seqs, "1.6-2.8", &mut gaps, false);
        assert_eq!(gaps, 0);
        track(&mut seqs, "1.8-2.8", &mut gaps, false);
        assert_eq!(gaps, 1);
        track(&mut seqs, "1.7-2.8", &mut gaps, false);
        assert_eq!(gaps, 2);
        track(&mut seqs, "1.20-2.8", &mut gaps, true);
        assert_eq!(gaps, 2, "a resume may start anywhere forward");
    }

    #[test]
    fn checkpoint_ids_are_tracked_by_the_chats_they_list() {
        let mut seqs = BTreeMap::new();
        let mut gaps = 0;
        track(&mut seqs, "41~1.5-2.7", &mut gaps, true);
        track(&mut seqs, "41~1.6", &mut gaps, false);
        track(&mut seqs, "42~", &mut gaps, false);
        assert_eq!(gaps, 0);
        track(&mut seqs, "42~1.9", &mut gaps, false);
        assert_eq!(gaps, 1, "the first listed chat counts too");
    }
}
