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

/// Which of `user_ids` are online now (users with at least one open connection).
pub async fn online_statuses(
    _presence: &Addr<Presence>,
    _user_ids: &[i64],
) -> std::collections::HashSet<i64> {
    std::collections::HashSet::new()
}
