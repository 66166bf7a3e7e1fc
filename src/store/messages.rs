//! Messages and reactions: the chat rooms' group-committed writes, and the plain reads of the
//! HTTP layer (history pages, single messages).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::Row;

use super::{Store, StoreError, StoreResult};

/// A message with its sender's profile, as stored.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: i64,
    pub chat_id: i64,
    pub seq: i64,
    pub sender_id: i64,
    pub sender_username: String,
    pub sender_avatar_url: Option<String>,
    pub content: String,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted: bool,
}

/// One emoji's reactions on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactionSummary {
    pub emoji: String,
    pub users: Vec<i64>,
}

/// A message to insert in a group commit; `seq` is assigned by the room.
pub struct NewMessage<'a> {
    pub seq: i64,
    pub sender_id: i64,
    pub content: &'a str,
    pub idempotency_key: Option<&'a str>,
}

pub(crate) const SELECT_MESSAGE: &str = "SELECT m.id, m.chat_id, m.seq, m.sender_id, u.username, u.avatar_url, \
     m.content, m.idempotency_key, m.created_at, m.updated_at, m.deleted_at IS NOT NULL \
     FROM messages m JOIN users u ON u.id = m.sender_id";

/// The visibility rule of messages, the one place it is written: a message is shown (in
/// history pages, replay, edits and reactions) only while it is not deleted, and always with
/// its current content. Deleting erases the content; editing overwrites it.
pub(crate) const VISIBLE: &str = "m.deleted_at IS NULL";

pub(crate) fn from_row(r: &Row) -> MessageRow {
    MessageRow {
        id: r.get(0),
        chat_id: r.get(1),
        seq: r.get(2),
        sender_id: r.get(3),
        sender_username: r.get(4),
        sender_avatar_url: r.get(5),
        content: r.get(6),
        idempotency_key: r.get(7),
        created_at: r.get(8),
        updated_at: r.get(9),
        deleted: r.get(10),
    }
}

// ---- writes, inside a room's transaction --------------------------------------------------

/// Messages of `chat_id` already stored under any of these (sender, idempotency key) pairs.
/// Keys are scoped to (sender, chat): the same key in another chat is another message.
pub async fn find_by_keys(
    tx: &Transaction<'_>,
    chat_id: i64,
    senders: &[i64],
    keys: &[&str],
) -> StoreResult<Vec<MessageRow>> {
    if senders.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{SELECT_MESSAGE} JOIN unnest($2::bigint[], $3::text[]) AS k(sender_id, key) \
         ON m.chat_id = $1 AND m.sender_id = k.sender_id AND m.idempotency_key = k.key"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&stmt, &[&chat_id, &senders, &keys]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Inserts a batch of messages in one statement. Rows whose (chat, sender, key) was taken
/// concurrently are skipped: the caller compares the count and retries the batch.
pub async fn insert_batch(
    tx: &Transaction<'_>,
    chat_id: i64,
    batch: &[NewMessage<'_>],
) -> StoreResult<Vec<MessageRow>> {
    let seqs: Vec<i64> = batch.iter().map(|m| m.seq).collect();
    let senders: Vec<i64> = batch.iter().map(|m| m.sender_id).collect();
    let contents: Vec<&str> = batch.iter().map(|m| m.content).collect();
    let keys: Vec<Option<&str>> = batch.iter().map(|m| m.idempotency_key).collect();
    let stmt = tx
        .prepare_cached(
            "WITH ins AS ( \
               INSERT INTO messages (chat_id, seq, sender_id, content, idempotency_key) \
               SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[]) \
               ON CONFLICT (chat_id, sender_id, idempotency_key) DO NOTHING \
               RETURNING id, chat_id, seq, sender_id, content, idempotency_key, created_at, updated_at) \
             SELECT ins.id, ins.chat_id, ins.seq, ins.sender_id, u.username, u.avatar_url, \
                    ins.content, ins.idempotency_key, ins.created_at, ins.updated_at, false \
             FROM ins JOIN users u ON u.id = ins.sender_id ORDER BY ins.seq",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&chat_id, &seqs, &senders, &contents, &keys])
        .await
        .map_err(StoreError::from_db)?;
    Ok(rows.iter().map(from_row).collect())
}

/// Locks and returns a live message of `chat_id` for an edit, delete or reaction.
pub async fn lock_message(
    tx: &Transaction<'_>,
    chat_id: i64,
    message_id: i64,
) -> StoreResult<Option<MessageRow>> {
    let sql = format!(
        "{SELECT_MESSAGE} WHERE m.id = $1 AND m.chat_id = $2 AND {VISIBLE} FOR UPDATE OF m"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    Ok(tx
        .query_opt(&stmt, &[&message_id, &chat_id])
        .await?
        .as_ref()
        .map(from_row))
}

/// Replaces a message's content; returns the new `updated_at`.
pub async fn update_content(
    tx: &Transaction<'_>,
    message_id: i64,
    content: &str,
) -> StoreResult<DateTime<Utc>> {
    let stmt = tx
        .prepare_cached(
            "UPDATE messages SET content = $2, \
             updated_at = GREATEST(clock_timestamp(), updated_at + interval '1 microsecond') \
             WHERE id = $1 RETURNING updated_at",
        )
        .await?;
    Ok(tx.query_one(&stmt, &[&message_id, &content]).await?.get(0))
}

/// Soft-deletes a message: the row (and its seq) stays, the content is erased.
pub async fn soft_delete(tx: &Transaction<'_>, message_id: i64) -> StoreResult<()> {
    let stmt = tx
        .prepare_cached(
            "UPDATE messages SET content = '', deleted_at = now(), updated_at = now() WHERE id = $1",
        )
        .await?;
    tx.execute(&stmt, &[&message_id]).await?;
    let stmt = tx
        .prepare_cached("DELETE FROM reactions WHERE message_id = $1")
        .await?;
    tx.execute(&stmt, &[&message_id]).await?;
    Ok(())
}

/// Adds a reaction; false when this user already reacted with this emoji.
pub async fn add_reaction(
    tx: &Transaction<'_>,
    message_id: i64,
    user_id: i64,
    emoji: &str,
) -> StoreResult<bool> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO reactions (message_id, user_id, emoji) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&message_id, &user_id, &emoji]).await? == 1)
}

