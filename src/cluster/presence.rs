//! Connections per user across the cluster: who is online (a user with tabs on two nodes is one
//! presence) and the per-user connection limit counted over every node.
//!
//! Redis holds, per user, a hash node id → open connections (`uconn:<user>`), and per node the
//! set of users it holds connections for (`nusers:<node>`). Only live nodes' counts count (a
//! node is live while its heartbeat is younger than the node TTL, see [`super::nodes`]); the
//! heartbeat's sweep deletes a dead node's counts. Each operation is one Lua script.
//!
//! The hook for the `Presence` actor (`src/actors/presence.rs`): in cluster mode call
//! [`ClusterPresence::connect`] before admitting a connection (refuse on `Refused`, broadcast
//! `online` on `first`), [`ClusterPresence::disconnect`] when it closes (broadcast `offline` when
//! it returns 0), and [`ClusterPresence::online_among`] instead of the local map; publish those
//! changes with [`ClusterPresence::publish_change`] and, at start-up, turn other nodes' changes
//! into local `presence.update` pushes with [`ClusterPresence::subscribe_changes`].

use std::collections::HashSet;

use redis::Script;

use super::Cluster;
use super::broker::{Delivery, Subscription};

/// Sums a user's live connections, dropping dead nodes' fields. Shared head of the scripts;
/// needs `now`, `ttl`, `node` (this node, always live) and `KEYS[1]` (= `uconn:<user>`), `KEYS[3]`
/// (= nodes).
const LIVE_TOTAL: &str = r#"
local function live_total(key)
  local total = 0
  local fields = redis.call('HGETALL', key)
  for i = 1, #fields, 2 do
    local score = redis.call('ZSCORE', KEYS[3], fields[i])
    if fields[i] == node or (score and tonumber(score) >= now - ttl) then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  return total
end
"#;

const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[1]
local user = ARGV[2]
local ttl = tonumber(ARGV[3])
"#;

/// KEYS: uconn:<user>, nusers:<node>, nodes. ARGV: node, user, ttl ms, max.
const CONNECT: &str = r#"
local total = live_total(KEYS[1])
if total >= tonumber(ARGV[4]) then
  return {0, total}
end
redis.call('HINCRBY', KEYS[1], node, 1)
redis.call('SADD', KEYS[2], user)
return {1, total + 1}
"#;

/// KEYS: uconn:<user>, nusers:<node>, nodes. ARGV: node, user, ttl ms.
const DISCONNECT: &str = r#"
local n = redis.call('HINCRBY', KEYS[1], node, -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], node)
  redis.call('SREM', KEYS[2], user)
end
return live_total(KEYS[1])
"#;

/// KEYS: uconn:<user>, unused, nodes. ARGV: node, user, ttl ms.
const COUNT: &str = "return live_total(KEYS[1])";

/// KEYS: nodes. ARGV: prefix, ttl ms, this node. Forgets nodes silent for longer than the TTL
/// (their connection counts included); returns their ids.
const SWEEP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - tonumber(ARGV[2])))
local out = {}
for _, n in ipairs(dead) do
  if n ~= ARGV[3] then
    local users_key = ARGV[1] .. ':nusers:' .. n
    for _, u in ipairs(redis.call('SMEMBERS', users_key)) do
      redis.call('HDEL', ARGV[1] .. ':uconn:' .. u, n)
    end
    redis.call('DEL', users_key)
    redis.call('ZREM', KEYS[1], n)
    table.insert(out, n)
  end
end
return out
"#;

/// KEYS: nusers:<node>. ARGV: prefix, node. Clears this node's counts (a restart under the same
/// node id starts with no connections).
const RESET: &str = r#"
for _, u in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('HDEL', ARGV[1] .. ':uconn:' .. u, ARGV[2])
end
redis.call('DEL', KEYS[1])
return 0
"#;

/// The answer to a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Counted; `first` when the user was offline on every node before.
    Admitted { first: bool, total: u32 },
    /// The user already has `total` (≥ the limit) connections across the cluster.
    Refused { total: u32 },
}

/// A user went online (first connection on any node) or offline (last one closed) somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub node: String,
    pub user_id: i64,
    pub online: bool,
    /// The user's workspaces (whose online members get the `presence.update`).
    pub workspaces: Vec<i64>,
}

impl PresenceChange {
    /// `node user on|off ws,ws,...`
    fn encode(&self) -> String {
        let ws: Vec<String> = self.workspaces.iter().map(i64::to_string).collect();
        let status = if self.online { "on" } else { "off" };
        format!("{} {} {status} {}", self.node, self.user_id, ws.join(","))
    }

    fn decode(s: &str) -> Option<PresenceChange> {
        let mut parts = s.split(' ');
        let node = parts.next()?.to_string();
        let user_id = parts.next()?.parse().ok()?;
        let online = match parts.next()? {
            "on" => true,
            "off" => false,
            _ => return None,
        };
        let workspaces = match parts.next() {
            None | Some("") => Vec::new(),
            Some(ws) => ws
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(PresenceChange {
            node,
            user_id,
            online,
            workspaces,
        })
    }
}

/// Cluster-wide connection counts (cheap to clone).
#[derive(Clone)]
pub struct ClusterPresence {
    cluster: Cluster,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{LIVE_TOTAL}{body}"))
}

impl ClusterPresence {
    pub fn new(cluster: Cluster) -> Self {
        ClusterPresence { cluster }
    }

