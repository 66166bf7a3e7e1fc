//! Workspaces, invites and workspace member lists.
//!
//! Authorization: a workspace that does not exist is 404; one the caller does not belong to is
//! 403 with a body that names nothing of it. Only owners and admins invite.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json, require_id};
use super::list::{ListQuery, ListSpec, select_in};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::workspaces::{
    AcceptOutcome, NewInvite, NewWorkspace, Page, WorkspaceDetail, WorkspaceSummary,
};
use crate::validate;

pub const NAME_MAX: usize = 100;
pub const DESCRIPTION_MAX: usize = 1000;
pub const INVITE_DAYS_MAX: i32 = 30;
pub const INVITE_USES_MAX: i32 = 1000;
/// Invite codes: 16 characters from [A-Z0-9] (about 82 bits), URL-safe and unguessable.
const INVITE_CODE_LEN: usize = 16;
const INVITE_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

const WORKSPACE_LIST: ListSpec = ListSpec {
    sortable: &[
        ("created_at", "w.created_at"),
        ("name", "lower(w.name)"),
        ("id", "w.id"),
    ],
    default_sort: ("w.created_at", false),
    selectable: &[
        "id",
        "name",
        "description",
        "logo_url",
        "member_count",
        "role",
        "created_at",
    ],
    default_limit: 20,
    max_limit: 100,
};

const USER_LIST: ListSpec = ListSpec {
    sortable: &[
        ("username", "lower(u.username)"),
        ("id", "u.id"),
        (
            "role",
            "CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END",
        ),
        // When the user signed up.
        ("created_at", "u.created_at"),
    ],
    default_sort: ("lower(u.username)", false),
    // `email` only when named (never in the default item).
    selectable: &["id", "username", "avatar_url", "status", "role", "email"],
    default_limit: 20,
    max_limit: 100,
};

crate::list_params!(WorkspaceListParams, WORKSPACE_LIST);
crate::list_params!(UserListParams, USER_LIST);

/// Converts validated list parameters into a store page.
pub fn page_of(p: &super::list::ListParams) -> Page {
    Page {
        sort_sql: p.sort_sql,
        desc: p.desc,
        limit: p.limit,
        offset: p.offset(),
    }
}

/// The caller's role in the workspace: 404 if it does not exist, 403 if not a member.
pub async fn require_workspace_member(
    state: &AppState,
    workspace_id: i64,
    user_id: i64,
) -> ApiResult<String> {
    match state.store.workspace_role(workspace_id, user_id).await? {
        None => Err(ApiError::not_found("Workspace")),
        Some(None) => Err(not_a_member()),
        Some(Some(role)) => Ok(role),
    }
}

/// The 403 for a workspace the caller does not belong to (names nothing of it).
pub fn not_a_member() -> ApiError {
    ApiError::forbidden("You are not a member of this workspace")
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceItem {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub member_count: i64,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

impl From<WorkspaceSummary> for WorkspaceItem {
    fn from(w: WorkspaceSummary) -> Self {
        WorkspaceItem {
            id: w.id,
            name: w.name,
            description: w.description,
            logo_url: w.logo_url,
            member_count: w.member_count,
            role: w.role,
            created_at: w.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceSettings)]
pub struct Settings {
    pub allow_guest_access: bool,
    pub require_2fa: bool,
    pub retention_days: i32,
}

#[derive(Serialize, ToSchema)]
#[schema(as = WorkspaceStats)]
pub struct Stats {
    pub member_count: i64,
    pub channel_count: i64,
    pub message_count: i64,
}

/// A workspace with the caller's role, its settings and counted stats.
#[derive(Serialize, ToSchema)]
#[schema(as = Workspace)]
pub struct WorkspaceBody {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub role: String,
    pub member_count: i64,
    pub settings: Settings,
    pub stats: Stats,
}

impl WorkspaceBody {
    fn new(w: WorkspaceDetail, role: String) -> Self {
        WorkspaceBody {
            id: w.id,
            name: w.name,
            description: w.description,
            logo_url: w.logo_url,
            created_at: w.created_at,
            role,
            member_count: w.member_count,
            settings: Settings {
                allow_guest_access: w.allow_guest_access,
                require_2fa: w.require_2fa,
                retention_days: w.retention_days,
            },
            stats: Stats {
                member_count: w.member_count,
                channel_count: w.channel_count,
                message_count: w.message_count,
            },
        }
    }
}

async fn workspace_body(
    state: &AppState,
    workspace_id: i64,
    role: String,
) -> ApiResult<WorkspaceBody> {
    let detail = state
        .store
        .workspace_detail(workspace_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Workspace"))?;
    Ok(WorkspaceBody::new(detail, role))
}

/// `GET /api/workspaces` — the caller's workspaces.
#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces", summary = "The caller's workspaces",
    params(WorkspaceListParams),
    responses((status = 200, body = crate::http::openapi::WorkspaceList)))]
pub async fn list(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let params = query.parse(&WORKSPACE_LIST)?;
    let (items, total) = state
        .store
        .workspaces_of_user(user.id, page_of(&params))
        .await?;
    let items: Vec<WorkspaceItem> = items.into_iter().map(Into::into).collect();
    let mut body = json!({
        "workspaces": items,
        "total": total,
        "page": params.page,
        "pages": params.pages(total),
    });
    select_in(&mut body, "workspaces", &params.fields);
    Ok(HttpResponse::Ok().json(body))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateWorkspaceRequest {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    pub name: Option<String>,
    #[schema(max_length = 1000, pattern = r"^[^\x00]*$")]
    pub description: Option<String>,
    /// An http(s) URL; `""` means none.
    #[schema(
        max_length = 2048,
        pattern = r"^$|^https?://[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*(/[A-Za-z0-9._~\-]*)*$"
    )]
    pub logo_url: Option<String>,
}

/// `POST /api/workspaces` — the creator becomes the owner.
#[utoipa::path(post, path = "/api/workspaces", tag = "workspaces", summary = "Create a workspace",
    request_body = CreateWorkspaceRequest,
    responses((status = 201, body = WorkspaceBody)))]
