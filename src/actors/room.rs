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

use actix::prelude::*;
use tokio::sync::oneshot;

use super::commit::{self, CommitFailure, CommitSpec, Committed, Effect};
use super::events::{Event, EventKind, MessageView, ReactionView, TypingData, replayed};
use super::fanout::{self, Deliver, Follow, RoomGone, RoomKey, Unfollow, WorkerFanout};
use super::hub::{Hub, RoomStopped};
use super::indexer::IndexerHandle;
use super::presence::ConnRegistry;
use super::relay::{self, Delivered};
use super::rooms::RoomError;
use crate::cluster::{ChatDelivery, Cluster, Feed, Pushed, Subscription};
use crate::faults::Faults;
use crate::store::Store;

/// Identifies one connection (WebSocket or SSE session).
pub type ConnId = u64;

/// Something pushed to a connection's session.
#[derive(Message)]
#[rtype(result = "()")]
pub enum Push {
    Event(Arc<Event>),
    /// The connection now follows `chat_id`, from position `seq` (the user joined a chat);
    /// events up to `upto` are already committed and come from PostgreSQL.
    Subscribed {
        chat_id: i64,
        seq: i64,
        upto: i64,
        room: Addr<ChatRoom>,
    },
    /// The connection no longer follows `chat_id` (the user left it).
    Unsubscribed {
        chat_id: i64,
    },
    /// The room of `chat_id` stopped while the connection followed it (it reloads after a
    /// fenced or unresolved commit): find the new room and fill the gap from PostgreSQL.
    RoomClosed {
        chat_id: i64,
    },
    /// The connection fell too far behind and must close (it may resume).
    SlowConsumer,
    /// The user's password changed: connections authenticated with a token version below
    /// `version` close (the client signs in again and resumes with its last id).
    Revoked {
        version: i32,
    },
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

/// Cluster mode: what the broker delivered for this chat.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Remote(pub ChatDelivery);

/// Cluster mode: `user_id` joined the chat at `seq` on some node; subscribe their open
/// connections here (the room may have been started just for this).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AdoptMember {
    pub user_id: i64,
    pub seq: i64,
}

/// The role of a member, if any (for handlers deciding on moderation).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, RoomError>")]
pub struct MemberRole {
    pub user_id: i64,
}

struct Subscriber {
    user_id: i64,
    recipient: Recipient<Push>,
    /// The worker fanning out to it (`None`: the room delivers itself).
    worker: Option<u64>,
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
    /// Several nodes write the chat: the database hands out seqs under the chat row's lock.
    pub db_orders_writers: bool,
    /// How long a commit whose reply was lost is spent resolving its outcome.
    pub resolve_for: Duration,
    pub faults: Arc<Faults>,
    /// Cluster mode: the broker other nodes' events come from and ours go to.
    pub cluster: Option<Cluster>,
    /// Commits the room's batches in transactions shared with other rooms (`None`: alone).
    pub committer: Option<commit::Committer>,
    /// Most ops committed in one transaction.
    pub commit_max_ops: usize,
}

pub struct ChatRoom {
    chat_id: i64,
    store: Store,
    hub: Addr<Hub>,
    registry: ConnRegistry,
    indexer: IndexerHandle,
    spec: CommitSpec,
    config: RoomConfig,
    /// False until the chat's state is loaded; stays false if the chat does not exist.
    loaded: bool,
    /// user id → chat role.
    members: HashMap<i64, String>,
    subscribers: HashMap<ConnId, Subscriber>,
    /// This room instance, as the workers know it.
    key: RoomKey,
    /// Worker index → its fan-out and how many of the subscribers it hosts.
    workers: HashMap<u64, (Addr<WorkerFanout>, usize)>,
    /// Subscribers without a worker (delivered by the room itself).
    direct: usize,
    /// Last committed seq of the chat.
    last_seq: i64,
    pending: Vec<Pending>,
    /// A batch is being committed; new writes wait for the next one.
    flushing: bool,
    /// user id → (username, when the indicator expires).
    typing: HashMap<i64, (Arc<str>, Instant)>,
    last_activity: Instant,
    /// Cluster mode: every event (ours, other nodes', read back) is delivered through it, in seq
    /// order, exactly once.
    feed: Option<Feed<Delivered>>,
    subscription: Option<Subscription>,
    /// A timer to fill the feed's gap is armed.
    gap_armed: bool,
    /// A read from PostgreSQL for the feed is in flight.
    catching_up: bool,
    /// Another catch-up was asked for while one was in flight (a `Resync` during a read).
    catch_up_again: bool,
}

