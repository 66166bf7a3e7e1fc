//! Chats: channels and direct messages, the caller's chat list (member and unread counts and the
//! last message in one query), chat member lists and read markers.
//!
//! Membership changes after creation go through the chat's room (see `store::members`); the
//! creation transaction itself writes the first members, before any room exists.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::workspaces::Page;
use super::{Store, StoreResult};

/// The newest non-deleted message of a chat.
#[derive(Debug, Clone)]
pub struct LastMessage {
    pub id: i64,
    pub content: String,
    pub sender_id: i64,
    pub sender_username: String,
    pub created_at: DateTime<Utc>,
}

/// A chat as one user sees it.
#[derive(Debug, Clone)]
pub struct ChatView {
    pub id: i64,
    pub workspace_id: i64,
    pub name: String,
    /// `channel` or `direct`.
    pub kind: String,
    pub description: Option<String>,
    pub is_private: bool,
    pub created_at: DateTime<Utc>,
    pub member_count: i64,
    /// Messages after the user's read marker, not deleted, not sent by the user (0 for
    /// non-members).
    pub unread_count: i64,
    pub last_message: Option<LastMessage>,
    /// The user's role in the chat (`None`: not a member).
    pub role: Option<String>,
    /// The user's role in the chat's workspace (`None`: not a member).
    pub workspace_role: Option<String>,
}

/// A new channel; its creator becomes the owner.
pub struct NewChannel<'a> {
    pub workspace_id: i64,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub is_private: bool,
    pub created_by: i64,
}

/// A new direct message between `member_ids` (sorted, distinct, including the creator).
pub struct NewDirect<'a> {
    pub workspace_id: i64,
    pub name: &'a str,
    pub created_by: i64,
    pub member_ids: &'a [i64],
}

/// A member of a chat, as listed.
#[derive(Debug, Clone)]
pub struct ChatMemberRow {
    pub user_id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

/// Result of setting a read marker.
#[derive(Debug, Clone, Copy)]
pub struct ReadMarker {
    /// The newest message at or before the marker.
    pub last_read_message_id: Option<i64>,
    pub unread_count: i64,
}

/// The columns of a [`ChatView`]; the query names the chat `c`, the caller's membership `cm`
/// (possibly NULL) and the caller's workspace membership `wm` (possibly NULL).
const VIEW_COLUMNS: &str = "c.id, c.workspace_id, c.name, c.kind, c.description, c.is_private, \
     c.created_at, mc.n, ur.n, lm.id, lm.content, lm.sender_id, lu.username, lm.created_at, \
     cm.role, wm.role";

/// Per-chat counts and last message, joined laterally (one query for any number of chats; the
/// `(chat_id, seq)` unique index serves both message lookups). `unread_count` saturates at
/// `unread_max`: a bounded scan however long the chat went unread.
fn view_laterals(unread_max: i64) -> String {
    format!(
        "CROSS JOIN LATERAL (SELECT count(*) AS n FROM chat_members x WHERE x.chat_id = c.id) mc \
     CROSS JOIN LATERAL (SELECT count(*) AS n FROM (SELECT 1 FROM messages m \
        WHERE m.chat_id = c.id AND m.seq > cm.last_read_seq AND m.deleted_at IS NULL \
          AND m.sender_id <> cm.user_id LIMIT {unread_max}) u) ur \
     LEFT JOIN LATERAL (SELECT m.id, m.content, m.sender_id, m.created_at FROM messages m \
        WHERE m.chat_id = c.id AND m.deleted_at IS NULL ORDER BY m.seq DESC LIMIT 1) lm ON true \
     LEFT JOIN users lu ON lu.id = lm.sender_id"
    )
}

fn view_from_row(r: &Row) -> ChatView {
    let last_id: Option<i64> = r.get(9);
    ChatView {
        id: r.get(0),
        workspace_id: r.get(1),
        name: r.get(2),
        kind: r.get(3),
        description: r.get(4),
        is_private: r.get(5),
        created_at: r.get(6),
        member_count: r.get(7),
        unread_count: r.get(8),
        last_message: last_id.map(|id| LastMessage {
            id,
            content: r.get(10),
            sender_id: r.get(11),
            sender_username: r.get(12),
            created_at: r.get(13),
        }),
        role: r.get(14),
        workspace_role: r.get(15),
    }
}

impl Store {
    /// Live (not deleted) messages of every chat, from the counts the commits keep (no scan).
    pub async fn live_message_total(&self) -> StoreResult<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT coalesce(sum(live_messages), 0)::bigint FROM chats")
            .await?;
        Ok(client.query_one(&stmt, &[]).await?.get(0))
    }

