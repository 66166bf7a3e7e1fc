//! Chats: channels, direct messages, membership and read markers.
//!
//! Visibility: a chat that does not exist is 404. A chat is visible to its members, and a public
//! channel also to every member of its workspace; anyone else gets 403 with a body that names
//! nothing of the chat. Membership changes go through `Rooms` (each chat's single writer).

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json, parse_id};
use super::list::{ListQuery, ListSpec, select_in};
use super::workspaces::{page_of, require_workspace_member};
use crate::state::AppState;
use crate::store::chats::{ChatMemberRow, ChatView, NewChannel, NewDirect};
use crate::validate;

pub const NAME_MAX: usize = 80;
pub const DESCRIPTION_MAX: usize = 1000;
/// Most other participants a direct message can have.
pub const DIRECT_MAX_USERS: usize = 8;

const CHAT_LIST: ListSpec = ListSpec {
    sortable: &[
        ("created_at", "c.created_at"),
        ("name", "lower(c.name)"),
        ("id", "c.id"),
        ("last_message_at", "COALESCE(lm.created_at, c.created_at)"),
    ],
    // Most recently active first, as chat clients show them.
    default_sort: ("COALESCE(lm.created_at, c.created_at)", true),
    selectable: &[
        "id",
        "workspace_id",
        "name",
        "type",
        "description",
        "is_private",
        "member_count",
        "unread_count",
        "last_message",
        "role",
        "created_at",
    ],
    default_limit: 20,
    max_limit: 100,
};

const MEMBER_LIST: ListSpec = ListSpec {
    sortable: &[
        ("joined_at", "cm.joined_at"),
        ("username", "lower(u.username)"),
        (
            "role",
            "CASE cm.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END",
        ),
        ("user_id", "cm.user_id"),
        // A membership's creation is its joining.
        ("created_at", "cm.joined_at"),
    ],
    default_sort: ("cm.joined_at", false),
    selectable: &["user_id", "username", "avatar_url", "role", "joined_at"],
    default_limit: 50,
    max_limit: 100,
};

#[derive(Serialize, ToSchema)]
pub struct Sender {
    pub id: i64,
    pub username: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = LastMessage)]
pub struct LastMessageBody {
    pub id: i64,
    pub content: String,
    pub sender: Sender,
    pub created_at: DateTime<Utc>,
}

