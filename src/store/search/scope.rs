//! Who may search what: workspace membership and the chats a caller belongs to.

use crate::store::{Store, StoreResult};

/// The caller's standing in a workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAccess {
    /// No such workspace.
    Missing,
    /// The workspace exists; the caller is not a member.
    Outsider,
    Member,
}

impl Store {
    /// Whether `workspace_id` exists and `user_id` is a member of it.
    pub async fn workspace_access(
        &self,
        workspace_id: i64,
        user_id: i64,
    ) -> StoreResult<WorkspaceAccess> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM workspaces WHERE id = $1), \
                        EXISTS (SELECT 1 FROM workspace_members WHERE workspace_id = $1 AND user_id = $2)",
            )
            .await?;
        let row = client.query_one(&stmt, &[&workspace_id, &user_id]).await?;
        Ok(match (row.get::<_, bool>(0), row.get::<_, bool>(1)) {
            (false, _) => WorkspaceAccess::Missing,
            (true, false) => WorkspaceAccess::Outsider,
            (true, true) => WorkspaceAccess::Member,
        })
    }

    /// The chats of `workspace_id` that `user_id` is a member of (the scope of a message search).
    pub async fn member_chat_ids(&self, workspace_id: i64, user_id: i64) -> StoreResult<Vec<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT cm.chat_id FROM chat_members cm JOIN chats c ON c.id = cm.chat_id \
                 WHERE cm.user_id = $2 AND c.workspace_id = $1 ORDER BY cm.chat_id",
            )
            .await?;
        let rows = client.query(&stmt, &[&workspace_id, &user_id]).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}
