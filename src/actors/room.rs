//! `ChatRoom`: one actor per active chat. It owns the chat's member set, its subscribed
//! connections and its ordering: it is the single writer of the chat's messages, edits,
//! deletes, reactions and membership changes.
//!
//! Writes queue in `pending`; while one batch is being committed the next accumulates, and the
//! whole batch is then written in one transaction (group commit: one multi-row INSERT for the
//! messages). Every committed event gets the next gap-free per-chat `seq`; only after the
//! commit are requesters answered and the events fanned out, in seq order, as bytes serialised
//! once and shared by all recipients.
//!
//! Slow-consumer policy: fan-out never waits. A session whose mailbox is full is told to close
//! (it may resume from its last position); ephemeral events (typing) are simply dropped for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use tokio::sync::oneshot;

use super::events::{
    Event, EventKind, MemberData, MessageData, MessageDeletedData, MessageView, ReactionData,
    ReactionView, TypingData,
};
use super::hub::{Hub, RoomStopped};
use super::indexer::IndexerHandle;
use super::presence::ConnRegistry;
use super::rooms::RoomError;
use crate::store::events as ev_store;
use crate::store::messages::{self as msg_store, NewMessage};
use crate::store::search::outbox::{self, OutboxOp};
use crate::store::{Store, StoreError};

/// Identifies one connection (WebSocket or SSE session).
pub type ConnId = u64;

/// Something pushed to a connection's session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Push {
    Event(Arc<Event>),
    /// The connection now follows `chat_id`, from position `seq` (the user joined a chat).
    Subscribed {
        chat_id: i64,
        seq: i64,
        room: Addr<ChatRoom>,
    },
    /// The connection no longer follows `chat_id` (the user left it).
    Unsubscribed {
        chat_id: i64,
    },
    /// The connection fell too far behind and must close (it may resume).
    SlowConsumer,
}

/// A write to the chat, sequenced by the room.
#[derive(Debug, Clone)]
pub enum Op {
    Send {
        sender_id: i64,
        content: String,
        idempotency_key: Option<String>,
    },
    Edit {
        user_id: i64,
        message_id: i64,
        content: String,
    },
    /// `moderator`: the user is the chat's owner or admin (may delete others' messages).
    Delete {
        user_id: i64,
        message_id: i64,
        moderator: bool,
    },
    React {
        user_id: i64,
        message_id: i64,
        emoji: String,
        add: bool,
    },
    Join {
        user_id: i64,
        role: String,
    },
    Leave {
        user_id: i64,
    },
}

/// What a committed [`Op`] produced.
#[derive(Debug, Clone)]
pub enum OpOutcome {
    /// `created` is false when an earlier send with the same idempotency key is returned.
    Sent {
        message: MessageView,
        created: bool,
    },
    Edited(MessageView),
    Deleted,
    Reacted {
        reactions: Vec<ReactionView>,
        changed: bool,
    },
    Joined(bool),
    Left(bool),
}

/// Applies a write; answered after it is committed.
#[derive(Message)]
#[rtype(result = "Result<OpOutcome, RoomError>")]
pub struct Apply {
    pub op: Op,
}

/// Subscribes a connection of a member; answers the chat's committed position.
#[derive(Message)]
#[rtype(result = "Result<i64, RoomError>")]
pub struct Subscribe {
    pub conn: ConnId,
    pub user_id: i64,
    pub recipient: Recipient<Push>,
}

/// Removes a connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub conn: ConnId,
}

/// A member started or stopped typing (relayed to the other members, expires by itself).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Typing {
    pub user_id: i64,
    pub username: Arc<str>,
    pub start: bool,
}

/// Subscribes the open connections of every member (the chat was just created).
#[derive(Message)]
#[rtype(result = "Result<(), RoomError>")]
pub struct SubscribeMembers;

/// The role of a member, if any (for handlers deciding on moderation).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, RoomError>")]
pub struct MemberRole {
    pub user_id: i64,
}

struct Subscriber {
    user_id: i64,
    recipient: Recipient<Push>,
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<OpOutcome, RoomError>>,
}

/// Tunables of a room.
#[derive(Clone)]
pub struct RoomConfig {
    pub idle: Duration,
    pub typing_ttl: Duration,
}

