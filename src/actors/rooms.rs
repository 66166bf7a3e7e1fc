//! `Rooms`: the front door to the chat rooms for the HTTP layer. Each method finds (or starts)
//! the chat's `ChatRoom` through the `Hub` and asks it; the room is the single writer of its
//! chat: messages, edits, deletes, reactions and membership changes all go through it.

use actix::{Addr, MailboxError};

use super::events::{MessageView, ReactionView};
use super::hub::{GetRoom, Hub};
use super::room::{Apply, ChatRoom, Op, OpOutcome, SubscribeMembers};
use crate::store::StoreError;

/// Why a room refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The chat or message does not exist (or is hidden from the caller).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input on a field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The room is overloaded or restarting; retry.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many times a request follows the hub to a fresh room when the one it found stopped.
const ROOM_ATTEMPTS: usize = 3;

/// Handle to the rooms. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    hub: Addr<Hub>,
}

fn unavailable(e: MailboxError) -> RoomError {
    RoomError::Unavailable(format!("chat rooms busy ({e}), retry"))
}

impl Rooms {
    pub fn new(hub: Addr<Hub>) -> Self {
        Rooms { hub }
    }

    async fn room(&self, chat_id: i64) -> Result<Addr<ChatRoom>, RoomError> {
        self.hub
            .send(GetRoom { chat_id })
            .await
            .map_err(unavailable)
    }

    async fn apply(&self, chat_id: i64, op: Op) -> Result<OpOutcome, RoomError> {
        for _ in 0..ROOM_ATTEMPTS {
            let room = self.room(chat_id).await?;
            match room.send(Apply { op: op.clone() }).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(RoomError::Unavailable("chat room restarting, retry".into()))
    }

    /// Sends a message (group-committed by the room). `created` is false when an earlier send
    /// with the same idempotency key is returned instead.
    pub async fn send_message(
        &self,
        chat_id: i64,
        sender_id: i64,
        content: String,
        idempotency_key: Option<String>,
    ) -> Result<(MessageView, bool), RoomError> {
        match self
            .apply(
                chat_id,
                Op::Send {
                    sender_id,
                    content,
                    idempotency_key,
                },
            )
            .await?
        {
            OpOutcome::Sent { message, created } => Ok((message, created)),
            other => Err(unexpected(other)),
        }
    }

    /// Edits a message (sender only).
    pub async fn edit_message(
        &self,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
        content: String,
    ) -> Result<MessageView, RoomError> {
        match self
            .apply(
                chat_id,
                Op::Edit {
                    user_id,
                    message_id,
                    content,
                },
            )
            .await?
        {
            OpOutcome::Edited(view) => Ok(view),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a message (sender, or the chat's owner/admin).
    pub async fn delete_message(
        &self,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
    ) -> Result<(), RoomError> {
        match self
            .apply(
                chat_id,
                Op::Delete {
                    user_id,
                    message_id,
                    moderator: false,
                },
            )
            .await?
        {
            OpOutcome::Deleted => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Adds (`add`) or removes a reaction; returns the message's reactions and whether it changed.
    pub async fn react(
        &self,
        chat_id: i64,
        user_id: i64,
        message_id: i64,
        emoji: String,
        add: bool,
    ) -> Result<(Vec<ReactionView>, bool), RoomError> {
        match self
            .apply(
                chat_id,
                Op::React {
                    user_id,
                    message_id,
                    emoji,
                    add,
                },
            )
            .await?
        {
            OpOutcome::Reacted { reactions, changed } => Ok((reactions, changed)),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `user_id` to the chat with `role` (the caller has checked it may), tells the
    /// members (`chat.member_joined`) and subscribes the user's open connections.
    /// Returns false when the user was already a member.
    pub async fn join(&self, chat_id: i64, user_id: i64, role: &str) -> Result<bool, RoomError> {
        match self
            .apply(
                chat_id,
                Op::Join {
                    user_id,
                    role: role.to_string(),
                },
            )
            .await?
        {
            OpOutcome::Joined(joined) => Ok(joined),
            other => Err(unexpected(other)),
        }
    }

    /// Removes `user_id` from the chat, tells the members (`chat.member_left`) and unsubscribes
    /// the user's connections. Returns false when the user was not a member.
    pub async fn leave(&self, chat_id: i64, user_id: i64) -> Result<bool, RoomError> {
        match self.apply(chat_id, Op::Leave { user_id }).await? {
            OpOutcome::Left(left) => Ok(left),
            other => Err(unexpected(other)),
        }
    }

    /// A chat was just created with its members: subscribe their open connections.
    pub async fn chat_created(&self, chat_id: i64) -> Result<(), RoomError> {
        for _ in 0..ROOM_ATTEMPTS {
            let room = self.room(chat_id).await?;
            match room.send(SubscribeMembers).await {
                Ok(result) => return result,
                Err(MailboxError::Closed) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(RoomError::Unavailable("chat room restarting, retry".into()))
    }
}

fn unexpected(outcome: OpOutcome) -> RoomError {
    RoomError::Store(StoreError::Other(anyhow::anyhow!(
        "unexpected room outcome {outcome:?}"
    )))
}