    fn user_key(&self, user_id: i64) -> String {
        format!("{}:uconn:{user_id}", self.cluster.keys().prefix())
    }

    fn node_users_key(&self) -> String {
        format!(
            "{}:nusers:{}",
            self.cluster.keys().prefix(),
            self.cluster.node_id()
        )
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        body: &str,
        user_id: i64,
        extra: Option<u32>,
    ) -> redis::RedisResult<T> {
        let s = script(body);
        let mut inv = s.key(self.user_key(user_id));
        inv.key(self.node_users_key())
            .key(self.cluster.keys().nodes())
            .arg(self.cluster.node_id())
            .arg(user_id)
            .arg(self.cluster.node_ttl().as_millis() as u64);
        if let Some(x) = extra {
            inv.arg(x);
        }
        let mut conn = self.cluster.conn();
        inv.invoke_async(&mut conn).await
    }

    /// Counts a new connection of `user_id` on this node unless the user already has `max`.
    pub async fn connect(&self, user_id: i64, max: u32) -> redis::RedisResult<Admit> {
        let (ok, total): (i64, i64) = self.run(CONNECT, user_id, Some(max)).await?;
        let total = total.max(0) as u32;
        Ok(if ok == 1 {
            Admit::Admitted {
                first: total == 1,
                total,
            }
        } else {
            Admit::Refused { total }
        })
    }

    /// Forgets one connection of `user_id` on this node; returns the user's remaining
    /// connections on live nodes (0: offline everywhere).
    pub async fn disconnect(&self, user_id: i64) -> redis::RedisResult<u32> {
        let total: i64 = self.run(DISCONNECT, user_id, None).await?;
        Ok(total.max(0) as u32)
    }

    /// The user's connections on live nodes.
    pub async fn connections(&self, user_id: i64) -> redis::RedisResult<u32> {
        let total: i64 = self.run(COUNT, user_id, None).await?;
        Ok(total.max(0) as u32)
    }

    /// Which of `user_ids` have a connection on a live node.
    pub async fn online_among(&self, user_ids: &[i64]) -> redis::RedisResult<HashSet<i64>> {
        let mut online = HashSet::new();
        // One script per user keeps each atomic and small; a pipeline makes it one round trip.
        let s = script(COUNT);
        let mut pipe = redis::pipe();
        for &u in user_ids {
            pipe.cmd("EVALSHA")
                .arg(s.get_hash())
                .arg(3)
                .arg(self.user_key(u))
                .arg(self.node_users_key())
                .arg(self.cluster.keys().nodes())
                .arg(self.cluster.node_id())
                .arg(u)
                .arg(self.cluster.node_ttl().as_millis() as u64);
        }
        let mut conn = self.cluster.conn();
        // EVALSHA needs the script loaded once; SCRIPT LOAD is idempotent.
        s.load_async(&mut conn).await?;
        let counts: Vec<i64> = pipe.query_async(&mut conn).await?;
        for (u, n) in user_ids.iter().zip(counts) {
            if n > 0 {
                online.insert(*u);
            }
        }
        Ok(online)
    }

    fn changes_channel(&self) -> String {
        format!("{}:presence", self.cluster.keys().prefix())
    }

    /// Tells the other nodes that `user_id` went online or offline cluster-wide.
    pub fn publish_change(&self, user_id: i64, online: bool, workspaces: &[i64]) {
        let change = PresenceChange {
            node: self.cluster.node_id().to_string(),
            user_id,
            online,
            workspaces: workspaces.to_vec(),
        };
        self.cluster
            .broker()
            .publish(self.changes_channel(), change.encode().into());
    }

    /// Other nodes' presence changes (this node's own are skipped).
    pub fn subscribe_changes(
        &self,
        handler: impl Fn(PresenceChange) + Send + Sync + 'static,
    ) -> Subscription {
        let me = self.cluster.node_id().to_string();
        self.cluster
            .broker()
            .subscribe(self.changes_channel(), move |d| {
                let Delivery::Message(bytes) = d else { return };
                let change = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(PresenceChange::decode);
                match change {
                    Some(c) if c.node != me => handler(c),
                    _ => {}
                }
            })
    }

    /// Clears this node's counts (called at start-up).
    pub async fn reset_node(&self) -> redis::RedisResult<()> {
        let mut conn = self.cluster.conn();
        let _: i64 = Script::new(RESET)
            .key(self.node_users_key())
            .arg(self.cluster.keys().prefix())
            .arg(self.cluster.node_id())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

/// Forgets dead nodes and their connection counts; returns their ids.
pub async fn sweep(cluster: &Cluster) -> redis::RedisResult<Vec<String>> {
    let mut conn = cluster.conn();
    Script::new(SWEEP)
        .key(cluster.keys().nodes())
        .arg(cluster.keys().prefix())
        .arg(cluster.node_ttl().as_millis() as u64)
        .arg(cluster.node_id())
        .invoke_async(&mut conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::PresenceChange;

    #[test]
    fn changes_round_trip() {
        for ws in [vec![], vec![1], vec![3, 40]] {
            let c = PresenceChange {
                node: "n1".into(),
                user_id: 9,
                online: ws.len() != 1,
                workspaces: ws,
            };
            assert_eq!(PresenceChange::decode(&c.encode()), Some(c));
        }
        assert_eq!(PresenceChange::decode("n1 x on 1"), None);
        assert_eq!(PresenceChange::decode("n1 2 maybe"), None);
    }
}
