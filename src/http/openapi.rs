//! The OpenAPI 3 description of the API (`GET /api/openapi.json`) and a browsable docs page
//! (`/api/docs/`, Swagger UI served from the binary).
//!
//! Component schemas are utoipa derives of the wire bodies; operations come from [`ENDPOINTS`],
//! one row per route. Two tests keep it honest: every `.route(` of the route table in `mod.rs`
//! is in [`ENDPOINTS`] and back, and `tests/api/openapi.rs` compares the schemas' properties with
//! the bodies the server really returns.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, Header, OpenApi as OpenApiDoc, Ref, Required, ResponseBuilder, ResponsesBuilder,
};
use utoipa::{OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    Public,
    /// `Authorization: Bearer <access token>`.
    User,
    /// `Authorization: Bearer <FECHATTER_ADMIN_TOKEN>`.
    Admin,
}

/// One operation of the API.
pub struct Endpoint {
    pub method: &'static str,
    /// actix-style path (`{param}`), as in the route table.
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: Auth,
    /// Request body schema.
    pub request: Option<&'static str>,
    /// Success status and response body schema.
    pub ok: (u16, Option<&'static str>),
    /// Query parameters: (name, is integer, required).
    pub query: &'static [(&'static str, bool, bool)],
}

const LIST: &[(&str, bool, bool)] = &[
    ("page", true, false),
    ("limit", true, false),
    ("sort", false, false),
    ("order", false, false),
    ("fields", false, false),
];
const IN_WORKSPACE_LIST: &[(&str, bool, bool)] = &[
    ("workspace_id", true, true),
    ("page", true, false),
    ("limit", true, false),
    ("sort", false, false),
    ("order", false, false),
    ("fields", false, false),
];
const CHAT_LIST: &[(&str, bool, bool)] = &[
    ("workspace_id", true, false),
    ("page", true, false),
    ("limit", true, false),
    ("sort", false, false),
    ("order", false, false),
    ("fields", false, false),
];
const MESSAGE_LIST: &[(&str, bool, bool)] = &[
    ("chat_id", true, true),
    ("limit", true, false),
    ("before_id", true, false),
    ("sort", false, false),
    ("order", false, false),
    ("fields", false, false),
];
const NAME_SEARCH: &[(&str, bool, bool)] = &[
    ("q", false, true),
    ("workspace_id", true, true),
    ("page", true, false),
    ("limit", true, false),
];
const STREAM: &[(&str, bool, bool)] = &[
    ("access_token", false, false),
    ("last_event_id", false, false),
];

macro_rules! ep {
    ($m:literal $p:literal, $tag:literal, $summary:literal, $auth:ident, $req:expr, $ok:expr, $q:expr) => {
        Endpoint {
            method: $m,
            path: $p,
            tag: $tag,
            summary: $summary,
            auth: Auth::$auth,
            request: $req,
            ok: $ok,
            query: $q,
        }
    };
}