    /// Creates a channel with its creator as owner (one transaction); returns its id.
    pub async fn create_channel(&self, new: NewChannel<'_>) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO chats (workspace_id, name, kind, description, is_private, created_by) \
                 VALUES ($1, $2, 'channel', $3, $4, $5) RETURNING id",
            )
            .await?;
        let id: i64 = tx
            .query_one(
                &insert,
                &[
                    &new.workspace_id,
                    &new.name,
                    &new.description,
                    &new.is_private,
                    &new.created_by,
                ],
            )
            .await?
            .get(0);
        let owner = tx
            .prepare_cached(
                "INSERT INTO chat_members (chat_id, user_id, role) VALUES ($1, $2, 'owner')",
            )
            .await?;
        tx.execute(&owner, &[&id, &new.created_by]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Finds or creates the direct message of exactly `member_ids` in the workspace; returns
    /// (chat id, created). Race-free: the UNIQUE (workspace_id, dm_key) constraint decides which
    /// of concurrent creators inserts; the others wait for its commit and then find its row.
    pub async fn find_or_create_direct(&self, new: NewDirect<'_>) -> StoreResult<(i64, bool)> {
        let dm_key = new
            .member_ids
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO chats (workspace_id, name, kind, is_private, created_by, dm_key) \
                 VALUES ($1, $2, 'direct', true, $3, $4) \
                 ON CONFLICT (workspace_id, dm_key) DO NOTHING RETURNING id",
            )
            .await?;
        let inserted = tx
            .query_opt(
                &insert,
                &[&new.workspace_id, &new.name, &new.created_by, &dm_key],
            )
            .await?;
        if let Some(row) = inserted {
            let id: i64 = row.get(0);
            let members = tx
                .prepare_cached(
                    "INSERT INTO chat_members (chat_id, user_id, role) \
                     SELECT $1, u, CASE WHEN u = $2 THEN 'owner' ELSE 'member' END \
                     FROM unnest($3::bigint[]) AS u",
                )
                .await?;
            tx.execute(&members, &[&id, &new.created_by, &new.member_ids])
                .await?;
            tx.commit().await?;
            return Ok((id, true));
        }
        let existing = tx
            .prepare_cached("SELECT id FROM chats WHERE workspace_id = $1 AND dm_key = $2")
            .await?;
        let id: i64 = tx
            .query_one(&existing, &[&new.workspace_id, &dm_key])
            .await?
            .get(0);
        tx.commit().await?;
        Ok((id, false))
    }

