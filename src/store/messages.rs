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
    pub chat_id: i64,
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

// ---- writes, inside a (shared) group-commit transaction -----------------------------------
// Each is one statement, so a commit can pipeline them (tokio-postgres sends the queries of
// futures polled together without waiting for each reply).

/// Messages already stored under any of these (chat, sender, idempotency key) triples.
/// Keys are scoped to (sender, chat): the same key in another chat is another message.
pub async fn find_by_keys(
    tx: &Transaction<'_>,
    chats: &[i64],
    senders: &[i64],
    keys: &[&str],
) -> StoreResult<Vec<MessageRow>> {
    if senders.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "{SELECT_MESSAGE} JOIN unnest($1::bigint[], $2::bigint[], $3::text[]) \
         AS k(chat_id, sender_id, key) \
         ON m.chat_id = k.chat_id AND m.sender_id = k.sender_id AND m.idempotency_key = k.key"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let rows = tx.query(&stmt, &[&chats, &senders, &keys]).await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Inserts the messages of several chats in one statement; the rows come back ordered by
/// (chat, seq). Rows whose (chat, sender, key) was taken concurrently are skipped: the caller
/// compares the count and retries the batch.
pub async fn insert_batch(
    tx: &Transaction<'_>,
    batch: &[NewMessage<'_>],
) -> StoreResult<Vec<MessageRow>> {
    let chats: Vec<i64> = batch.iter().map(|m| m.chat_id).collect();
    let seqs: Vec<i64> = batch.iter().map(|m| m.seq).collect();
    let senders: Vec<i64> = batch.iter().map(|m| m.sender_id).collect();
    let contents: Vec<&str> = batch.iter().map(|m| m.content).collect();
    let keys: Vec<Option<&str>> = batch.iter().map(|m| m.idempotency_key).collect();
    let stmt = tx
        .prepare_cached(
            "WITH ins AS ( \
               INSERT INTO messages (chat_id, seq, sender_id, content, idempotency_key) \
               SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], \
                                    $5::text[]) \
               ON CONFLICT (chat_id, sender_id, idempotency_key) DO NOTHING \
               RETURNING id, chat_id, seq, sender_id, content, idempotency_key, created_at, updated_at) \
             SELECT ins.id, ins.chat_id, ins.seq, ins.sender_id, u.username, u.avatar_url, \
                    ins.content, ins.idempotency_key, ins.created_at, ins.updated_at, false \
             FROM ins JOIN users u ON u.id = ins.sender_id ORDER BY ins.chat_id, ins.seq",
        )
        .await?;
    let rows = tx
        .query(&stmt, &[&chats, &seqs, &senders, &contents, &keys])
        .await
        .map_err(StoreError::from_db)?;
    Ok(rows.iter().map(from_row).collect())
}

/// The reactions of `$1` as a JSON array of `{emoji, users}` (the order of [`REACTIONS_SQL`]),
/// over the rows of `r(user_id, emoji, created_at)`.
const REACTIONS_JSON: &str = "(SELECT COALESCE(json_agg(json_build_object('emoji', g.emoji, \
     'users', g.users) ORDER BY g.first, g.emoji), '[]') FROM (SELECT emoji, \
     array_agg(user_id ORDER BY created_at, user_id) AS users, min(created_at) AS first \
     FROM r GROUP BY emoji) g)";

fn reactions_from_json(v: serde_json::Value) -> Vec<ReactionSummary> {
    #[derive(serde::Deserialize)]
    struct R {
        emoji: String,
        users: Vec<i64>,
    }
    serde_json::from_value::<Vec<R>>(v)
        .unwrap_or_default()
        .into_iter()
        .map(|r| ReactionSummary {
            emoji: r.emoji,
            users: r.users,
        })
        .collect()
}

/// What an edit, delete or reaction found.
#[derive(Debug)]
pub enum Change<T> {
    /// No live message with that id in the chat.
    NotFound,
    /// The message is someone else's (edits; deletes by a non-moderator).
    Forbidden,
    Done(T),
}

/// Replaces a live message's content when `user_id` sent it, in one statement; returns the
/// message as it now is, with its reactions.
pub async fn edit_message(
    tx: &Transaction<'_>,
    chat_id: i64,
    message_id: i64,
    user_id: i64,
    content: &str,
) -> StoreResult<Change<(MessageRow, Vec<ReactionSummary>)>> {
    let sql = format!(
        "WITH cur AS (SELECT m.id, m.sender_id FROM messages m \
                      WHERE m.id = $1 AND m.chat_id = $2 AND {VISIBLE}), \
         upd AS (UPDATE messages m SET content = $4, \
                   updated_at = GREATEST(clock_timestamp(), m.updated_at + interval '1 microsecond') \
                 FROM cur WHERE m.id = cur.id AND cur.sender_id = $3::bigint \
                 RETURNING m.id, m.chat_id, m.seq, m.sender_id, m.content, m.idempotency_key, \
                           m.created_at, m.updated_at), \
         r AS (SELECT user_id, emoji, created_at FROM reactions WHERE message_id = $1) \
         SELECT upd.id, upd.chat_id, upd.seq, upd.sender_id, u.username, u.avatar_url, \
                upd.content, upd.idempotency_key, upd.created_at, upd.updated_at, false, \
                {REACTIONS_JSON} \
         FROM cur LEFT JOIN upd ON true LEFT JOIN users u ON u.id = upd.sender_id"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let Some(row) = tx
        .query_opt(&stmt, &[&message_id, &chat_id, &user_id, &content])
        .await
        .map_err(StoreError::from_db)?
    else {
        return Ok(Change::NotFound);
    };
    if row.get::<_, Option<i64>>(0).is_none() {
        return Ok(Change::Forbidden);
    }
    Ok(Change::Done((
        from_row(&row),
        reactions_from_json(row.get(11)),
    )))
}

/// Soft-deletes a live message (the row and its seq stay, the content is erased, its reactions
/// go) when `user_id` sent it or is a moderator, in one statement.
pub async fn delete_message(
    tx: &Transaction<'_>,
    chat_id: i64,
    message_id: i64,
    user_id: i64,
    moderator: bool,
) -> StoreResult<Change<()>> {
    let sql = format!(
        "WITH cur AS (SELECT m.id, m.sender_id FROM messages m \
                      WHERE m.id = $1 AND m.chat_id = $2 AND {VISIBLE}), \
         del AS (UPDATE messages m SET content = '', deleted_at = now(), updated_at = now() \
                 FROM cur WHERE m.id = cur.id AND (cur.sender_id = $3::bigint OR $4::boolean) \
                 RETURNING m.id), \
         gone AS (DELETE FROM reactions x USING del WHERE x.message_id = del.id) \
         SELECT EXISTS (SELECT 1 FROM del) FROM cur"
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&message_id, &chat_id, &user_id, &moderator])
        .await
        .map_err(StoreError::from_db)?;
    Ok(match row {
        None => Change::NotFound,
        Some(r) if !r.get::<_, bool>(0) => Change::Forbidden,
        Some(_) => Change::Done(()),
    })
}

/// Adds (`add`) or removes a reaction on a live message in one statement; returns whether
/// anything changed and the message's reactions after it.
pub async fn react(
    tx: &Transaction<'_>,
    chat_id: i64,
    message_id: i64,
    user_id: i64,
    emoji: &str,
    add: bool,
) -> StoreResult<Change<(bool, Vec<ReactionSummary>)>> {
    // The statement's snapshot does not see its own write: the reactions after it are the
    // ones before it plus the inserted row, or minus the removed one.
    let sql = if add {
        format!(
            "WITH cur AS (SELECT m.id FROM messages m \
                          WHERE m.id = $1 AND m.chat_id = $2 AND {VISIBLE} FOR UPDATE), \
             ch AS (INSERT INTO reactions (message_id, user_id, emoji) \
                    SELECT id, $3::bigint, $4::text FROM cur ON CONFLICT DO NOTHING \
                    RETURNING user_id, emoji, created_at), \
             r AS (SELECT user_id, emoji, created_at FROM reactions WHERE message_id = $1 \
                   UNION ALL SELECT user_id, emoji, created_at FROM ch) \
             SELECT EXISTS (SELECT 1 FROM ch), {REACTIONS_JSON} FROM cur"
        )
    } else {
        format!(
            "WITH cur AS (SELECT m.id FROM messages m \
                          WHERE m.id = $1 AND m.chat_id = $2 AND {VISIBLE} FOR UPDATE), \
             ch AS (DELETE FROM reactions x USING cur WHERE x.message_id = cur.id \
                    AND x.user_id = $3::bigint AND x.emoji = $4::text RETURNING x.user_id), \
             r AS (SELECT user_id, emoji, created_at FROM reactions \
                   WHERE message_id = $1 AND NOT (user_id = $3 AND emoji = $4)) \
             SELECT EXISTS (SELECT 1 FROM ch), {REACTIONS_JSON} FROM cur"
        )
    };
    let stmt = tx.prepare_cached(&sql).await?;
    let row = tx
        .query_opt(&stmt, &[&message_id, &chat_id, &user_id, &emoji])
        .await
        .map_err(StoreError::from_db)?;
    Ok(match row {
        None => Change::NotFound,
        Some(r) => Change::Done((r.get(0), reactions_from_json(r.get(1)))),
    })
}

/// Aggregated reactions of several messages (inside a transaction, to see its own writes).
pub async fn reactions_in_tx(
    tx: &Transaction<'_>,
    message_ids: &[i64],
) -> StoreResult<HashMap<i64, Vec<ReactionSummary>>> {
    if message_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let stmt = tx.prepare_cached(REACTIONS_SQL).await?;
    let rows = tx.query(&stmt, &[&message_ids]).await?;
    Ok(group_reactions(&rows))
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

    /// Up to `limit` live messages of a chat with seq below `before_seq` (or all of them),
    /// newest first (or oldest first when `ascending`), after skipping `offset` of them in
    /// that order.
    pub async fn messages_page(
        &self,
        chat_id: i64,
        before_seq: Option<i64>,
        ascending: bool,
        limit: i64,
        offset: i64,
    ) -> StoreResult<Vec<MessageRow>> {
        let client = self.client().await?;
        let direction = if ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "{SELECT_MESSAGE} WHERE m.chat_id = $1 AND m.seq < $2 AND {VISIBLE} \
             ORDER BY m.seq {direction} LIMIT $3 OFFSET $4"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let before = before_seq.unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&chat_id, &before, &limit, &offset])
            .await?;
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