pub struct ChatRoom {
    chat_id: i64,
    store: Store,
    hub: Addr<Hub>,
    registry: ConnRegistry,
    indexer: IndexerHandle,
    needs_outbox: bool,
    config: RoomConfig,
    /// False until the chat's state is loaded; stays false if the chat does not exist.
    loaded: bool,
    /// user id → chat role.
    members: HashMap<i64, String>,
    subscribers: HashMap<ConnId, Subscriber>,
    /// Last committed seq of the chat.
    last_seq: i64,
    pending: Vec<Pending>,
    /// A batch is being committed; new writes wait for the next one.
    flushing: bool,
    /// user id → (username, when the indicator expires).
    typing: HashMap<i64, (Arc<str>, Instant)>,
    last_activity: Instant,
}

impl ChatRoom {
    pub fn new(
        chat_id: i64,
        store: Store,
        hub: Addr<Hub>,
        registry: ConnRegistry,
        indexer: IndexerHandle,
        needs_outbox: bool,
        config: RoomConfig,
    ) -> Self {
        ChatRoom {
            chat_id,
            store,
            hub,
            registry,
            indexer,
            needs_outbox,
            config,
            loaded: false,
            members: HashMap::new(),
            subscribers: HashMap::new(),
            last_seq: 0,
            pending: Vec::new(),
            flushing: false,
            typing: HashMap::new(),
            last_activity: Instant::now(),
        }
    }

    /// Hands `event` to every subscriber (except `skip_user`'s connections).
    fn fanout(&mut self, event: &Arc<Event>, skip_user: Option<i64>) {
        let mut delivered = 0usize;
        let mut gone = Vec::new();
        for (conn, sub) in &self.subscribers {
            if Some(sub.user_id) == skip_user {
                continue;
            }
            match sub.recipient.try_send(Push::Event(event.clone())) {
                Ok(()) => delivered += 1,
                Err(SendError::Full(_)) if event.kind.is_droppable() => {}
                Err(SendError::Full(_)) => {
                    // The session cannot keep up: it closes and may resume from its position.
                    sub.recipient.do_send(Push::SlowConsumer);
                    crate::metrics::slow_consumer_dropped();
                    gone.push(*conn);
                }
                Err(SendError::Closed(_)) => gone.push(*conn),
            }
        }
        for conn in gone {
            self.subscribers.remove(&conn);
        }
        crate::metrics::fanout_deliveries(delivered);
    }

    /// Subscribes every open connection of `user_id`, telling each it follows from `seq`.
    fn subscribe_user(&mut self, user_id: i64, seq: i64, ctx: &mut Context<Self>) {
        let conns: Vec<(ConnId, Recipient<Push>)> = self
            .registry
            .get(&user_id)
            .map(|c| c.value().clone())
            .unwrap_or_default();
        for (conn, recipient) in conns {
            recipient.do_send(Push::Subscribed {
                chat_id: self.chat_id,
                seq,
                room: ctx.address(),
            });
            self.subscribers
                .insert(conn, Subscriber { user_id, recipient });
        }
    }

    fn unsubscribe_user(&mut self, user_id: i64) {
        let chat_id = self.chat_id;
        self.subscribers.retain(|_, s| {
            if s.user_id == user_id {
                s.recipient.do_send(Push::Unsubscribed { chat_id });
                false
            } else {
                true
            }
        });
    }

    fn is_member(&self, user_id: i64) -> bool {
        self.members.contains_key(&user_id)
    }

