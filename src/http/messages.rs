//! Messages: send, history, edit, delete and reactions. Every write goes to the chat's room
//! (`state.rooms`), which persists it, answers, then fans it out; history is a plain read.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json, parse_id};
use super::list::parse_fields;
use crate::actors::events::MessageView;
use crate::state::AppState;
use crate::validate;

/// Longest emoji (a short sequence of code points, e.g. a flag or a ZWJ family).
const EMOJI_MAX_CHARS: usize = 32;

const MESSAGE_FIELDS: &[&str] = &[
    "id",
    "chat_id",
    "sender_id",
    "sender",
    "content",
    "created_at",
    "updated_at",
    "reactions",
];

#[derive(Deserialize, ToSchema)]
#[schema(as = SendMessageRequest)]
pub struct SendRequest {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub chat_id: Option<i64>,
    /// 1 to 4000 characters (not counting leading and trailing spaces); newlines and tabs
    /// are kept, NUL is refused.
    #[schema(value_type = String, required = true, max_length = 4000, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: Option<String>,
    /// Makes the send idempotent for this sender.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[schema(as = UpdateMessageRequest)]
pub struct UpdateRequest {
    /// 1 to 4000 characters (not counting leading and trailing spaces); newlines and tabs
    /// are kept, NUL is refused.
    #[schema(value_type = String, required = true, max_length = 4000, pattern = r"^[^\x00]*[^\s\x00][^\x00]*$")]
    pub content: Option<String>,
}

/// `POST /api/messages`'s answer: the message, plus the sender's own idempotency key when the
/// request had one (so a client can match the answer to what it sent; no event carries it).
#[derive(Serialize, ToSchema)]
pub struct SentMessage {
    #[serde(flatten)]
    pub message: MessageView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReactionRequest {
    #[schema(value_type = String, required = true, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,32}$")]
    pub emoji: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[param(value_type = i64, required = true, minimum = 1)]
    pub chat_id: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 50)]
    pub limit: Option<String>,
    /// Page of `limit` messages, from 1 (in `order`, counted from `before_id` when given);
    /// at most `FECHATTER_MAX_MESSAGE_OFFSET` messages deep (10,000 by default: 422 beyond,
    /// read deeper with `before_id`).
    #[param(value_type = Option<i64>, minimum = 1, default = 1)]
    pub page: Option<String>,
    /// Messages before this one (older), for the next page.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub before_id: Option<String>,
    /// `desc` (default): newest first; `asc`: oldest first, from the chat's beginning.
    #[param(pattern = "^(asc|desc)?$")]
    pub order: Option<String>,
    #[param(pattern = "^(created_at|id)?$")]
    pub sort: Option<String>,
    #[param(ignore)]
    pub fields: Option<String>,
}

crate::fields_params!(MessageFieldsParam, MESSAGE_FIELDS);

fn content_of(raw: &Option<String>) -> ApiResult<String> {
    let content = raw
        .as_ref()
        .ok_or_else(|| ApiError::validation("content", "is required"))?;
    validate::message_content(content)?;
    Ok(content.clone())
}

fn emoji_of(raw: &str) -> ApiResult<String> {
    let e = raw.trim();
    let n = e.chars().count();
    if n == 0 || n > EMOJI_MAX_CHARS || e.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ApiError::validation(
            "emoji",
            format!("must be 1 to {EMOJI_MAX_CHARS} characters without spaces"),
        ));
    }
    Ok(e.to_string())
}

/// The chat of a live message the caller can see; 404 for unknown or deleted messages,
/// 403 when the caller is not a member of its chat.
async fn visible_message_chat(state: &AppState, user: AuthUser, message_id: i64) -> ApiResult<i64> {
    let m = state
        .store
        .message(message_id)
        .await?
        .filter(|m| !m.deleted)
        .ok_or_else(|| ApiError::not_found("message"))?;
    if state.store.chat_role(m.chat_id, user.id).await?.is_none() {
        return Err(ApiError::forbidden("You are not a member of this chat"));
    }
    Ok(m.chat_id)
}

