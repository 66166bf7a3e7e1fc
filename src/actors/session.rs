//! `Session`: one actor per WebSocket or SSE connection, after authentication.
//!
//! It registers with `Presence` (which enforces the per-user connection limit) *before* it
//! reads the user's chats, so a chat joined meanwhile is seen by one path or the other: the
//! join's room finds the connection in the registry, or the read finds the membership. It
//! subscribes to the rooms of every chat the user belongs to and writes events to a bounded
//! outbound queue that the transport task drains onto the socket.
//!
//! Delivery guarantee: events of a chat (messages, edits, deletes, reactions, membership) carry
//! the chat's gap-free seq; the session tracks, per chat, the last seq it handed out and encodes
//! all of them as the event `id` (see [`Position`]). Whatever the session has not handed out
//! in order — the gap before a resume position, a room that restarted, a seq that jumped —
//! it *fills* from PostgreSQL before that chat goes live again: live events of a chat being
//! filled are not queued (PostgreSQL has them), only the highest seq seen is noted. A fill is
//! read page by page and written only while the outbound queue has room, so it is paced by
//! the client's reading, never cut off by the live queue's bound. A gap larger than
//! `FECHATTER_REPLAY_MAX` gets `resync.required` for that chat instead. Replayed events are
//! rendered from the current rows (`events::replayed`): nothing REST would not show.
//!
//! Slow-consumer policy: the outbound queue is bounded; when a live event that matters does not
//! fit, the connection is closed (4008) and the client resumes from its last id. It never
//! blocks a room. Typing and presence are ephemeral: not replayed, dropped first.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::events::{Event, EventKind, Position, ResumeId, replayed};
use super::hub::{GetRoom, Hub};
use super::outbox::{Outbox, PushError};
use super::presence::{Connect, Disconnect, Presence};
use super::room::{ChatRoom, ConnId, Push, Subscribe, Typing, Unsubscribe};
use super::rooms::RoomError;
use crate::cluster::presence::{Admit, ClusterPresence};
use crate::config::Config;
use crate::faults::Faults;
use crate::store::Store;
use crate::store::events::UserChat;

/// WebSocket close codes used by the server.
pub mod close_code {
    /// No auth frame in time, or the first frame was not an auth frame.
    pub const AUTH_REQUIRED: u16 = 4000;
    /// The token was invalid, expired or revoked when the connection authenticated.
    pub const AUTH_FAILED: u16 = 4001;
    /// The peer stopped answering pings.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The connection's token expired: refresh it, reconnect with `last_event_id`.
    pub const TOKEN_EXPIRED: u16 = 4003;
    /// The user's password changed: sign in again, reconnect with `last_event_id`.
    pub const TOKEN_REVOKED: u16 = 4004;
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

/// A frame for the socket: an event's kind and `data` JSON (shared by every recipient) and
/// this connection's `id`. The transport's body (`http::outbound`) renders it as a WebSocket
/// text frame or SSE lines straight into the socket's write buffer.
#[derive(Debug)]
pub struct Outgoing {
    pub kind: &'static str,
    pub id: Option<String>,
    pub data: Bytes,
}

/// Why a session did not start.
#[derive(Debug)]
pub enum Refusal {
    TooManyConnections(u32),
    Unavailable(String),
    /// The token's user no longer exists.
    NoSuchUser,
}

/// A text frame from the WebSocket client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClientText(pub String);

/// The transport ended; stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TransportClosed;

/// Tunables of every session, from the configuration.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Connections per user (counted across nodes in cluster mode).
    pub max_per_user: u32,
    pub replay_max: i64,
    pub replay_page: i64,
    pub ping_every: Duration,
    pub typing_interval: Duration,
    /// Most chats an id lists before the connection stores a checkpoint.
    pub id_chats_max: usize,
    pub checkpoint_interval: Duration,
}

impl SessionConfig {
    pub fn from_config(c: &Config) -> Self {
        SessionConfig {
            max_per_user: c.max_ws_per_user,
            replay_max: c.replay_max.max(0),
            replay_page: c.replay_page.clamp(1, 10_000),
            ping_every: Duration::from_secs(c.ws_ping_secs.max(1)),
            typing_interval: Duration::from_millis(c.typing_interval_ms),
            id_chats_max: c.id_chats_max.max(1),
            checkpoint_interval: Duration::from_millis(c.checkpoint_interval_ms),
        }
    }
}

