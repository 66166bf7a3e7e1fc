//! Node liveness: each node refreshes its score in the `nodes` sorted set (Redis clock, ms)
//! every heartbeat, and sweeps nodes silent for longer than the node TTL, dropping their
//! connection counts (see [`super::presence`]). A `kill -9`ed node is thus forgotten within
//! TTL + one heartbeat. Every node that sees a node leave the live set (whoever swept it)
//! has its rooms catch up from PostgreSQL: the dead node may have committed events that it
//! never published, and nothing else would bring them to this node before the chat's next
//! event.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use super::Cluster;
use super::presence;

/// `ZADD nodes <now> <node>`; returns nothing. KEYS: nodes. ARGV: node.
const BEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
return now
"#;

/// Live nodes: score within the TTL. KEYS: nodes. ARGV: ttl ms.
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')
"#;

/// Sends one heartbeat now (so this node is live before it serves) and then one every `every`,
/// each followed by a sweep of dead nodes. Ends with the cluster handle.
pub async fn spawn_heartbeat(cluster: &Cluster, every: Duration) {
    if let Err(e) = beat(cluster).await {
        tracing::warn!(error = %e, "cluster heartbeat failed");
    }
    let weak = Arc::downgrade(&cluster.inner);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut known: Option<Vec<String>> = None;
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            let cluster = Cluster { inner };
            if cluster.has_left() {
                return;
            }
            if let Err(e) = beat(&cluster).await {
                tracing::warn!(error = %e, "cluster heartbeat failed");
                continue;
            }
            match presence::sweep(&cluster).await {
                Ok(dead) if !dead.is_empty() => {
                    tracing::warn!(?dead, "cluster: forgot nodes without a heartbeat")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cluster sweep failed"),
            }
            if let Ok(now) = live(&cluster).await {
                if known
                    .as_ref()
                    .is_some_and(|k| k.iter().any(|n| !now.contains(n)))
                {
                    tracing::warn!(live = ?now, "cluster: a node left; rooms catch up");
                    cluster.broker().resync_chats();
                }
                known = Some(now);
            }
        }
    });
}

async fn beat(cluster: &Cluster) -> redis::RedisResult<()> {
    let mut conn = cluster.conn();
    let _: i64 = Script::new(BEAT)
        .key(cluster.keys().nodes())
        .arg(cluster.node_id())
        .invoke_async(&mut conn)
        .await?;
    Ok(())
}

/// The live nodes, sorted by id.
pub async fn live(cluster: &Cluster) -> redis::RedisResult<Vec<String>> {
    let mut conn = cluster.conn();
    let mut nodes: Vec<String> = Script::new(LIVE)
        .key(cluster.keys().nodes())
        .arg(cluster.node_ttl().as_millis() as u64)
        .invoke_async(&mut conn)
        .await?;
    nodes.sort();
    Ok(nodes)
}