/// A chat as the caller sees it.
#[derive(Serialize, ToSchema)]
#[schema(as = Chat)]
pub struct ChatBody {
    pub id: i64,
    pub workspace_id: i64,
    pub name: String,
    #[serde(rename = "type")]
    #[schema(pattern = "^(channel|direct)$")]
    pub kind: String,
    pub description: Option<String>,
    pub is_private: bool,
    pub member_count: i64,
    pub unread_count: i64,
    pub last_message: Option<LastMessageBody>,
    /// The caller's role in the chat (`null`: not a member).
    pub role: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<ChatView> for ChatBody {
    fn from(c: ChatView) -> Self {
        ChatBody {
            id: c.id,
            workspace_id: c.workspace_id,
            name: c.name,
            kind: c.kind,
            description: c.description,
            is_private: c.is_private,
            member_count: c.member_count,
            unread_count: c.unread_count,
            last_message: c.last_message.map(|m| LastMessageBody {
                id: m.id,
                content: m.content,
                sender: Sender {
                    id: m.sender_id,
                    username: m.sender_username,
                },
                created_at: m.created_at,
            }),
            role: c.role,
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Member)]
pub struct MemberBody {
    pub user_id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

impl From<ChatMemberRow> for MemberBody {
    fn from(m: ChatMemberRow) -> Self {
        MemberBody {
            user_id: m.user_id,
            username: m.username,
            avatar_url: m.avatar_url,
            role: m.role,
            joined_at: m.joined_at,
        }
    }
}

/// The 403 for a chat the caller may not see (names nothing of it).
fn no_access() -> ApiError {
    ApiError::forbidden("You do not have access to this chat")
}

/// Whether the chat is a public channel (visible to every member of its workspace).
fn is_public_channel(c: &ChatView) -> bool {
    c.kind == "channel" && !c.is_private
}

/// The chat as the caller sees it, if they may: 404 if it does not exist, 403 if they are not in
/// its workspace, or it is private or a DM and they are not a member.
async fn visible_chat(state: &AppState, chat_id: i64, user_id: i64) -> ApiResult<ChatView> {
    let chat = state
        .store
        .chat_view(chat_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    if chat.workspace_role.is_none() {
        return Err(no_access());
    }
    if chat.role.is_none() && !is_public_channel(&chat) {
        return Err(no_access());
    }
    Ok(chat)
}

async fn chat_body(state: &AppState, chat_id: i64, user_id: i64) -> ApiResult<ChatBody> {
    let chat = state
        .store
        .chat_view(chat_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    Ok(chat.into())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChatsQuery {
    /// Only the chats of this workspace.
    #[param(value_type = Option<i64>, minimum = 1)]
    pub workspace_id: Option<String>,
}

crate::list_params!(ChatListParams, CHAT_LIST);
crate::list_params!(MemberListParams, MEMBER_LIST);

/// `GET /api/chats[?workspace_id=]` — the chats the caller is in (all workspaces if none given).
#[utoipa::path(get, path = "/api/chats", tag = "chats", summary = "The caller's chats",
    params(ChatsQuery, ChatListParams),
    responses((status = 200, body = crate::http::openapi::ChatList),
        (status = 403, description = "Not a member of the workspace"),
        (status = 404, description = "No such workspace")))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    scope: web::Query<ChatsQuery>,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let workspace_id = parse_id("workspace_id", scope.workspace_id.as_deref())?;
    let params = query.parse(&CHAT_LIST)?;
    if let Some(ws) = workspace_id {
        require_workspace_member(&state, ws, user.id).await?;
    }
    let (chats, total) = state
        .store
        .chats_of_user(user.id, workspace_id, page_of(&params))
        .await?;
    let chats: Vec<ChatBody> = chats.into_iter().map(Into::into).collect();
    let mut body = json!({
        "chats": chats,
        "total": total,
        "page": params.page,
        "pages": params.pages(total),
    });
    select_in(&mut body, "chats", &params.fields);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateChatRequest {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub workspace_id: Option<i64>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 80, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: Option<String>,
    /// Only `channel` (direct messages: `POST /api/chats/direct`).
    #[serde(rename = "type")]
    #[schema(pattern = "^channel$")]
    pub kind: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    pub is_private: Option<bool>,
}

fn require_positive(field: &str, v: Option<i64>) -> ApiResult<i64> {
    match v {
        Some(v) if v > 0 => Ok(v),
        Some(_) => Err(ApiError::validation(field, "must be a positive integer")),
        None => Err(ApiError::validation(field, "is required")),
    }
}

/// `POST /api/chats` — a channel (public by default); the creator is its owner.
#[utoipa::path(post, path = "/api/chats", tag = "chats", summary = "Create a channel",
    request_body = CreateChatRequest,
    responses((status = 201, body = ChatBody),
        (status = 403, description = "Not a member of the workspace"),
        (status = 404, description = "No such workspace")))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<CreateChatRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let workspace_id = require_positive("workspace_id", body.workspace_id)?;
    let name = validate::name("name", body.name.as_deref().unwrap_or(""), NAME_MAX)?;
    match body.kind.as_deref().map(str::trim) {
        None | Some("channel") => {}
        Some(_) => {
            return Err(ApiError::validation(
                "type",
                "must be `channel`; create direct messages with POST /api/chats/direct",
            ));
        }
    }
    let description =
        validate::optional_text("description", body.description.as_deref(), DESCRIPTION_MAX)?;
    require_workspace_member(&state, workspace_id, user.id).await?;
    let chat_id = state
        .store
        .create_channel(NewChannel {
            workspace_id,
            name: &name,
            description: description.as_deref(),
            is_private: body.is_private.unwrap_or(false),
            created_by: user.id,
        })
        .await?;
    state.rooms.chat_created(chat_id).await?;
    Ok(HttpResponse::Created().json(chat_body(&state, chat_id, user.id).await?))
}

/// `user_ids` of a direct message: 1 to `DIRECT_MAX_USERS` distinct positive ids.
fn direct_user_ids() -> utoipa::openapi::schema::Array {
    crate::http::openapi::id_array(1, DIRECT_MAX_USERS, true)
}

#[derive(Deserialize, ToSchema)]
pub struct CreateDirectRequest {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub workspace_id: Option<i64>,
    /// The other participants: distinct members of the workspace.
    #[schema(required = true, schema_with = direct_user_ids)]
    pub user_ids: Option<Vec<i64>>,
}

/// `POST /api/chats/direct` — the direct message of the caller and `user_ids`: 201 when
/// created, 200 with the existing chat when this member set already has one in the workspace.
#[utoipa::path(post, path = "/api/chats/direct", tag = "chats",
    summary = "Create (or return) a direct message", request_body = CreateDirectRequest,
    responses((status = 201, description = "Created", body = ChatBody),
        (status = 200, description = "This member set already has one", body = ChatBody),
        (status = 403, description = "Not a member of the workspace"),
        (status = 404, description = "No such workspace"),
        (status = 409, description = "The same direct message was created concurrently; retry"),
        (status = 422, description = "Users not distinct or not members of the workspace")))]
pub async fn create_direct(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<CreateDirectRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let workspace_id = require_positive("workspace_id", body.workspace_id)?;
    let requested = body
        .user_ids
        .ok_or_else(|| ApiError::validation("user_ids", "is required"))?;
    if requested.is_empty() || requested.len() > DIRECT_MAX_USERS {
        return Err(ApiError::validation(
            "user_ids",
            format!("must name 1 to {DIRECT_MAX_USERS} users"),
        ));
    }
    let mut members = requested.clone();
    members.sort_unstable();
    members.dedup();
    if members.len() != requested.len() {
        return Err(ApiError::validation("user_ids", "must be distinct"));
    }
    if members.iter().any(|id| *id <= 0) {
        return Err(ApiError::validation(
            "user_ids",
            "must be positive integers",
        ));
    }
    if !members.contains(&user.id) {
        members.push(user.id);
        members.sort_unstable();
    }
    if members.len() < 2 {
        return Err(ApiError::validation(
            "user_ids",
            "must name at least one other user",
        ));
    }
    require_workspace_member(&state, workspace_id, user.id).await?;
    let mut found = state
        .store
        .workspace_members_among(workspace_id, &members)
        .await?;
    if found.len() != members.len() {
        return Err(ApiError::validation(
            "user_ids",
            "every user must be a member of the workspace",
        ));
    }
    found.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let name = found
        .iter()
        .map(|(_, username)| username.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (chat_id, created) = state
        .store
        .find_or_create_direct(NewDirect {
            workspace_id,
            name: &name,
            created_by: user.id,
            member_ids: &members,
        })
        .await?;
    if created {
        state.rooms.chat_created(chat_id).await?;
    } else {
        // The set defines the DM: anyone of it who left is back in.
        for id in &members {
            state.rooms.join(chat_id, *id, "member").await?;
        }
    }
    let body = chat_body(&state, chat_id, user.id).await?;
    Ok(if created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

/// `GET /api/chats/{id}`
#[utoipa::path(get, path = "/api/chats/{chat_id}", tag = "chats", summary = "Chat details",
    params(("chat_id" = i64, Path, minimum = 1)),
    responses((status = 200, body = ChatBody),
        (status = 403, description = "Not visible to the caller"), (status = 404, description = "No such chat")))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let chat = visible_chat(&state, path.into_inner(), user.id).await?;
    Ok(HttpResponse::Ok().json(ChatBody::from(chat)))
}

/// `POST /api/chats/{id}/join` — public channels only; idempotent.
#[utoipa::path(post, path = "/api/chats/{chat_id}/join", tag = "chats", summary = "Join a public channel",
    params(("chat_id" = i64, Path, minimum = 1)),
    responses((status = 200, body = ChatBody),
        (status = 403, description = "Not visible to the caller"), (status = 404, description = "No such chat")))]