/// Everything a session is started with.
pub struct SessionArgs {
    pub conn: ConnId,
    pub user_id: i64,
    /// The token version the connection authenticated with (revocation closes older ones).
    pub token_version: i32,
    /// When the connection's token expires, unix seconds (the connection closes then).
    pub expires_at: i64,
    pub transport: Transport,
    pub out: Outbox<Outgoing>,
    /// Where to send a close code and reason (the transport task closes the socket).
    pub close: oneshot::Sender<(u16, String)>,
    /// Answered once subscribed (or refused).
    pub ready: oneshot::Sender<Result<(), Refusal>>,
    /// The position the client resumes from (`Last-Event-ID` / `last_event_id`), raw.
    pub resume: Option<String>,
    pub store: Store,
    pub hub: Addr<Hub>,
    pub presence: Addr<Presence>,
    pub config: SessionConfig,
    pub faults: Arc<Faults>,
    /// Cluster mode: connection counts and presence across nodes.
    pub cluster: Option<ClusterPresence>,
}

/// One followed chat.
struct Follow {
    /// The last seq handed out (or known to hold nothing to show): the resume position.
    pos: i64,
    room: Option<Addr<ChatRoom>>,
    /// Committed events up to this seq come from PostgreSQL before the chat is live again.
    fill_upto: Option<i64>,
    /// When this connection last relayed `typing.start` here, and whether a stop is owed.
    typing_at: Option<Instant>,
    typing_open: bool,
    /// A `typing.start` arrived within the interval: it is relayed when the interval ends
    /// (unless a stop cancels it), so no start is lost and none is early.
    typing_pending: bool,
    /// Failed attempts to (re)subscribe, for the back-off.
    retries: u32,
}

impl Follow {
    fn new(pos: i64, room: Option<Addr<ChatRoom>>) -> Self {
        Follow {
            pos,
            room,
            fill_upto: None,
            typing_at: None,
            typing_open: false,
            typing_pending: false,
            retries: 0,
        }
    }
}

/// A page of a fill being written to the client.
struct FillPage {
    chat_id: i64,
    events: VecDeque<Arc<Event>>,
    /// Every seq up to this is covered once the page is written.
    covered: i64,
}

pub struct Session {
    conn: ConnId,
    user_id: i64,
    username: Arc<str>,
    token_version: i32,
    expires_at: i64,
    transport: Transport,
    out: Outbox<Outgoing>,
    close: Option<oneshot::Sender<(u16, String)>>,
    ready: Option<oneshot::Sender<Result<(), Refusal>>>,
    resume: Option<String>,
    store: Store,
    hub: Addr<Hub>,
    presence: Addr<Presence>,
    config: SessionConfig,
    faults: Arc<Faults>,
    cluster: Option<ClusterPresence>,
    /// Cluster mode: counted in the cluster-wide connections of the user (a disconnect is
    /// owed), with the user's workspaces for the offline announcement.
    counted: Option<Vec<i64>>,
    chats: BTreeMap<i64, Follow>,
    /// Chats waiting for a fill, in order.
    fill_queue: VecDeque<i64>,
    fill: Option<FillPage>,
    /// A page read or a wait for the queue to drain is in flight.
    fill_busy: bool,
    /// Registered with presence (so `Disconnect` is owed on stop).
    registered: bool,
    /// The stored checkpoint the ids name, and its positions (see [`ResumeId`]).
    checkpoint: Option<(i64, Arc<BTreeMap<i64, i64>>)>,
    /// Chats whose position may differ from the checkpoint's (all moved since it was taken).
    moved: BTreeSet<i64>,
    /// A checkpoint is being stored, or when the last one was started.
    checkpoint_busy: bool,
    checkpoint_at: Option<Instant>,
}

/// What the start-up found.
struct Startup {
    /// The user's name (typing events carry it).
    username: Arc<str>,
    /// (chat, its room if subscribed, the room's committed seq, the user's membership).
    chats: Vec<(UserChat, Option<Addr<ChatRoom>>, i64)>,
    /// The position resumed from (a checkpoint resolved), if any.
    resume: Option<Position>,
    /// The id given could not be parsed, or names no checkpoint of this user.
    invalid_resume: bool,
}

/// The start-up's result; `registered` is true once presence counted the connection, whatever
/// happened next (so a failed start still gives its slot back).
struct Started {
    registered: bool,
    /// Counted cluster-wide (with the user's workspaces), whatever happened next.
    counted: Option<Vec<i64>>,
    result: Result<Startup, Refusal>,
}

