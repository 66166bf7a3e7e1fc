//! The per-chat event log and positions: what a chat room loads when it starts, the fenced
//! advance of a chat's `last_seq` (and, in cluster mode, its row lock), the events other than
//! message creation (`chat_events`), and the replay a reconnecting client gets.

use std::collections::HashMap;

use deadpool_postgres::Transaction;

use super::messages::{MessageRow, ReactionSummary, SELECT_MESSAGE, VISIBLE, from_row};
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

/// What a session starts from: the user's name (typing events carry it) and chats.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub username: String,
    pub chats: Vec<UserChat>,
}

/// A replayed event, read back at replay time. The log stores what happened (kind, message
/// id, who); the message itself is read from its current row, so superseded or deleted text
/// can never come back through replay (see [`crate::store::messages::VISIBLE`]).
#[derive(Debug, Clone)]
pub struct ReplayItem {
    pub seq: i64,
    pub kind: String,
    /// The message the event is about, as it is now; `None` for membership events and for
    /// messages that are deleted (or gone).
    pub message: Option<MessageRow>,
    /// The message's current reactions.
    pub reactions: Vec<ReactionSummary>,
    /// The logged payload (never message text); `Null` for creations.
    pub payload: serde_json::Value,
}

/// A page of replay: its events, and the seq up to which the range is covered (every event up
/// to it is in this page or an earlier one).
#[derive(Debug, Clone)]
pub struct ReplayPage {
    pub items: Vec<ReplayItem>,
    pub covered: i64,
}

/// A logged event (anything but a message's creation) to append at its seq.
pub struct LoggedEvent<'a> {
    pub chat_id: i64,
    pub seq: i64,
    pub kind: &'a str,
    pub message_id: Option<i64>,
    pub payload: &'a serde_json::Value,
}

/// Appends logged events (edits, deletes, reactions, membership) of any chats at their seqs.
pub async fn insert_events(tx: &Transaction<'_>, events: &[LoggedEvent<'_>]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let chats: Vec<i64> = events.iter().map(|e| e.chat_id).collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind).collect();
    let ids: Vec<Option<i64>> = events.iter().map(|e| e.message_id).collect();
    let payloads: Vec<&serde_json::Value> = events.iter().map(|e| e.payload).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO chat_events (chat_id, seq, kind, message_id, payload) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bigint[], \
                                  $5::jsonb[])",
        )
        .await?;
    tx.execute(&stmt, &[&chats, &seqs, &kinds, &ids, &payloads])
        .await
        .map_err(StoreError::from_db)?;
    Ok(())
}

