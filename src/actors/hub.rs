//! `Hub`: the registry of chat rooms — the only place that knows where a room lives (the seam
//! for running several nodes later). It starts a room on first use, spreading rooms over a few
//! arbiters (threads), and forgets it when it stops (rooms stop themselves when idle).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::indexer::IndexerHandle;
use super::presence::ConnRegistry;
use super::room::{ChatRoom, RoomConfig};
use crate::config::Config;
use crate::faults::Faults;
use crate::store::Store;

/// Finds or starts the room of `chat_id`.
#[derive(Message)]
#[rtype(result = "Addr<ChatRoom>")]
pub struct GetRoom {
    pub chat_id: i64,
}

/// A room stopped (sent by the room itself).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RoomStopped {
    pub chat_id: i64,
    pub room: Addr<ChatRoom>,
}

/// Number of live rooms (metrics).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RoomCount;

pub struct Hub {
    store: Store,
    registry: ConnRegistry,
    indexer: IndexerHandle,
    needs_outbox: bool,
    room_config: RoomConfig,
    rooms: HashMap<i64, Addr<ChatRoom>>,
    /// Threads the rooms run on; a chat's room always lands on `chat_id % len`.
    arbiters: Vec<ArbiterHandle>,
}

impl Hub {
    pub fn new(
        store: Store,
        registry: ConnRegistry,
        indexer: IndexerHandle,
        needs_outbox: bool,
        config: &Config,
        faults: Arc<Faults>,
    ) -> Self {
        let threads = config
            .room_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let arbiters = (0..threads).map(|_| Arbiter::new().handle()).collect();
        Hub {
            store,
            registry,
            indexer,
            needs_outbox,
            room_config: RoomConfig {
                idle: Duration::from_secs(config.room_idle_secs.max(1)),
                typing_ttl: Duration::from_secs(config.typing_ttl_secs),
                db_orders_writers: false,
                resolve_for: Duration::from_secs(config.commit_resolve_secs.max(1)),
                faults,
            },
            rooms: HashMap::new(),
            arbiters,
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Handler<GetRoom> for Hub {
    type Result = MessageResult<GetRoom>;

    fn handle(&mut self, msg: GetRoom, ctx: &mut Self::Context) -> Self::Result {
        if let Some(room) = self.rooms.get(&msg.chat_id) {
            if room.connected() {
                return MessageResult(room.clone());
            }
        }
        let chat_id = msg.chat_id;
        let store = self.store.clone();
        let hub = ctx.address();
        let registry = self.registry.clone();
        let indexer = self.indexer.clone();
        let needs_outbox = self.needs_outbox;
        let config = self.room_config.clone();
        let arbiter = &self.arbiters[chat_id.unsigned_abs() as usize % self.arbiters.len()];
        let room = ChatRoom::start_in_arbiter(arbiter, move |_| {
            ChatRoom::new(chat_id, store, hub, registry, indexer, needs_outbox, config)
        });
        self.rooms.insert(chat_id, room.clone());
        MessageResult(room)
    }
}

impl Handler<RoomStopped> for Hub {
    type Result = ();

    fn handle(&mut self, msg: RoomStopped, _: &mut Self::Context) {
        if self.rooms.get(&msg.chat_id) == Some(&msg.room) {
            self.rooms.remove(&msg.chat_id);
        }
    }
}

impl Handler<RoomCount> for Hub {
    type Result = usize;

    fn handle(&mut self, _: RoomCount, _: &mut Self::Context) -> usize {
        self.rooms.len()
    }
}
