//! `Session`: one actor per WebSocket or SSE connection, after authentication.
//!
//! It registers with `Presence` (which enforces the per-user connection limit), subscribes to
//! the rooms of every chat the user belongs to, replays what the client missed when it resumes
//! from a position, and writes events to a bounded outbound queue that the transport task
//! drains onto the socket.
//!
//! Delivery guarantee: events of a chat (messages, edits, deletes, reactions, membership) carry
//! the chat's gap-free seq; the session tracks, per chat, the last seq it handed out and encodes
//! all of them as the event `id` (see [`Position`]). A client that reconnects with that id gets
//! every later event of each chat, in order, exactly once — from PostgreSQL — or
//! `resync.required` for a chat whose gap exceeds the replay budget. Typing and presence are
//! ephemeral: not replayed, and dropped first when the queue fills.
//!
//! Slow-consumer policy: the outbound queue is bounded; when an event that matters does not fit,
//! the connection is closed (4008) and the client resumes from its last id. It never blocks a room.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::events::{Event, EventKind, MessageData, MessageView, Position, frame_json, sse_frame};
use super::hub::{GetRoom, Hub};
use super::presence::{Connect, Disconnect, Presence};
use super::room::{ChatRoom, ConnId, Push, Subscribe, Typing, Unsubscribe};
use crate::store::Store;
use crate::store::events::ReplayItem;

/// Minimum interval between relayed `typing.start` of one connection in one chat.
const TYPING_MIN_INTERVAL: Duration = Duration::from_millis(1000);

/// WebSocket close codes used by the server.
pub mod close_code {
    /// No auth frame in time, or the first frame was not an auth frame.
    pub const AUTH_REQUIRED: u16 = 4000;
    /// The token was invalid, expired or revoked.
    pub const AUTH_FAILED: u16 = 4001;
    /// The peer stopped answering pings.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The client did not read fast enough; resume with `last_event_id`.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The user already has the maximum number of connections.
    pub const TOO_MANY_CONNECTIONS: u16 = 4029;
}

/// How the session's frames reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    Sse,
}

/// A frame for the transport task.
#[derive(Debug)]
pub enum Outgoing {
    /// A WebSocket text frame.
    Text(String),
    /// Bytes of the SSE stream.
    Sse(Bytes),
}

/// Why a session did not start.
#[derive(Debug)]
pub enum Refusal {
    TooManyConnections(u32),
    Unavailable(String),
}

/// A text frame from the WebSocket client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientText(pub String);

/// The transport ended; stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransportClosed;

/// Everything a session is started with.
pub struct SessionArgs {
    pub conn: ConnId,
    pub user_id: i64,
    pub username: Arc<str>,
    pub transport: Transport,
    pub out: mpsc::Sender<Outgoing>,
    /// Where to send a close code and reason (the transport task closes the socket).
    pub close: oneshot::Sender<(u16, String)>,
    /// Answered once subscribed (or refused).
    pub ready: oneshot::Sender<Result<(), Refusal>>,
    /// The position the client resumes from (`Last-Event-ID` / `last_event_id`), raw.
    pub resume: Option<String>,
    pub store: Store,
    pub hub: Addr<Hub>,
    pub presence: Addr<Presence>,
    pub replay_max: i64,
    pub ping_every: Duration,
}

pub struct Session {
    conn: ConnId,
    user_id: i64,
    username: Arc<str>,
    transport: Transport,
    out: mpsc::Sender<Outgoing>,
    close: Option<oneshot::Sender<(u16, String)>>,
    ready: Option<oneshot::Sender<Result<(), Refusal>>>,
    resume: Option<String>,
    store: Store,
    hub: Addr<Hub>,
    presence: Addr<Presence>,
    replay_max: i64,
    ping_every: Duration,
    /// Last seq handed out per followed chat: the client's resume position.
    positions: Position,
    rooms: HashMap<i64, Addr<ChatRoom>>,
    typing_sent: HashMap<i64, Instant>,
    registered: bool,
}

/// What the start-up found.
struct Startup {
    workspaces_registered: bool,
    rooms: Vec<(i64, Addr<ChatRoom>, i64)>,
    start: HashMap<i64, i64>,
    replay: Vec<(i64, Vec<ReplayItem>, bool)>,
    invalid_resume: bool,
}

