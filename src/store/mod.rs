//! Persistence: the PostgreSQL pool and one module per aggregate holding its SQL.
//!
//! Nothing here knows about HTTP or actors. Every query is a prepared statement cached per
//! connection (`prepare_cached`). Errors are [`StoreError`] values the layers above map.

pub mod audit;
pub mod chats;
pub mod checkpoints;
pub mod connect;
pub mod events;
pub mod messages;
pub mod search;
pub mod users;
pub mod workspaces;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

pub use connect::DbLimits;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory-lock key held while migrating, so two nodes starting together do not race.
const MIGRATION_LOCK: i64 = 0x6665_6368_6174;

/// Advisory-lock key held while one node refills a Meilisearch index that lost its data, so the
/// nodes of a cluster, which all notice the loss, do not all copy every message at once.
pub const SEARCH_REFILL_LOCK: i64 = 0x6665_6368_7266;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time (down, restarting, hung,
    /// out of connections or resources, a statement cancelled by a timeout): retry later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated; the string names the rule.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database refused a value the client sent (bad encoding, out of range, a check):
    /// the client's mistake, never a server error. The string says what was wrong.
    #[error("invalid value: {0}")]
    Invalid(String),
    /// Anything else; shown with PostgreSQL's own message and SQLSTATE when it sent one
    /// (tokio-postgres's `Display` says only "db error").
    #[error("database error: {}", describe(.0))]
    Db(tokio_postgres::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// A database error as the logs want it: PostgreSQL's message, detail and SQLSTATE when the
/// server reported the error, else tokio-postgres's own text.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}; {detail})", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(db) => StoreError::from_db(db),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::from_db(e)
    }
}

/// What a database error means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Not reachable or not answering: retry later (503).
    Unavailable,
    /// A uniqueness rule (409).
    Conflict,
    /// Another integrity rule, e.g. a row referenced concurrently deleted (409).
    Integrity,
    /// A value the client sent was refused (422).
    Invalid,
    /// Anything else: a bug (500).
    Internal,
}

/// Classifies a SQLSTATE (`code`, five characters).
pub fn classify_sqlstate(code: &str) -> Fault {
    match code {
        "23505" => Fault::Conflict,
        // admin/crash shutdown, cannot connect now, statement/lock/idle-session timeouts,
        // serialization failure and deadlock (retrying succeeds).
        "57P01" | "57P02" | "57P03" | "57P05" | "57014" | "55P03" | "25P03" | "40001" | "40P01" => {
            Fault::Unavailable
        }
        _ => match &code[..code.len().min(2)] {
            // connection exception, insufficient resources, operator intervention,
            // system error (I/O), configuration file error.
            "08" | "53" | "57" | "58" | "F0" => Fault::Unavailable,
            "23" => Fault::Integrity,
            // data exception: bad encoding (22021), untranslatable character (22P05),
            // string too long, numeric out of range, invalid text representation...
            "22" => Fault::Invalid,
            _ => Fault::Internal,
        },
    }
}

/// Classifies any tokio-postgres error: a server error by its SQLSTATE, anything that is
/// about the transport (I/O, closed connection, timeout, failed connect) as unavailable.
pub fn classify(e: &tokio_postgres::Error) -> Fault {
    if let Some(db) = e.as_db_error() {
        return classify_sqlstate(db.code().code());
    }
    if e.is_closed() {
        return Fault::Unavailable;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>().is_some() {
            return Fault::Unavailable;
        }
        source = s.source();
    }
    // Kinds without a source that mean "not reachable": timeout, connect, authentication.
    let text = e.to_string();
    if text.starts_with("timeout")
        || text.starts_with("error connecting")
        || text.starts_with("error performing TLS")
        || text.starts_with("authentication")
    {
        return Fault::Unavailable;
    }
    Fault::Internal
}

