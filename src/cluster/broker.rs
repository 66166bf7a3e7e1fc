//! The broker: publishes committed chat events (and typing, revocations) on Redis pub/sub and
//! delivers what other nodes publish to this node's subscribers.
//!
//! One task owns the subscriber connection. Redis drops a connection's subscriptions with the
//! connection, so after every (re)connect the task subscribes every channel again and then tells
//! each subscriber [`Delivery::Resync`]: messages published while it was away are gone (pub/sub
//! is at-most-once), and the subscriber refills from PostgreSQL by seq. A new subscription gets
//! `Resync` too once Redis confirmed it, which closes the window between a room reading its
//! position and its subscription taking effect. Publishing goes through one task as well, so a
//! node's events leave in the order they were committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::Keys;
use super::wire::ChatEvent;

/// Events waiting to be published; past it a publish is dropped (and counted): receivers notice
/// the missing seq and read it from PostgreSQL.
const PUBLISH_QUEUE: usize = 65_536;
/// Longest pause between reconnect attempts of the subscriber.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How often the idle subscriber connection is pinged (a dead peer is noticed within ~2×).
const PING_EVERY: Duration = Duration::from_secs(2);

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message on the channel (from another node, for chat channels).
    Message(Bytes),
    /// Messages may have been lost (reconnect, or the subscription just took effect): refill
    /// from the truth.
    Resync,
}

/// What a chat subscriber receives.
#[derive(Debug, Clone)]
pub enum ChatDelivery {
    /// An event another node committed (or a typing event it relayed).
    Event(ChatEvent),
    /// Read everything after your position from PostgreSQL.
    Resync,
}

type Handler = Arc<dyn Fn(Delivery) + Send + Sync>;

/// Counters of one node's broker (`/metrics`, admin).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct BrokerStats {
    pub published: u64,
    pub publish_failed: u64,
    pub received: u64,
    pub gaps_filled: u64,
    pub resyncs: u64,
    pub reconnects: u64,
    pub subscriptions: u64,
    pub connected: bool,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_failed: AtomicU64,
    received: AtomicU64,
    gaps_filled: AtomicU64,
    resyncs: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicBool,
}

enum Command {
    Subscribe(String),
    /// Unsubscribe if nobody subscribed the channel again meanwhile.
    Unsubscribe(String),
}

struct Shared {
    node: String,
    keys: Keys,
    /// channel → (subscription id, handler).
    subs: Mutex<HashMap<String, Vec<(u64, Handler)>>>,
    next_id: AtomicU64,
    counters: Counters,
    commands: mpsc::UnboundedSender<Command>,
    publish: mpsc::Sender<(String, Bytes)>,
}

/// The broker handle (cheap to clone).
#[derive(Clone)]
pub struct Broker {
    shared: Arc<Shared>,
}

/// A live subscription; dropping it unsubscribes.
pub struct Subscription {
    shared: Weak<Shared>,
    channel: String,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut subs = shared.subs.lock();
        if let Some(list) = subs.get_mut(&self.channel) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                subs.remove(&self.channel);
                let _ = shared
                    .commands
                    .send(Command::Unsubscribe(self.channel.clone()));
            }
        }
    }
}

impl Broker {
    /// Starts the subscriber and publisher tasks (on the current runtime).
    pub fn start(client: redis::Client, cmd: ConnectionManager, node: String, keys: Keys) -> Self {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (publish, publish_rx) = mpsc::channel(PUBLISH_QUEUE);
        let shared = Arc::new(Shared {
            node,
            keys,
            subs: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            commands,
            publish,
        });
        tokio::spawn(subscriber(client, Arc::downgrade(&shared), command_rx));
        tokio::spawn(publisher(cmd, Arc::downgrade(&shared), publish_rx));
        Broker { shared }
    }

    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// Queues `payload` for `channel` (never waits; a full queue drops and counts it).
    pub fn publish(&self, channel: String, payload: Bytes) {
        if self.shared.publish.try_send((channel, payload)).is_err() {
            self.shared
                .counters
                .publish_failed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes committed (or ephemeral) events of one chat, in the order given. Call it after
    /// the commit, in seq order, from the chat's room.
    pub fn publish_chat<'a>(&self, events: impl IntoIterator<Item = ChatEventRef<'a>>) {
        for e in events {
            let event = ChatEvent {
                node: self.shared.node.clone(),
                chat_id: e.chat_id,
                seq: e.seq,
                kind: e.kind.to_string(),
                data: e.data.clone(),
            };
            self.publish(self.shared.keys.chat_channel(e.chat_id), event.encode());
        }
    }

    /// Subscribes `handler` to `channel`. It is called on the broker's task: keep it short and
    /// non-blocking (e.g. `try_send` to an actor).
    pub fn subscribe(
        &self,
        channel: String,
        handler: impl Fn(Delivery) + Send + Sync + 'static,
    ) -> Subscription {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut subs = self.shared.subs.lock();
            let list = subs.entry(channel.clone()).or_default();
            list.push((id, Arc::new(handler)));
            list.len() == 1
        };
        if first {
            let _ = self
                .shared
                .commands
                .send(Command::Subscribe(channel.clone()));
        }
        Subscription {
            shared: Arc::downgrade(&self.shared),
            channel,
            id,
        }
    }

    /// Subscribes to one chat's events from other nodes (this node's own are skipped: the room
    /// fanned them out locally already). Gets `Resync` once the subscription is live and after
    /// every reconnect.
    pub fn subscribe_chat(
        &self,
        chat_id: i64,
        handler: impl Fn(ChatDelivery) + Send + Sync + 'static,
    ) -> Subscription {
        let node = self.shared.node.clone();
        self.subscribe(self.shared.keys.chat_channel(chat_id), move |d| match d {
            Delivery::Resync => handler(ChatDelivery::Resync),
            Delivery::Message(bytes) => match ChatEvent::decode(&bytes) {
                Ok(e) if e.node == node || e.chat_id != chat_id => {}
                Ok(e) => handler(ChatDelivery::Event(e)),
                Err(err) => tracing::warn!(error = %err, chat_id, "ignored a broker message"),
            },
        })
    }