impl ChatRoom {
    pub fn new(
        chat_id: i64,
        store: Store,
        hub: Addr<Hub>,
        registry: ConnRegistry,
        indexer: IndexerHandle,
        config: RoomConfig,
    ) -> Self {
        let spec = CommitSpec {
            store: store.clone(),
            chat_id,
            db_orders_writers: config.db_orders_writers,
            resolve_for: config.resolve_for,
            faults: config.faults.clone(),
            committer: config.committer.clone(),
            max_ops: config.commit_max_ops,
        };
        ChatRoom {
            chat_id,
            store,
            hub,
            registry,
            indexer,
            spec,
            config,
            loaded: false,
            members: HashMap::new(),
            subscribers: HashMap::new(),
            key: fanout::next_room_key(),
            workers: HashMap::new(),
            direct: 0,
            last_seq: 0,
            pending: Vec::new(),
            flushing: false,
            typing: HashMap::new(),
            last_activity: Instant::now(),
            feed: None,
            subscription: None,
            gap_armed: false,
            catching_up: false,
            catch_up_again: false,
        }
    }

    /// The last seq this room has delivered (what a subscriber is live from).
    fn position(&self) -> i64 {
        self.feed.as_ref().map_or(self.last_seq, Feed::last)
    }

    /// Delivers committed events: through the feed in cluster mode, else directly.
    fn deliver_all(&mut self, items: Vec<Delivered>, ctx: &mut Context<Self>) {
        let Some(feed) = self.feed.as_mut() else {
            for item in items {
                self.deliver(item, ctx);
            }
            return;
        };
        let mut ready = Vec::new();
        for (event, effect) in items {
            let Some(seq) = event.seq else {
                ready.push((event, effect));
                continue;
            };
            if let Pushed::Ready(items) = feed.push(seq, (event, effect)) {
                ready.extend(items);
            }
        }
        let gap = feed.missing().is_some();
        let overflowing = feed.overflowing();
        for item in ready {
            self.deliver(item, ctx);
        }
        if overflowing {
            self.catch_up(ctx);
        } else if gap {
            self.arm_gap(ctx);
        }
    }

