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