/// Every operation, in route-table order.
#[rustfmt::skip]
pub const ENDPOINTS: &[Endpoint] = &[
    ep!("GET" "/api/health", "health", "Liveness, version and uptime", Public, None, (200, Some("Health")), &[]),
    ep!("POST" "/api/auth/register", "auth", "Create an account (limited per IP)", Public, Some("RegisterRequest"), (201, Some("AuthResponse")), &[]),
    ep!("POST" "/api/auth/login", "auth", "Log in (limited per IP)", Public, Some("LoginRequest"), (200, Some("AuthResponse")), &[]),
    ep!("POST" "/api/auth/refresh", "auth", "New token for a current or recently expired one", User, None, (200, Some("TokenResponse")), &[]),
    ep!("PUT" "/api/auth/change-password", "auth", "Change password (revokes earlier tokens)", User, Some("ChangePasswordRequest"), (200, Some("TokenResponse")), &[]),
    ep!("GET" "/api/users/me", "users", "The caller's profile", User, None, (200, Some("Profile")), &[]),
    ep!("PUT" "/api/users/me", "users", "Update the caller's profile (partial)", User, Some("UpdateProfileRequest"), (200, Some("Profile")), &[]),
    ep!("GET" "/api/users", "users", "Users of a workspace", User, None, (200, Some("UserList")), IN_WORKSPACE_LIST),
    ep!("GET" "/api/workspaces", "workspaces", "The caller's workspaces", User, None, (200, Some("WorkspaceList")), LIST),
    ep!("POST" "/api/workspaces", "workspaces", "Create a workspace", User, Some("CreateWorkspaceRequest"), (201, Some("Workspace")), &[]),
    ep!("GET" "/api/workspaces/{workspace_id}", "workspaces", "Workspace details, settings and stats", User, None, (200, Some("Workspace")), &[]),
    ep!("POST" "/api/workspaces/{workspace_id}/invites", "workspaces", "Invite someone (owners and admins)", User, Some("InviteRequest"), (201, Some("Invite")), &[]),
    ep!("POST" "/api/invites/{code}/accept", "workspaces", "Accept an invite", User, None, (200, Some("Workspace")), &[]),
    ep!("GET" "/api/chats", "chats", "The caller's chats", User, None, (200, Some("ChatList")), CHAT_LIST),
    ep!("POST" "/api/chats", "chats", "Create a channel", User, Some("CreateChatRequest"), (201, Some("Chat")), &[]),
    ep!("POST" "/api/chats/direct", "chats", "Create (or return) a direct message", User, Some("CreateDirectRequest"), (201, Some("Chat")), &[]),
    ep!("GET" "/api/chats/{chat_id}", "chats", "Chat details", User, None, (200, Some("Chat")), &[]),
    ep!("POST" "/api/chats/{chat_id}/join", "chats", "Join a public channel", User, None, (200, Some("Chat")), &[]),
    ep!("POST" "/api/chats/{chat_id}/leave", "chats", "Leave a chat", User, None, (200, None), &[]),
    ep!("GET" "/api/chats/{chat_id}/members", "chats", "Members of a chat", User, None, (200, Some("MemberList")), LIST),
    ep!("POST" "/api/chats/{chat_id}/members", "chats", "Add a member to a channel", User, Some("AddMemberRequest"), (201, None), &[]),
    ep!("POST" "/api/chats/{chat_id}/read", "chats", "Move the caller's read marker", User, Some("MarkReadRequest"), (200, None), &[]),
    ep!("GET" "/api/messages", "messages", "Messages of a chat, newest first", User, None, (200, Some("MessageList")), MESSAGE_LIST),
    ep!("POST" "/api/messages", "messages", "Send a message (idempotent with idempotency_key)", User, Some("SendMessageRequest"), (201, Some("Message")), &[]),
    ep!("PUT" "/api/messages/{message_id}", "messages", "Edit one's message", User, Some("UpdateMessageRequest"), (200, Some("Message")), &[]),
    ep!("DELETE" "/api/messages/{message_id}", "messages", "Delete one's message", User, None, (200, None), &[]),
    ep!("POST" "/api/messages/{message_id}/reactions", "messages", "Add a reaction", User, Some("ReactionRequest"), (201, Some("Reactions")), &[]),
    ep!("DELETE" "/api/messages/{message_id}/reactions/{emoji}", "messages", "Remove one's reaction", User, None, (200, Some("Reactions")), &[]),
    ep!("GET" "/api/events", "realtime", "Server-Sent Events stream (text/event-stream)", User, None, (200, None), STREAM),
    ep!("POST" "/api/search/messages", "search", "Full-text message search (search rate limit)", User, Some("SearchMessagesRequest"), (200, Some("SearchResults")), &[]),
    ep!("GET" "/api/search/users", "search", "Users by name (search rate limit)", User, None, (200, None), NAME_SEARCH),
    ep!("GET" "/api/search/chats", "search", "Chats by name (search rate limit)", User, None, (200, None), NAME_SEARCH),
    ep!("POST" "/api/batch", "batch", "Run up to FECHATTER_BATCH_MAX_OPS operations in order", Public, Some("BatchRequest"), (200, Some("BatchResponse")), &[]),
    ep!("GET" "/ws", "realtime", "WebSocket upgrade; authenticate with the first frame", Public, None, (101, None), &[]),
    ep!("GET" "/admin/production/health", "admin", "Dependencies and load (admin token)", Admin, None, (200, Some("ProductionHealth")), &[]),
    ep!("GET" "/admin/production/metrics/{service_name}", "admin", "One service's figures: database, search, http, realtime, websocket, system", Admin, None, (200, None), &[]),
    ep!("GET" "/metrics", "admin", "Prometheus text format (firewall it)", Public, None, (200, None), &[]),
];