impl Session {
    pub fn new(a: SessionArgs) -> Self {
        Session {
            conn: a.conn,
            user_id: a.user_id,
            // Read with the chats at the start (`Startup::username`).
            username: Arc::from(""),
            token_version: a.token_version,
            expires_at: a.expires_at,
            transport: a.transport,
            out: a.out,
            close: Some(a.close),
            ready: Some(a.ready),
            resume: a.resume,
            store: a.store,
            hub: a.hub,
            presence: a.presence,
            config: a.config,
            faults: a.faults,
            cluster: a.cluster,
            counted: None,
            chats: BTreeMap::new(),
            fill_queue: VecDeque::new(),
            fill: None,
            fill_busy: false,
            registered: false,
            checkpoint: None,
            moved: BTreeSet::new(),
            checkpoint_busy: false,
            checkpoint_at: None,
        }
    }

    /// The resume id: the last seq handed out per followed chat — as the checkpoint plus the
    /// chats that moved since, once there is one (so its length does not grow with the chats
    /// followed).
    fn position(&self) -> String {
        match &self.checkpoint {
            None => Position::encode_pairs(self.chats.iter().map(|(c, f)| (*c, f.pos))),
            Some((id, _)) => ResumeId::encode_checkpoint(
                *id,
                self.moved
                    .iter()
                    .filter_map(|c| self.chats.get(c).map(|f| (*c, f.pos)))
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
        }
    }

    /// Whether the ids list more chats than they should: time to store a checkpoint.
    fn checkpoint_due(&self) -> bool {
        let listed = match self.checkpoint {
            None => self.chats.len(),
            Some(_) => self.moved.len(),
        };
        listed > self.config.id_chats_max
            && !self.checkpoint_busy
            && self
                .checkpoint_at
                .is_none_or(|at| at.elapsed() >= self.config.checkpoint_interval)
    }

    /// Stores the current positions as a checkpoint; once stored, ids name it. `then` runs
    /// when the attempt ended (stored or not), e.g. to finish the start-up.
    fn store_checkpoint(
        &mut self,
        ctx: &mut Context<Self>,
        then: impl FnOnce(&mut Self, &mut Context<Self>) + 'static,
        wait: bool,
    ) {
        self.checkpoint_busy = true;
        self.checkpoint_at = Some(Instant::now());
        let snapshot: Arc<BTreeMap<i64, i64>> =
            Arc::new(self.chats.iter().map(|(c, f)| (*c, f.pos)).collect());
        let pairs: Vec<(i64, i64)> = snapshot.iter().map(|(c, s)| (*c, *s)).collect();
        let (store, user_id) = (self.store.clone(), self.user_id);
        // Bounded: a slow database leaves the ids long for a while, never the session stuck.
        let save = async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                store.save_checkpoint(user_id, &pairs),
            )
            .await
        };
        let fut = save.into_actor(self).map(move |result, act, ctx| {
            act.checkpoint_busy = false;
            match result {
                Ok(Ok(id)) => {
                    let moved = act
                        .chats
                        .iter()
                        .filter(|(c, f)| snapshot.get(c) != Some(&f.pos))
                        .map(|(c, _)| *c)
                        .collect();
                    act.moved = moved;
                    act.checkpoint = Some((id, snapshot));
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "resume checkpoint not stored"),
                Err(_) => tracing::debug!("resume checkpoint timed out"),
            }
            then(act, ctx);
        });
        if wait {
            ctx.wait(fut);
        } else {
            ctx.spawn(fut);
        }
    }

    /// Queues a frame for `kind` with `data`; `with_id` frames carry the position as id.
    /// Returns false (and closes the session) when the queue is full for a frame that matters.
    fn emit(
        &mut self,
        kind: &'static str,
        data: Bytes,
        with_id: bool,
        droppable: bool,
        ctx: &mut Context<Self>,
    ) -> bool {
        // Ephemeral events give way while the queue is more than half full.
        if droppable && self.out.free() * 2 < self.out.max() {
            return true;
        }
        let with_id = with_id || self.transport == Transport::Sse;
        if with_id && self.checkpoint_due() {
            self.store_checkpoint(ctx, |_, _| {}, false);
        }
        let id = with_id.then(|| self.position());
        let frame = Outgoing { kind, id, data };
        match self.out.try_push(frame) {
            Ok(()) => true,
            Err(PushError::Full) if droppable => true,
            Err(PushError::Full) => {
                crate::metrics::slow_consumer_dropped();
                self.shutdown(
                    close_code::SLOW_CONSUMER,
                    "slow consumer: resume with last_event_id",
                    ctx,
                );
                false
            }
            Err(PushError::Closed) => {
                ctx.stop();
                false
            }
        }
    }

    /// A live event from a room (or presence).
    fn emit_live(&mut self, event: &Event, ctx: &mut Context<Self>) {
        let (Some(chat), Some(seq)) = (event.chat_id, event.seq) else {
            // Unsequenced chat events (typing) go only to followers too: a relayed one can
            // arrive before the leave that unsubscribes this session reaches the room.
            if let Some(chat) = event.chat_id
                && !self.chats.contains_key(&chat)
            {
                return;
            }
            self.emit(
                event.kind.as_str(),
                event.data.clone(),
                false,
                event.kind.is_droppable(),
                ctx,
            );
            return;
        };
        let Some(f) = self.chats.get_mut(&chat) else {
            return; // not following this chat (any more)
        };
        if let Some(upto) = &mut f.fill_upto {
            // Being filled from PostgreSQL, which has this event too.
            *upto = (*upto).max(seq);
            return;
        }
        if seq <= f.pos {
            return; // already handed out
        }
        if seq > f.pos + 1 {
            // Never deliver past a gap: fill it (this event included) from PostgreSQL.
            tracing::debug!(chat, seq, pos = f.pos, "seq gap: filling from PostgreSQL");
            f.fill_upto = Some(seq);
            self.fill_queue.push_back(chat);
            self.pump(ctx);
            return;
        }
        f.pos = seq;
        self.moved.insert(chat);
        self.emit(event.kind.as_str(), event.data.clone(), true, false, ctx);
    }

    fn error_frame(&mut self, code: &str, message: &str, ctx: &mut Context<Self>) {
        let data = json!({ "code": code, "message": message }).to_string();
        self.emit("error", Bytes::from(data), false, false, ctx);
    }

    fn resync(&mut self, chat_id: Option<i64>, reason: &str, ctx: &mut Context<Self>) -> bool {
        let data = json!({ "reason": reason, "chat_id": chat_id }).to_string();
        self.emit(
            EventKind::ResyncRequired.as_str(),
            Bytes::from(data),
            chat_id.is_some(),
            false,
            ctx,
        )
    }

    /// Closes the connection with `code` and stops.
    fn shutdown(&mut self, code: u16, reason: &str, ctx: &mut Context<Self>) {
        if let Some(close) = self.close.take() {
            let _ = close.send((code, reason.to_string()));
        }
        ctx.stop();
    }

    // ---- fills ---------------------------------------------------------------------------

    /// Whether a replayed frame may take a queue slot: a quarter stays free for live frames.
    fn replay_has_room(&self) -> bool {
        self.out.free() * 4 > self.out.max()
    }

    /// Advances the fills: writes the current page while the queue has room, then reads the
    /// next page or starts the next chat's fill.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            if self.fill_busy {
                return;
            }
            if let Some(page) = self.fill.as_mut() {
                let chat_id = page.chat_id;
                if !self.chats.contains_key(&chat_id) {
                    self.fill = None; // left the chat meanwhile
                    continue;
                }
                while !self.fill.as_ref().is_none_or(|p| p.events.is_empty()) {
                    if !self.replay_has_room() {
                        self.await_drain(ctx);
                        return;
                    }
                    let Some(event) = self.fill.as_mut().and_then(|p| p.events.pop_front()) else {
                        break;
                    };
                    let seq = event.seq.unwrap_or(0);
                    if let Some(f) = self.chats.get_mut(&chat_id) {
                        if seq <= f.pos {
                            continue;
                        }
                        f.pos = seq;
                        self.moved.insert(chat_id);
                    }
                    if !self.emit(event.kind.as_str(), event.data.clone(), true, false, ctx) {
                        return;
                    }
                }
                let covered = self.fill.take().map_or(0, |p| p.covered);
                if let Some(f) = self.chats.get_mut(&chat_id) {
                    if covered > f.pos {
                        f.pos = covered;
                        self.moved.insert(chat_id);
                    }
                    match f.fill_upto {
                        Some(upto) if upto > f.pos => self.fill_queue.push_front(chat_id),
                        _ => f.fill_upto = None,
                    }
                }
                continue;
            }
            let Some(chat_id) = self.fill_queue.pop_front() else {
                return;
            };
            let Some(f) = self.chats.get_mut(&chat_id) else {
                continue;
            };
            let Some(upto) = f.fill_upto else {
                continue;
            };
            if upto <= f.pos {
                f.fill_upto = None;
                continue;
            }
            if upto - f.pos > self.config.replay_max {
                f.pos = upto;
                self.moved.insert(chat_id);
                f.fill_upto = None;
                if !self.resync(Some(chat_id), "gap_too_large", ctx) {
                    return;
                }
                continue;
            }
            if self.fill_queue.contains(&chat_id) {
                continue; // queued twice: fill once
            }
            let from = f.pos;
            self.read_page(chat_id, from, upto, ctx);
            return;
        }
    }

    fn read_page(&mut self, chat_id: i64, after: i64, upto: i64, ctx: &mut Context<Self>) {
        self.fill_busy = true;
        let store = self.store.clone();
        let limit = self.config.replay_page;
        ctx.spawn(
            async move { store.replay_page(chat_id, after, upto, limit).await }
                .into_actor(self)
                .map(move |result, act, ctx| {
                    act.fill_busy = false;
                    match result {
                        Ok(page) => {
                            let events = page
                                .items
                                .iter()
                                .filter_map(|i| replayed(chat_id, i))
                                .collect();
                            act.fill = Some(FillPage {
                                chat_id,
                                events,
                                covered: page.covered,
                            });
                            act.pump(ctx);
                        }
                        Err(e) => {
                            // The database is unreachable: try again; the chat stays paused
                            // (its position unchanged), nothing is skipped.
                            tracing::warn!(chat_id, error = %e, "replay read failed; retrying");
                            act.fill_queue.push_front(chat_id);
                            act.fill_busy = true;
                            ctx.run_later(Duration::from_millis(500), |act, ctx| {
                                act.fill_busy = false;
                                act.pump(ctx);
                            });
                        }
                    }
                }),
        );
    }

    /// Waits until half the outbound queue is free, then pumps again.
    fn await_drain(&mut self, ctx: &mut Context<Self>) {
        self.fill_busy = true;
        let waiter = self.out.waiter();
        let want = (self.out.max() / 2).max(1);
        ctx.spawn(
            async move { waiter.wait_free(want).await }
                .into_actor(self)
                .map(|open, act, ctx| {
                    act.fill_busy = false;
                    if open {
                        act.pump(ctx);
                    } else {
                        ctx.stop();
                    }
                }),
        );
    }

    /// Starts following `chat_id` from `from`, filling up to the room's `committed` seq.
    fn follow(&mut self, chat_id: i64, from: i64, room: Option<Addr<ChatRoom>>, committed: i64) {
        let mut f = Follow::new(from, room);
        if from < committed {
            f.fill_upto = Some(committed);
            self.fill_queue.push_back(chat_id);
        }
        self.chats.insert(chat_id, f);
        self.moved.insert(chat_id);
    }

    // ---- rooms ---------------------------------------------------------------------------

    /// Finds the chat's (new) room and subscribes again; what was missed meanwhile is filled
    /// from PostgreSQL. Retries with back-off while the room cannot be reached.
    fn resubscribe(&mut self, chat_id: i64, ctx: &mut Context<Self>) {
        let Some(f) = self.chats.get_mut(&chat_id) else {
            return;
        };
        f.room = None;
        let hub = self.hub.clone();
        let me = ctx.address().recipient::<Push>();
        let (conn, user_id) = (self.conn, self.user_id);
        ctx.spawn(
            async move { subscribe(&hub, chat_id, conn, user_id, me).await }
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Subscribed::Yes(room, committed) => {
                        if let Some(f) = act.chats.get_mut(&chat_id) {
                            f.room = Some(room);
                            f.retries = 0;
                            if committed > f.pos {
                                f.fill_upto = Some(f.fill_upto.unwrap_or(0).max(committed));
                                act.fill_queue.push_back(chat_id);
                                act.pump(ctx);
                            }
                        }
                    }
                    Subscribed::NotMember => {
                        act.chats.remove(&chat_id);
                        act.moved.remove(&chat_id);
                    }
                    Subscribed::Unreachable => {
                        let Some(f) = act.chats.get_mut(&chat_id) else {
                            return;
                        };
                        f.retries += 1;
                        let pause = Duration::from_millis(100 << f.retries.min(6));
                        ctx.run_later(pause, move |act, ctx| act.resubscribe(chat_id, ctx));
                    }
                }),
        );
    }

    fn on_started(&mut self, started: Started, ctx: &mut Context<Self>) {
        self.registered = started.registered;
        self.counted = started.counted;
        let startup = match started.result {
            Ok(s) => s,
            Err(refusal) => {
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(refusal));
                }
                ctx.stop();
                return;
            }
        };
        self.username = startup.username;
        let (resume, invalid_resume) = (startup.resume, startup.invalid_resume);
        let mut unreachable = Vec::new();
        for (chat, room, committed) in startup.chats {
            let from = match &resume {
                Some(p) => p.0.get(&chat.chat_id).copied().unwrap_or(chat.joined_seq),
                // A fresh connection follows from what was committed when it authenticated.
                None => chat.last_seq,
            }
            .clamp(0, committed.max(chat.last_seq));
            if room.is_none() {
                unreachable.push(chat.chat_id);
            }
            self.follow(chat.chat_id, from, room, committed);
        }
        // A connection following many chats stores a checkpoint before its first id.
        if self.checkpoint_due() {
            self.store_checkpoint(
                ctx,
                move |act, ctx| act.greet(invalid_resume, unreachable, ctx),
                true,
            );
        } else {
            self.greet(invalid_resume, unreachable, ctx);
        }
    }

    /// Answers `auth.success` / `ready`, then starts the fills.
    fn greet(&mut self, invalid_resume: bool, unreachable: Vec<i64>, ctx: &mut Context<Self>) {
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        let hello = json!({
            "user_id": self.user_id,
            "connection_id": self.conn,
            "last_event_id": self.position(),
        })
        .to_string();
        let kind = match self.transport {
            Transport::WebSocket => "auth.success",
            Transport::Sse => "ready",
        };
        if !self.emit(kind, Bytes::from(hello), false, false, ctx) {
            return;
        }
        if invalid_resume && !self.resync(None, "invalid_last_event_id", ctx) {
            return;
        }
        for chat_id in unreachable {
            self.resubscribe(chat_id, ctx);
        }
        self.pump(ctx);
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
                self.emit("pong", Bytes::from(data), false, false, ctx);
            }
            "auth" => {
                let data = json!({
                    "user_id": self.user_id,
                    "connection_id": self.conn,
                    "last_event_id": self.position(),
                })
                .to_string();
                self.emit("auth.success", Bytes::from(data), false, false, ctx);
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
                self.typing(chat_id, start, ctx);
            }
            other => {
                let other: String = other.chars().take(64).collect();
                let msg = format!(
                    "unknown frame type `{other}`; expected ping, typing.start or typing.stop"
                );
                self.error_frame("VALIDATION_ERROR", &msg, ctx);
            }
        }
    }

    /// Relays typing, limited per connection and chat: a `typing.start` at most once per
    /// interval (a stop does not reset the interval; a start that comes too soon is relayed when
    /// the interval ends, unless a stop came first), a `typing.stop` only after a relayed start.
    fn typing(&mut self, chat_id: i64, start: bool, ctx: &mut Context<Self>) {
        let interval = self.config.typing_interval;
        let Some(f) = self.chats.get_mut(&chat_id) else {
            self.error_frame("FORBIDDEN", "not a member of this chat", ctx);
            return;
        };
        if !start {
            f.typing_pending = false;
            if std::mem::replace(&mut f.typing_open, false) {
                self.relay_typing(chat_id, false);
            }
            return;
        }
        let now = Instant::now();
        match f.typing_at.map(|t| now.duration_since(t)) {
            Some(since) if since < interval => {
                // Too soon after the last relayed start: relay it when the interval ends.
                if !std::mem::replace(&mut f.typing_pending, true) {
                    ctx.run_later(interval - since, move |act, _| {
                        let Some(f) = act.chats.get_mut(&chat_id) else {
                            return;
                        };
                        if std::mem::replace(&mut f.typing_pending, false) {
                            f.typing_at = Some(Instant::now());
                            f.typing_open = true;
                            act.relay_typing(chat_id, true);
                        }
                    });
                }
            }
            _ => {
                f.typing_at = Some(now);
                f.typing_open = true;
                f.typing_pending = false;
                self.relay_typing(chat_id, true);
            }
        }
    }

    fn relay_typing(&self, chat_id: i64, start: bool) {
        if let Some(room) = self.chats.get(&chat_id).and_then(|f| f.room.as_ref()) {
            room.do_send(Typing {
                user_id: self.user_id,
                username: self.username.clone(),
                start,
            });
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.out.max().max(64) * 2);
        let me = ctx.address().recipient::<Push>();
        let args = StartArgs {
            store: self.store.clone(),
            hub: self.hub.clone(),
            presence: self.presence.clone(),
            user_id: self.user_id,
            conn: self.conn,
            faults: self.faults.clone(),
            cluster: self.cluster.clone(),
            max_per_user: self.config.max_per_user,
            resume: self.resume.take(),
        };
        ctx.wait(
            startup(args, me)
                .into_actor(self)
                .map(|result, act, ctx| act.on_started(result, ctx)),
        );
        if self.transport == Transport::Sse {
            ctx.run_interval(self.config.ping_every, |act, ctx| {
                let data = json!({ "timestamp": Utc::now() }).to_string();
                act.emit("ping", Bytes::from(data), false, false, ctx);
            });
        }
        // The connection lives as long as its token: then the client refreshes and resumes.
        let left = (self.expires_at - Utc::now().timestamp()).max(0) as u64;
        ctx.run_later(Duration::from_secs(left), |act, ctx| {
            act.shutdown(
                close_code::TOKEN_EXPIRED,
                "token expired: refresh it and resume with last_event_id",
                ctx,
            );
        });
        match self.transport {
            Transport::WebSocket => crate::metrics::ws_opened(),
            Transport::Sse => crate::metrics::sse_opened(),
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        for f in self.chats.values() {
            if let Some(room) = &f.room {
                room.do_send(Unsubscribe { conn: self.conn });
            }
        }
        match (self.counted.take(), self.cluster.clone()) {
            (Some(workspaces), Some(cluster)) => {
                // Offline is announced only when the user's last connection on any node closed.
                let (presence, user_id, conn) = (self.presence.clone(), self.user_id, self.conn);
                let registered = self.registered;
                actix::spawn(async move {
                    let last = match cluster.disconnect(user_id).await {
                        Ok(total) => total == 0,
                        Err(e) => {
                            tracing::warn!(user_id, error = %e, "cluster disconnect failed");
                            true
                        }
                    };
                    if last {
                        cluster.publish_change(user_id, false, &workspaces);
                    }
                    if registered {
                        presence.do_send(Disconnect {
                            user_id,
                            conn,
                            announce: Some(last),
                        });
                    }
                });
            }
            _ if self.registered => {
                self.presence.do_send(Disconnect {
                    user_id: self.user_id,
                    conn: self.conn,
                    announce: None,
                });
            }
            _ => {}
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

struct StartArgs {
    store: Store,
    hub: Addr<Hub>,
    presence: Addr<Presence>,
    user_id: i64,
    conn: ConnId,
    faults: Arc<Faults>,
    cluster: Option<ClusterPresence>,
    max_per_user: u32,
    /// The id the client resumes from, raw.
    resume: Option<String>,
}

/// How a subscription attempt ended.
enum Subscribed {
    Yes(Addr<ChatRoom>, i64),
    NotMember,
    Unreachable,
}

/// Subscribes `conn` to the chat's room (following the hub to a fresh room when one stops).
async fn subscribe(
    hub: &Addr<Hub>,
    chat_id: i64,
    conn: ConnId,
    user_id: i64,
    me: Recipient<Push>,
) -> Subscribed {
    for _ in 0..3 {
        let Ok(room) = hub.send(GetRoom { chat_id }).await else {
            return Subscribed::Unreachable;
        };
        let msg = Subscribe {
            conn,
            user_id,
            recipient: me.clone(),
        };
        match room.send(msg).await {
            Ok(Ok(seq)) => return Subscribed::Yes(room, seq),
            Ok(Err(RoomError::NotFound(_) | RoomError::Forbidden(_))) => {
                return Subscribed::NotMember;
            }
            Ok(Err(_)) | Err(_) => continue, // room stopping: ask the hub again
        }
    }
    Subscribed::Unreachable
}

/// The position a client resumes from: (position, whether the id was invalid). A checkpoint
/// id is resolved from the store (only the user's own checkpoints).
async fn resolve_resume(
    a: &StartArgs,
    raw: Option<&str>,
) -> Result<(Option<Position>, bool), crate::store::StoreError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok((None, false));
    };
    match ResumeId::parse(raw) {
        None => Ok((None, true)),
        Some(ResumeId::Full(p)) => Ok((Some(p), false)),
        Some(ResumeId::Checkpoint { id, moved }) => {
            match a.store.load_checkpoint(a.user_id, id).await? {
                None => Ok((None, true)),
                Some(pairs) => {
                    let mut p = Position(pairs.into_iter().collect());
                    p.0.extend(moved.0);
                    Ok((Some(p), false))
                }
            }
        }
    }
}

/// Registers with presence, then reads the user's chats and subscribes to every room.
/// Registering first means a chat joined meanwhile is not missed (see the module doc);
/// subscribing before the replay is read means nothing falls between the two.
async fn startup(a: StartArgs, me: Recipient<Push>) -> Started {
    let unavailable = |e: String| Refusal::Unavailable(e);
    let refused = |counted, result| Started {
        registered: false,
        counted,
        result: Err(result),
    };
    // A user already online on this node (another tab) is registered at once under the
    // workspaces presence holds for them: one query less for every connection after the
    // user's first. (Cluster mode counts every connection across nodes first, below.)
    let mut online_here = false;
    if a.cluster.is_none() {
        let again = super::presence::ConnectIfOnline {
            user_id: a.user_id,
            conn: a.conn,
            recipient: me.clone(),
        };
        match a.presence.send(again).await {
            Ok(Ok(registered)) => online_here = registered,
            Ok(Err(t)) => return refused(None, Refusal::TooManyConnections(t.0)),
            Err(e) => return refused(None, unavailable(e.to_string())),
        }
    }
    let mut counted = None;
    if !online_here {
        let workspaces = match a.store.user_workspaces(a.user_id).await {
            Ok(w) => w,
            Err(e) => return refused(None, unavailable(e.to_string())),
        };
        // Cluster mode: the connection limit and "first connection" are counted across nodes (one
        // Lua script: the 11th connection on any node is refused). Redis failing: count locally.
        let mut announce = None;
        if let Some(cluster) = &a.cluster {
            match cluster.connect(a.user_id, a.max_per_user).await {
                Ok(Admit::Admitted { first, .. }) => {
                    counted = Some(workspaces.clone());
                    announce = Some(first);
                    if first {
                        cluster.publish_change(a.user_id, true, &workspaces);
                    }
                }
                Ok(Admit::Refused { .. }) => {
                    return refused(None, Refusal::TooManyConnections(a.max_per_user));
                }
                Err(e) => tracing::warn!(error = %e, "cluster connection count unavailable"),
            }
        }
        let connect = Connect {
            user_id: a.user_id,
            conn: a.conn,
            recipient: me.clone(),
            workspaces,
            announce,
        };
        match a.presence.send(connect).await {
            Ok(Ok(())) => {}
            Ok(Err(t)) => return refused(counted, Refusal::TooManyConnections(t.0)),
            Err(e) => return refused(counted, unavailable(e.to_string())),
        }
    }
    let result = async {
        let delay = a.faults.session_start_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if a.faults.fail_session_start() {
            return Err(unavailable("fault hook: session start failed".into()));
        }
        let view = a
            .store
            .session_view(a.user_id)
            .await
            .map_err(|e| unavailable(e.to_string()))?
            .ok_or(Refusal::NoSuchUser)?;
        let subscriptions = futures_util::future::join_all(view.chats.iter().map(|c| {
            let (hub, me) = (a.hub.clone(), me.clone());
            async move { (*c, subscribe(&hub, c.chat_id, a.conn, a.user_id, me).await) }
        }))
        .await;
        let chats = subscriptions
            .into_iter()
            .filter_map(|(chat, s)| match s {
                Subscribed::Yes(room, committed) => Some((chat, Some(room), committed)),
                // Followed anyway: the session keeps trying, and fills the gap once it can.
                Subscribed::Unreachable => Some((chat, None, chat.last_seq)),
                Subscribed::NotMember => None, // left the chat meanwhile
            })
            .collect();
        let (resume, invalid_resume) = resolve_resume(&a, a.resume.as_deref())
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Startup {
            username: view.username.into(),
            chats,
            resume,
            invalid_resume,
        })
    }
    .await;
    Started {
        registered: true,
        counted,
        result,
    }
}

