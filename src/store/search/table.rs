//! `message_search`: the PostgreSQL engine's derived table, written only by the indexer (from
//! the outbox) and by `fechatter reindex`, never inside a send's transaction.

use crate::store::{Store, StoreResult};

/// Makes `message_search` match `messages` for `ids`: live messages are (re)written with their
/// current text and time, deleted or missing ones removed. Idempotent (outbox replays are
/// harmless); rows already current are left alone.
pub async fn sync(tx: &deadpool_postgres::Transaction<'_>, ids: &[i64]) -> StoreResult<()> {
    Ok(sync_rows(tx, ids).await?)
}

/// [`sync`], with the driver's error (the indexer tells a statement timeout from other errors).
pub(super) async fn sync_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[i64],
) -> Result<(), tokio_postgres::Error> {
    let gone = tx
        .prepare_cached(
            "DELETE FROM message_search s WHERE s.message_id = ANY($1) AND NOT EXISTS \
             (SELECT 1 FROM messages m WHERE m.id = s.message_id AND m.deleted_at IS NULL)",
        )
        .await?;
    tx.execute(&gone, &[&ids]).await?;
    let live = tx.prepare_cached(UPSERT_IDS).await?;
    tx.execute(&live, &[&ids]).await?;
    Ok(())
}

/// The live messages among `$1` into `message_search`.
const UPSERT_IDS: &str = "INSERT INTO message_search (message_id, chat_id, sender_id, created_at, content) \
     SELECT id, chat_id, sender_id, created_at, content FROM messages \
     WHERE id = ANY($1) AND deleted_at IS NULL \
     ON CONFLICT (message_id) DO UPDATE SET chat_id = EXCLUDED.chat_id, \
       sender_id = EXCLUDED.sender_id, created_at = EXCLUDED.created_at, content = EXCLUDED.content \
     WHERE (message_search.content, message_search.created_at, message_search.chat_id) \
           IS DISTINCT FROM (EXCLUDED.content, EXCLUDED.created_at, EXCLUDED.chat_id)";

/// Messages per rebuild transaction.
const REBUILD_BATCH: i64 = 10_000;

impl Store {
    /// Rebuilds `message_search` from `messages` (`fechatter reindex`, benchmarks) while
    /// searches keep working: live messages are upserted in id batches, then rows of deleted
    /// or missing messages removed. `progress` is called with the messages done so far.
    /// Returns the number of searchable messages.
    pub async fn rebuild_search_table(&self, mut progress: impl FnMut(i64)) -> StoreResult<i64> {
        let mut after = 0_i64;
        let mut done = 0_i64;
        loop {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            let ids: Vec<i64> = tx
                .query(
                    "SELECT id FROM messages WHERE id > $1 AND deleted_at IS NULL \
                     ORDER BY id LIMIT $2",
                    &[&after, &REBUILD_BATCH],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let Some(&last) = ids.last() else { break };
            sync(&tx, &ids).await?;
            tx.commit().await?;
            after = last;
            done += ids.len() as i64;
            progress(done);
        }
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM message_search s WHERE NOT EXISTS \
                 (SELECT 1 FROM messages m WHERE m.id = s.message_id AND m.deleted_at IS NULL)",
                &[],
            )
            .await?;
        client.batch_execute("ANALYZE message_search").await?;
        Ok(done)
    }
}