    /// One committed event: what it does to the room, and its fan-out.
    fn deliver(&mut self, (event, effect): Delivered, ctx: &mut Context<Self>) {
        if let Some(seq) = event.seq {
            self.last_seq = self.last_seq.max(seq);
        }
        match effect {
            Effect::None => self.fanout(&event, None),
            Effect::Joined { user_id, role } => {
                self.members.insert(user_id, role);
                // The join itself is fanned out right after: nothing to read back.
                let before = event.seq.map_or(self.last_seq, |s| s - 1);
                self.subscribe_user(user_id, before, before, ctx);
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

    /// Waits `FECHATTER_BROKER_GAP_MS` for a missing seq to arrive, then reads it.
    fn arm_gap(&mut self, ctx: &mut Context<Self>) {
        let Some(wait) = self.config.cluster.as_ref().map(Cluster::gap_wait) else {
            return;
        };
        if self.gap_armed {
            return;
        }
        self.gap_armed = true;
        ctx.run_later(wait, |act, ctx| {
            act.gap_armed = false;
            if act.feed.as_ref().is_some_and(|f| f.missing().is_some()) {
                act.catch_up(ctx);
            }
        });
    }

    /// Reads everything after the feed's position from PostgreSQL (the truth) and delivers it.
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(after) = self.feed.as_ref().map(Feed::last) else {
            return;
        };
        if self.catching_up {
            self.catch_up_again = true;
            return;
        }
        self.catching_up = true;
        self.catch_up_again = false;
        let store = self.store.clone();
        let chat_id = self.chat_id;
        const PAGE: i64 = 1000;
        let read = async move {
            let upto = store.chat_last_seq(chat_id).await?.unwrap_or(after);
            let page = store.replay_page(chat_id, after, upto, PAGE).await?;
            Ok::<_, crate::store::StoreError>((page.items, page.covered, upto))
        };
        ctx.spawn(read.into_actor(self).map(move |result, act, ctx| {
            act.catching_up = false;
            match result {
                Ok((items, covered, upto)) => {
                    let delivered: Vec<(i64, Delivered)> = items
                        .iter()
                        .filter_map(|i| replayed(chat_id, i))
                        .map(|e| {
                            let effect = relay::effect_of(&e);
                            (e.seq.unwrap_or(0), (e, effect))
                        })
                        .collect();
                    let ready = match act.feed.as_mut() {
                        Some(feed) => feed.fill(covered, delivered),
                        None => Vec::new(),
                    };
                    if let Some(c) = &act.config.cluster {
                        c.broker().gap_filled();
                    }
                    for item in ready {
                        act.deliver(item, ctx);
                    }
                    let behind =
                        act.catch_up_again || act.feed.as_ref().is_some_and(|f| f.last() < upto);
                    let gap = act.feed.as_ref().is_some_and(|f| f.missing().is_some());
                    if behind {
                        act.catch_up(ctx);
                    } else if gap {
                        act.arm_gap(ctx);
                    }
                }
                Err(e) => {
                    tracing::warn!(chat_id, error = %e, "feed catch-up failed; retrying");
                    ctx.run_later(Duration::from_millis(500), |act, ctx| act.catch_up(ctx));
                }
            }
        }));
    }

    /// Cluster mode: publishes locally committed events (and joins) for the other nodes.
    fn publish(&self, events: &[Delivered]) {
        let Some(cluster) = &self.config.cluster else {
            return;
        };
        if self.config.faults.skip_publish() {
            return;
        }
        let chat_id = self.chat_id;
        cluster
            .broker()
            .publish_chat(events.iter().map(|(e, _)| relay::to_wire(chat_id, e)));
        for (event, effect) in events {
            if let (Effect::Joined { user_id, .. }, Some(seq)) = (effect, event.seq) {
                self.publish_join(cluster, *user_id, seq);
            }
        }
    }

    fn publish_join(&self, cluster: &Cluster, user_id: i64, seq: i64) {
        cluster.broker().publish(
            cluster.keys().members_channel(),
            relay::member_message(user_id, self.chat_id, seq),
        );
    }

    /// Hands `event` to every subscriber (except `skip_user`'s connections): one message per
    /// worker thread hosting some, which pushes it to its own (see `fanout`).
    fn fanout(&mut self, event: &Arc<Event>, skip_user: Option<i64>) {
        for (worker, _) in self.workers.values() {
            worker.do_send(Deliver {
                room_key: self.key,
                event: event.clone(),
                skip_user,
            });
        }
        if self.direct > 0 {
            self.fanout_direct(event, skip_user);
        }
    }

    /// Delivers to the subscribers no worker hosts.
    fn fanout_direct(&mut self, event: &Arc<Event>, skip_user: Option<i64>) {
        let mut delivered = 0usize;
        let mut gone = Vec::new();
        for (conn, sub) in &self.subscribers {
            if sub.worker.is_some() || Some(sub.user_id) == skip_user {
                continue;
            }
            match fanout::push_event(&sub.recipient, event) {
                fanout::Pushed::Delivered => delivered += 1,
                fanout::Pushed::Dropped => {}
                fanout::Pushed::Gone => gone.push(*conn),
            }
        }
        for conn in gone {
            self.remove_subscriber(conn, None);
        }
        crate::metrics::fanout_deliveries(delivered);
    }

    /// Adds (or replaces) a subscriber, registering it with its worker's fan-out.
    fn add_subscriber(
        &mut self,
        conn: ConnId,
        user_id: i64,
        recipient: Recipient<Push>,
        ctx: &mut Context<Self>,
    ) {
        self.remove_subscriber(conn, None);
        let worker = fanout::worker_of(conn).map(|(index, addr)| {
            addr.do_send(Follow {
                room_key: self.key,
                room: ctx.address(),
                conn,
                user_id,
                recipient: recipient.clone(),
            });
            self.workers.entry(index).or_insert((addr, 0)).1 += 1;
            index
        });
        if worker.is_none() {
            self.direct += 1;
        }
        self.subscribers.insert(
            conn,
            Subscriber {
                user_id,
                recipient,
                worker,
            },
        );
    }

    /// Removes a subscriber (and its worker's copy). `left_chat`: the user left the chat, and
    /// the session is told so after the events already on their way to it (through its worker,
    /// which keeps their order).
    fn remove_subscriber(&mut self, conn: ConnId, left_chat: Option<i64>) -> Option<Subscriber> {
        let sub = self.subscribers.remove(&conn)?;
        match sub.worker {
            None => {
                self.direct -= 1;
                if let Some(chat_id) = left_chat {
                    sub.recipient.do_send(Push::Unsubscribed { chat_id });
                }
            }
            Some(index) => {
                if let Some((addr, count)) = self.workers.get_mut(&index) {
                    addr.do_send(Unfollow {
                        room_key: self.key,
                        conn,
                        left_chat,
                    });
                    *count -= 1;
                    if *count == 0 {
                        self.workers.remove(&index);
                    }
                }
            }
        }
        Some(sub)
    }

    /// Subscribes every open connection of `user_id`, telling each it follows from `seq`.
    /// `upto`: events up to it are committed and the connection reads them from PostgreSQL.
    fn subscribe_user(&mut self, user_id: i64, seq: i64, upto: i64, ctx: &mut Context<Self>) {
        let conns: Vec<(ConnId, Recipient<Push>)> = self
            .registry
            .get(&user_id)
            .map(|c| c.value().clone())
            .unwrap_or_default();
        let upto = upto.max(seq);
        for (conn, recipient) in conns {
            recipient.do_send(Push::Subscribed {
                chat_id: self.chat_id,
                seq,
                upto,
                room: ctx.address(),
            });
            self.add_subscriber(conn, user_id, recipient, ctx);
        }
    }

    fn unsubscribe_user(&mut self, user_id: i64) {
        let conns: Vec<ConnId> = self
            .subscribers
            .iter()
            .filter(|(_, s)| s.user_id == user_id)
            .map(|(c, _)| *c)
            .collect();
        for conn in conns {
            self.remove_subscriber(conn, Some(self.chat_id));
        }
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
        let spec = self.spec.clone();
        let base = self.last_seq;
        let fut = async move { commit::commit(&spec, base, ops).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.flushing = false;
            match result {
                Ok(done) => {
                    let reload = done.reload;
                    act.apply_committed(done, replies, ctx);
                    if reload {
                        ctx.stop();
                        return;
                    }
                }
                Err(failure) => {
                    tracing::warn!(chat_id = act.chat_id, ?failure, "room commit failed");
                    let message = match failure {
                        CommitFailure::Unavailable(_) => "could not store the change, retry",
                        CommitFailure::Fenced => "chat room restarting, retry",
                        CommitFailure::Unknown => "could not learn whether the change was stored",
                    };
                    for reply in replies {
                        let _ = reply.send(Err(RoomError::Unavailable(message.into())));
                    }
                    if !matches!(failure, CommitFailure::Unavailable(_)) {
                        // The chat moved under us (or may have): restart from the database.
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
        if self.feed.is_none() {
            self.last_seq = done.last_seq;
        }
        if done.persisted > 0 {
            crate::metrics::messages_persisted(done.persisted);
        }
        if done.outbox {
            self.indexer.notify();
        }
        self.publish(&done.events);
        self.deliver_all(done.events, ctx);
        for (reply, outcome) in replies.into_iter().zip(done.outcomes) {
            let _ = reply.send(outcome);
        }
    }

    /// A typing indicator of a member here: fanned out, and published for the other nodes.
    fn typing_event(&mut self, kind: EventKind, user_id: i64, username: &str) {
        let data = TypingData {
            chat_id: self.chat_id,
            user_id,
            username,
        };
        let event = Event::new(kind, Some(self.chat_id), None, &data);
        self.fanout(&event, Some(user_id));
        if let Some(cluster) = &self.config.cluster {
            cluster
                .broker()
                .publish_chat([relay::to_wire(self.chat_id, &event)]);
        }
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
        let fail = self.config.faults.fail_room_load();
        // Nothing else is handled until the state is loaded.
        ctx.wait(
            async move {
                if fail {
                    return Err(crate::store::StoreError::Unavailable(
                        "fault hook: room load failed".into(),
                    ));
                }
                store.room_state(chat_id).await
            }
            .into_actor(self)
            .map(|state, act, ctx| match state {
                Ok(Some(s)) => {
                    act.members = s.members;
                    act.last_seq = s.last_seq;
                    act.loaded = true;
                    if let Some(cluster) = act.config.cluster.clone() {
                        // From here on, other nodes' events of this chat reach us in order;
                        // the subscription's first `Resync` covers what was committed between
                        // the load and the subscription taking effect.
                        act.feed = Some(Feed::new(s.last_seq));
                        let addr = ctx.address();
                        act.subscription = Some(
                            cluster
                                .broker()
                                .subscribe_chat(act.chat_id, move |d| addr.do_send(Remote(d))),
                        );
                    }
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
        // Followers find the next room and fill what they miss from PostgreSQL.
        for (worker, _) in self.workers.values() {
            worker.do_send(RoomGone { room_key: self.key });
        }
        for sub in self.subscribers.values() {
            sub.recipient.do_send(Push::RoomClosed {
                chat_id: self.chat_id,
            });
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

    fn handle(&mut self, msg: Subscribe, ctx: &mut Self::Context) -> Self::Result {
        self.last_activity = Instant::now();
        if !self.loaded {
            return Err(RoomError::NotFound("chat"));
        }
        if !self.is_member(msg.user_id) {
            return Err(RoomError::Forbidden("not a member".into()));
        }
        self.add_subscriber(msg.conn, msg.user_id, msg.recipient, ctx);
        Ok(self.position())
    }
}

impl Handler<Unsubscribe> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Unsubscribe, _: &mut Self::Context) {
        self.remove_subscriber(msg.conn, None);
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
        let position = self.position();
        for user_id in members {
            self.subscribe_user(user_id, position, position, ctx);
            if let Some(cluster) = &self.config.cluster {
                self.publish_join(cluster, user_id, position + 1);
            }
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

impl Handler<Remote> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: Remote, ctx: &mut Self::Context) {
        if !self.loaded {
            return;
        }
        match msg.0 {
            ChatDelivery::Resync => self.catch_up(ctx),
            ChatDelivery::Event(e) => {
                let Some(event) = relay::from_wire(e) else {
                    return;
                };
                if event.seq.is_none() {
                    // Typing relayed by another node: ephemeral, not ordered.
                    let typist = relay::typist(&event);
                    self.fanout(&event, typist);
                    return;
                }
                let effect = relay::effect_of(&event);
                self.deliver_all(vec![(event, effect)], ctx);
            }
        }
    }
}

impl Handler<AdoptMember> for ChatRoom {
    type Result = ();

    fn handle(&mut self, msg: AdoptMember, ctx: &mut Self::Context) {
        self.last_activity = Instant::now();
        // Not a member yet here: the join reaches this room through its feed and subscribes
        // the user's connections then.
        if self.loaded && self.is_member(msg.user_id) {
            let position = self.position();
            self.subscribe_user(msg.user_id, msg.seq - 1, position, ctx);
        }
    }
}