    /// Starts committing the pending writes unless a commit is already in flight.
    fn flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing || self.pending.is_empty() {
            return;
        }
        self.flushing = true;
        let batch = std::mem::take(&mut self.pending);
        let ops: Vec<Op> = batch.iter().map(|p| p.op.clone()).collect();
        let replies: Vec<_> = batch.into_iter().map(|p| p.reply).collect();
        let fut = commit(
            self.store.clone(),
            self.chat_id,
            self.last_seq,
            ops,
            self.needs_outbox,
        );
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.flushing = false;
            match result {
                Ok(done) => act.apply_committed(done, replies, ctx),
                Err(e) => {
                    let fenced = matches!(e, StoreError::Conflict(_));
                    tracing::warn!(chat_id = act.chat_id, error = %e, "room commit failed");
                    for reply in replies {
                        let _ = reply.send(Err(RoomError::Unavailable(
                            "could not store the change, retry".into(),
                        )));
                    }
                    if fenced {
                        // Another writer moved the chat: restart from the database's state.
                        ctx.stop();
                        return;
                    }
                }
            }
            act.flush(ctx);
        }));
    }

    fn apply_committed(
        &mut self,
        done: Committed,
        replies: Vec<oneshot::Sender<Result<OpOutcome, RoomError>>>,
        ctx: &mut Context<Self>,
    ) {
        self.last_seq = done.last_seq;
        if done.persisted > 0 {
            crate::metrics::messages_persisted(done.persisted);
        }
        if done.outbox {
            self.indexer.notify();
        }
        for (event, effect) in done.events {
            match effect {
                Effect::None => self.fanout(&event, None),
                Effect::Joined { user_id, role } => {
                    self.members.insert(user_id, role);
                    let before = event.seq.map_or(self.last_seq, |s| s - 1);
                    self.subscribe_user(user_id, before, ctx);
                    self.fanout(&event, None);
                }
                Effect::Left { user_id } => {
                    self.fanout(&event, None);
                    self.members.remove(&user_id);
                    self.typing.remove(&user_id);
                    self.unsubscribe_user(user_id);
                }
                Effect::Sent { sender_id } => {
                    self.fanout(&event, None);
                    if let Some((name, _)) = self.typing.remove(&sender_id) {
                        self.typing_event(EventKind::TypingStop, sender_id, &name);
                    }
                }
            }
        }
        for (reply, outcome) in replies.into_iter().zip(done.outcomes) {
            let _ = reply.send(outcome);
        }
    }

    fn typing_event(&mut self, kind: EventKind, user_id: i64, username: &str) {
        let data = TypingData {
            chat_id: self.chat_id,
            user_id,
            username,
        };
        let event = Event::new(kind, Some(self.chat_id), None, &data);
        self.fanout(&event, Some(user_id));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let expired: Vec<(i64, Arc<str>)> = self
            .typing
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(u, (name, _))| (*u, name.clone()))
            .collect();
        for (user_id, name) in expired {
            self.typing.remove(&user_id);
            self.typing_event(EventKind::TypingStop, user_id, &name);
        }
        let idle = self.subscribers.is_empty()
            && self.pending.is_empty()
            && !self.flushing
            && self.last_activity.elapsed() >= self.config.idle;
        if idle {
            ctx.stop();
        }
    }
}

impl Actor for ChatRoom {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4096);
        let store = self.store.clone();
        let chat_id = self.chat_id;
        // Nothing else is handled until the state is loaded.
        ctx.wait(
            async move { store.room_state(chat_id).await }
                .into_actor(self)
                .map(|state, act, ctx| match state {
                    Ok(Some(s)) => {
                        act.members = s.members;
                        act.last_seq = s.last_seq;
                        act.loaded = true;
                    }
                    Ok(None) => {
                        // Unknown chat: answer what is queued with NotFound, then stop.
                        act.loaded = false;
                        ctx.run_later(Duration::from_millis(100), |_, ctx| ctx.stop());
                    }
                    Err(e) => {
                        tracing::warn!(chat_id = act.chat_id, error = %e, "room failed to load");
                        ctx.stop();
                    }
                }),
        );
        let tick = Duration::from_millis(500).min(self.config.idle);
        ctx.run_interval(tick, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        for p in self.pending.drain(..) {
            let _ = p.reply.send(Err(RoomError::Unavailable(
                "chat room restarting, retry".into(),
            )));
        }
        self.hub.do_send(RoomStopped {
            chat_id: self.chat_id,
            room: ctx.address(),
        });
    }
}

impl Handler<Apply> for ChatRoom {
    type Result = ResponseFuture<Result<OpOutcome, RoomError>>;

    fn handle(&mut self, msg: Apply, ctx: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        let early = if !self.loaded {
            Some(Err(RoomError::NotFound("chat")))
        } else {
            match &msg.op {
                Op::Join { user_id, .. } if self.is_member(*user_id) => {
                    Some(Ok(OpOutcome::Joined(false)))
                }
                Op::Leave { user_id } if !self.is_member(*user_id) => {
                    Some(Ok(OpOutcome::Left(false)))
                }
                Op::Send { sender_id: u, .. }
                | Op::Edit { user_id: u, .. }
                | Op::Delete { user_id: u, .. }
                | Op::React { user_id: u, .. }
                    if !self.is_member(*u) =>
                {
                    Some(Err(RoomError::Forbidden(
                        "You are not a member of this chat".into(),
                    )))
                }
                _ => None,
            }
        };
        if let Some(result) = early {
            return Box::pin(async move { result });
        }
        let mut op = msg.op;
        if let Op::Delete {
            user_id, moderator, ..
        } = &mut op
        {
            *moderator = matches!(
                self.members.get(user_id).map(String::as_str),
                Some("owner" | "admin")
            );
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push(Pending { op, reply: tx });
        self.flush(ctx);
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(RoomError::Unavailable("chat room stopped, retry".into())))
        })
    }
}

