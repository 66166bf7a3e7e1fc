//! `Presence`: which users are online (a user is online while at least one of their WebSocket
//! or SSE connections is open; several tabs are one presence), the per-user connection limit,
//! and `presence.update` events to the online users who share a workspace.
//!
//! Changes are collected per workspace over `FECHATTER_PRESENCE_COALESCE_MS`. A window whose
//! changes cost at most `FECHATTER_PRESENCE_SEPARATE_FRAMES` frames (changes × the workspace's
//! online connections) sends each change as the contract's `{user_id, status, last_seen}`; a
//! costlier one (a storm in a large workspace) sends one frame per workspace, serialised once
//! and shared by every recipient, with the last change's fields plus `changes`, all of them in
//! order — so a storm of n users connecting costs O(n) frames per window instead of n² (no cap
//! on the workspace size).
//! With `FECHATTER_PRESENCE_FRAMES_PER_SEC` set (off by default), a window whose frames went to
//! many connections stretches the next one (see [`stretched`]): presence stays under that many
//! frames per second, however many users are online, at the price of later (never lost)
//! updates during a storm and larger frames (whose capacity every connection's buffers keep).
//!
//! Cluster mode: whether a connection is the user's first (or a close their last) is decided
//! cluster-wide by the session (`cluster::presence`, one Lua script) and passed in `announce`;
//! changes decided on other nodes arrive as [`RemoteChange`] and are fanned out here like local
//! ones; `OnlineAmong` asks Redis.
//!
//! Presence is the only writer of [`ConnRegistry`], the index of open connections per user;
//! chat rooms read it synchronously when a user joins a chat, to subscribe that user's open
//! connections in the same turn as the join is fanned out (no window where an event is missed).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::Utc;
use dashmap::DashMap;
use serde::Serialize;

use super::events::{Event, EventKind, PresenceData};
use super::room::{ConnId, Push};
use crate::cluster::Subscription;
use crate::cluster::presence::ClusterPresence;
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
    /// Cluster mode: whether this is the user's first connection on any node (`None`: decide
    /// from this node's connections).
    pub announce: Option<bool>,
}

/// A connection of a user who may be online on this node already: when they are, it is
/// registered at once under the workspaces presence holds for them (kept current by
/// [`WorkspaceJoined`]), so the session need not read them (`Ok(true)`); when they are not,
/// nothing is registered (`Ok(false)`: read the workspaces and send [`Connect`]). Never the
/// user's first connection, so never announced. Not for cluster mode (a connection is counted
/// across nodes before presence sees it).
#[derive(Message)]
#[rtype(result = "Result<bool, TooManyConnections>")]
pub struct ConnectIfOnline {
    pub user_id: i64,
    pub conn: ConnId,
    pub recipient: Recipient<Push>,
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
    /// Cluster mode: whether this was the user's last connection on any node.
    pub announce: Option<bool>,
}

/// Cluster mode: a user went online or offline on another node.
#[derive(Message)]
#[rtype(result = "()")]
struct RemoteChange {
    user_id: i64,
    online: bool,
    workspaces: Vec<i64>,
}

/// The server is stopping: record `last_seen` now for every user still online here and every
/// user whose offline write is still in flight, in one statement; answered when it is written.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

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

/// `data` of a `presence.update` for a window that held several changes: the last change's
/// fields (so a client reading only those stays correct) and every change in order.
#[derive(Serialize)]
struct CoalescedData<'a> {
    #[serde(flatten)]
    last: &'a PresenceData,
    changes: &'a [PresenceData],
}

pub struct Presence {
    store: Store,
    registry: ConnRegistry,
    max_per_user: u32,
    /// How long changes are collected before one frame per workspace goes out (zero: each
    /// change goes out at once).
    window: Duration,
    /// The next window: `window`, stretched after a flush that reached many connections.
    next_window: Duration,
    max_window: Duration,
    frames_per_sec: u64,
    /// Most frames (changes × online connections) a workspace's window may spend on one
    /// contract-shaped frame per change before it is coalesced into one.
    separate_budget: usize,
    online: HashMap<i64, Online>,
    /// workspace id → its online users.
    by_workspace: HashMap<i64, HashSet<i64>>,
    /// workspace id → the changes of its users since the last flush, in order.
    pending: HashMap<i64, Vec<PresenceData>>,
    /// A flush is scheduled.
    flush_scheduled: bool,
    /// Users whose `last_seen` writes (on going offline) have not finished, and how many.
    touching: HashMap<i64, u32>,
    /// Cluster mode: presence across nodes.
    cluster: Option<ClusterPresence>,
    changes: Option<Subscription>,
}