/// Locks the rows of `chat_ids` until the transaction ends, in chat-id order (so two
/// transactions locking overlapping sets never deadlock), and returns each one's `last_seq`;
/// a chat that does not exist is missing from the map.
pub async fn lock_chats(tx: &Transaction<'_>, chat_ids: &[i64]) -> StoreResult<HashMap<i64, i64>> {
    let stmt = tx
        .prepare_cached("SELECT id, last_seq FROM chats WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .await?;
    Ok(tx
        .query(&stmt, &[&chat_ids])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// One chat's move in a commit: its `last_seq` from `from` to `to`, and its count of live
/// (not deleted) messages by `live_delta` (sends persisted less messages deleted).
#[derive(Debug, Clone, Copy)]
pub struct SeqMove {
    pub chat_id: i64,
    pub from: i64,
    pub to: i64,
    pub live_delta: i64,
}

/// Moves several chats' `last_seq` and live-message counts in one statement, each fenced on
/// `from`; returns the chats moved and the transaction's id (to ask PostgreSQL later whether it
/// committed, when the COMMIT's reply is lost).
pub async fn advance_seqs(
    tx: &Transaction<'_>,
    moves: &[SeqMove],
) -> StoreResult<(Vec<i64>, Option<i64>)> {
    if moves.is_empty() {
        return Ok((Vec::new(), None));
    }
    let ids: Vec<i64> = moves.iter().map(|m| m.chat_id).collect();
    let from: Vec<i64> = moves.iter().map(|m| m.from).collect();
    let to: Vec<i64> = moves.iter().map(|m| m.to).collect();
    let delta: Vec<i64> = moves.iter().map(|m| m.live_delta).collect();
    let stmt = tx
        .prepare_cached(
            "UPDATE chats c SET last_seq = v.to_seq, live_messages = c.live_messages + v.delta \
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) \
                  AS v(id, from_seq, to_seq, delta) \
             WHERE c.id = v.id AND c.last_seq = v.from_seq RETURNING c.id, txid_current()",
        )
        .await?;
    let rows = tx.query(&stmt, &[&ids, &from, &to, &delta]).await?;
    let xid = rows.first().map(|r| r.get(1));
    Ok((rows.iter().map(|r| r.get(0)).collect(), xid))
}

/// The conflict a fenced seq advance reports.
pub const FENCED: &str = "chat position moved by another writer";

/// Moves a chat's `last_seq` from `from` to `to` and returns the transaction's id (to ask
/// PostgreSQL later whether it committed, when the COMMIT's reply is lost). Fenced: fails with
/// `Conflict` when another writer moved it, so two rooms for one chat can never both commit.
pub async fn advance_seq(
    tx: &Transaction<'_>,
    chat_id: i64,
    from: i64,
    to: i64,
) -> StoreResult<i64> {
    let stmt = tx
        .prepare_cached(
            "UPDATE chats SET last_seq = $3 WHERE id = $1 AND last_seq = $2 \
             RETURNING txid_current()",
        )
        .await?;
    match tx.query_opt(&stmt, &[&chat_id, &from, &to]).await? {
        Some(row) => Ok(row.get(0)),
        None => Err(StoreError::Conflict(FENCED.into())),
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

    /// The user's name and the chats they belong to, with positions, in one round trip
    /// (`None`: no such user).
    pub async fn session_view(&self, user_id: i64) -> StoreResult<Option<SessionView>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT u.username, cm.chat_id, cm.joined_seq, c.last_seq FROM users u \
                 LEFT JOIN chat_members cm ON cm.user_id = u.id \
                 LEFT JOIN chats c ON c.id = cm.chat_id \
                 WHERE u.id = $1 ORDER BY cm.chat_id",
            )
            .await?;
        let rows = client.query(&stmt, &[&user_id]).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let chats = rows
            .iter()
            .filter_map(|r| {
                Some(UserChat {
                    chat_id: r.get::<_, Option<i64>>(1)?,
                    joined_seq: r.get::<_, Option<i64>>(2)?,
                    last_seq: r.get::<_, Option<i64>>(3)?,
                })
            })
            .collect();
        Ok(Some(SessionView {
            username: first.get(0),
            chats,
        }))
    }

    /// The workspaces a user belongs to.
    pub async fn user_workspaces(&self, user_id: i64) -> StoreResult<Vec<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT workspace_id FROM workspace_members WHERE user_id = $1")
            .await?;
        Ok(client
            .query(&stmt, &[&user_id])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// A chat's committed position (`None`: no such chat).
    pub async fn chat_last_seq(&self, chat_id: i64) -> StoreResult<Option<i64>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT last_seq FROM chats WHERE id = $1")
            .await?;
        Ok(client
            .query_opt(&stmt, &[&chat_id])
            .await?
            .map(|r| r.get(0)))
    }

    /// Whether the transaction `xid` committed: `Some(true)` committed, `Some(false)` aborted,
    /// `None` still running or unknown.
    pub async fn transaction_status(&self, xid: i64) -> StoreResult<Option<bool>> {
        let client = self.client().await?;
        let stmt = client.prepare_cached("SELECT txid_status($1)").await?;
        let status: Option<String> = client.query_one(&stmt, &[&xid]).await?.get(0);
        Ok(match status.as_deref() {
            Some("committed") => Some(true),
            Some("aborted") => Some(false),
            _ => None,
        })
    }

    /// A page of [`Store::replay`] and how far it covers the range.
    pub async fn replay_page(
        &self,
        chat_id: i64,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<ReplayPage> {
        let items = self.replay(chat_id, after, upto, limit).await?;
        // A short page is the end of the range; a full one covers up to its last event.
        let covered = if (items.len() as i64) < limit {
            upto
        } else {
            items.last().map_or(upto, |i| i.seq)
        };
        Ok(ReplayPage { items, covered })
    }

    /// Events of a chat with `after < seq <= upto`, in order, at most `limit` of them, each
    /// rendered from the current rows: a message deleted since is not replayed as created,
    /// edited or reacted to (its `message.deleted` is), and an edit shows today's text.
    async fn replay(
        &self,
        chat_id: i64,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> StoreResult<Vec<ReplayItem>> {
        let client = self.client().await?;
        let sql = format!(
            "{SELECT_MESSAGE} WHERE m.chat_id = $1 AND m.seq > $2 AND m.seq <= $3 \
             AND {VISIBLE} ORDER BY m.seq LIMIT $4"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let mut items: Vec<ReplayItem> = client
            .query(&stmt, &[&chat_id, &after, &upto, &limit])
            .await?
            .iter()
            .map(|r| {
                let m = from_row(r);
                ReplayItem {
                    seq: m.seq,
                    kind: "message.created".into(),
                    message: Some(m),
                    reactions: Vec::new(),
                    payload: serde_json::Value::Null,
                }
            })
            .collect();
        let stmt = client
            .prepare_cached(
                "SELECT seq, kind, message_id, payload FROM chat_events \
                 WHERE chat_id = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            )
            .await?;
        let logged = client
            .query(&stmt, &[&chat_id, &after, &upto, &limit])
            .await?;
        let about: Vec<i64> = logged
            .iter()
            .filter_map(|r| r.get::<_, Option<i64>>(2))
            .collect();
        let current: HashMap<i64, MessageRow> = if about.is_empty() {
            HashMap::new()
        } else {
            let sql = format!("{SELECT_MESSAGE} WHERE m.id = ANY($1) AND {VISIBLE}");
            let stmt = client.prepare_cached(&sql).await?;
            client
                .query(&stmt, &[&about])
                .await?
                .iter()
                .map(|r| {
                    let m = from_row(r);
                    (m.id, m)
                })
                .collect()
        };
        items.extend(logged.iter().map(|r| {
            let message_id: Option<i64> = r.get(2);
            ReplayItem {
                seq: r.get(0),
                kind: r.get(1),
                message: message_id.and_then(|id| current.get(&id).cloned()),
                reactions: Vec::new(),
                payload: r.get(3),
            }
        }));
        items.sort_by_key(|i| i.seq);
        items.truncate(limit.max(0) as usize);
        drop(client);
        let ids: Vec<i64> = items
            .iter()
            .filter_map(|i| i.message.as_ref().map(|m| m.id))
            .collect();
        let reactions = self.reactions_for(&ids).await?;
        for item in &mut items {
            if let Some(m) = &item.message {
                item.reactions = reactions.get(&m.id).cloned().unwrap_or_default();
            }
        }
        Ok(items)
    }
}