impl Handler<Subscribe> for ChatRoom {
    type Result = Result<i64, RoomError>;

    fn handle(&mut self, msg: Subscribe, _: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        if !self.loaded {
            return Err(RoomError::NotFound("chat"));
        }
        if !self.is_member(msg.user_id) {
            return Err(RoomError::Forbidden("not a member".into()));
        }
        self.subscribers.insert(
            msg.conn,
            Subscriber {
                user_id: msg.user_id,
                recipient: msg.recipient,
            },
        );
        Ok(self.last_seq)
    }
}

impl Handler<Unsubscribe> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.subscribers.remove(&msg.conn);
    }
}

impl Handler<Typing> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Typing, _: &mut Self::Context) {
        if !self.is_member(msg.user_id) {
            return;
        }
        if msg.start {
            let until = Instant::now() + self.config.typing_ttl;
            self.typing
                .insert(msg.user_id, (msg.username.clone(), until));
            self.typing_event(EventKind::TypingStart, msg.user_id, &msg.username);
        } else if self.typing.remove(&msg.user_id).is_some() {
            self.typing_event(EventKind::TypingStop, msg.user_id, &msg.username);
        }
    }
}

impl Handler<SubscribeMembers> for ChatRoom {
    type Result = Result<(), RoomError>;

    fn handle(&mut self, _: SubscribeMembers, ctx: &mut Self::Context) -> Self::Result {
        if !self.loaded {
            return Err(RoomError::NotFound("chat"));
        }
        let members: Vec<i64> = self.members.keys().copied().collect();
        for user_id in members {
            self.subscribe_user(user_id, self.last_seq, ctx);
        }
        Ok(())
    }
}

impl Handler<MemberRole> for ChatRoom {
    type Result = Result<Option<String>, RoomError>;

    fn handle(&mut self, msg: MemberRole, _: &mut Self::Context) -> Self::Result {
        if !self.loaded {
            return Err(RoomError::NotFound("chat"));
        }
        Ok(self.members.get(&msg.user_id).cloned())
    }
}

// ---- the group commit ----------------------------------------------------------------------

/// What an event does to the room besides being fanned out.
enum Effect {
    None,
    Sent { sender_id: i64 },
    Joined { user_id: i64, role: String },
    Left { user_id: i64 },
}

struct Committed {
    last_seq: i64,
    /// Answers, in the order of the batch's ops.
    outcomes: Vec<Result<OpOutcome, RoomError>>,
    /// Events to fan out, in seq order.
    events: Vec<(Arc<Event>, Effect)>,
    persisted: usize,
    outbox: bool,
}

