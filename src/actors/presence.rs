//! Presence: connections per user, online/offline.

use actix::prelude::*;

use crate::config::Config;
use crate::store::Store;

#[allow(dead_code)] // filled in by the real-time work
pub struct Presence {
    store: Store,
}

impl Presence {
    pub fn new(store: Store, _config: &Config) -> Self {
        Presence { store }
    }
}

impl Actor for Presence {
    type Context = Context<Self>;
}
