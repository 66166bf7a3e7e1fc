//! The search outbox: rows written in the same transaction as each message write (when an
//! external index is configured) and drained by the `SearchIndexer`.

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

impl crate::store::Store {
    /// Takes up to `max` of the oldest outbox rows, hands the distinct message ids to `apply`
    /// and deletes those rows only if `apply` succeeded, all in one transaction (rows written
    /// meanwhile stay for the next batch). `Ok(None)` when another node is draining.
    pub async fn drain_outbox<F, Fut>(&self, max: i64, apply: F) -> anyhow::Result<Option<usize>>
    where
        F: FnOnce(Vec<i64>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>>,
    {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
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
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(Some(0));
        }
        let row_ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let mut message_ids: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
        message_ids.sort_unstable();
        message_ids.dedup();
        apply(message_ids).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM search_outbox WHERE id = ANY($1)")
            .await?;
        tx.execute(&stmt, &[&row_ids]).await?;
        tx.commit().await?;
        Ok(Some(rows.len()))
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