/// `POST /api/messages` — 201 with the message; a repeated idempotency key returns the original.
#[utoipa::path(post, path = "/api/messages", tag = "messages",
    summary = "Send a message (idempotent with idempotency_key)", request_body = SendRequest,
    responses((status = 201, body = SentMessage),
        (status = 403, description = "Not a member of the chat"), (status = 404, description = "No such chat")))]
pub async fn send(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<SendRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let chat_id = body.chat_id.filter(|id| *id > 0).ok_or_else(|| {
        ApiError::validation("chat_id", "is required and must be a positive integer")
    })?;
    let content = content_of(&body.content)?;
    if let Some(k) = &body.idempotency_key {
        validate::idempotency_key(k)?;
    }
    let key = body.idempotency_key;
    // The chat's room answers 404 for an unknown chat and 403 for a non-member itself.
    let (message, _created) = state
        .rooms
        .send_message(chat_id, user.id, content, key)
        .await?;
    let idempotency_key = message.idempotency_key.clone();
    Ok(HttpResponse::Created().json(SentMessage {
        message,
        idempotency_key,
    }))
}

/// `GET /api/messages?chat_id=&limit=&page=&before_id=&order=` — newest first by default.
#[utoipa::path(get, path = "/api/messages", tag = "messages", summary = "Messages of a chat, newest (or oldest) first",
    params(ListQuery, MessageFieldsParam),
    responses((status = 200, body = crate::http::openapi::MessageList),
        (status = 403, description = "Not a member of the chat"), (status = 404, description = "No such chat"),
        (status = 422, description = "before_id is not a message of this chat")))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    q: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let chat_id = parse_id("chat_id", q.chat_id.as_deref())?
        .ok_or_else(|| ApiError::validation("chat_id", "is required"))?;
    let limit = match q.limit.as_deref().map(str::trim) {
        None | Some("") => 50,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if (1..=100).contains(&n) => n,
            _ => return Err(ApiError::validation("limit", "must be between 1 and 100")),
        },
    };
    if let Some(sort) = q.sort.as_deref().map(str::trim).filter(|s| !s.is_empty())
        && !matches!(sort, "created_at" | "id")
    {
        return Err(ApiError::validation(
            "sort",
            "messages sort by `created_at` (or `id`) only",
        ));
    }
    let ascending = !super::list::parse_order(q.order.as_deref(), true)?;
    let page = match q.page.as_deref().map(str::trim) {
        None | Some("") => 1,
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(ApiError::validation("page", "must be a positive integer")),
        },
    };
    let max_offset = i64::from(state.config.max_message_offset);
    let offset = (page - 1).saturating_mul(limit);
    if offset > max_offset {
        return Err(ApiError::validation(
            "page",
            format!("at most {max_offset} messages deep; read older ones with `before_id`"),
        ));
    }
    let fields = parse_fields(q.fields.as_deref(), MESSAGE_FIELDS)?;
    let before_id = parse_id("before_id", q.before_id.as_deref())?;
    if !state.store.chat_exists(chat_id).await? {
        return Err(ApiError::not_found("chat"));
    }
    if state.store.chat_role(chat_id, user.id).await?.is_none() {
        return Err(ApiError::forbidden("You are not a member of this chat"));
    }
    let before_seq = match before_id {
        None => None,
        Some(id) => match state.store.message(id).await? {
            Some(m) if m.chat_id == chat_id => Some(m.seq),
            _ => {
                return Err(ApiError::validation(
                    "before_id",
                    "is not a message of this chat",
                ));
            }
        },
    };
    let mut rows = state
        .store
        .messages_page(chat_id, before_seq, ascending, limit + 1, offset)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let ids: Vec<i64> = rows.iter().map(|m| m.id).collect();
    let mut reactions = state.store.reactions_for(&ids).await?;
    let mut messages: Vec<serde_json::Value> = rows
        .iter()
        .map(|m| {
            let r = reactions.remove(&m.id).unwrap_or_default();
            serde_json::to_value(MessageView::new(m, &r)).unwrap_or_default()
        })
        .collect();
    for m in &mut messages {
        super::list::select(m, &fields);
    }
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "has_more": has_more })))
}

