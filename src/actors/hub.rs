//! `Hub`: the registry of chat rooms — the only place that knows where a room lives (the seam
//! for running several nodes later). It starts a room on first use, spreading rooms over a few
//! arbiters (threads), and forgets it when it stops (rooms stop themselves when idle).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::committer::{Committer, CommitterConfig};
use super::indexer::IndexerHandle;
use super::presence::ConnRegistry;
use super::relay;
use super::room::{AdoptMember, ChatRoom, RoomConfig};
use crate::cluster::{Cluster, Delivery, Subscription};
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
    room_config: RoomConfig,
    rooms: HashMap<i64, Addr<ChatRoom>>,
    /// Threads the rooms run on; a chat's room always lands on `chat_id % len`.
    arbiters: Vec<ArbiterHandle>,
    /// Cluster mode: joins committed on any node (see [`RemoteJoin`]).
    members: Option<Subscription>,
}

/// Cluster mode: `user_id` joined `chat_id` at `seq` on some node. If the user has open
/// connections here, the chat's room (started if need be) subscribes them.
#[derive(Message)]
#[rtype(result = "()")]
struct RemoteJoin {
    user_id: i64,
    chat_id: i64,
    seq: i64,
}

impl Hub {
    pub fn new(
        store: Store,
        registry: ConnRegistry,
        indexer: IndexerHandle,
        config: &Config,
        faults: Arc<Faults>,
        cluster: Option<Cluster>,
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
            room_config: RoomConfig {
                idle: Duration::from_secs(config.room_idle_secs.max(1)),
                typing_ttl: Duration::from_secs(config.typing_ttl_secs),
                // Several nodes may write a chat: the chat row's lock orders them.
                db_orders_writers: cluster.is_some(),
                resolve_for: Duration::from_secs(config.commit_resolve_secs.max(1)),
                faults,
                cluster,
                // Rooms' batches share transactions (0 in flight: each room commits alone).
                committer: (config.commit_in_flight > 0).then(|| {
                    Committer::start(CommitterConfig {
                        max_rooms: config.commit_max_rooms,
                        max_ops: config.commit_max_ops,
                        in_flight: config.commit_in_flight,
                    })
                }),
                commit_max_ops: config.commit_max_ops,
            },
            rooms: HashMap::new(),
            arbiters,
            members: None,
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        if let Some(cluster) = self.room_config.cluster.clone() {
            let hub = ctx.address();
            self.members = Some(cluster.broker().subscribe(
                cluster.keys().members_channel(),
                move |d| {
                    let Delivery::Message(bytes) = d else { return };
                    if let Some((user_id, chat_id, seq)) = relay::parse_member_message(&bytes) {
                        hub.do_send(RemoteJoin {
                            user_id,
                            chat_id,
                            seq,
                        });
                    }
                },
            ));
        }
    }
}

impl Hub {
    /// The chat's room, started on its arbiter if there is none (or it stopped).
    fn room(&mut self, chat_id: i64, hub: Addr<Hub>) -> Addr<ChatRoom> {
        if let Some(room) = self.rooms.get(&chat_id)
            && room.connected()
        {
            return room.clone();
        }
        let store = self.store.clone();
        let registry = self.registry.clone();
        let indexer = self.indexer.clone();
        let config = self.room_config.clone();
        let arbiter = &self.arbiters[chat_id.unsigned_abs() as usize % self.arbiters.len()];
        let room = ChatRoom::start_in_arbiter(arbiter, move |_| {
            ChatRoom::new(chat_id, store, hub, registry, indexer, config)
        });
        self.rooms.insert(chat_id, room.clone());
        room
    }
}

impl Handler<RemoteJoin> for Hub {
    type Result = ();

    fn handle(&mut self, msg: RemoteJoin, ctx: &mut Self::Context) {
        if !self.registry.contains_key(&msg.user_id) {
            return; // no connection of the user here
        }
        self.room(msg.chat_id, ctx.address()).do_send(AdoptMember {
            user_id: msg.user_id,
            seq: msg.seq,
        });
    }
}

impl Handler<GetRoom> for Hub {
    type Result = MessageResult<GetRoom>;

    fn handle(&mut self, msg: GetRoom, ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.room(msg.chat_id, ctx.address()))
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