    /// Tells every chat subscription of this node to catch up from PostgreSQL (`Resync`), as
    /// after a reconnect: a node that died may have committed events it never published.
    pub fn resync_chats(&self) {
        let prefix = self.shared.keys.chat_channel(0);
        let prefix = prefix.trim_end_matches('0');
        let channels: Vec<String> = self
            .shared
            .subs
            .lock()
            .keys()
            .filter(|c| c.starts_with(prefix))
            .cloned()
            .collect();
        for channel in channels {
            resync(&self.shared, &channel);
        }
    }

    /// A room filled a gap from PostgreSQL (counted for `/metrics`).
    pub fn gap_filled(&self) {
        self.shared
            .counters
            .gaps_filled
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn stats(&self) -> BrokerStats {
        let c = &self.shared.counters;
        BrokerStats {
            published: c.published.load(Ordering::Relaxed),
            publish_failed: c.publish_failed.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            gaps_filled: c.gaps_filled.load(Ordering::Relaxed),
            resyncs: c.resyncs.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            subscriptions: self.shared.subs.lock().len() as u64,
            connected: c.connected.load(Ordering::Relaxed),
        }
    }
}

/// The fields of an event to publish, borrowed from the room's committed event.
#[derive(Debug, Clone, Copy)]
pub struct ChatEventRef<'a> {
    pub chat_id: i64,
    pub seq: Option<i64>,
    pub kind: &'a str,
    pub data: &'a Bytes,
}

/// Publishes in queue order on the command connection (which reconnects by itself).
async fn publisher(
    mut cmd: ConnectionManager,
    shared: Weak<Shared>,
    mut rx: mpsc::Receiver<(String, Bytes)>,
) {
    let mut batch: Vec<(String, Bytes)> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 256 {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in &batch {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(payload.as_ref())
                .ignore();
        }
        let r: redis::RedisResult<()> = pipe.query_async(&mut cmd).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let counter = match r {
            Ok(()) => &shared.counters.published,
            Err(e) => {
                tracing::warn!(error = %e, n = batch.len(), "broker publish failed");
                &shared.counters.publish_failed
            }
        };
        counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
        batch.clear();
    }
}

/// Keeps one subscriber connection: connect, subscribe all, signal `Resync`, deliver; repeat.
async fn subscriber(
    client: redis::Client,
    shared: Weak<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut connected_before = false;
    loop {
        if shared.strong_count() == 0 {
            return;
        }
        let connect = tokio::time::timeout(PING_EVERY, client.get_async_pubsub()).await;
        let pubsub = match connect.unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connect timed out",
            )))
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "broker: Redis unreachable, retrying");
                // Commands queued meanwhile are covered by the full resubscribe below.
                while commands.try_recv().is_ok() {}
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (mut sink, mut stream) = pubsub.split();
        let Some(s) = shared.upgrade() else { return };
        // Drain queued commands: the snapshot below is what counts now.
        while commands.try_recv().is_ok() {}
        let channels: Vec<String> = s.subs.lock().keys().cloned().collect();
        if !channels.is_empty() && !answered(sink.subscribe(&channels)).await {
            continue;
        }
        s.counters.connected.store(true, Ordering::Relaxed);
        if connected_before {
            s.counters.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                channels = channels.len(),
                "broker: resubscribed after a reconnect"
            );
        }
        connected_before = true;
        for channel in &channels {
            resync(&s, channel);
        }
        drop(s);

        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(s) = shared.upgrade() else { return };
                    s.counters.received.fetch_add(1, Ordering::Relaxed);
                    let handlers = handlers(&s, msg.get_channel_name());
                    let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                    for h in handlers {
                        h(Delivery::Message(payload.clone()));
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    let Some(s) = shared.upgrade() else { return };
                    let ok = match cmd {
                        Command::Subscribe(ch) => {
                            let still = s.subs.lock().contains_key(&ch);
                            if !still {
                                true
                            } else if answered(sink.subscribe(&ch)).await {
                                resync(&s, &ch);
                                true
                            } else {
                                false
                            }
                        }
                        Command::Unsubscribe(ch) => {
                            let back = s.subs.lock().contains_key(&ch);
                            back || answered(sink.unsubscribe(&ch)).await
                        }
                    };
                    if !ok {
                        break;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(PING_EVERY, sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        if let Some(s) = shared.upgrade() {
            s.counters.connected.store(false, Ordering::Relaxed);
        }
        tracing::warn!("broker: lost the Redis subscriber connection; reconnecting");
    }
}

/// True when Redis acknowledged in time (a frozen Redis must not stall the subscriber forever).
async fn answered(f: impl std::future::Future<Output = redis::RedisResult<()>>) -> bool {
    matches!(tokio::time::timeout(PING_EVERY, f).await, Ok(Ok(())))
}

fn handlers(s: &Shared, channel: &str) -> Vec<Handler> {
    s.subs
        .lock()
        .get(channel)
        .map(|l| l.iter().map(|(_, h)| h.clone()).collect())
        .unwrap_or_default()
}

fn resync(s: &Shared, channel: &str) {
    let handlers = handlers(s, channel);
    s.counters
        .resyncs
        .fetch_add(handlers.len() as u64, Ordering::Relaxed);
    for h in handlers {
        h(Delivery::Resync);
    }
}