impl Handler<Push> for Session {
    type Result = ();

    fn handle(&mut self, msg: Push, ctx: &mut Self::Context) {
        match msg {
            Push::Event(event) => self.emit_live(&event, ctx),
            Push::Subscribed {
                chat_id,
                seq,
                upto,
                room,
            } => {
                if !self.chats.contains_key(&chat_id) {
                    self.follow(chat_id, seq, Some(room), upto);
                    self.pump(ctx);
                }
            }
            Push::Unsubscribed { chat_id } => {
                self.chats.remove(&chat_id);
                self.moved.remove(&chat_id);
                self.fill_queue.retain(|c| *c != chat_id);
            }
            Push::RoomClosed { chat_id } => self.resubscribe(chat_id, ctx),
            Push::SlowConsumer => {
                self.shutdown(
                    close_code::SLOW_CONSUMER,
                    "slow consumer: resume with last_event_id",
                    ctx,
                );
            }
            Push::Revoked { version } if self.token_version < version => {
                self.shutdown(
                    close_code::TOKEN_REVOKED,
                    "token revoked: sign in again and resume with last_event_id",
                    ctx,
                );
            }
            Push::Revoked { .. } => {}
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

/// Closes every open connection of `user_id` authenticated with a token version below
/// `version` (called after a password change).
pub fn revoke(registry: &super::presence::ConnRegistry, user_id: i64, version: i32) {
    let conns: Vec<Recipient<Push>> = registry
        .get(&user_id)
        .map(|c| c.value().iter().map(|(_, r)| r.clone()).collect())
        .unwrap_or_default();
    for recipient in conns {
        recipient.do_send(Push::Revoked { version });
    }
}
