//! Resume checkpoints (`resume_checkpoints`): a connection's positions in every chat it
//! follows, stored so that its event ids can name a checkpoint and the few chats that moved
//! since, instead of listing every chat (see `actors::events::ResumeId`).

use super::{Store, StoreResult};

impl Store {
    /// Stores `positions` ((chat, seq) pairs) for `user_id`; returns the checkpoint's id.
    pub async fn save_checkpoint(
        &self,
        user_id: i64,
        positions: &[(i64, i64)],
    ) -> StoreResult<i64> {
        let (chats, seqs): (Vec<i64>, Vec<i64>) = positions.iter().copied().unzip();
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO resume_checkpoints (user_id, chat_ids, seqs) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .await?;
        Ok(client
            .query_one(&stmt, &[&user_id, &chats, &seqs])
            .await?
            .get(0))
    }

    /// The positions of checkpoint `id` if it exists and is `user_id`'s (another user's
    /// checkpoint is as unknown as a pruned one).
    pub async fn load_checkpoint(
        &self,
        user_id: i64,
        id: i64,
    ) -> StoreResult<Option<Vec<(i64, i64)>>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT chat_ids, seqs FROM resume_checkpoints WHERE id = $1 AND user_id = $2",
            )
            .await?;
        Ok(client.query_opt(&stmt, &[&id, &user_id]).await?.map(|r| {
            let chats: Vec<i64> = r.get(0);
            let seqs: Vec<i64> = r.get(1);
            chats.into_iter().zip(seqs).collect()
        }))
    }

    /// Deletes checkpoints older than `hours` (at most `limit` rows per call); returns how many.
    pub async fn prune_checkpoints(&self, hours: i64, limit: i64) -> StoreResult<u64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "DELETE FROM resume_checkpoints WHERE id IN (SELECT id FROM resume_checkpoints \
                 WHERE created_at < now() - make_interval(hours => $1::int) ORDER BY id LIMIT $2)",
            )
            .await?;
        let hours = i32::try_from(hours).unwrap_or(i32::MAX);
        Ok(client.execute(&stmt, &[&hours, &limit]).await?)
    }
}