impl Session {
    pub fn new(a: SessionArgs) -> Self {
        Session {
            conn: a.conn,
            user_id: a.user_id,
            username: a.username,
            transport: a.transport,
            out: a.out,
            close: Some(a.close),
            ready: Some(a.ready),
            resume: a.resume,
            store: a.store,
            hub: a.hub,
            presence: a.presence,
            replay_max: a.replay_max,
            ping_every: a.ping_every,
            positions: Position::default(),
            rooms: HashMap::new(),
            typing_sent: HashMap::new(),
            registered: false,
        }
    }

    /// Queues a frame for `kind` with `data`; `persisted` frames carry the position as id.
    /// Returns false (and closes the session) when the queue is full for a frame that matters.
    fn emit(
        &mut self,
        kind: &str,
        data: &[u8],
        with_id: bool,
        droppable: bool,
        ctx: &mut Context<Self>,
    ) -> bool {
        let id = (with_id || self.transport == Transport::Sse).then(|| self.positions.encode());
        let frame = match self.transport {
            Transport::WebSocket => Outgoing::Text(frame_json(kind, id.as_deref(), data)),
            Transport::Sse => Outgoing::Sse(sse_frame(kind, id.as_deref(), data)),
        };
        // Ephemeral events give way while the queue is more than half full.
        if droppable && self.out.capacity() * 2 < self.out.max_capacity() {
            return true;
        }
        match self.out.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) if droppable => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                crate::metrics::slow_consumer_dropped();
                self.shutdown(
                    super::session::close_code::SLOW_CONSUMER,
                    "slow consumer: resume with last_event_id",
                    ctx,
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                ctx.stop();
                false
            }
        }
    }

    fn emit_event(&mut self, event: &Event, ctx: &mut Context<Self>) -> bool {
        if let (Some(chat), Some(seq)) = (event.chat_id, event.seq) {
            match self.positions.0.get_mut(&chat) {
                None => return true,                 // not following this chat (any more)
                Some(p) if seq <= *p => return true, // already given (replay overlap)
                Some(p) => *p = seq,
            }
            self.emit(event.kind.as_str(), &event.data, true, false, ctx)
        } else {
            self.emit(
                event.kind.as_str(),
                &event.data,
                false,
                event.kind.is_droppable(),
                ctx,
            )
        }
    }

    fn error_frame(&mut self, code: &str, message: &str, ctx: &mut Context<Self>) {
        let data = json!({ "code": code, "message": message }).to_string();
        self.emit("error", data.as_bytes(), false, false, ctx);
    }

    /// Closes the connection with `code` and stops.
    fn shutdown(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if let Some(close) = self.close.take() {
            let _ = close.send((code, reason.to_string()));
        }
        ctx.stop();
    }

    fn on_started(&mut self, result: Result<Startup, Refusal>, ctx: &mut Context<Self>) {
        let startup = match result {
            Ok(s) => s,
            Err(refusal) => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(refusal));
                }
                ctx.stop();
                return;
            }
        };
        self.registered = startup.workspaces_registered;
        for (chat, room, _) in &startup.rooms {
            self.rooms.insert(*chat, room.clone());
        }
        self.positions = Position(startup.start.iter().map(|(c, s)| (*c, *s)).collect());
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        let hello = json!({
            "user_id": self.user_id,
            "connection_id": self.conn,
            "last_event_id": self.positions.encode(),
        })
        .to_string();
        let kind = match self.transport {
            Transport::WebSocket => "auth.success",
            Transport::Sse => "ready",
        };
        self.emit(kind, hello.as_bytes(), false, false, ctx);
        if startup.invalid_resume {
            let data = json!({"reason": "invalid_last_event_id", "chat_id": null}).to_string();
            self.emit(
                EventKind::ResyncRequired.as_str(),
                data.as_bytes(),
                false,
                false,
                ctx,
            );
        }
        let committed: HashMap<i64, i64> = startup.rooms.iter().map(|(c, _, s)| (*c, *s)).collect();
        for (chat, items, overflow) in startup.replay {
            if overflow {
                self.positions
                    .0
                    .insert(chat, committed.get(&chat).copied().unwrap_or(0));
                let data = json!({"reason": "gap_too_large", "chat_id": chat}).to_string();
                if !self.emit(
                    EventKind::ResyncRequired.as_str(),
                    data.as_bytes(),
                    true,
                    false,
                    ctx,
                ) {
                    return;
                }
                continue;
            }
            for item in items {
                let event = match item {
                    ReplayItem::Created(m) => {
                        let view = MessageView::new(&m, &[]);
                        Event::new(
                            EventKind::MessageCreated,
                            Some(chat),
                            Some(m.seq),
                            &MessageData { message: &view },
                        )
                    }
                    ReplayItem::Logged { seq, kind, payload } => match EventKind::parse(&kind) {
                        Some(k) => Event::new(k, Some(chat), Some(seq), &payload),
                        None => continue,
                    },
                };
                if !self.emit_event(&event, ctx) {
                    return;
                }
            }
            // Skipped seqs (deleted messages) are covered too.
            if let Some(c) = committed.get(&chat) {
                let p = self.positions.0.entry(chat).or_insert(*c);
                *p = (*p).max(*c);
            }
        }
        for (chat, c) in committed {
            let p = self.positions.0.entry(chat).or_insert(c);
            *p = (*p).max(c);
        }
    }

    fn handle_client_frame(&mut self, text: &str, ctx: &mut Context<Self>) {
        #[derive(Deserialize)]
        struct Frame {
            #[serde(rename = "type")]
            kind: String,
            chat_id: Option<serde_json::Value>,
            /// Clients mirroring the server's event shape put `chat_id` under `data`.
            data: Option<serde_json::Value>,
        }
        let frame: Frame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => {
                self.error_frame("VALIDATION_ERROR", &format!("malformed frame: {e}"), ctx);
                return;
            }
        };
        match frame.kind.as_str() {
            "ping" => {
                let data = json!({ "timestamp": Utc::now() }).to_string();
                self.emit("pong", data.as_bytes(), false, false, ctx);
            }
            "auth" => {
                let data = json!({
                    "user_id": self.user_id,
                    "connection_id": self.conn,
                    "last_event_id": self.positions.encode(),
                })
                .to_string();
                self.emit("auth.success", data.as_bytes(), false, false, ctx);
            }
            "typing.start" | "typing.stop" => {
                let start = frame.kind == "typing.start";
                let chat_id = frame
                    .chat_id
                    .as_ref()
                    .or_else(|| frame.data.as_ref().and_then(|d| d.get("chat_id")))
                    .and_then(serde_json::Value::as_i64);
                let Some(chat_id) = chat_id else {
                    self.error_frame("VALIDATION_ERROR", "chat_id (integer) is required", ctx);
                    return;
                };
                let Some(room) = self.rooms.get(&chat_id) else {
                    self.error_frame("FORBIDDEN", "not a member of this chat", ctx);
                    return;
                };
                if start {
                    let now = Instant::now();
                    if self
                        .typing_sent
                        .get(&chat_id)
                        .is_some_and(|t| now.duration_since(*t) < TYPING_MIN_INTERVAL)
                    {
                        return; // rate-limited: the indicator is already shown
                    }
                    self.typing_sent.insert(chat_id, now);
                } else {
                    self.typing_sent.remove(&chat_id);
                }
                room.do_send(Typing {
                    user_id: self.user_id,
                    username: self.username.clone(),
                    start,
                });
            }
            other => {
                let msg = format!(
                    "unknown frame type `{other}`; expected ping, typing.start or typing.stop"
                );
                self.error_frame("VALIDATION_ERROR", &msg, ctx);
            }
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.out.max_capacity().max(64) * 2);
        let me = ctx.address().recipient::<Push>();
        let store = self.store.clone();
        let hub = self.hub.clone();
        let presence = self.presence.clone();
        let (user_id, conn, replay_max) = (self.user_id, self.conn, self.replay_max);
        let resume = self.resume.take();
        ctx.wait(
            startup(store, hub, presence, user_id, conn, me, resume, replay_max)
                .into_actor(self)
                .map(|result, act, ctx| act.on_started(result, ctx)),
        );
        if self.transport == Transport::Sse {
            ctx.run_interval(self.ping_every, |act, ctx| {
                let data = json!({ "timestamp": Utc::now() }).to_string();
                act.emit("ping", data.as_bytes(), false, false, ctx);
            });
        }
        match self.transport {
            Transport::WebSocket => crate::metrics::ws_opened(),
            Transport::Sse => crate::metrics::sse_opened(),
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for room in self.rooms.values() {
            room.do_send(Unsubscribe { conn: self.conn });
        }
        if self.registered {
            self.presence.do_send(Disconnect {
                user_id: self.user_id,
                conn: self.conn,
            });
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(Refusal::Unavailable("session stopped".into())));
        }
        match self.transport {
            Transport::WebSocket => crate::metrics::ws_closed(),
            Transport::Sse => crate::metrics::sse_closed(),
        }
    }
}

