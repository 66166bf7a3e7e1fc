//! The wire protocol pushed to clients, one JSON shape for WebSocket and SSE:
//! `{"type": "<kind>", "id": "<position>", "data": {...}}` on WebSocket; on SSE the `event:`
//! line carries the type, `id:` the position and `data:` the `data` object (as the contract shows).
//!
//! An event is serialised once ([`Event::new`]) and the same bytes are shared by every
//! recipient; only the position (per connection) is spliced in when a frame is written.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::store::events::ReplayItem;
use crate::store::messages::{MessageRow, ReactionSummary};

/// Kinds of events a client receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    MessageCreated,
    MessageUpdated,
    MessageDeleted,
    ReactionAdded,
    ReactionRemoved,
    MemberJoined,
    MemberLeft,
    TypingStart,
    TypingStop,
    PresenceUpdate,
    ResyncRequired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::MessageCreated => "message.created",
            EventKind::MessageUpdated => "message.updated",
            EventKind::MessageDeleted => "message.deleted",
            EventKind::ReactionAdded => "reaction.added",
            EventKind::ReactionRemoved => "reaction.removed",
            EventKind::MemberJoined => "chat.member_joined",
            EventKind::MemberLeft => "chat.member_left",
            EventKind::TypingStart => "typing.start",
            EventKind::TypingStop => "typing.stop",
            EventKind::PresenceUpdate => "presence.update",
            EventKind::ResyncRequired => "resync.required",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        use EventKind::*;
        [
            MessageCreated,
            MessageUpdated,
            MessageDeleted,
            ReactionAdded,
            ReactionRemoved,
            MemberJoined,
            MemberLeft,
            TypingStart,
            TypingStop,
            PresenceUpdate,
            ResyncRequired,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Ephemeral events (typing, presence) are never replayed, and are the first to be
    /// dropped for a client whose queue is filling up.
    pub fn is_droppable(self) -> bool {
        matches!(
            self,
            EventKind::TypingStart | EventKind::TypingStop | EventKind::PresenceUpdate
        )
    }
}

/// An event serialised once. `seq` is the chat position of persisted events.
#[derive(Debug)]
pub struct Event {
    pub kind: EventKind,
    pub chat_id: Option<i64>,
    pub seq: Option<i64>,
    /// The JSON of the `data` object.
    pub data: Bytes,
}

impl Event {
    pub fn new(
        kind: EventKind,
        chat_id: Option<i64>,
        seq: Option<i64>,
        data: &impl Serialize,
    ) -> Arc<Event> {
        // Serialising our own plain structs cannot fail; fall back to `{}` rather than panic.
        let data = serde_json::to_vec(data).unwrap_or_else(|_| b"{}".to_vec());
        Arc::new(Event {
            kind,
            chat_id,
            seq,
            data: Bytes::from(data),
        })
    }

    /// The WebSocket frame: `{"type":..,"id":..,"data":..}` (`id` only when given).
    pub fn ws_frame(&self, id: Option<&str>) -> String {
        frame_json(self.kind.as_str(), id, &self.data)
    }

    /// The SSE frame: `id:`, `event:` and `data:` lines and a blank line.
    pub fn sse_frame(&self, id: Option<&str>) -> Bytes {
        sse_frame(self.kind.as_str(), id, &self.data)
    }
}

/// `{"type":"<t>","id":"<id>","data":<data>}`.
pub fn frame_json(kind: &str, id: Option<&str>, data: &[u8]) -> String {
    let data = std::str::from_utf8(data).unwrap_or("{}");
    let mut s = String::with_capacity(kind.len() + data.len() + 48 + id.map_or(0, str::len));
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    if let Some(id) = id {
        s.push_str("\",\"id\":\"");
        s.push_str(id);
    }
    s.push_str("\",\"data\":");
    s.push_str(data);
    s.push('}');
    s
}

/// An SSE frame for `kind` with `data` (one line: JSON has no raw newlines).
pub fn sse_frame(kind: &str, id: Option<&str>, data: &[u8]) -> Bytes {
    let mut s = Vec::with_capacity(data.len() + kind.len() + 32 + id.map_or(0, str::len));
    if let Some(id) = id {
        s.extend_from_slice(b"id: ");
        s.extend_from_slice(id.as_bytes());
        s.push(b'\n');
    }
    s.extend_from_slice(b"event: ");
    s.extend_from_slice(kind.as_bytes());
    s.extend_from_slice(b"\ndata: ");
    s.extend_from_slice(data);
    s.extend_from_slice(b"\n\n");
    Bytes::from(s)
}

// ---- payloads ------------------------------------------------------------------------------

/// The sender of a message, as REST and events show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = MessageSender)]
pub struct SenderView {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
}

/// Reactions on a message, aggregated per emoji.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Reaction)]
pub struct ReactionView {
    pub emoji: String,
    pub count: usize,
    pub users: Vec<i64>,
}

