//! Cluster mode (`REDIS_URL` set): several `fechatter serve` nodes share PostgreSQL and Redis.
//!
//! PostgreSQL stays the truth (every chat's events and `seq`s); Redis carries speed (pub/sub of
//! committed events, typing, revocations) and the state that must be one across nodes (rate-limit
//! buckets, presence and connection counts, live nodes). Every Redis state change
//! is one Lua script, so each is atomic. Without `REDIS_URL` nothing here runs.
//!
//! - [`broker`]: publish/subscribe with resubscription and a "gap possible" signal;
//! - [`feed`]: the ordered feed a room puts every event through (pure logic; the room's side
//!   is `actors::relay` and `ChatRoom`'s feed methods);
//! - [`wire`]: the bytes of a published chat event;
//! - [`limits`]: GCRA buckets; [`presence`]: connections per user across nodes;
//!   [`revocation`]: "close this user's sockets" on every node; [`nodes`]: heartbeats.

pub mod broker;
pub mod feed;
pub mod limits;
pub mod nodes;
pub mod presence;
pub mod revocation;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;

pub use broker::{Broker, BrokerStats, ChatDelivery, Delivery, Subscription};
pub use feed::{Feed, Pushed};
pub use wire::ChatEvent;

/// How long one Redis command may take before it counts as failed (callers fall back: rate
/// limits to the node's own limiter, token versions to PostgreSQL).
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Names of every key and channel, under the configured prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_string(),
        }
    }
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Pub/sub channel of one chat's events.
    pub fn chat_channel(&self, chat_id: i64) -> String {
        format!("{}:chat:{chat_id}", self.prefix)
    }
    /// Pub/sub channel of chat joins (payload: `<user>:<chat>:<seq>`): a node with open
    /// connections of the user subscribes them to the chat, even with no room for it yet.
    pub fn members_channel(&self) -> String {
        format!("{}:members", self.prefix)
    }
    /// Pub/sub channel of revocations (payload: `<user>:<version>`).
    pub fn revoke_channel(&self) -> String {
        format!("{}:revoke", self.prefix)
    }
    /// One rate-limit bucket.
    pub fn rate(&self, limiter: &str, key: &str) -> String {
        format!("{}:rl:{limiter}:{key}", self.prefix)
    }
    /// A user's current token version.
    pub fn token_version(&self, user_id: i64) -> String {
        format!("{}:tv:{user_id}", self.prefix)
    }
    /// Sorted set: node id → last heartbeat (ms, Redis clock).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
}

/// The cluster handle: cheap to clone, shared by the HTTP layer and (through the hub) the rooms.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: String,
    keys: Keys,
    cmd: ConnectionManager,
    broker: Broker,
    node_ttl: Duration,
    gap_wait: Duration,
    revocation: revocation::Revocation,
    /// Set by [`Cluster::leave`]: the heartbeat stops.
    left: AtomicBool,
}

impl Cluster {
    /// Connects when `REDIS_URL` is set (`None` otherwise: one node, nothing shared), starts the
    /// broker's subscriber and the heartbeat. Fails when Redis cannot be reached at start-up.
    pub async fn connect(config: &Config) -> anyhow::Result<Option<Cluster>> {
        let Some(url) = config.redis_url.as_deref() else {
            return Ok(None);
        };
        let client = redis::Client::open(url).context("parsing REDIS_URL")?;
        let cm_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let cmd = ConnectionManager::new_with_config(client.clone(), cm_config)
            .await
            .context("connecting to Redis (REDIS_URL)")?;
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("n{}", &uuid::Uuid::new_v4().simple().to_string()[..10]));
        let keys = Keys::new(&config.redis_prefix);
        let broker = Broker::start(client, cmd.clone(), node_id.clone(), keys.clone());
        let revocation = revocation::Revocation::new(keys.clone());
        let cluster = Cluster {
            inner: Arc::new(Inner {
                node_id,
                keys,
                cmd,
                broker,
                node_ttl: Duration::from_secs(config.node_ttl_secs),
                gap_wait: Duration::from_millis(config.broker_gap_ms),
                revocation,
                left: AtomicBool::new(false),
            }),
        };
        cluster.inner.revocation.listen(&cluster.inner.broker);
        if let Err(e) = cluster.presence().reset_node().await {
            tracing::warn!(error = %e, "could not clear this node's old connection counts");
        }
        nodes::spawn_heartbeat(&cluster, Duration::from_secs(config.node_heartbeat_secs)).await;
        tracing::info!(node = %cluster.node_id(), "cluster mode: Redis connected");
        Ok(Some(cluster))
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// A command connection (reconnects by itself; clones share one multiplexed connection).
    pub fn conn(&self) -> ConnectionManager {
        self.inner.cmd.clone()
    }

    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    pub fn revocation(&self) -> &revocation::Revocation {
        &self.inner.revocation
    }

    /// A password change committed `version` for `user_id`: close their sockets on every node.
    pub fn revoke(&self, user_id: i64, version: i32) {
        self.inner
            .revocation
            .revoke(&self.inner.broker, user_id, version);
    }

    /// Cluster-wide connection counts (presence and the per-user connection limit).
    pub fn presence(&self) -> presence::ClusterPresence {
        presence::ClusterPresence::new(self.clone())
    }

    /// How long a node counts as alive after its last heartbeat.
    pub fn node_ttl(&self) -> Duration {
        self.inner.node_ttl
    }

    /// How long a room's feed waits for a missing seq before reading it from PostgreSQL.
    pub fn gap_wait(&self) -> Duration {
        self.inner.gap_wait
    }

    /// One `PING` round trip.
    pub async fn ping(&self) -> Result<Duration, String> {
        let mut conn = self.conn();
        let started = Instant::now();
        let r: redis::RedisResult<String> = tokio::time::timeout(
            COMMAND_TIMEOUT * 4,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer in time",
            )))
        });
        match r {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => Err(format!("Redis: {e}")),
        }
    }

    /// A clean shutdown: stop heartbeating, drop this node's connection counts and leave the
    /// live nodes now rather than after the TTL.
    pub async fn leave(&self) {
        self.inner.left.store(true, Ordering::Relaxed);
        if let Err(e) = self.presence().reset_node().await {
            tracing::warn!(error = %e, "could not clear this node's connection counts");
        }
        let mut conn = self.conn();
        let r: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(self.keys().nodes())
            .arg(self.node_id())
            .query_async(&mut conn)
            .await;
        match r {
            Ok(_) => tracing::info!(node = %self.node_id(), "left the cluster"),
            Err(e) => tracing::warn!(error = %e, "could not leave the cluster cleanly"),
        }
    }

    fn has_left(&self) -> bool {
        self.inner.left.load(Ordering::Relaxed)
    }

    /// The nodes whose heartbeat is younger than the node TTL, sorted.
    pub async fn live_nodes(&self) -> redis::RedisResult<Vec<String>> {
        nodes::live(self).await
    }
}