/// The events a batch produces, each at the next seq of the chat.
struct Log {
    chat_id: i64,
    /// The last seq taken so far.
    seq: i64,
    /// Events other than message creations, for `chat_events`.
    logged: Vec<(i64, &'static str, serde_json::Value)>,
    /// Everything to fan out after the commit.
    events: Vec<(Arc<Event>, Effect)>,
}

impl Log {
    /// Takes the next seq for a logged event of `kind` and queues it for fan-out.
    fn record(&mut self, kind: EventKind, data: &impl serde::Serialize, effect: Effect) {
        self.seq += 1;
        let value = serde_json::to_value(data).unwrap_or_default();
        let event = Event::new(kind, Some(self.chat_id), Some(self.seq), &value);
        self.events.push((event, effect));
        self.logged.push((self.seq, kind.as_str(), value));
    }
}

/// How many times a batch is retried when a concurrent send took one of its idempotency keys.
const COMMIT_ATTEMPTS: usize = 3;

/// Commits one batch of ops in one transaction, assigning seqs after `base_seq`.
async fn commit(
    store: Store,
    chat_id: i64,
    base_seq: i64,
    ops: Vec<Op>,
    needs_outbox: bool,
) -> Result<Committed, StoreError> {
    let mut client = store.client().await?;
    for _ in 0..COMMIT_ATTEMPTS {
        let tx = client.transaction().await?;
        if let Some(done) = commit_in(&tx, chat_id, base_seq, &ops, needs_outbox).await? {
            tx.commit().await?;
            return Ok(done);
        }
        tx.rollback().await?;
    }
    Err(StoreError::Other(anyhow::anyhow!(
        "idempotency keys kept colliding with concurrent sends"
    )))
}

/// Commits one batch of `ops` for `chat_id` after `base_seq` exactly as a room's flush does
/// (one transaction, one multi-row INSERT, fenced seq advance, events serialised) and returns
/// the chat's new last seq and the number of messages persisted. Used by benches
/// (`benches/group_commit.rs`); the server itself only commits through [`ChatRoom`].
#[doc(hidden)]
pub async fn commit_batch(
    store: Store,
    chat_id: i64,
    base_seq: i64,
    ops: Vec<Op>,
    needs_outbox: bool,
) -> Result<(i64, usize), StoreError> {
    let done = commit(store, chat_id, base_seq, ops, needs_outbox).await?;
    Ok((done.last_seq, done.persisted))
}

/// The body of [`commit`]; `None` asks for a retry (a concurrent send took a key).
async fn commit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    chat_id: i64,
    base_seq: i64,
    ops: &[Op],
    needs_outbox: bool,
) -> Result<Option<Committed>, StoreError> {
    let mut log = Log {
        chat_id,
        seq: base_seq,
        logged: Vec::new(),
        events: Vec::new(),
    };
    let mut outcomes: Vec<Option<Result<OpOutcome, RoomError>>> =
        (0..ops.len()).map(|_| None).collect();
    let mut outbox_ops: Vec<(i64, OutboxOp)> = Vec::new();

    // 1. Sends: idempotency first, then one INSERT for all new messages.
    let keyed: Vec<(i64, &str)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Send {
                sender_id,
                idempotency_key: Some(k),
                ..
            } => Some((*sender_id, k.as_str())),
            _ => None,
        })
        .collect();
    let existing = if keyed.is_empty() {
        Vec::new()
    } else {
        let senders: Vec<i64> = keyed.iter().map(|k| k.0).collect();
        let keys: Vec<&str> = keyed.iter().map(|k| k.1).collect();
        msg_store::find_by_keys(tx, &senders, &keys).await?
    };
    let mut by_key: HashMap<(i64, &str), usize> = HashMap::new(); // → index into `new`
    let mut new: Vec<NewMessage<'_>> = Vec::new();
    let mut send_slot: Vec<(usize, usize)> = Vec::new(); // (op index, index into `new`)
    for (i, op) in ops.iter().enumerate() {
        let Op::Send {
            sender_id,
            content,
            idempotency_key,
        } = op
        else {
            continue;
        };
        let key = idempotency_key.as_deref();
        if let Some(k) = key {
            if let Some(m) = existing
                .iter()
                .find(|m| m.sender_id == *sender_id && m.idempotency_key.as_deref() == Some(k))
            {
                let reactions = msg_store::reactions_in_tx(tx, m.id).await?;
                outcomes[i] = Some(Ok(OpOutcome::Sent {
                    message: MessageView::new(m, &reactions),
                    created: false,
                }));
                continue;
            }
            if let Some(&slot) = by_key.get(&(*sender_id, k)) {
                send_slot.push((i, slot));
                continue;
            }
        }
        log.seq += 1;
        new.push(NewMessage {
            seq: log.seq,
            sender_id: *sender_id,
            content,
            idempotency_key: key,
        });
        if let Some(k) = key {
            by_key.insert((*sender_id, k), new.len() - 1);
        }
        send_slot.push((i, new.len() - 1));
    }
    let mut persisted = 0;
    if !new.is_empty() {
        let rows = msg_store::insert_batch(tx, chat_id, &new).await?;
        if rows.len() != new.len() {
            return Ok(None);
        }
        persisted = rows.len();
        let views: Vec<MessageView> = rows.iter().map(|r| MessageView::new(r, &[])).collect();
        let mut first_use = vec![true; views.len()];
        for (i, slot) in send_slot {
            let created = std::mem::replace(&mut first_use[slot], false);
            outcomes[i] = Some(Ok(OpOutcome::Sent {
                message: views[slot].clone(),
                created,
            }));
        }
        for (row, view) in rows.iter().zip(&views) {
            outbox_ops.push((row.id, OutboxOp::Upsert));
            let event = Event::new(
                EventKind::MessageCreated,
                Some(chat_id),
                Some(row.seq),
                &MessageData { message: view },
            );
            log.events.push((
                event,
                Effect::Sent {
                    sender_id: row.sender_id,
                },
            ));
        }
    }

    // 2. Everything else, one by one, each taking the next seq when it changes something.
    for (i, op) in ops.iter().enumerate() {
        let outcome = match op {
            Op::Send { .. } => continue,
            Op::Edit {
                user_id,
                message_id,
                content,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) if m.sender_id != *user_id => Err(RoomError::Forbidden(
                    "Only the sender can edit a message".into(),
                )),
                Some(mut m) => {
                    m.updated_at = msg_store::update_content(tx, m.id, content).await?;
                    m.content = content.clone();
                    let reactions = msg_store::reactions_in_tx(tx, m.id).await?;
                    let view = MessageView::new(&m, &reactions);
                    let data = MessageData { message: &view };
                    log.record(EventKind::MessageUpdated, &data, Effect::None);
                    outbox_ops.push((m.id, OutboxOp::Upsert));
                    Ok(OpOutcome::Edited(view))
                }
            },
            Op::Delete {
                user_id,
                message_id,
                moderator,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) if m.sender_id != *user_id && !moderator => Err(RoomError::Forbidden(
                    "Only the sender or a chat owner/admin can delete a message".into(),
                )),
                Some(m) => {
                    msg_store::soft_delete(tx, m.id).await?;
                    let data = MessageDeletedData {
                        message_id: m.id,
                        chat_id,
                        deleted_by: *user_id,
                    };
                    log.record(EventKind::MessageDeleted, &data, Effect::None);
                    outbox_ops.push((m.id, OutboxOp::Delete));
                    Ok(OpOutcome::Deleted)
                }
            },
            Op::React {
                user_id,
                message_id,
                emoji,
                add,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) => {
                    let changed = if *add {
                        msg_store::add_reaction(tx, m.id, *user_id, emoji).await?
                    } else {
                        msg_store::remove_reaction(tx, m.id, *user_id, emoji).await?
                    };
                    let reactions: Vec<ReactionView> = msg_store::reactions_in_tx(tx, m.id)
                        .await?
                        .iter()
                        .map(ReactionView::from)
                        .collect();
                    if changed {
                        let kind = if *add {
                            EventKind::ReactionAdded
                        } else {
                            EventKind::ReactionRemoved
                        };
                        let data = ReactionData {
                            message_id: m.id,
                            chat_id,
                            user_id: *user_id,
                            emoji: emoji.clone(),
                            reactions: reactions.clone(),
                        };
                        log.record(kind, &data, Effect::None);
                    }
                    Ok(OpOutcome::Reacted { reactions, changed })
                }
            },
            Op::Join { user_id, role } => {
                let joined = ev_store::add_member(tx, chat_id, *user_id, role, log.seq).await?;
                if joined {
                    let data = MemberData {
                        chat_id,
                        user_id: *user_id,
                        role: Some(role.clone()),
                    };
                    let effect = Effect::Joined {
                        user_id: *user_id,
                        role: role.clone(),
                    };
                    log.record(EventKind::MemberJoined, &data, effect);
                }
                Ok(OpOutcome::Joined(joined))
            }
            Op::Leave { user_id } => {
                let left = ev_store::remove_member(tx, chat_id, *user_id).await?;
                if left {
                    let data = MemberData {
                        chat_id,
                        user_id: *user_id,
                        role: None,
                    };
                    log.record(
                        EventKind::MemberLeft,
                        &data,
                        Effect::Left { user_id: *user_id },
                    );
                }
                Ok(OpOutcome::Left(left))
            }
        };
        outcomes[i] = Some(outcome);
    }

    // 3. The log of non-creation events, the search outbox, and the chat's position.
    let Log {
        seq,
        logged,
        mut events,
        ..
    } = log;
    let rows: Vec<(i64, &str, &serde_json::Value)> =
        logged.iter().map(|(s, k, p)| (*s, *k, p)).collect();
    ev_store::insert_events(tx, chat_id, &rows).await?;
    let outbox = needs_outbox && !outbox_ops.is_empty();
    if outbox {
        outbox::record(tx, &outbox_ops).await?;
    }
    if seq != base_seq {
        ev_store::advance_seq(tx, chat_id, base_seq, seq).await?;
    }
    events.sort_by_key(|(e, _)| e.seq);
    Ok(Some(Committed {
        last_seq: seq,
        outcomes: outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(RoomError::Unavailable("not processed".into()))))
            .collect(),
        events,
        persisted,
        outbox,
    }))
}