impl StoreError {
    /// Maps a driver error to what it means for the caller (see [`classify`]).
    pub fn from_db(e: tokio_postgres::Error) -> Self {
        match classify(&e) {
            Fault::Unavailable => StoreError::Unavailable(e.to_string()),
            Fault::Conflict => StoreError::Conflict(
                e.as_db_error()
                    .and_then(|db| db.constraint())
                    .unwrap_or("unique")
                    .to_string(),
            ),
            Fault::Integrity => StoreError::Conflict(
                e.as_db_error()
                    .map(|db| db.constraint().unwrap_or(db.message()).to_string())
                    .unwrap_or_else(|| "integrity".into()),
            ),
            Fault::Invalid => StoreError::Invalid(
                e.as_db_error()
                    .map(|db| db.message().to_string())
                    .unwrap_or_else(|| "invalid value".into()),
            ),
            Fault::Internal => StoreError::Db(e),
        }
    }

    /// Whether retrying later may succeed (the database was unavailable).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Shared handle to the database. Cloning is cheap (the pool is reference-counted).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// The settings without the pool's timeouts, for migrations (which may run long).
    pg: tokio_postgres::Config,
    /// Where `unread_count` saturates (`DbLimits::unread_count_max`).
    unread_max: i64,
}

impl Store {
    /// Builds a pool of `size` waiting at most `wait`, with default timeouts (tools, tests).
    pub fn new(pg: tokio_postgres::Config, size: usize, wait: Duration) -> anyhow::Result<Self> {
        Self::with_limits(pg, DbLimits::new(size, wait))
    }

    /// Builds the pool. Connections are opened lazily, each bounded by `limits` (see
    /// [`connect`]); a connection found closed is dropped, never handed out again.
    pub fn with_limits(pg: tokio_postgres::Config, limits: DbLimits) -> anyhow::Result<Self> {
        let pooled = limits.apply(pg.clone());
        let manager = Manager::from_connect(
            pooled,
            connect::WatchedConnect {
                limits: limits.clone(),
            },
            ManagerConfig {
                // Fast: `is_closed` is checked on every checkout, and the reply watchdog closes
                // a connection whose server went silent, so a dead one is never reused.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(limits.pool_size)
            .wait_timeout(Some(limits.pool_wait))
            .create_timeout(Some(limits.connect_timeout))
            .recycle_timeout(Some(limits.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Store {
            pool,
            pg,
            unread_max: limits.unread_count_max.max(1),
        })
    }

    /// A pooled connection.
    pub async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Runs `work` unless another session (another node) holds the advisory lock `key`,
    /// holding it meanwhile on a pooled connection of its own; `Ok(None)` when another holds
    /// it. The lock is released when `work` ends; should the release fail, or the caller drop
    /// this future mid-way, the connection is closed instead of going back to the pool still
    /// holding the lock (PostgreSQL releases a session's locks when it ends).
    pub async fn exclusively<T>(
        &self,
        key: i64,
        work: impl std::future::Future<Output = T>,
    ) -> StoreResult<Option<T>> {
        /// A connection holding the lock: closed on drop unless released.
        struct Held(Option<deadpool_postgres::Object>);
        impl Drop for Held {
            fn drop(&mut self) {
                if let Some(client) = self.0.take() {
                    drop(deadpool_postgres::Object::take(client));
                }
            }
        }
        let client = self.client().await?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        let mut held = Held(Some(client));
        let out = work.await;
        if let Some(client) = held.0.as_ref()
            && client
                .execute("SELECT pg_advisory_unlock($1)", &[&key])
                .await
                .is_ok()
        {
            // Released: the connection may go back to the pool.
            drop(held.0.take());
        }
        Ok(Some(out))
    }

    /// Applies pending migrations under an advisory lock, on a connection of its own without
    /// the pool's timeouts (a migration or the wait for another node's may take long).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let (mut client, connection) = self.pg.connect(NoTls).await?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "migration connection ended");
            }
        });
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = embedded::migrations::runner().run_async(&mut client).await;
        client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        drop(client);
        let _ = task.await;
        let report = result?;
        for m in report.applied_migrations() {
            tracing::info!(migration = %m, "applied migration");
        }
        Ok(())
    }

    /// Round-trip time of a trivial query (health checks).
    pub async fn ping(&self) -> StoreResult<Duration> {
        let started = std::time::Instant::now();
        let client = self.client().await?;
        client.simple_query("SELECT 1").await?;
        Ok(started.elapsed())
    }

    /// (connections in use, connections open, maximum) of the pool.
    pub fn pool_status(&self) -> (usize, usize, usize) {
        let s = self.pool.status();
        (s.size.saturating_sub(s.available), s.size, s.max_size)
    }
}
