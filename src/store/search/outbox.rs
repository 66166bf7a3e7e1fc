//! The search outbox: rows written in the same transaction as each message write and drained
//! by the `SearchIndexer` into the configured engine (Meilisearch, or `message_search`).
//!
//! A drain transaction runs under the indexer's own [`DrainLimits`] (`SET LOCAL`, so the pooled
//! connection keeps the pool's settings afterwards); a batch that overruns its statement timeout
//! is rolled back and reported as [`DrainError::TimedOut`], so the indexer can retry with a
//! smaller one.

use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::store::{StoreError, StoreResult};

/// What the index must do for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxOp {
    /// (Re)index the message as it now is in PostgreSQL.
    Upsert,
    /// Remove the message from the index.
    Delete,
}

impl OutboxOp {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxOp::Upsert => "upsert",
            OutboxOp::Delete => "delete",
        }
    }
}

/// Records `ops` inside the caller's transaction.
pub async fn record(
    tx: &deadpool_postgres::Transaction<'_>,
    ops: &[(i64, OutboxOp)],
) -> StoreResult<()> {
    if ops.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = ops.iter().map(|(id, _)| *id).collect();
    let kinds: Vec<&str> = ops.iter().map(|(_, op)| op.as_str()).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO search_outbox (message_id, op) \
             SELECT * FROM unnest($1::bigint[], $2::text[])",
        )
        .await?;
    tx.execute(&stmt, &[&ids, &kinds]).await?;
    Ok(())
}

/// Advisory-lock key held by whoever drains the outbox, so two server nodes never index the
/// same message out of order.
pub const DRAIN_LOCK: i64 = 0x6665_6368_6964;

/// One batch taken from the outbox inside a drain transaction.
struct Batch {
    /// The outbox rows taken (deleted when the batch is applied).
    row_ids: Vec<i64>,
    /// The distinct messages they name, ascending.
    message_ids: Vec<i64>,
}

/// Settings of every statement in a drain transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainLimits {
    /// `statement_timeout`.
    pub statement_timeout: Duration,
    /// `work_mem`, kB (at least 64). It also sizes the chunks in which an insert that overflows
    /// a GIN index's pending list (`fastupdate`) merges that list into the index: each merged
    /// chunk stays merged even when the statement is then cancelled, so a merge that takes
    /// longer than the timeout still progresses from one attempt to the next. With one chunk
    /// for the whole list (the default 4 MB, as large as the list), a cancelled merge keeps
    /// nothing, and every later insert starts it again.
    pub work_mem_kb: u32,
}

/// Why a drain did not apply its batch (nothing of the batch is kept: it is retried).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// A statement ran past the drain's statement timeout (or was cancelled): the batch was
    /// rolled back, and a smaller one may fit.
    #[error("a statement of the batch ran past the indexer's statement timeout")]
    TimedOut,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The external index refused or did not answer.
    #[error(transparent)]
    Apply(anyhow::Error),
}

impl From<tokio_postgres::Error> for DrainError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            DrainError::TimedOut
        } else {
            DrainError::Store(e.into())
        }
    }
}

/// Takes the drain lock and up to `max` of the oldest rows, and applies `limits` to every later
/// statement of the transaction. `None` when another node is draining; an empty batch when
/// there is nothing to do.
async fn take(
    tx: &deadpool_postgres::Transaction<'_>,
    max: i64,
    limits: DrainLimits,
) -> Result<Option<Batch>, tokio_postgres::Error> {
    // `set_config(.., true)` is `SET LOCAL`: it ends with the transaction. It takes effect from
    // the next statement on, which is every statement that can take long.
    let timeout = format!("{}ms", limits.statement_timeout.as_millis().max(1));
    let work_mem = format!("{}kB", limits.work_mem_kb.max(64));
    let locked: bool = tx
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1) \
             FROM set_config('statement_timeout', $2, true) t, set_config('work_mem', $3, true) w",
            &[&DRAIN_LOCK, &timeout, &work_mem],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(None);
    }
    let stmt = tx
        .prepare_cached("SELECT id, message_id FROM search_outbox ORDER BY id LIMIT $1")
        .await?;
    let rows = tx.query(&stmt, &[&max]).await?;
    let row_ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut message_ids: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
    message_ids.sort_unstable();
    message_ids.dedup();
    Ok(Some(Batch {
        row_ids,
        message_ids,
    }))
}

/// Deletes the batch's rows (rows written meanwhile stay for the next batch).
async fn finish(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &Batch,
) -> Result<(), tokio_postgres::Error> {
    let stmt = tx
        .prepare_cached("DELETE FROM search_outbox WHERE id = ANY($1)")
        .await?;
    tx.execute(&stmt, &[&batch.row_ids]).await?;
    Ok(())
}

/// Commits a drain that applied its batch (or found nothing to do); rolls back one that
/// failed at once, so the drain lock is free for the retry (a dropped transaction's ROLLBACK
/// is only queued, and the retry may run on another connection).
async fn end(
    tx: deadpool_postgres::Transaction<'_>,
    applied: Result<Option<usize>, DrainError>,
) -> Result<Option<usize>, DrainError> {
    match applied {
        Ok(n) => {
            tx.commit().await?;
            Ok(n)
        }
        Err(e) => {
            // Best effort: a connection too broken to roll back is discarded by the pool.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

impl crate::store::Store {
    /// Takes up to `max` of the oldest outbox rows, hands the distinct message ids to `apply`
    /// (an external index) and deletes those rows only if `apply` succeeded, all in one
    /// transaction whose statements run under `limits`. `Ok(None)` when another node
    /// is draining.
    pub async fn drain_outbox<F, Fut>(
        &self,
        max: i64,
        limits: DrainLimits,
        apply: F,
    ) -> Result<Option<usize>, DrainError>
    where
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let applied = async {
            let Some(batch) = take(&tx, max, limits).await? else {
                return Ok(None);
            };
            if !batch.row_ids.is_empty() {
                apply(batch.message_ids.clone())
                    .await
                    .map_err(DrainError::Apply)?;
                finish(&tx, &batch).await?;
            }
            Ok(Some(batch.row_ids.len()))
        }
        .await;
        end(tx, applied).await
    }

    /// As [`drain_outbox`](Self::drain_outbox) for the PostgreSQL engine: the batch is applied
    /// to `message_search` in the drain's own transaction, so the table and the outbox commit
    /// together (or neither, when a statement overran the timeout).
    pub async fn drain_outbox_into_table(
        &self,
        max: i64,
        limits: DrainLimits,
    ) -> Result<Option<usize>, DrainError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let applied = async {
            let Some(batch) = take(&tx, max, limits).await? else {
                return Ok(None);
            };
            if !batch.row_ids.is_empty() {
                super::table::sync_rows(&tx, &batch.message_ids).await?;
                finish(&tx, &batch).await?;
            }
            Ok(Some(batch.row_ids.len()))
        }
        .await;
        end(tx, applied).await
    }

    /// Rows waiting in the outbox (health checks, tests).
    pub async fn outbox_len(&self) -> StoreResult<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT count(*) FROM search_outbox")
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.get(0))
    }
}
