//! The search outbox: rows written in the same transaction as each message write and drained
//! by the `SearchIndexer` into the configured engine (Meilisearch, or `message_search`).

use crate::store::StoreResult;

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
const DRAIN_LOCK: i64 = 0x6665_6368_6964;

/// One batch taken from the outbox inside a drain transaction.
struct Batch {
    /// The outbox rows taken (deleted when the batch is applied).
    row_ids: Vec<i64>,
    /// The distinct messages they name, ascending.
    message_ids: Vec<i64>,
}

/// Takes the drain lock and up to `max` of the oldest rows. `None` when another node is
/// draining; an empty batch when there is nothing to do.
async fn take(tx: &deadpool_postgres::Transaction<'_>, max: i64) -> StoreResult<Option<Batch>> {
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&DRAIN_LOCK])
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
async fn finish(tx: &deadpool_postgres::Transaction<'_>, batch: &Batch) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached("DELETE FROM search_outbox WHERE id = ANY($1)")
        .await?;
    tx.execute(&stmt, &[&batch.row_ids]).await?;
    Ok(())
}

impl crate::store::Store {
    /// Takes up to `max` of the oldest outbox rows, hands the distinct message ids to `apply`
    /// (an external index) and deletes those rows only if `apply` succeeded, all in one
    /// transaction. `Ok(None)` when another node is draining.
    pub async fn drain_outbox<F, Fut>(&self, max: i64, apply: F) -> anyhow::Result<Option<usize>>
    where
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(batch) = take(&tx, max).await? else {
            return Ok(None);
        };
        if !batch.row_ids.is_empty() {
            apply(batch.message_ids.clone()).await?;
            finish(&tx, &batch).await?;
        }
        tx.commit().await?;
        Ok(Some(batch.row_ids.len()))
    }

    /// As [`drain_outbox`](Self::drain_outbox) for the PostgreSQL engine: the batch is applied
    /// to `message_search` in the drain's own transaction, so the table and the outbox commit
    /// together.
    pub async fn drain_outbox_into_table(&self, max: i64) -> StoreResult<Option<usize>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(batch) = take(&tx, max).await? else {
            return Ok(None);
        };
        if !batch.row_ids.is_empty() {
            super::table::sync(&tx, &batch.message_ids).await?;
            finish(&tx, &batch).await?;
        }
        tx.commit().await?;
        Ok(Some(batch.row_ids.len()))
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