/// Loads the user's chats, registers with presence, subscribes to every room and prepares the
/// replay. Subscribing before reading the replay means nothing falls between the two: events
/// up to each room's committed seq come from PostgreSQL, later ones live.
#[allow(clippy::too_many_arguments)]
async fn startup(
    store: Store,
    hub: Addr<Hub>,
    presence: Addr<Presence>,
    user_id: i64,
    conn: ConnId,
    me: Recipient<Push>,
    resume: Option<String>,
    replay_max: i64,
) -> Result<Startup, Refusal> {
    let unavailable = |e: String| Refusal::Unavailable(e);
    let (chats, workspaces) = store
        .user_chats(user_id)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    presence
        .send(Connect {
            user_id,
            conn,
            recipient: me.clone(),
            workspaces,
        })
        .await
        .map_err(|e| unavailable(e.to_string()))?
        .map_err(|t| Refusal::TooManyConnections(t.0))?;

    let subscriptions = futures_util::future::join_all(chats.iter().map(|c| {
        let hub = hub.clone();
        let me = me.clone();
        async move {
            for _ in 0..3 {
                let room = hub.send(GetRoom { chat_id: c.chat_id }).await.ok()?;
                match room
                    .send(Subscribe {
                        conn,
                        user_id,
                        recipient: me.clone(),
                    })
                    .await
                {
                    Ok(Ok(seq)) => return Some((c.chat_id, room, seq)),
                    Ok(Err(_)) => return None, // left the chat meanwhile
                    Err(_) => continue,        // room stopping: ask the hub again
                }
            }
            None
        }
    }))
    .await;
    let rooms: Vec<(i64, Addr<ChatRoom>, i64)> = subscriptions.into_iter().flatten().collect();

    let (resume_pos, invalid_resume) =
        match resume.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => (None, false),
            Some(raw) => match Position::parse(raw) {
                Some(p) => (Some(p), false),
                None => (None, true),
            },
        };
    let mut start = HashMap::new();
    let mut replay = Vec::new();
    let mut budget = replay_max;
    for (chat_id, _, committed) in &rooms {
        let Some(info) = chats.iter().find(|c| c.chat_id == *chat_id) else {
            continue;
        };
        let from = match &resume_pos {
            Some(p) => p.0.get(chat_id).copied().unwrap_or(info.joined_seq),
            // A fresh connection follows from what was committed when it authenticated.
            None => info.last_seq,
        }
        .min(*committed);
        start.insert(*chat_id, from);
        if from < *committed {
            let items = store
                .replay(*chat_id, from, *committed, budget + 1)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            let overflow = items.len() as i64 > budget;
            budget -= items.len().min(budget as usize) as i64;
            replay.push((
                *chat_id,
                if overflow { Vec::new() } else { items },
                overflow,
            ));
        }
    }
    Ok(Startup {
        workspaces_registered: true,
        rooms,
        start,
        replay,
        invalid_resume,
    })
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        match msg {
            Push::Event(event) => {
                self.emit_event(&event, ctx);
            }
            Push::Subscribed { chat_id, seq, room } => {
                if let std::collections::btree_map::Entry::Vacant(e) =
                    self.positions.0.entry(chat_id)
                {
                    e.insert(seq);
                    self.rooms.insert(chat_id, room);
                }
            }
            Push::Unsubscribed { chat_id } => {
                self.positions.0.remove(&chat_id);
                self.rooms.remove(&chat_id);
                self.typing_sent.remove(&chat_id);
            }
            Push::SlowConsumer => {
                self.shutdown(
                    close_code::SLOW_CONSUMER,
                    "slow consumer: resume with last_event_id",
                    ctx,
                );
            }
        }
    }
}

impl Handler<ClientText> for Session {
    type Result = ();

    fn handle(&mut self, msg: ClientText, ctx: &mut Self::Context) {
        self.handle_client_frame(&msg.0, ctx);
    }
}

impl Handler<TransportClosed> for Session {
    type Result = ();

    fn handle(&mut self, _: TransportClosed, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