impl From<&ReactionSummary> for ReactionView {
    fn from(r: &ReactionSummary) -> Self {
        ReactionView {
            emoji: r.emoji.clone(),
            count: r.users.len(),
            users: r.users.clone(),
        }
    }
}

/// A message as REST returns it and as `message.created`/`message.updated` carry it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    pub id: i64,
    pub chat_id: i64,
    pub sender_id: i64,
    pub sender: SenderView,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reactions: Vec<ReactionView>,
    /// The sender's idempotency key: never serialised here (events go to every member, and
    /// REST lists to anyone in the chat); only the sender's own `POST /api/messages` answer
    /// carries it (`http::messages::SentMessage`).
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

impl MessageView {
    pub fn new(m: &MessageRow, reactions: &[ReactionSummary]) -> Self {
        MessageView {
            id: m.id,
            chat_id: m.chat_id,
            sender_id: m.sender_id,
            sender: SenderView {
                id: m.sender_id,
                username: m.sender_username.clone(),
                avatar_url: m.sender_avatar_url.clone(),
            },
            content: m.content.clone(),
            created_at: m.created_at,
            updated_at: m.updated_at,
            reactions: reactions.iter().map(ReactionView::from).collect(),
            idempotency_key: m.idempotency_key.clone(),
        }
    }
}

/// `data` of `message.created` and `message.updated`.
#[derive(Serialize)]
pub struct MessageData<'a> {
    pub message: &'a MessageView,
}

/// `data` of `message.deleted`.
#[derive(Serialize, serde::Deserialize)]
pub struct MessageDeletedData {
    pub message_id: i64,
    pub chat_id: i64,
    pub deleted_by: i64,
}

/// `data` of `reaction.added` / `reaction.removed`.
#[derive(Serialize)]
pub struct ReactionData {
    pub message_id: i64,
    pub chat_id: i64,
    pub user_id: i64,
    pub emoji: String,
    pub reactions: Vec<ReactionView>,
}

/// What the event log keeps of a reaction (its summary is rendered at replay).
#[derive(Serialize, serde::Deserialize)]
pub struct ReactionLogged {
    pub message_id: i64,
    pub chat_id: i64,
    pub user_id: i64,
    pub emoji: String,
}

/// What the event log keeps of an edit: which message (its text is read at replay).
#[derive(Serialize, serde::Deserialize)]
pub struct EditLogged {
    pub message_id: i64,
}

/// `data` of `chat.member_joined` / `chat.member_left`.
#[derive(Serialize)]
pub struct MemberData {
    pub chat_id: i64,
    pub user_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `data` of `typing.start` / `typing.stop`.
#[derive(Serialize)]
pub struct TypingData<'a> {
    pub chat_id: i64,
    pub user_id: i64,
    pub username: &'a str,
}

/// `data` of `presence.update`.
#[derive(Serialize)]
pub struct PresenceData {
    pub user_id: i64,
    pub status: &'static str,
    pub last_seen: DateTime<Utc>,
}

// ---- replay ------------------------------------------------------------------------------

/// The event a replayed log entry stands for, rendered from the current rows, or `None` when
/// nothing of it may be shown any more. The visibility rule (one place for replay; REST reads
/// apply the same `store::messages::VISIBLE` predicate): a message is shown only while it is
/// not deleted and only with its current text, so a replayed creation or edit of a message
/// that was edited since shows today's text, and one of a deleted message is not replayed at
/// all (its `message.deleted`, which carries no text, is). Reactions show today's summary.
pub fn replayed(chat_id: i64, item: &ReplayItem) -> Option<Arc<Event>> {
    let kind = EventKind::parse(&item.kind)?;
    let seq = Some(item.seq);
    let message = || {
        item.message
            .as_ref()
            .filter(|m| !m.deleted)
            .map(|m| MessageView::new(m, &item.reactions))
    };
    match kind {
        EventKind::MessageCreated | EventKind::MessageUpdated => {
            let view = message()?;
            Some(Event::new(
                kind,
                Some(chat_id),
                seq,
                &MessageData { message: &view },
            ))
        }
        EventKind::ReactionAdded | EventKind::ReactionRemoved => {
            let view = message()?;
            let logged: ReactionLogged = serde_json::from_value(item.payload.clone()).ok()?;
            let data = ReactionData {
                message_id: view.id,
                chat_id,
                user_id: logged.user_id,
                emoji: logged.emoji,
                reactions: view.reactions,
            };
            Some(Event::new(kind, Some(chat_id), seq, &data))
        }
        EventKind::MessageDeleted | EventKind::MemberJoined | EventKind::MemberLeft => {
            Some(Event::new(kind, Some(chat_id), seq, &item.payload))
        }
        EventKind::TypingStart
        | EventKind::TypingStop
        | EventKind::PresenceUpdate
        | EventKind::ResyncRequired => None,
    }
}

// ---- positions -----------------------------------------------------------------------------