pub async fn create(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<CreateWorkspaceRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let name = validate::name("name", body.name.as_deref().unwrap_or(""), NAME_MAX)?;
    let description =
        validate::optional_text("description", body.description.as_deref(), DESCRIPTION_MAX)?;
    let logo_url = match body.logo_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(validate::http_url("logo_url", url)?),
    };
    let id = state
        .store
        .create_workspace(NewWorkspace {
            owner_id: user.id,
            name: &name,
            description: description.as_deref(),
            logo_url: logo_url.as_deref(),
        })
        .await?;
    // An online owner shares presence with the new workspace from now on.
    state
        .presence
        .do_send(crate::actors::presence::WorkspaceJoined {
            user_id: user.id,
            workspace_id: id,
        });
    let body = workspace_body(&state, id, "owner".into()).await?;
    Ok(HttpResponse::Created().json(body))
}

/// `GET /api/workspaces/{id}` — details, settings and stats, for members.
#[utoipa::path(get, path = "/api/workspaces/{workspace_id}", tag = "workspaces",
    summary = "Workspace details, settings and stats",
    params(("workspace_id" = i64, Path, minimum = 1)),
    responses((status = 200, body = WorkspaceBody),
        (status = 403, description = "Not a member"), (status = 404, description = "No such workspace")))]
pub async fn get(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
) -> ApiResult<HttpResponse> {
    let workspace_id = path.into_inner();
    let role = require_workspace_member(&state, workspace_id, user.id).await?;
    Ok(HttpResponse::Ok().json(workspace_body(&state, workspace_id, role).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct InviteRequest {
    /// Only this email may accept; `""` or absent: anyone with the code.
    #[schema(
        max_length = 254,
        pattern = r"^$|^[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f]+(\.[^\s@.\x00-\x1f\x7f-\x9f]+)+$"
    )]
    pub email: Option<String>,
    #[schema(pattern = "^(member|admin)$")]
    pub role: Option<String>,
    #[schema(minimum = 1, maximum = 30)]
    pub expires_in_days: Option<i64>,
    #[schema(minimum = 1, maximum = 1000)]
    pub max_uses: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Invite)]
pub struct InviteBody {
    pub invite_code: String,
    pub invite_url: String,
    pub expires_at: DateTime<Utc>,
}

fn invite_code() -> String {
    let mut rng = rand::thread_rng();
    (0..INVITE_CODE_LEN)
        .map(|_| char::from(INVITE_ALPHABET[rng.gen_range(0..INVITE_ALPHABET.len())]))
        .collect()
}

/// `POST /api/workspaces/{id}/invites` — owners and admins only.
#[utoipa::path(post, path = "/api/workspaces/{workspace_id}/invites", tag = "workspaces",
    summary = "Invite someone (owners and admins)",
    params(("workspace_id" = i64, Path, minimum = 1)), request_body = InviteRequest,
    responses((status = 201, body = InviteBody),
        (status = 403, description = "Not a member, or not an owner or admin"),
        (status = 404, description = "No such workspace"),
        (status = 409, description = "No free invite code after several tries (retry)")))]
