//! `WorkerFanout`: the fan-out of the thread that hosts a set of connections. One runs on each
//! thread that starts sessions (the HTTP workers); a chat room hands it one message per event
//! and it pushes the event to that thread's followers of the room, so a delivery to n
//! connections costs the room one message per worker thread instead of n cross-thread
//! mailbox sends and wake-ups.
//!
//! The room stays the owner of its subscriptions (who follows it, and the control messages:
//! subscribed, unsubscribed, room closed); each worker keeps a copy of the followers that live
//! on its thread, kept in step by the room (`Follow`/`Unfollow` are sent before any later
//! `Deliver`, from the same room, so they arrive in order). Entries are keyed by the room
//! instance (`RoomKey`), not the chat, so a room that stops and its successor never mix.
//!
//! A connection's id names its worker (the low [`WORKER_BITS`] bits), so a room subscribing a
//! user's connections from the registry knows where each lives without asking.
//!
//! The slow-consumer policy lives here, in [`push_event`], used by the worker fan-out and by a
//! room delivering to a connection without a worker: a full session mailbox closes the session
//! (it may resume), ephemeral events are dropped for it.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use actix::dev::SendError;
use actix::prelude::*;

use super::events::Event;
use super::room::{ChatRoom, ConnId, Push, Unsubscribe};

/// Identifies one room instance (a chat's room that stops and restarts gets a new key).
pub type RoomKey = u64;

/// Bits of a [`ConnId`] that name the connection's worker.
pub const WORKER_BITS: u32 = 12;
const WORKER_MASK: u64 = (1 << WORKER_BITS) - 1;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);
static NEXT_ROOM: AtomicU64 = AtomicU64::new(1);
/// Worker index → its fan-out (grows as threads start sessions).
static WORKERS: RwLock<Vec<Addr<WorkerFanout>>> = RwLock::new(Vec::new());

thread_local! {
    static LOCAL: OnceCell<u64> = const { OnceCell::new() };
}

/// The index no worker has: rooms deliver to such a connection themselves.
const NO_WORKER: u64 = WORKER_MASK;

/// This thread's worker index, starting its fan-out on first use (must run on an actix
/// arbiter, as HTTP handlers do). Once the id's bits are used up (a process that started
/// thousands of servers), later threads get [`NO_WORKER`].
fn local_index() -> u64 {
    LOCAL.with(|cell| {
        *cell.get_or_init(|| {
            let mut workers = WORKERS.write().unwrap_or_else(|e| e.into_inner());
            if workers.len() as u64 >= NO_WORKER {
                return NO_WORKER;
            }
            workers.push(WorkerFanout::default().start());
            (workers.len() - 1) as u64
        })
    })
}

/// A fresh connection id for a session about to start on this thread.
pub fn next_conn_id() -> ConnId {
    let index = local_index();
    (NEXT_CONN.fetch_add(1, Ordering::Relaxed) << WORKER_BITS) | index
}

/// A fresh room key.
pub fn next_room_key() -> RoomKey {
    NEXT_ROOM.fetch_add(1, Ordering::Relaxed)
}

/// The worker index of a connection.
pub fn worker_index(conn: ConnId) -> u64 {
    conn & WORKER_MASK
}

/// The fan-out of the worker hosting `conn`, if it has one and it still runs.
pub fn worker_of(conn: ConnId) -> Option<(u64, Addr<WorkerFanout>)> {
    let index = worker_index(conn);
    let workers = WORKERS.read().unwrap_or_else(|e| e.into_inner());
    workers
        .get(index as usize)
        .filter(|a| a.connected())
        .map(|a| (index, a.clone()))
}

/// What pushing an event into one session's mailbox came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Delivered,
    /// The mailbox is full and the event ephemeral: dropped for this session only.
    Dropped,
    /// The session is closed, or could not keep up and was told to close (it may resume from
    /// its position): forget the subscription.
    Gone,
}

