//! The chat rooms' side of cluster mode: what a room delivers from other nodes, and what it
//! publishes for them. The broker carries each committed event's bytes (`cluster::ChatEvent`);
//! the room puts them, its own commits and what it reads back from PostgreSQL through one
//! ordered `cluster::Feed`, so local connections get every seq once, in order, whichever node
//! wrote it. This module turns those into `(Event, Effect)` pairs and back.

use std::sync::Arc;

use serde::Deserialize;

use super::commit::Effect;
use super::events::{Event, EventKind};
use crate::cluster::ChatEvent;
use crate::cluster::broker::ChatEventRef;

/// What the room delivers: the event and what it does to the room.
pub type Delivered = (Arc<Event>, Effect);

#[derive(Deserialize)]
struct Member {
    user_id: i64,
    role: Option<String>,
}

#[derive(Deserialize)]
struct Created {
    message: Sender,
}

#[derive(Deserialize)]
struct Sender {
    sender_id: i64,
}

#[derive(Deserialize)]
struct Typist {
    user_id: i64,
}

/// What an event another node committed (or the database returned) does to the room.
pub fn effect_of(event: &Event) -> Effect {
    match event.kind {
        EventKind::MemberJoined => match serde_json::from_slice::<Member>(&event.data) {
            Ok(m) => Effect::Joined {
                user_id: m.user_id,
                role: m.role.unwrap_or_else(|| "member".into()),
            },
            Err(_) => Effect::None,
        },
        EventKind::MemberLeft => match serde_json::from_slice::<Member>(&event.data) {
            Ok(m) => Effect::Left { user_id: m.user_id },
            Err(_) => Effect::None,
        },
        EventKind::MessageCreated => match serde_json::from_slice::<Created>(&event.data) {
            Ok(c) => Effect::Sent {
                sender_id: c.message.sender_id,
            },
            Err(_) => Effect::None,
        },
        _ => Effect::None,
    }
}

/// A broker event as a room event (`None` for an unknown kind).
pub fn from_wire(e: ChatEvent) -> Option<Arc<Event>> {
    let kind = EventKind::parse(&e.kind)?;
    Some(Arc::new(Event {
        kind,
        chat_id: Some(e.chat_id),
        seq: e.seq,
        data: e.data,
    }))
}

/// The user a relayed typing event is about (their own connections do not get it).
pub fn typist(event: &Event) -> Option<i64> {
    serde_json::from_slice::<Typist>(&event.data)
        .ok()
        .map(|t| t.user_id)
}

/// The borrowed wire fields of a room event, for publishing.
pub fn to_wire(chat_id: i64, event: &Event) -> ChatEventRef<'_> {
    ChatEventRef {
        chat_id,
        seq: event.seq,
        kind: event.kind.as_str(),
        data: &event.data,
    }
}

/// `<user>:<chat>:<seq>` on the members channel.
pub fn member_message(user_id: i64, chat_id: i64, seq: i64) -> bytes::Bytes {
    format!("{user_id}:{chat_id}:{seq}").into()
}

/// Parses a members-channel message.
pub fn parse_member_message(bytes: &[u8]) -> Option<(i64, i64, i64)> {
    let s = std::str::from_utf8(bytes).ok()?;
    let mut parts = s.split(':');
    let user = parts.next()?.parse().ok()?;
    let chat = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((user, chat, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_from_event_data() {
        let joined = Event::new(
            EventKind::MemberJoined,
            Some(1),
            Some(2),
            &serde_json::json!({"chat_id": 1, "user_id": 7, "role": "admin"}),
        );
        assert!(matches!(
            effect_of(&joined),
            Effect::Joined { user_id: 7, ref role } if role == "admin"
        ));
        let sent = Event::new(
            EventKind::MessageCreated,
            Some(1),
            Some(3),
            &serde_json::json!({"message": {"id": 5, "sender_id": 9}}),
        );
        assert!(matches!(effect_of(&sent), Effect::Sent { sender_id: 9 }));
        let garbage = Event::new(EventKind::MemberLeft, Some(1), Some(4), &"x");
        assert!(matches!(effect_of(&garbage), Effect::None));
    }

    #[test]
    fn member_messages_round_trip() {
        let m = member_message(3, 4, 5);
        assert_eq!(parse_member_message(&m), Some((3, 4, 5)));
        for bad in [&b"3:4"[..], b"3:4:5:6", b"a:b:c", &[0xff]] {
            assert_eq!(parse_member_message(bad), None);
        }
    }
}