impl Presence {
    pub fn new(store: Store, config: &Config, cluster: Option<ClusterPresence>) -> Self {
        Presence {
            cluster,
            changes: None,
            store,
            registry: Arc::new(DashMap::new()),
            max_per_user: config.max_ws_per_user,
            window: Duration::from_millis(config.presence_coalesce_ms),
            next_window: Duration::from_millis(config.presence_coalesce_ms),
            max_window: Duration::from_millis(config.presence_coalesce_max_ms),
            frames_per_sec: config.presence_frames_per_sec,
            separate_budget: config.presence_separate_frames,
            online: HashMap::new(),
            by_workspace: HashMap::new(),
            pending: HashMap::new(),
            flush_scheduled: false,
            touching: HashMap::new(),
        }
    }

    /// The shared read-only view of open connections (for the rooms).
    pub fn registry(&self) -> ConnRegistry {
        self.registry.clone()
    }

    /// Records that `user_id` went `status` for the online users sharing a workspace: at
    /// once with no window, else at the window's end.
    fn changed(
        &mut self,
        user_id: i64,
        workspaces: &[i64],
        status: &'static str,
        ctx: &mut Context<Self>,
    ) {
        let last_seen = Utc::now();
        for ws in workspaces {
            self.pending.entry(*ws).or_default().push(PresenceData {
                user_id,
                status,
                last_seen,
            });
        }
        if self.window.is_zero() {
            let _ = self.flush();
        } else if !self.flush_scheduled {
            self.flush_scheduled = true;
            ctx.run_later(self.next_window, |act, _| {
                act.flush_scheduled = false;
                let frames = act.flush();
                act.next_window = stretched(act.window, act.max_window, frames, act.frames_per_sec);
            });
        }
    }

    /// Sends each workspace's pending changes. While separate frames are cheap — one change, or
    /// changes × the workspace's online connections within `separate_budget` — each change is
    /// its own `presence.update` in the contract's shape, to every online member but the one who
    /// changed. Beyond that (a connection storm in a large workspace) the window is one frame,
    /// serialised once and shared by every online member's connections (the changers included),
    /// listing `changes` in order: O(online connections) per workspace per window.
    /// Returns the frames sent (one per connection reached).
    fn flush(&mut self) -> u64 {
        let mut frames = 0;
        for (ws, changes) in std::mem::take(&mut self.pending) {
            let Some(users) = self.by_workspace.get(&ws) else {
                continue;
            };
            let separate = match changes.as_slice() {
                [] => continue,
                [_] => true,
                _ => {
                    let conns: usize = users
                        .iter()
                        .map(|u| self.registry.get(u).map_or(0, |c| c.len()))
                        .sum();
                    changes.len().saturating_mul(conns) <= self.separate_budget
                }
            };
            let mut send = |event: &Arc<Event>, skip: Option<i64>| {
                for user in users {
                    if Some(*user) == skip {
                        continue;
                    }
                    if let Some(conns) = self.registry.get(user) {
                        for (_, recipient) in conns.iter() {
                            // Droppable: a full mailbox just misses this update.
                            let _ = recipient.try_send(Push::Event(event.clone()));
                            frames += 1;
                        }
                    }
                }
            };
            if separate {
                for change in &changes {
                    let event = Event::new(EventKind::PresenceUpdate, None, None, change);
                    send(&event, Some(change.user_id));
                }
            } else if let Some(last) = changes.last() {
                let data = CoalescedData {
                    last,
                    changes: &changes,
                };
                send(
                    &Event::new(EventKind::PresenceUpdate, None, None, &data),
                    None,
                );
            }
        }
        frames
    }
}

/// The window after one whose frames reached `frames` connections: long enough that those
/// frames stay within `per_sec` per second, never shorter than `base` nor longer than `max`
/// (`per_sec` 0: always `base`). A storm of users coming online then costs frames in proportion
/// to its duration, not to its duration × the online connections.
pub fn stretched(base: Duration, max: Duration, frames: u64, per_sec: u64) -> Duration {
    if per_sec == 0 {
        return base;
    }
    let wanted = Duration::from_secs_f64(frames as f64 / per_sec as f64);
    wanted.min(max).max(base)
}

impl Actor for Presence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(16_384);
        if let Some(cluster) = &self.cluster {
            let addr = ctx.address();
            self.changes = Some(cluster.subscribe_changes(move |c| {
                addr.do_send(RemoteChange {
                    user_id: c.user_id,
                    online: c.online,
                    workspaces: c.workspaces,
                })
            }));
        }
    }
}

impl Handler<RemoteChange> for Presence {
    type Result = ();

    fn handle(&mut self, msg: RemoteChange, ctx: &mut Self::Context) {
        let status = if msg.online { "online" } else { "offline" };
        self.changed(msg.user_id, &msg.workspaces, status, ctx);
    }
}