pub async fn invite(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<i64>,
    body: Json<InviteRequest>,
) -> ApiResult<HttpResponse> {
    let workspace_id = path.into_inner();
    let role = require_workspace_member(&state, workspace_id, user.id).await?;
    if role != "owner" && role != "admin" {
        return Err(ApiError::forbidden(
            "Only workspace owners and admins can invite",
        ));
    }
    let body = body.into_inner();
    let email = match body.email.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) => Some(validate::email(e)?.1),
    };
    let invite_role = body.role.as_deref().map(str::trim).unwrap_or("member");
    if !matches!(invite_role, "member" | "admin") {
        return Err(ApiError::validation("role", "must be `member` or `admin`"));
    }
    let days = body.expires_in_days.unwrap_or(7);
    if !(1..=i64::from(INVITE_DAYS_MAX)).contains(&days) {
        return Err(ApiError::validation(
            "expires_in_days",
            format!("must be between 1 and {INVITE_DAYS_MAX}"),
        ));
    }
    let max_uses = body.max_uses.unwrap_or(1);
    if !(1..=i64::from(INVITE_USES_MAX)).contains(&max_uses) {
        return Err(ApiError::validation(
            "max_uses",
            format!("must be between 1 and {INVITE_USES_MAX}"),
        ));
    }
    // A code collision is astronomically unlikely; retry a few times rather than fail.
    let mut attempts = 0;
    let (code, expires_at) = loop {
        let code = invite_code();
        let result = state
            .store
            .create_invite(NewInvite {
                workspace_id,
                code: &code,
                email: email.as_deref(),
                role: invite_role,
                created_by: user.id,
                max_uses: max_uses as i32,
                expires_in_days: days as i32,
            })
            .await;
        match result {
            Ok(expires_at) => break (code, expires_at),
            Err(StoreError::Conflict(_)) if attempts < 3 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let invite_url = format!(
        "{}/invite/{code}",
        state.config.public_url.trim_end_matches('/')
    );
    Ok(HttpResponse::Created().json(InviteBody {
        invite_code: code,
        invite_url,
        expires_at,
    }))
}

/// `POST /api/invites/{code}/accept` — joins the workspace with the invite's role.
#[utoipa::path(post, path = "/api/invites/{code}/accept", tag = "workspaces", summary = "Accept an invite",
    params(("code" = String, Path, min_length = 1, max_length = 64)),
    responses((status = 200, body = WorkspaceBody),
        (status = 403, description = "Issued for another email address"),
        (status = 404, description = "No such invite"),
        (status = 422, description = "Expired or used up")))]
pub async fn accept_invite(
    state: web::Data<AppState>,
    user: AuthUser,
    path: web::Path<String>,
) -> ApiResult<HttpResponse> {
    let code = path.into_inner();
    let code = code.trim();
    validate::no_control("code", code)?;
    if code.is_empty() || code.len() > 64 {
        return Err(ApiError::not_found("Invite"));
    }
    let workspace_id = match state.store.accept_invite(code, user.id).await? {
        AcceptOutcome::Unknown => return Err(ApiError::not_found("Invite")),
        AcceptOutcome::WrongEmail => {
            return Err(ApiError::forbidden(
                "This invite was issued for another email address",
            ));
        }
        AcceptOutcome::Expired => return Err(ApiError::validation("code", "expired")),
        AcceptOutcome::UsedUp => return Err(ApiError::validation("code", "used")),
        AcceptOutcome::AlreadyMember(id) => id,
        AcceptOutcome::Joined(id) => {
            // An online new member shares presence with the workspace from now on.
            state
                .presence
                .do_send(crate::actors::presence::WorkspaceJoined {
                    user_id: user.id,
                    workspace_id: id,
                });
            id
        }
    };
    let role = require_workspace_member(&state, workspace_id, user.id).await?;
    Ok(HttpResponse::Ok().json(workspace_body(&state, workspace_id, role).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkspaceQuery {
    #[param(value_type = i64, required = true, minimum = 1)]
    pub workspace_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserItem {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub status: &'static str,
    pub role: String,
    /// Only when `fields=` names it: fellow members' addresses are not in the default item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `GET /api/users?workspace_id=` — the members of a workspace the caller belongs to.
#[utoipa::path(get, path = "/api/users", tag = "users", summary = "Users of a workspace",
    params(WorkspaceQuery, UserListParams),
    responses((status = 200, body = crate::http::openapi::UserList),
        (status = 403, description = "Not a member"), (status = 404, description = "No such workspace")))]
pub async fn list_users(
    state: web::Data<AppState>,
    user: AuthUser,
    scope: web::Query<WorkspaceQuery>,
    query: web::Query<ListQuery>,
) -> ApiResult<HttpResponse> {
    let workspace_id = require_id("workspace_id", scope.workspace_id.as_deref())?;
    let params = query.parse(&USER_LIST)?;
    require_workspace_member(&state, workspace_id, user.id).await?;
    let (rows, total) = state
        .store
        .workspace_members(workspace_id, page_of(&params))
        .await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let online = crate::actors::presence::online_statuses(&state.presence, &ids).await;
    let with_email = super::list::selects(&params.fields, "email");
    let users: Vec<UserItem> = rows
        .into_iter()
        .map(|r| UserItem {
            email: with_email.then_some(r.email),
            status: if online.contains(&r.id) {
                "online"
            } else {
                "offline"
            },
            id: r.id,
            username: r.username,
            avatar_url: r.avatar_url,
            role: r.role,
        })
        .collect();
    let mut body = json!({
        "users": users,
        "total": total,
        "page": params.page,
        "pages": params.pages(total),
    });
    select_in(&mut body, "users", &params.fields);
    Ok(HttpResponse::Ok().json(body))
}
