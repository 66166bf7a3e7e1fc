//! `Presence`: which users are online (a user is online while at least one of their WebSocket
//! or SSE connections is open; several tabs are one presence), the per-user connection limit,
//! and `presence.update` events to the online users who share a workspace.
//!
//! Presence is the only writer of [`ConnRegistry`], the index of open connections per user;
//! chat rooms read it synchronously when a user joins a chat, to subscribe that user's open
//! connections in the same turn as the join is fanned out (no window where an event is missed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use chrono::Utc;
use dashmap::DashMap;

use super::events::{Event, EventKind, PresenceData};
use super::room::{ConnId, Push};
use crate::config::Config;
use crate::store::Store;

/// user id → that user's open connections. Written only by [`Presence`].
pub type ConnRegistry = Arc<DashMap<i64, Vec<(ConnId, Recipient<Push>)>>>;

/// A connection opened (after authentication).
#[derive(Message)]
#[rtype(result = "Result<(), TooManyConnections>")]
pub struct Connect {
    pub user_id: i64,
    pub conn: ConnId,
    pub recipient: Recipient<Push>,
    pub workspaces: Vec<i64>,
}

/// Refusal of a connection beyond the per-user limit.
#[derive(Debug)]
pub struct TooManyConnections(pub u32);

/// A connection closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub user_id: i64,
    pub conn: ConnId,
}

/// Which of these users are online.
#[derive(Message)]
#[rtype(result = "HashSet<i64>")]
pub struct OnlineAmong {
    pub user_ids: Vec<i64>,
}

/// A user's workspaces changed (joined one): presence fan-out should include it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkspaceJoined {
    pub user_id: i64,
    pub workspace_id: i64,
}

struct Online {
    conns: usize,
    workspaces: Vec<i64>,
}

pub struct Presence {
    store: Store,
    registry: ConnRegistry,
    max_per_user: u32,
    /// Workspaces with more online users than this get no pushed presence updates
    /// (clients read `GET /api/users`); bounds the O(n²) cost of connection storms.
    fanout_max: usize,
    online: HashMap<i64, Online>,
    /// workspace id → its online users.
    by_workspace: HashMap<i64, HashSet<i64>>,
}

impl Presence {
    pub fn new(store: Store, config: &Config) -> Self {
        Presence {
            store,
            registry: Arc::new(DashMap::new()),
            max_per_user: config.max_ws_per_user,
            fanout_max: config.presence_fanout_max,
            online: HashMap::new(),
            by_workspace: HashMap::new(),
        }
    }

    /// The shared read-only view of open connections (for the rooms).
    pub fn registry(&self) -> ConnRegistry {
        self.registry.clone()
    }

    /// Sends `presence.update` for `user_id` to the online users sharing a workspace.
    fn broadcast(&self, user_id: i64, workspaces: &[i64], status: &'static str) {
        let mut recipients: HashSet<i64> = HashSet::new();
        for ws in workspaces {
            if let Some(users) = self.by_workspace.get(ws) {
                if users.len() > self.fanout_max {
                    continue;
                }
                recipients.extend(users.iter().copied());
            }
        }
        recipients.remove(&user_id);
        if recipients.is_empty() {
            return;
        }
        let data = PresenceData {
            user_id,
            status,
            last_seen: Utc::now(),
        };
        let event = Event::new(EventKind::PresenceUpdate, None, None, &data);
        for r in recipients {
            if let Some(conns) = self.registry.get(&r) {
                for (_, recipient) in conns.iter() {
                    // Droppable: a full mailbox just misses this update.
                    let _ = recipient.try_send(Push::Event(event.clone()));
                }
            }
        }
    }
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
    }
}

impl Handler<Connect> for Presence {
    type Result = Result<(), TooManyConnections>;

    fn handle(&mut self, msg: Connect, _: &mut Self::Context) -> Self::Result {
        let count = self.registry.get(&msg.user_id).map_or(0, |c| c.len());
        if count >= self.max_per_user as usize {
            return Err(TooManyConnections(self.max_per_user));
        }
        self.registry
            .entry(msg.user_id)
            .or_default()
            .push((msg.conn, msg.recipient));
        let entry = self.online.entry(msg.user_id).or_insert(Online {
            conns: 0,
            workspaces: msg.workspaces.clone(),
        });
        entry.conns += 1;
        if entry.conns == 1 {
            entry.workspaces = msg.workspaces.clone();
            for ws in &msg.workspaces {
                self.by_workspace
                    .entry(*ws)
                    .or_default()
                    .insert(msg.user_id);
            }
            self.broadcast(msg.user_id, &msg.workspaces, "online");
        }
        Ok(())
    }
}

impl Handler<Disconnect> for Presence {
    type Result = ();

    fn handle(&mut self, msg: Disconnect, ctx: &mut Self::Context) {
        let mut removed = false;
        if let Some(mut conns) = self.registry.get_mut(&msg.user_id) {
            let before = conns.len();
            conns.retain(|(c, _)| *c != msg.conn);
            removed = conns.len() != before;
        }
        self.registry.remove_if(&msg.user_id, |_, c| c.is_empty());
        if !removed {
            return;
        }
        let Some(entry) = self.online.get_mut(&msg.user_id) else {
            return;
        };
        entry.conns = entry.conns.saturating_sub(1);
        if entry.conns > 0 {
            return;
        }
        let workspaces = self
            .online
            .remove(&msg.user_id)
            .map(|o| o.workspaces)
            .unwrap_or_default();
        for ws in &workspaces {
            if let Some(users) = self.by_workspace.get_mut(ws) {
                users.remove(&msg.user_id);
                if users.is_empty() {
                    self.by_workspace.remove(ws);
                }
            }
        }
        self.broadcast(msg.user_id, &workspaces, "offline");
        let store = self.store.clone();
        let user_id = msg.user_id;
        ctx.spawn(
            async move {
                if let Err(e) = store.touch_last_seen(user_id, Utc::now()).await {
                    tracing::warn!(user_id, error = %e, "could not record last_seen");
                }
            }
            .into_actor(self),
        );
    }
}

impl Handler<OnlineAmong> for Presence {
    type Result = MessageResult<OnlineAmong>;

    fn handle(&mut self, msg: OnlineAmong, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.user_ids
                .into_iter()
                .filter(|u| self.online.contains_key(u))
                .collect(),
        )
    }
}

impl Handler<WorkspaceJoined> for Presence {
    type Result = ();

    fn handle(&mut self, msg: WorkspaceJoined, _: &mut Self::Context) {
        if let Some(o) = self.online.get_mut(&msg.user_id) {
            if !o.workspaces.contains(&msg.workspace_id) {
                o.workspaces.push(msg.workspace_id);
                self.by_workspace
                    .entry(msg.workspace_id)
                    .or_default()
                    .insert(msg.user_id);
            }
        }
    }
}

/// Which of `user_ids` are online now (users with at least one open connection).
pub async fn online_statuses(presence: &Addr<Presence>, user_ids: &[i64]) -> HashSet<i64> {
    presence
        .send(OnlineAmong {
            user_ids: user_ids.to_vec(),
        })
        .await
        .unwrap_or_default()
}
