//! Rate limits shared by every node: one GCRA bucket per key in Redis, updated by one Lua script
//! (atomic), on Redis's clock (nodes' clocks may differ). The same arithmetic as governor's GCRA,
//! so a key's `X-RateLimit-*` headers read the same whichever node answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::Script;

use super::Cluster;

/// GCRA: the bucket is its "theoretical arrival time" (TAT, µs). A request at `now` passes when
/// `tat + T - burst·T <= now`; it moves the TAT to `max(tat, now) + T`. Returns
/// `{allowed, remaining, reset_in_us, retry_after_us}`; the key expires when its bucket is full.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now - allow_at) / interval), new_tat - now, 0}
"#;

/// One bucket's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_in: Duration,
    /// Until the next request may pass (zero when allowed).
    pub retry_after: Duration,
}

/// After a failed call, how long requests skip Redis and use the node's own buckets (so a dead
/// Redis costs one timeout per second, not one per request).
const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// The shared buckets.
#[derive(Clone)]
pub struct SharedLimiter {
    cluster: Cluster,
    script: Script,
    skip_until: Arc<Mutex<Option<Instant>>>,
}

impl SharedLimiter {
    pub fn new(cluster: Cluster) -> Self {
        SharedLimiter {
            cluster,
            script: Script::new(GCRA),
            skip_until: Arc::new(Mutex::new(None)),
        }
    }

    /// Takes one cell from `limiter`'s bucket for `key` (`burst` cells, one replenished every
    /// `per_cell`).
    pub async fn check(
        &self,
        limiter: &str,
        key: &str,
        burst: u32,
        per_cell: Duration,
    ) -> redis::RedisResult<Verdict> {
        if self.skip_until.lock().is_some_and(|t| Instant::now() < t) {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "Redis failed recently; skipping it for a moment",
            )));
        }
        let mut conn = self.cluster.conn();
        let interval = per_cell.as_micros().max(1) as u64;
        let r: redis::RedisResult<(i64, i64, i64, i64)> = self
            .script
            .key(self.cluster.keys().rate(limiter, key))
            .arg(interval)
            .arg(burst.max(1))
            .invoke_async(&mut conn)
            .await;
        let (allowed, remaining, reset_us, retry_us) = match r {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "shared rate limits unavailable: nodes use their own for now");
                *self.skip_until.lock() = Some(Instant::now() + SKIP_AFTER_FAILURE);
                return Err(e);
            }
        };
        Ok(Verdict {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_in: Duration::from_micros(reset_us.max(0) as u64),
            retry_after: Duration::from_micros(retry_us.max(0) as u64),
        })
    }
}