/// `PUT /api/messages/{id}` — the sender edits; `updated_at` changes.
#[utoipa::path(put, path = "/api/messages/{message_id}", tag = "messages", summary = "Edit one's message",
    params(("message_id" = i64, Path, minimum = 1)), request_body = UpdateRequest,
    responses((status = 200, body = MessageView),
        (status = 403, description = "Not the sender, or not a member of the chat"),
        (status = 404, description = "No such message")))]
pub async fn update(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: Json<UpdateRequest>,
) -> ApiResult<HttpResponse> {
    let message_id = path.into_inner();
    let content = content_of(&body.content)?;
    let chat_id = visible_message_chat(&state, user, message_id).await?;
    let view = state
        .rooms
        .edit_message(chat_id, user.id, message_id, content)
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `DELETE /api/messages/{id}` — the sender, or the chat's owner/admin.
#[utoipa::path(delete, path = "/api/messages/{message_id}", tag = "messages", summary = "Delete one's message",
    params(("message_id" = i64, Path, minimum = 1)),
    responses((status = 200, body = crate::http::openapi::DeletedMessage),
        (status = 403, description = "Not the sender or a chat owner/admin"),
        (status = 404, description = "No such message")))]
pub async fn delete(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let message_id = path.into_inner();
    let chat_id = visible_message_chat(&state, user, message_id).await?;
    state
        .rooms
        .delete_message(chat_id, user.id, message_id)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "id": message_id, "chat_id": chat_id, "deleted": true })))
}

/// `POST /api/messages/{id}/reactions` — idempotent per user and emoji (201 added, 200 already).
#[utoipa::path(post, path = "/api/messages/{message_id}/reactions", tag = "messages", summary = "Add a reaction",
    params(("message_id" = i64, Path, minimum = 1)), request_body = ReactionRequest,
    responses((status = 201, description = "Added", body = crate::http::openapi::Reactions),
        (status = 200, description = "Already there", body = crate::http::openapi::Reactions),
        (status = 403, description = "Not a member of the chat"), (status = 404, description = "No such message")))]
pub async fn add_reaction(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: Json<ReactionRequest>,
) -> ApiResult<HttpResponse> {
    let message_id = path.into_inner();
    let emoji = emoji_of(
        body.emoji
            .as_deref()
            .ok_or_else(|| ApiError::validation("emoji", "is required"))?,
    )?;
    let chat_id = visible_message_chat(&state, user, message_id).await?;
    let (reactions, changed) = state
        .rooms
        .react(chat_id, user.id, message_id, emoji.clone(), true)
        .await?;
    let body = json!({ "message_id": message_id, "emoji": emoji, "reactions": reactions });
    Ok(if changed {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `DELETE /api/messages/{id}/reactions/{emoji}` — idempotent.
#[utoipa::path(delete, path = "/api/messages/{message_id}/reactions/{emoji}", tag = "messages",
    summary = "Remove one's reaction",
    params(("message_id" = i64, Path, minimum = 1), ("emoji" = String, Path, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]{1,32}$")),
    responses((status = 200, body = crate::http::openapi::Reactions),
        (status = 403, description = "Not a member of the chat"), (status = 404, description = "No such message")))]
pub async fn remove_reaction(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<(i64, String)>,
) -> ApiResult<HttpResponse> {
    let (message_id, emoji) = path.into_inner();
    let emoji = emoji_of(&emoji)?;
    let chat_id = visible_message_chat(&state, user, message_id).await?;
    let (reactions, _) = state
        .rooms
        .react(chat_id, user.id, message_id, emoji.clone(), false)
        .await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "message_id": message_id, "emoji": emoji, "reactions": reactions })))
}