pub async fn join(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let chat = visible_chat(&state, path.into_inner(), user.id).await?;
    if chat.role.is_some() {
        return Ok(HttpResponse::Ok().json(ChatBody::from(chat)));
    }
    state.rooms.join(chat.id, user.id, "member").await?;
    Ok(HttpResponse::Ok().json(chat_body(&state, chat.id, user.id).await?))
}

/// `POST /api/chats/{id}/leave`
#[utoipa::path(post, path = "/api/chats/{chat_id}/leave", tag = "chats", summary = "Leave a chat",
    params(("chat_id" = i64, Path, minimum = 1)),
    responses((status = 200, body = crate::http::openapi::LeftChat),
        (status = 403, description = "Not visible to the caller"), (status = 404, description = "No such chat"),
        (status = 422, description = "Not a member")))]
pub async fn leave(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let chat = visible_chat(&state, path.into_inner(), user.id).await?;
    if chat.role.is_none() || !state.rooms.leave(chat.id, user.id).await? {
        return Err(ApiError::validation("chat_id", "not a member"));
    }
    Ok(HttpResponse::Ok().json(json!({"chat_id": chat.id, "left": true})))
}

/// `GET /api/chats/{id}/members`
#[utoipa::path(get, path = "/api/chats/{chat_id}/members", tag = "chats", summary = "Members of a chat",
    params(("chat_id" = i64, Path, minimum = 1), MemberListParams),
    responses((status = 200, body = crate::http::openapi::MemberList),
        (status = 403, description = "Not visible to the caller"), (status = 404, description = "No such chat")))]