    /// The chat as `user_id` sees it (whether or not they are a member).
    pub async fn chat_view(&self, chat_id: i64, user_id: i64) -> StoreResult<Option<ChatView>> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM chats c \
             LEFT JOIN chat_members cm ON cm.chat_id = c.id AND cm.user_id = $2 \
             LEFT JOIN workspace_members wm ON wm.workspace_id = c.workspace_id AND wm.user_id = $2 \
             {laterals} \
             WHERE c.id = $1",
            laterals = view_laterals(self.unread_max),
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&chat_id, &user_id])
            .await?
            .as_ref()
            .map(view_from_row))
    }

    /// One page of the chats `user_id` is a member of (in one workspace, or in all of theirs)
    /// and how many there are in all.
    pub async fn chats_of_user(
        &self,
        user_id: i64,
        workspace_id: Option<i64>,
        page: Page,
    ) -> StoreResult<(Vec<ChatView>, i64)> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {VIEW_COLUMNS} FROM chat_members cm \
             JOIN chats c ON c.id = cm.chat_id \
             JOIN workspace_members wm ON wm.workspace_id = c.workspace_id AND wm.user_id = cm.user_id \
             {laterals} \
             WHERE cm.user_id = $1 AND ($2::bigint IS NULL OR c.workspace_id = $2) \
             ORDER BY {sort} {dir}, c.id {dir} LIMIT $3 OFFSET $4",
            laterals = view_laterals(self.unread_max),
            sort = page.sort_sql,
            dir = page.direction(),
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&stmt, &[&user_id, &workspace_id, &page.limit, &page.offset])
            .await?;
        let count = client
            .prepare_cached(
                "SELECT count(*) FROM chat_members cm JOIN chats c ON c.id = cm.chat_id \
                 JOIN workspace_members wm \
                   ON wm.workspace_id = c.workspace_id AND wm.user_id = cm.user_id \
                 WHERE cm.user_id = $1 AND ($2::bigint IS NULL OR c.workspace_id = $2)",
            )
            .await?;
        let total: i64 = client
            .query_one(&count, &[&user_id, &workspace_id])
            .await?
            .get(0);
        Ok((rows.iter().map(view_from_row).collect(), total))
    }

    /// One page of a chat's members and how many there are in all.
    pub async fn chat_members(
        &self,
        chat_id: i64,
        page: Page,
    ) -> StoreResult<(Vec<ChatMemberRow>, i64)> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT cm.user_id, u.username, u.avatar_url, cm.role, cm.joined_at \
             FROM chat_members cm JOIN users u ON u.id = cm.user_id \
             WHERE cm.chat_id = $1 \
             ORDER BY {sort} {dir}, cm.user_id {dir} LIMIT $2 OFFSET $3",
            sort = page.sort_sql,
            dir = page.direction(),
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&stmt, &[&chat_id, &page.limit, &page.offset])
            .await?;
        let count = client
            .prepare_cached("SELECT count(*) FROM chat_members WHERE chat_id = $1")
            .await?;
        let total: i64 = client.query_one(&count, &[&chat_id]).await?.get(0);
        Ok((rows.iter().map(member_from_row).collect(), total))
    }

    /// One member of a chat.
    pub async fn chat_member(
        &self,
        chat_id: i64,
        user_id: i64,
    ) -> StoreResult<Option<ChatMemberRow>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT cm.user_id, u.username, u.avatar_url, cm.role, cm.joined_at \
                 FROM chat_members cm JOIN users u ON u.id = cm.user_id \
                 WHERE cm.chat_id = $1 AND cm.user_id = $2",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&chat_id, &user_id])
            .await?
            .as_ref()
            .map(member_from_row))
    }

    /// Moves the user's read marker forward to `message_id` (never back). `None` when the
    /// message is not in this chat or the user is not a member.
    pub async fn mark_read(
        &self,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
    ) -> StoreResult<Option<ReadMarker>> {
        let client = self.client().await?;
        let sql = format!(
            "WITH marked AS ( \
                   UPDATE chat_members cm SET last_read_seq = GREATEST(cm.last_read_seq, m.seq) \
                   FROM messages m \
                   WHERE m.id = $3 AND m.chat_id = $1 AND cm.chat_id = $1 AND cm.user_id = $2 \
                   RETURNING cm.last_read_seq) \
                 SELECT \
                   (SELECT id FROM messages WHERE chat_id = $1 AND seq <= marked.last_read_seq \
                     ORDER BY seq DESC LIMIT 1), \
                   (SELECT count(*) FROM (SELECT 1 FROM messages WHERE chat_id = $1 \
                     AND seq > marked.last_read_seq AND deleted_at IS NULL AND sender_id <> $2 \
                     LIMIT {unread_max}) u) \
                 FROM marked",
            unread_max = self.unread_max,
        );
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&chat_id, &user_id, &message_id])
            .await?
            .map(|r| ReadMarker {
                last_read_message_id: r.get(0),
                unread_count: r.get(1),
            }))
    }
}

fn member_from_row(r: &Row) -> ChatMemberRow {
    ChatMemberRow {
        user_id: r.get(0),
        username: r.get(1),
        avatar_url: r.get(2),
        role: r.get(3),
        joined_at: r.get(4),
    }
}
