//! The per-chat event log and positions: what a chat room loads when it starts, the fenced
//! advance of a chat's `last_seq` (and, in cluster mode, its row lock), the events other than
//! message creation (`chat_events`), and the replay a reconnecting client gets.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::messages::{MessageRow, SELECT_MESSAGE, from_row};
use super::{Store, StoreError, StoreResult};

/// What a chat room needs to start.
#[derive(Debug, Clone)]
pub struct RoomState {
    pub chat_id: i64,
    pub workspace_id: i64,
    pub kind: String,
    pub is_private: bool,
    pub last_seq: i64,
    /// user id → chat role.
    pub members: HashMap<i64, String>,
}

/// One of a user's chats, with the positions a new connection starts from.
#[derive(Debug, Clone, Copy)]
pub struct UserChat {
    pub chat_id: i64,
    pub joined_seq: i64,
    pub last_seq: i64,
}

/// A replayed event: a message creation (from `messages`) or a logged event.
#[derive(Debug, Clone)]
pub enum ReplayItem {
    Created(MessageRow),
    Logged {
        seq: i64,
        kind: String,
        payload: serde_json::Value,
    },
}

impl ReplayItem {
    pub fn seq(&self) -> i64 {
        match self {
            ReplayItem::Created(m) => m.seq,
            ReplayItem::Logged { seq, .. } => *seq,
        }
    }
}

/// Appends logged events (edits, deletes, reactions, membership) at their seqs.
pub async fn insert_events(
    tx: &Transaction<'_>,
    chat_id: i64,
    events: &[(i64, &str, &serde_json::Value)],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.0).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.1).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| e.2).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO chat_events (chat_id, seq, kind, payload) \
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::jsonb[])",
        )
        .await?;
    tx.execute(&stmt, &[&chat_id, &seqs, &kinds, &payloads])
        .await
        .map_err(StoreError::from_db)?;
    Ok(())
}

/// Moves a chat's `last_seq` from `from` to `to`. Fenced: fails with `Conflict` when another
/// writer moved it, so two rooms for one chat can never both commit.
pub async fn advance_seq(
    tx: &Transaction<'_>,
    chat_id: i64,
    from: i64,
    to: i64,
) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached("UPDATE chats SET last_seq = $3 WHERE id = $1 AND last_seq = $2")
        .await?;
    match tx.execute(&stmt, &[&chat_id, &from, &to]).await? {
        1 => Ok(()),
        _ => Err(StoreError::Conflict(
            "chat position moved by another writer".into(),
        )),
    }
}

/// Cluster mode: locks the chat's row until the transaction ends and returns its `last_seq`, the
/// base a batch's seqs follow (`None`: no such chat). Rooms for one chat on several nodes then
/// commit one after another, each after the other's last seq: gap-free without a cached base.
pub async fn lock_seq(tx: &Transaction<'_>, chat_id: i64) -> StoreResult<Option<i64>> {
    let stmt = tx
        .prepare_cached("SELECT last_seq FROM chats WHERE id = $1 FOR UPDATE")
        .await?;
    Ok(tx.query_opt(&stmt, &[&chat_id]).await?.map(|r| r.get(0)))
}

/// Adds a chat member inside a room transaction; false when already a member.
pub async fn add_member(
    tx: &Transaction<'_>,
    chat_id: i64,
    user_id: i64,
    role: &str,
    seq: i64,
) -> StoreResult<bool> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO chat_members (chat_id, user_id, role, joined_seq, last_read_seq) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (chat_id, user_id) DO NOTHING",
        )
        .await?;
    Ok(tx
        .execute(&stmt, &[&chat_id, &user_id, &role, &seq])
        .await?
        == 1)
}

/// Removes a chat member inside a room transaction; false when not a member.
pub async fn remove_member(tx: &Transaction<'_>, chat_id: i64, user_id: i64) -> StoreResult<bool> {
    let stmt = tx
        .prepare_cached("DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2")
        .await?;
    Ok(tx.execute(&stmt, &[&chat_id, &user_id]).await? == 1)
}

impl Store {
    /// The state a chat room starts from; `None` when the chat does not exist.
    pub async fn room_state(&self, chat_id: i64) -> StoreResult<Option<RoomState>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT workspace_id, kind, is_private, last_seq FROM chats WHERE id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&stmt, &[&chat_id]).await? else {
            return Ok(None);
        };
        let stmt = client
            .prepare_cached("SELECT user_id, role FROM chat_members WHERE chat_id = $1")
            .await?;
        let members = client
            .query(&stmt, &[&chat_id])
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(Some(RoomState {
            chat_id,
            workspace_id: row.get(0),
            kind: row.get(1),
            is_private: row.get(2),
            last_seq: row.get(3),
            members,
        }))
    }

    /// The chats a user belongs to, with positions, and the user's workspaces.
    pub async fn user_chats(&self, user_id: i64) -> StoreResult<(Vec<UserChat>, Vec<i64>)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT cm.chat_id, cm.joined_seq, c.last_seq FROM chat_members cm \
                 JOIN chats c ON c.id = cm.chat_id WHERE cm.user_id = $1 ORDER BY cm.chat_id",
            )
            .await?;
        let chats = client
            .query(&stmt, &[&user_id])
            .await?
            .iter()
            .map(|r| UserChat {
                chat_id: r.get(0),
                joined_seq: r.get(1),
                last_seq: r.get(2),
            })
            .collect();
        let stmt = client
            .prepare_cached("SELECT workspace_id FROM workspace_members WHERE user_id = $1")
            .await?;
        let workspaces = client
            .query(&stmt, &[&user_id])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((chats, workspaces))
    }

    /// Events of a chat with `after < seq <= upto`, in order, at most `limit` of them.
    /// Deleted messages are not replayed as creations (their `message.deleted` is).
    pub async fn replay(
        &self,
        chat_id: i64,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<ReplayItem>> {
        let client = self.client().await?;
        let sql = format!(
            "{SELECT_MESSAGE} WHERE m.chat_id = $1 AND m.seq > $2 AND m.seq <= $3 \
             AND m.deleted_at IS NULL ORDER BY m.seq LIMIT $4"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let mut items: Vec<ReplayItem> = client
            .query(&stmt, &[&chat_id, &after, &upto, &limit])
            .await?
            .iter()
            .map(|r| ReplayItem::Created(from_row(r)))
            .collect();
        let stmt = client
            .prepare_cached(
                "SELECT seq, kind, payload FROM chat_events \
                 WHERE chat_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            )
            .await?;
        items.extend(
            client
                .query(&stmt, &[&chat_id, &after, &upto, &limit])
                .await?
                .iter()
                .map(|r| ReplayItem::Logged {
                    seq: r.get(0),
                    kind: r.get(1),
                    payload: r.get(2),
                }),
        );
        items.sort_by_key(ReplayItem::seq);
        items.truncate(limit.max(0) as usize);
        Ok(items)
    }
}