pub async fn members(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let chat_id = path.into_inner();
    let params = query.parse(&MEMBER_LIST)?;
    let chat = visible_chat(&state, chat_id, user.id).await?;
    let (rows, total) = state.store.chat_members(chat.id, page_of(&params)).await?;
    let members: Vec<MemberBody> = rows.into_iter().map(Into::into).collect();
    let mut body = json!({
        "members": members,
        "total": total,
        "page": params.page,
        "pages": params.pages(total),
    });
    select_in(&mut body, "members", &params.fields);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize, ToSchema)]
pub struct AddMemberRequest {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub user_id: Option<i64>,
    #[schema(pattern = "^(member|admin)$")]
    pub role: Option<String>,
}

fn is_manager(role: Option<&str>) -> bool {
    matches!(role, Some("owner" | "admin"))
}

/// `POST /api/chats/{id}/members` — chat or workspace owners/admins add a workspace member
/// (how private channels get members). 201 when added, 200 when already a member.
#[utoipa::path(post, path = "/api/chats/{chat_id}/members", tag = "chats", summary = "Add a member to a channel",
    params(("chat_id" = i64, Path, minimum = 1)), request_body = AddMemberRequest,
    responses((status = 201, description = "Added", body = MemberBody),
        (status = 200, description = "Already a member", body = MemberBody),
        (status = 403, description = "Not an owner or admin of the chat or workspace"),
        (status = 404, description = "No such chat"),
        (status = 422, description = "A direct message, or the user is not in the workspace")))]
pub async fn add_member(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: Json<AddMemberRequest>,
) -> ApiResult<HttpResponse> {
    let chat_id = path.into_inner();
    let body = body.into_inner();
    let chat = state
        .store
        .chat_view(chat_id, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("Chat"))?;
    if chat.workspace_role.is_none() {
        return Err(no_access());
    }
    let workspace_manager = is_manager(chat.workspace_role.as_deref());
    let chat_manager = is_manager(chat.role.as_deref());
    let can_see = chat.role.is_some() || is_public_channel(&chat) || workspace_manager;
    if !can_see || !(chat_manager || workspace_manager) {
        return Err(ApiError::forbidden(
            "Only chat or workspace owners and admins can add members",
        ));
    }
    if chat.kind == "direct" {
        return Err(ApiError::validation(
            "chat_id",
            "a direct message's members are fixed; create another direct message",
        ));
    }
    let target = require_positive("user_id", body.user_id)?;
    let role = body.role.as_deref().map(str::trim).unwrap_or("member");
    if !matches!(role, "member" | "admin") {
        return Err(ApiError::validation("role", "must be `member` or `admin`"));
    }
    if state
        .store
        .workspace_members_among(chat.workspace_id, &[target])
        .await?
        .is_empty()
    {
        return Err(ApiError::validation(
            "user_id",
            "must be a member of the workspace",
        ));
    }
    let added = state.rooms.join(chat.id, target, role).await?;
    let member = state
        .store
        .chat_member(chat.id, target)
        .await?
        .ok_or_else(|| ApiError::not_found("Member"))?;
    let body = MemberBody::from(member);
    Ok(if added {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}

#[derive(Deserialize, ToSchema)]
pub struct MarkReadRequest {
    #[schema(value_type = i64, required = true, minimum = 1)]
    pub message_id: Option<i64>,
}

/// `POST /api/chats/{id}/read` — moves the caller's read marker forward to `message_id`.
#[utoipa::path(post, path = "/api/chats/{chat_id}/read", tag = "chats", summary = "Move the caller's read marker",
    params(("chat_id" = i64, Path, minimum = 1)), request_body = MarkReadRequest,
    responses((status = 200, body = crate::http::openapi::ReadMarker),
        (status = 403, description = "Not visible to the caller"), (status = 404, description = "No such chat"),
        (status = 422, description = "Not a member, or not a message of this chat")))]
pub async fn mark_read(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: Json<MarkReadRequest>,
) -> ApiResult<HttpResponse> {
    let chat_id = path.into_inner();
    let message_id = require_positive("message_id", body.message_id)?;
    let chat = visible_chat(&state, chat_id, user.id).await?;
    if chat.role.is_none() {
        return Err(ApiError::validation("chat_id", "not a member"));
    }
    let marker = state
        .store
        .mark_read(chat.id, user.id, message_id)
        .await?
        .ok_or_else(|| ApiError::validation("message_id", "is not a message of this chat"))?;
    Ok(HttpResponse::Ok().json(json!({
        "chat_id": chat.id,
        "last_read_message_id": marker.last_read_message_id,
        "unread_count": marker.unread_count,
    })))
}