/// What a client resumes from: its last event `id`. Either a full [`Position`]
/// (`"<chat>.<seq>-<chat>.<seq>..."`), or — for a connection following more chats than an id
/// lists — a stored checkpoint plus the chats that moved since it (`"<checkpoint>~<chat>.<seq>-..."`,
/// possibly with no chats after the `~`). Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeId {
    Full(Position),
    Checkpoint { id: i64, moved: Position },
}

impl ResumeId {
    /// Parses an id; `None` when malformed.
    pub fn parse(s: &str) -> Option<ResumeId> {
        match s.trim().split_once('~') {
            None => Position::parse(s).map(ResumeId::Full),
            Some((id, moved)) => Some(ResumeId::Checkpoint {
                id: id.parse().ok().filter(|i| *i > 0)?,
                moved: Position::parse(moved)?,
            }),
        }
    }

    /// `"<checkpoint>~"` and the (chat, seq) pairs given in ascending chat order.
    pub fn encode_checkpoint(id: i64, moved: impl ExactSizeIterator<Item = (i64, i64)>) -> String {
        let mut s = format!("{id}~");
        if moved.len() > 0 {
            s.push_str(&Position::encode_pairs(moved));
        }
        s
    }
}

/// A connection's resume position: for each chat it follows, the last seq it was given.
/// Encoded as `"<chat>.<seq>-<chat>.<seq>..."` (chat ids ascending); opaque to clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position(pub BTreeMap<i64, i64>);

/// Most chats a position may name (bounds parsing work).
const MAX_POSITION_CHATS: usize = 10_000;

impl Position {
    pub fn encode(&self) -> String {
        Self::encode_pairs(self.0.iter().map(|(c, s)| (*c, *s)))
    }

    /// Encodes (chat, seq) pairs given in ascending chat order, without building a map.
    pub fn encode_pairs(pairs: impl ExactSizeIterator<Item = (i64, i64)>) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(pairs.len() * 12);
        for (i, (chat, seq)) in pairs.enumerate() {
            if i > 0 {
                s.push('-');
            }
            let _ = write!(s, "{chat}.{seq}");
        }
        if s.is_empty() {
            s.push('0');
        }
        s
    }

    /// Parses a position; `None` when malformed.
    pub fn parse(s: &str) -> Option<Position> {
        let s = s.trim();
        let mut map = BTreeMap::new();
        if s == "0" || s.is_empty() {
            return Some(Position(map));
        }
        for part in s.split('-') {
            let (chat, seq) = part.split_once('.')?;
            let chat: i64 = chat.parse().ok().filter(|c| *c > 0)?;
            let seq: i64 = seq.parse().ok().filter(|s| *s >= 0)?;
            map.insert(chat, seq);
            if map.len() > MAX_POSITION_CHATS {
                return None;
            }
        }
        Some(Position(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trip() {
        let mut p = Position::default();
        assert_eq!(p.encode(), "0");
        assert_eq!(Position::parse("0"), Some(Position::default()));
        p.0.insert(12, 57);
        p.0.insert(3, 0);
        assert_eq!(p.encode(), "3.0-12.57");
        assert_eq!(Position::parse(&p.encode()), Some(p.clone()));
        for bad in ["x", "1.", ".2", "1.2-", "-1.2", "1.-2", "1.2.3"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
        assert_eq!(
            ResumeId::parse(&p.encode()),
            Some(ResumeId::Full(p.clone()))
        );
        let c = ResumeId::encode_checkpoint(41, p.0.iter().map(|(c, s)| (*c, *s)));
        assert_eq!(c, "41~3.0-12.57");
        assert_eq!(
            ResumeId::parse(&c),
            Some(ResumeId::Checkpoint { id: 41, moved: p })
        );
        assert_eq!(
            ResumeId::parse(&ResumeId::encode_checkpoint(7, std::iter::empty())),
            Some(ResumeId::Checkpoint {
                id: 7,
                moved: Position::default()
            })
        );
        for bad in ["~1.2", "0~1.2", "x~", "1~x", "1~2~3", "-1~"] {
            assert_eq!(ResumeId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn frames_share_the_data_bytes() {
        let e = Event::new(
            EventKind::MessageDeleted,
            Some(1),
            Some(2),
            &serde_json::json!({"a": 1}),
        );
        assert_eq!(
            e.ws_frame(Some("1.2")),
            r#"{"type":"message.deleted","id":"1.2","data":{"a":1}}"#
        );
        assert_eq!(
            e.ws_frame(None),
            r#"{"type":"message.deleted","data":{"a":1}}"#
        );
        let v: serde_json::Value = serde_json::from_str(&e.ws_frame(Some("1.2"))).expect("json");
        assert_eq!(v["data"]["a"], 1);
        assert_eq!(
            &e.sse_frame(Some("1.2"))[..],
            b"id: 1.2\nevent: message.deleted\ndata: {\"a\":1}\n\n"
        );
    }
}
