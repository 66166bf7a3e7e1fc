//! Chat membership writes and the state a chat room loads when it starts.
//! Only the chat's `ChatRoom` calls the writes (it is the single writer of its chat).

use super::{Store, StoreError, StoreResult};

/// Roles within a chat or workspace.
pub const ROLES: &[&str] = &["owner", "admin", "member"];

impl Store {
    /// Adds `user_id` to `chat_id` with `role`; false when already a member.
    pub async fn add_chat_member(&self, chat_id: i64, user_id: i64, role: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO chat_members (chat_id, user_id, role, joined_seq, last_read_seq) \
                 SELECT $1, $2, $3, c.last_seq, c.last_seq FROM chats c WHERE c.id = $1 \
                 ON CONFLICT (chat_id, user_id) DO NOTHING",
            )
            .await?;
        let n = client
            .execute(&stmt, &[&chat_id, &user_id, &role])
            .await
            .map_err(StoreError::from_db)?;
        Ok(n == 1)
    }

    /// Removes `user_id` from `chat_id`; false when not a member.
    pub async fn remove_chat_member(&self, chat_id: i64, user_id: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2")
            .await?;
        Ok(client.execute(&stmt, &[&chat_id, &user_id]).await? == 1)
    }
}
