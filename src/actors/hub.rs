//! The registry of chat rooms.

use actix::prelude::*;

use super::presence::Presence;
use crate::config::Config;
use crate::store::Store;

#[allow(dead_code)] // filled in by the chat-room work
pub struct Hub {
    store: Store,
    presence: Addr<Presence>,
}

impl Hub {
    pub fn new(store: Store, presence: Addr<Presence>, _config: &Config) -> Self {
        Hub { store, presence }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;
}
