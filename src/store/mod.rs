//! Persistence: the PostgreSQL pool and one module per aggregate holding its SQL.
//!
//! Nothing here knows about HTTP or actors. Every query is a prepared statement cached per
//! connection (`prepare_cached`). Errors are [`StoreError`] values the layers above map.

pub mod chats;
pub mod events;
pub mod messages;
pub mod search;
pub mod users;
pub mod workspaces;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Advisory-lock key held while migrating, so two nodes starting together do not race.
const MIGRATION_LOCK: i64 = 0x6665_6368_6174;

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No pooled connection within the wait timeout, or the database is down.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated; the string names the rule.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(db) => StoreError::from(db),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl StoreError {
    /// Turns a unique violation into [`StoreError::Conflict`] naming its constraint.
    pub fn from_db(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION {
                return StoreError::Conflict(db.constraint().unwrap_or("unique").to_string());
            }
        }
        if e.is_closed() {
            return StoreError::Unavailable(e.to_string());
        }
        StoreError::Db(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Shared handle to the database. Cloning is cheap (the pool is reference-counted).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    /// Builds the pool. Connections are opened lazily; waiting for one is bounded by `wait`.
    pub fn new(pg: tokio_postgres::Config, size: usize, wait: Duration) -> anyhow::Result<Self> {
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(size)
            .wait_timeout(Some(wait))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .build()?;
        Ok(Store { pool })
    }

    /// A pooled connection.
    pub async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// Applies pending migrations under an advisory lock.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut conn = self.pool.get().await?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let client: &mut tokio_postgres::Client = &mut conn;
        let result = embedded::migrations::runner().run_async(client).await;
        conn.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
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