/// The slow-consumer policy, for every delivery path.
pub fn push_event(recipient: &Recipient<Push>, event: &Arc<Event>) -> Pushed {
    match recipient.try_send(Push::Event(event.clone())) {
        Ok(()) => Pushed::Delivered,
        Err(SendError::Full(_)) if event.kind.is_droppable() => Pushed::Dropped,
        Err(SendError::Full(_)) => {
            recipient.do_send(Push::SlowConsumer);
            crate::metrics::slow_consumer_dropped();
            Pushed::Gone
        }
        Err(SendError::Closed(_)) => Pushed::Gone,
    }
}

/// A connection on this worker now follows the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Follow {
    pub room_key: RoomKey,
    pub room: Addr<ChatRoom>,
    pub conn: ConnId,
    pub user_id: i64,
    pub recipient: Recipient<Push>,
}

/// The connection no longer follows the room.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unfollow {
    pub room_key: RoomKey,
    pub conn: ConnId,
    /// The user left `chat_id`: tell the session, after the events handed to it before (its
    /// own `chat.member_left` among them), so nothing overtakes them.
    pub left_chat: Option<i64>,
}

/// The room stopped: forget its followers here.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomGone {
    pub room_key: RoomKey,
}

/// An event of the room for every follower on this worker (except `skip_user`'s).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub room_key: RoomKey,
    pub event: Arc<Event>,
    pub skip_user: Option<i64>,
}

struct Follower {
    user_id: i64,
    recipient: Recipient<Push>,
}

struct Group {
    room: Addr<ChatRoom>,
    followers: HashMap<ConnId, Follower>,
}

/// One worker thread's followers, per room.
#[derive(Default)]
pub struct WorkerFanout {
    groups: HashMap<RoomKey, Group>,
}

impl Actor for WorkerFanout {
    type Context = Context<Self>;
}

impl Handler<Follow> for WorkerFanout {
    type Result = ();

    fn handle(&mut self, msg: Follow, _: &mut Self::Context) {
        let group = self.groups.entry(msg.room_key).or_insert_with(|| Group {
            room: msg.room,
            followers: HashMap::new(),
        });
        group.followers.insert(
            msg.conn,
            Follower {
                user_id: msg.user_id,
                recipient: msg.recipient,
            },
        );
    }
}

impl Handler<Unfollow> for WorkerFanout {
    type Result = ();

    fn handle(&mut self, msg: Unfollow, _: &mut Self::Context) {
        if let Some(group) = self.groups.get_mut(&msg.room_key) {
            let follower = group.followers.remove(&msg.conn);
            if let (Some(f), Some(chat_id)) = (follower, msg.left_chat) {
                f.recipient.do_send(Push::Unsubscribed { chat_id });
            }
            if group.followers.is_empty() {
                self.groups.remove(&msg.room_key);
            }
        }
    }
}

impl Handler<RoomGone> for WorkerFanout {
    type Result = ();

    fn handle(&mut self, msg: RoomGone, _: &mut Self::Context) {
        self.groups.remove(&msg.room_key);
    }
}

impl Handler<Deliver> for WorkerFanout {
    type Result = ();

    fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
        let Some(group) = self.groups.get_mut(&msg.room_key) else {
            return;
        };
        let mut delivered = 0usize;
        let mut gone = Vec::new();
        for (conn, f) in &group.followers {
            if Some(f.user_id) == msg.skip_user {
                continue;
            }
            match push_event(&f.recipient, &msg.event) {
                Pushed::Delivered => delivered += 1,
                Pushed::Dropped => {}
                Pushed::Gone => gone.push(*conn),
            }
        }
        for conn in gone {
            group.followers.remove(&conn);
            group.room.do_send(Unsubscribe { conn });
        }
        if group.followers.is_empty() {
            self.groups.remove(&msg.room_key);
        }
        crate::metrics::fanout_deliveries(delivered);
    }
}