/// Removes a reaction; false when there was none.
pub async fn remove_reaction(
    tx: &Transaction<'_>,
    message_id: i64,
    user_id: i64,
    emoji: &str,
) -> StoreResult<bool> {
    let stmt = tx
        .prepare_cached(
            "DELETE FROM reactions WHERE message_id = $1 AND user_id = $2 AND emoji = $3",
        )
        .await?;
    Ok(tx.execute(&stmt, &[&message_id, &user_id, &emoji]).await? == 1)
}

/// Aggregated reactions of one message (inside a transaction, to see its own writes).
pub async fn reactions_in_tx(
    tx: &Transaction<'_>,
    message_id: i64,
) -> StoreResult<Vec<ReactionSummary>> {
    let stmt = tx.prepare_cached(REACTIONS_SQL).await?;
    let rows = tx.query(&stmt, &[&vec![message_id]]).await?;
    Ok(group_reactions(&rows)
        .remove(&message_id)
        .unwrap_or_default())
}

const REACTIONS_SQL: &str = "SELECT message_id, emoji, array_agg(user_id ORDER BY created_at, user_id), \
     min(created_at) AS first FROM reactions WHERE message_id = ANY($1) \
     GROUP BY message_id, emoji ORDER BY message_id, first, emoji";

fn group_reactions(rows: &[Row]) -> HashMap<i64, Vec<ReactionSummary>> {
    let mut out: HashMap<i64, Vec<ReactionSummary>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(ReactionSummary {
            emoji: r.get(1),
            users: r.get(2),
        });
    }
    out
}

// ---- reads ---------------------------------------------------------------------------------

impl Store {
    /// A message by id (deleted ones included, flagged).
    pub async fn message(&self, id: i64) -> StoreResult<Option<MessageRow>> {
        let client = self.client().await?;
        let sql = format!("{SELECT_MESSAGE} WHERE m.id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(from_row))
    }

    /// Up to `limit` live messages of a chat with seq below `before_seq` (or the newest),
    /// newest first.
    pub async fn messages_page(
        &self,
        chat_id: i64,
        before_seq: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<MessageRow>> {
        let client = self.client().await?;
        let sql = format!(
            "{SELECT_MESSAGE} WHERE m.chat_id = $1 AND m.seq < $2 AND {VISIBLE} \
             ORDER BY m.seq DESC LIMIT $3"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let before = before_seq.unwrap_or(i64::MAX);
        let rows = client.query(&stmt, &[&chat_id, &before, &limit]).await?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// Aggregated reactions of several messages.
    pub async fn reactions_for(
        &self,
        message_ids: &[i64],
    ) -> StoreResult<HashMap<i64, Vec<ReactionSummary>>> {
        if message_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.client().await?;
        let stmt = client.prepare_cached(REACTIONS_SQL).await?;
        let rows = client.query(&stmt, &[&message_ids]).await?;
        Ok(group_reactions(&rows))
    }

    /// The caller's role in a chat, if a member.
    pub async fn chat_role(&self, chat_id: i64, user_id: i64) -> StoreResult<Option<String>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT role FROM chat_members WHERE chat_id = $1 AND user_id = $2")
            .await?;
        Ok(client
            .query_opt(&stmt, &[&chat_id, &user_id])
            .await?
            .map(|r| r.get(0)))
    }

    /// Whether a chat exists.
    pub async fn chat_exists(&self, chat_id: i64) -> StoreResult<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT 1 FROM chats WHERE id = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&chat_id]).await?.is_some())
    }
}