impl Presence {
    /// Adds a connection to the registry unless the user is at the per-user limit.
    fn admit(
        &mut self,
        user_id: i64,
        conn: ConnId,
        recipient: Recipient<Push>,
    ) -> Result<(), TooManyConnections> {
        let count = self.registry.get(&user_id).map_or(0, |c| c.len());
        if count >= self.max_per_user as usize {
            return Err(TooManyConnections(self.max_per_user));
        }
        self.registry
            .entry(user_id)
            .or_default()
            .push((conn, recipient));
        Ok(())
    }
}

impl Handler<Connect> for Presence {
    type Result = Result<(), TooManyConnections>;

    fn handle(&mut self, msg: Connect, ctx: &mut Self::Context) -> Self::Result {
        self.admit(msg.user_id, msg.conn, msg.recipient)?;
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
            if msg.announce.unwrap_or(true) {
                self.changed(msg.user_id, &msg.workspaces, "online", ctx);
            }
        }
        Ok(())
    }
}

impl Handler<ConnectIfOnline> for Presence {
    type Result = Result<bool, TooManyConnections>;

    fn handle(&mut self, msg: ConnectIfOnline, _: &mut Self::Context) -> Self::Result {
        if !self.online.contains_key(&msg.user_id) {
            return Ok(false);
        }
        self.admit(msg.user_id, msg.conn, msg.recipient)?;
        if let Some(entry) = self.online.get_mut(&msg.user_id) {
            entry.conns += 1;
        }
        Ok(true)
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
        if msg.announce.unwrap_or(true) {
            self.changed(msg.user_id, &workspaces, "offline", ctx);
        }
        let store = self.store.clone();
        let user_id = msg.user_id;
        *self.touching.entry(user_id).or_default() += 1;
        ctx.spawn(
            async move {
                if let Err(e) = store.touch_last_seen(user_id, Utc::now()).await {
                    tracing::warn!(user_id, error = %e, "could not record last_seen");
                }
            }
            .into_actor(self)
            .map(move |_, act, _| {
                if let Some(n) = act.touching.get_mut(&user_id) {
                    *n -= 1;
                    if *n == 0 {
                        act.touching.remove(&user_id);
                    }
                }
            }),
        );
    }
}

impl Handler<Drain> for Presence {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        let mut ids: Vec<i64> = self.online.keys().copied().collect();
        ids.extend(self.touching.keys().copied());
        ids.sort_unstable();
        ids.dedup();
        let store = self.store.clone();
        Box::pin(async move {
            let users = ids.len();
            match store.touch_last_seen_many(&ids, Utc::now()).await {
                Ok(()) => tracing::info!(users, "recorded last_seen of the users online"),
                Err(e) => tracing::warn!(users, error = %e, "could not record last_seen"),
            }
        })
    }
}

impl Handler<OnlineAmong> for Presence {
    type Result = ResponseFuture<HashSet<i64>>;

    fn handle(&mut self, msg: OnlineAmong, _: &mut Self::Context) -> Self::Result {
        let local: HashSet<i64> = msg
            .user_ids
            .iter()
            .copied()
            .filter(|u| self.online.contains_key(u))
            .collect();
        let Some(cluster) = self.cluster.clone() else {
            return Box::pin(async move { local });
        };
        Box::pin(async move {
            match cluster.online_among(&msg.user_ids).await {
                Ok(online) => online.union(&local).copied().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cluster presence unavailable; answering locally");
                    local
                }
            }
        })
    }
}

impl Handler<WorkspaceJoined> for Presence {
    type Result = ();

    fn handle(&mut self, msg: WorkspaceJoined, _: &mut Self::Context) {
        if let Some(o) = self.online.get_mut(&msg.user_id)
            && !o.workspaces.contains(&msg.workspace_id)
        {
            o.workspaces.push(msg.workspace_id);
            self.by_workspace
                .entry(msg.workspace_id)
                .or_default()
                .insert(msg.user_id);
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

#[cfg(test)]
mod tests {
    use super::stretched;
    use std::time::Duration;

    #[test]
    fn window_stretches_with_the_frames_sent() {
        let (base, max) = (Duration::from_millis(200), Duration::from_millis(2000));
        // Few recipients: the base window.
        assert_eq!(stretched(base, max, 100, 10_000), base);
        // 5,000 connections reached at 10,000 frames/s: half a second.
        assert_eq!(
            stretched(base, max, 5_000, 10_000),
            Duration::from_millis(500)
        );
        // Never beyond the cap; 0 frames/s means never stretched.
        assert_eq!(stretched(base, max, 1_000_000, 10_000), max);
        assert_eq!(stretched(base, max, 1_000_000, 0), base);
    }
}