// ---- Component schemas: the wire bodies. ----

#[derive(Serialize, Deserialize, ToSchema)]
pub struct RegisterRequest {
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuthUser {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar_url: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AuthResponse {
    pub token: String,
    pub user: AuthUser,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Preferences {
    /// `light` or `dark`.
    pub theme: String,
    pub language: String,
    pub notifications_enabled: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub preferences: Preferences,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UpdateProfileRequest {
    pub username: Option<String>,
    /// `null` removes the avatar.
    pub avatar_url: Option<String>,
    pub preferences: Option<Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserItem {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    /// `online` or `offline`.
    pub status: String,
    pub role: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserItem>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceItem {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub member_count: i64,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceItem>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceSettings {
    pub allow_guest_access: bool,
    pub require_2fa: bool,
    pub retention_days: i32,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct WorkspaceStats {
    pub member_count: i64,
    pub channel_count: i64,
    pub message_count: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub role: String,
    pub member_count: i64,
    pub settings: WorkspaceSettings,
    pub stats: WorkspaceStats,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreateWorkspaceRequest {
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct InviteRequest {
    pub email: Option<String>,
    /// `member` or `admin`.
    pub role: Option<String>,
    pub expires_in_days: Option<i64>,
    pub max_uses: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Invite {
    pub invite_code: String,
    pub invite_url: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Sender {
    pub id: i64,
    pub username: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LastMessage {
    pub id: i64,
    pub content: String,
    pub sender: Sender,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Chat {
    pub id: i64,
    pub workspace_id: i64,
    pub name: String,
    /// `channel` or `direct`.
    #[serde(rename = "type")]
    pub kind: String,
    pub description: Option<String>,
    pub is_private: bool,
    pub member_count: i64,
    pub unread_count: i64,
    pub last_message: Option<LastMessage>,
    pub role: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ChatList {
    pub chats: Vec<Chat>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreateChatRequest {
    pub workspace_id: i64,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub description: Option<String>,
    pub is_private: Option<bool>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreateDirectRequest {
    pub workspace_id: i64,
    pub user_ids: Vec<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub user_id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
    pub total: i64,
    pub page: i64,
    pub pages: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct AddMemberRequest {
    pub user_id: i64,
    pub role: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MarkReadRequest {
    pub message_id: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageSender {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Reaction {
    pub emoji: String,
    pub count: i64,
    pub users: Vec<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Message {
    pub id: i64,
    pub chat_id: i64,
    pub sender_id: i64,
    pub sender: MessageSender,
    pub content: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub reactions: Vec<Reaction>,
    /// Echoed when the send carried one.
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<Message>,
    pub has_more: bool,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SendMessageRequest {
    pub chat_id: i64,
    pub content: String,
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct UpdateMessageRequest {
    pub content: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReactionRequest {
    pub emoji: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Reactions {
    pub message_id: i64,
    pub emoji: String,
    pub reactions: Vec<Reaction>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SearchMessagesRequest {
    pub query: String,
    pub workspace_id: i64,
    /// `chat_ids`, `sender_ids`, `date_from`, `date_to`.
    pub filters: Option<Value>,
    pub page: Option<i64>,
    pub limit: Option<i64>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SearchResult {
    pub message_id: i64,
    pub chat_id: i64,
    pub chat_name: String,
    /// HTML-escaped text with matches in `<mark>`.
    pub content: String,
    pub sender: Sender,
    pub created_at: DateTime<Utc>,
    pub score: f64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct SearchResults {
    pub results: Vec<SearchResult>,
    pub total: i64,
    pub page: i64,
    pub processing_time_ms: i64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchOperation {
    /// GET, POST, PUT, PATCH or DELETE.
    pub method: String,
    /// A path under `/api/` (not `/api/batch`), query string allowed.
    pub path: String,
    pub body: Option<Value>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchRequest {
    pub operations: Vec<BatchOperation>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    pub status: u16,
    /// The operation's JSON body (an error envelope on failure).
    pub body: Value,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BatchResponse {
    pub results: Vec<BatchResult>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ServiceHealth {
    /// `healthy` or `unhealthy`.
    pub status: String,
    pub latency_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct LoadFigures {
    pub requests_per_second: f64,
    pub active_connections: i64,
    pub cpu_usage_percent: f64,
    pub memory_usage_mb: f64,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ProductionHealth {
    /// `healthy`, `degraded` (search down) or `unhealthy` (database down, HTTP 503).
    pub status: String,
    pub timestamp: u64,
    /// `database` and `search`.
    pub services: BTreeMap<String, ServiceHealth>,
    pub metrics: LoadFigures,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// UNAUTHORIZED, FORBIDDEN, NOT_FOUND, VALIDATION_ERROR, CONFLICT, RATE_LIMITED, ...
    pub code: String,
    pub message: String,
    pub details: Value,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
    pub request_id: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fechatter API",
        description = "Real-time chat server. Rate limits: X-RateLimit-* headers on every limited response; 429 RATE_LIMITED with Retry-After when refused."
    ),
    components(schemas(
        RegisterRequest,
        LoginRequest,
        ChangePasswordRequest,
        AuthUser,
        AuthResponse,
        TokenResponse,
        Preferences,
        Profile,
        UpdateProfileRequest,
        UserItem,
        UserList,
        WorkspaceItem,
        WorkspaceList,
        WorkspaceSettings,
        WorkspaceStats,
        Workspace,
        CreateWorkspaceRequest,
        InviteRequest,
        Invite,
        Sender,
        LastMessage,
        Chat,
        ChatList,
        CreateChatRequest,
        CreateDirectRequest,
        Member,
        MemberList,
        AddMemberRequest,
        MarkReadRequest,
        MessageSender,
        Reaction,
        Message,
        MessageList,
        SendMessageRequest,
        UpdateMessageRequest,
        ReactionRequest,
        Reactions,
        SearchMessagesRequest,
        SearchResult,
        SearchResults,
        BatchOperation,
        BatchRequest,
        BatchResult,
        BatchResponse,
        Health,
        ServiceHealth,
        LoadFigures,
        ProductionHealth,
        ErrorBody,
        ErrorEnvelope
    ))
)]
struct ApiDoc;

fn method_of(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

fn scalar(integer: bool) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(if integer { Type::Integer } else { Type::String })
}

fn json_of(schema: &str) -> Content {
    Content::new(Some(Ref::from_schema_name(schema)))
}

fn error(description: &str) -> ResponseBuilder {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", json_of("ErrorEnvelope"))
}

/// `X-RateLimit-*` headers, on every response of a limited endpoint.
fn with_rate_headers(mut r: ResponseBuilder) -> ResponseBuilder {
    for (name, what) in [
        ("X-RateLimit-Limit", "Requests allowed per period"),
        ("X-RateLimit-Remaining", "Requests left now"),
        (
            "X-RateLimit-Reset",
            "Unix second at which the quota is full again",
        ),
    ] {
        let mut h = Header::new(scalar(true));
        h.description = Some(what.to_string());
        r = r.header(name, h);
    }
    r
}

fn operation(e: &Endpoint) -> utoipa::openapi::path::Operation {
    let limited = e.path.starts_with("/api/") && e.path != "/api/health" || e.path == "/ws";
    let mut op = OperationBuilder::new()
        .tag(e.tag)
        .summary(Some(e.summary))
        .operation_id(Some(format!(
            "{}{}",
            e.method.to_lowercase(),
            e.path.replace(['/', '-'], "_").replace(['{', '}'], "")
        )));
    for segment in e.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(scalar(name.ends_with("_id")))),
            );
        }
    }
    for (name, integer, required) in e.query {
        op = op.parameter(
            ParameterBuilder::new()
                .name(*name)
                .parameter_in(ParameterIn::Query)
                .required(if *required {
                    Required::True
                } else {
                    Required::False
                })
                .schema(Some(scalar(*integer))),
        );
    }
    if let Some(req) = e.request {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .content("application/json", json_of(req))
                .required(Some(Required::True))
                .build(),
        ));
    }
    let mut ok = ResponseBuilder::new().description("Success");
    if let Some(body) = e.ok.1 {
        ok = ok.content("application/json", json_of(body));
    }
    if limited {
        ok = with_rate_headers(ok);
    }
    let mut responses = ResponsesBuilder::new().response(e.ok.0.to_string(), ok.build());
    match e.auth {
        Auth::User => {
            responses = responses.response("401", error("Missing or invalid token").build());
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        Auth::Admin => {
            responses = responses
                .response("401", error("Missing bearer token").build())
                .response("403", error("Wrong admin token").build())
                .response(
                    "404",
                    error("Admin API disabled (no token configured)").build(),
                );
            op = op.security(SecurityRequirement::new("admin", Vec::<String>::new()));
        }
        Auth::Public => {}
    }
    if e.request.is_some() || !e.query.is_empty() || e.path.contains('{') {
        responses = responses.response("422", error("Invalid input").build());
    }
    if limited {
        let mut limited = with_rate_headers(error("Rate limited"));
        limited = limited.header("Retry-After", Header::new(scalar(true)));
        responses = responses.response("429", limited.build());
    }
    op.responses(responses.build()).build()
}

/// The whole document (built once).
pub fn document() -> &'static OpenApiDoc {
    static DOC: OnceLock<OpenApiDoc> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let mut paths = utoipa::openapi::Paths::new();
        for e in ENDPOINTS {
            paths.add_path_operation(e.path, vec![method_of(e.method)], operation(e));
        }
        doc.paths = paths;
        if let Some(components) = doc.components.as_mut() {
            let bearer = || SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer));
            components.add_security_scheme("bearer", bearer());
            components.add_security_scheme("admin", bearer());
        }
        doc
    })
}

/// `/api/openapi.json` and the Swagger UI at `/api/docs/`. Registered before the `/api` scope,
/// which would otherwise claim these paths.
pub fn service() -> SwaggerUi {
    SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", document().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, full path) of every `.route(` in the route table, with scope prefixes applied.
    /// Reads `mod.rs` as text: the table is plain `.route("path", web::method().to(..))` calls
    /// inside `web::scope("prefix")` blocks.
    fn route_table() -> Vec<(String, String)> {
        let src: String = include_str!("mod.rs")
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let start = src.find("pubfnroutes(").expect("routes fn");
        let src = &src[start..];
        let mut out = Vec::new();
        let mut scopes: Vec<(String, usize)> = Vec::new();
        let mut depth = 0usize;
        let mut i = 0;
        let bytes = src.as_bytes();
        while i < bytes.len() {
            let rest = &src[i..];
            if let Some(after) = rest.strip_prefix("web::scope(\"") {
                let end = after.find('"').expect("scope end");
                scopes.push((after[..end].to_string(), depth));
            } else if let Some(after) = rest.strip_prefix(".route(\"") {
                let end = after.find('"').expect("path end");
                let path = &after[..end];
                let method_at = after.find("web::").expect("method") + 5;
                let method_end = after[method_at..].find('(').expect("method end");
                let method = after[method_at..method_at + method_end].to_uppercase();
                let prefix: String = scopes.iter().map(|(p, _)| p.as_str()).collect();
                out.push((method, format!("{prefix}{path}")));
            }
            match bytes[i] {
                b'(' => depth += 1,
                b')' => {
                    depth = depth.saturating_sub(1);
                    while scopes.last().is_some_and(|(_, d)| depth < *d) {
                        scopes.pop();
                    }
                }
                b'}' if depth == 0 => break,
                _ => {}
            }
            i += 1;
        }
        out
    }

    /// Every route of the route table is in the document, and the document has no route the
    /// table lacks.
    #[test]
    fn document_covers_the_route_table() {
        let routes = route_table();
        assert!(routes.len() >= 30, "parsed too few routes: {routes:?}");
        assert!(routes.contains(&("GET".into(), "/api/health".into())));
        assert!(routes.contains(&("GET".into(), "/ws".into())));
        let doc = serde_json::to_value(document()).expect("json");
        for (method, path) in &routes {
            assert!(
                doc["paths"][path][method.to_lowercase()].is_object(),
                "{method} {path} is not in the OpenAPI document"
            );
        }
        let mut documented = 0;
        for e in ENDPOINTS {
            documented += 1;
            assert!(
                routes.contains(&(e.method.to_string(), e.path.to_string())),
                "{} {} is documented but not routed",
                e.method,
                e.path
            );
        }
        assert_eq!(documented, routes.len());
    }

    /// Every schema an operation refers to is a component.
    #[test]
    fn references_resolve() {
        let doc = serde_json::to_value(document()).expect("json");
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
    }
}
