//! The OpenAPI 3.1 document (`GET /api/openapi.json`), generated from the code, and a browsable
//! docs page (`/api/docs/`, Swagger UI served from the binary).
//!
//! Operations are the `#[utoipa::path]` attributes on the handlers, listed in [`ApiDoc`]; their
//! bodies are the handlers' own wire types (`#[derive(ToSchema)]`), their query parameters the
//! handlers' query structs (`IntoParams`) and each list endpoint's `ListSpec`. Below are only
//! the schemas of bodies that handlers build with `json!` and the rules every operation shares
//! ([`Conventions`]: the error envelope, 401/422/429/503, rate-limit headers). A unit test
//! checks the document against the route table in `mod.rs`; `tests/api/openapi.rs` and
//! `tests/api/schemathesis.rs` check it against what the server really accepts and sends.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{
    Content, Header, OpenApi as OpenApiDoc, Ref, RefOr, Response, ResponseBuilder, Schema,
};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use super::{admin, auth, batch, chats, health, messages, realtime, search, users, workspaces};
use crate::actors::events::{MessageView, ReactionView};

// ---- Schemas of bodies the handlers build with `json!`. ----

/// `GET /api/health`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Health {
    #[schema(pattern = "^healthy$")]
    status: String,
    version: String,
    uptime_seconds: u64,
}

/// One dependency in the production health.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ServiceHealth {
    /// `disabled`: not used by this server (`redis` on one node, with `reason`).
    #[schema(pattern = "^(healthy|unhealthy|disabled)$")]
    status: String,
    /// The probe's round trip in whole milliseconds (`null` when it failed or the service is
    /// disabled; always present).
    latency_ms: Option<u64>,
    /// The same round trip in microseconds.
    latency_us: Option<u64>,
    error: Option<String>,
    reason: Option<String>,
    /// Search only: `postgres` or `meilisearch`.
    engine: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LoadFigures {
    requests_per_second: f64,
    active_connections: i64,
    cpu_usage_percent: f64,
    /// Resident memory, whole MiB.
    memory_usage_mb: u64,
}

/// `GET /admin/production/health`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProductionHealth {
    /// `healthy`, `degraded` (search down) or `unhealthy` (database down, HTTP 503).
    #[schema(pattern = "^(healthy|degraded|unhealthy)$")]
    status: String,
    timestamp: u64,
    /// `database`, `search` and `redis`.
    services: BTreeMap<String, ServiceHealth>,
    metrics: LoadFigures,
}

/// `GET /admin/production/metrics/{service_name}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ServiceMetrics {
    service: String,
    timestamp: u64,
    /// The service's figures (their names depend on the service).
    metrics: Value,
}

/// `PUT /api/auth/change-password`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PasswordChanged {
    message: String,
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// `GET /api/users`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserList {
    users: Vec<workspaces::UserItem>,
    total: i64,
    page: i64,
    pages: i64,
}

/// `GET /api/workspaces`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WorkspaceList {
    workspaces: Vec<workspaces::WorkspaceItem>,
    total: i64,
    page: i64,
    pages: i64,
}

/// `GET /api/chats`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatList {
    chats: Vec<chats::ChatBody>,
    total: i64,
    page: i64,
    pages: i64,
}

/// `GET /api/chats/{chat_id}/members`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MemberList {
    members: Vec<chats::MemberBody>,
    total: i64,
    page: i64,
    pages: i64,
}

/// `POST /api/chats/{chat_id}/leave`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LeftChat {
    chat_id: i64,
    left: bool,
}

/// `POST /api/chats/{chat_id}/read`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReadMarker {
    chat_id: i64,
    last_read_message_id: i64,
    unread_count: i64,
}

/// `GET /api/messages`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct MessageList {
    messages: Vec<MessageView>,
    has_more: bool,
}

/// `DELETE /api/messages/{message_id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeletedMessage {
    id: i64,
    chat_id: i64,
    deleted: bool,
}

/// The reactions of a message after adding or removing one.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Reactions {
    message_id: i64,
    emoji: String,
    reactions: Vec<ReactionView>,
}

/// `GET /api/search/users`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UserSearchResults {
    users: Vec<search::UserItem>,
    total: i64,
    page: i64,
}

/// `GET /api/search/chats`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ChatSearchResults {
    chats: Vec<search::ChatItem>,
    total: i64,
    page: i64,
}

/// `POST /api/batch`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct BatchResponse {
    results: Vec<batch::OpResult>,
}

/// `error` of the envelope.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// UNAUTHORIZED, FORBIDDEN, NOT_FOUND, METHOD_NOT_ALLOWED, VALIDATION_ERROR, CONFLICT,
    /// RATE_LIMITED, SERVICE_UNAVAILABLE, INTERNAL_ERROR.
    code: String,
    message: String,
    /// `field` and `reason` for VALIDATION_ERROR; `retry_after_seconds` for RATE_LIMITED.
    details: Value,
}

/// Every error answer of the API.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    error: ErrorBody,
    request_id: String,
}

/// The document: every handler of the route table, in its order.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Fechatter API",
        description = "Real-time chat server. Rate limits: X-RateLimit-* headers on every limited response; 429 RATE_LIMITED with Retry-After when refused. Every error is the ErrorEnvelope."
    ),
    paths(
        health::health,
        auth::register,
        auth::login,
        auth::refresh,
        auth::change_password,
        users::me,
        users::update_me,
        workspaces::list_users,
        workspaces::list,
        workspaces::create,
        workspaces::get,
        workspaces::invite,
        workspaces::accept_invite,
        chats::list,
        chats::create,
        chats::create_direct,
        chats::get,
        chats::join,
        chats::leave,
        chats::members,
        chats::add_member,
        chats::mark_read,
        messages::list,
        messages::send,
        messages::update,
        messages::delete,
        messages::add_reaction,
        messages::remove_reaction,
        realtime::sse,
        search::messages,
        search::users,
        search::chats,
        batch::batch,
        realtime::websocket,
        admin::health,
        admin::metrics,
        admin::prometheus,
    ),
    components(schemas(ErrorEnvelope, ErrorBody)),
    security(("bearer" = [])),
    modifiers(&Conventions)
)]
pub struct ApiDoc;

/// The rules every operation shares, applied to the generated operations.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut OpenApiDoc) {
        doc.info.version = env!("CARGO_PKG_VERSION").to_string();
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        let global_security = doc.security.clone();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                let secured = op
                    .security
                    .as_ref()
                    .or(global_security.as_ref())
                    .is_some_and(|reqs| {
                        // `security(())` is the empty requirement: public, or optional auth.
                        let json = serde_json::to_value(reqs).unwrap_or_default();
                        json.as_array().is_some_and(|a| {
                            !a.is_empty()
                                && a.iter().all(|r| r != &Value::Object(Default::default()))
                        })
                    });
                conventions(path, method, op, secured);
            }
        }
    }
}

/// The operations of a path item.
fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("post", item.post.as_mut()),
        ("put", item.put.as_mut()),
        ("patch", item.patch.as_mut()),
        ("delete", item.delete.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))),
        )
        .build()
}

fn integer_header(description: &str) -> Header {
    let mut h = Header::new(ObjectBuilder::new().schema_type(Type::Integer));
    h.description = Some(description.to_string());
    h
}

/// Whether the rate limiter applies to `path` (mirrors `ratelimit::exempt`).
fn rate_limited(path: &str) -> bool {
    (path.starts_with("/api/") && path != "/api/health") || path == "/ws"
}

/// Adds what every operation of its kind can answer: the error envelope on every error,
/// 401 when authenticated, 422 for malformed input, 429 and rate-limit headers when limited,
/// 503 when a dependency is down.
fn conventions(path: &str, method: &str, op: &mut Operation, secured: bool) {
    let id = format!(
        "{method}{}",
        path.replace(['/', '-'], "_").replace(['{', '}'], "")
    );
    op.operation_id = Some(id);
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(description)));
    };
    if secured {
        add("401", "Missing, invalid, expired or revoked token");
    }
    let has_input =
        op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    if has_input {
        add("422", "Invalid input (details.field names it)");
    }
    let limited = rate_limited(path);
    if limited {
        add("429", "Rate limited (Retry-After says when to retry)");
    }
    if path != "/api/health" && path != "/metrics" {
        add(
            "503",
            "A dependency is unavailable or the server is overloaded; retry (Retry-After)",
        );
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        let error = !status.starts_with('2') && !status.starts_with('1');
        if error && response.content.is_empty() {
            response.content.insert(
                "application/json".into(),
                Content::new(Some(Ref::from_schema_name("ErrorEnvelope"))),
            );
        }
        if limited && status != "101" {
            for (name, what) in [
                ("X-RateLimit-Limit", "Requests allowed per period"),
                ("X-RateLimit-Remaining", "Requests left now"),
                (
                    "X-RateLimit-Reset",
                    "Unix second at which the quota is full again",
                ),
            ] {
                response
                    .headers
                    .entry(name.into())
                    .or_insert_with(|| integer_header(what));
            }
        }
        if status == "429" || status == "503" {
            response
                .headers
                .entry("Retry-After".into())
                .or_insert_with(|| integer_header("Seconds to wait before retrying"));
        }
    }
}

/// List items may be trimmed by `fields=`: in the list schemas, their properties are optional;
/// so are the profile's in `GET /api/users/me` (its `PUT` answers the whole profile).
fn selectable_items(doc: &mut OpenApiDoc) {
    if let Some(get) = doc
        .paths
        .paths
        .get_mut("/api/users/me")
        .and_then(|item| item.get.as_mut())
    {
        let json = serde_json::to_string(&*get).unwrap_or_default().replace(
            "#/components/schemas/Profile\"",
            "#/components/schemas/ProfileFields\"",
        );
        if let Ok(updated) = serde_json::from_str(&json) {
            *get = updated;
        }
    }
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(full))) = components.schemas.get("Profile").cloned() {
        let mut partial = full;
        partial.required.clear();
        partial.description = Some("Profile, with only the fields asked for by `fields=`".into());
        components
            .schemas
            .insert("ProfileFields".into(), RefOr::T(Schema::Object(partial)));
    }
    let lists = [
        ("UserList", "UserItem"),
        ("WorkspaceList", "WorkspaceItem"),
        ("ChatList", "Chat"),
        ("MemberList", "Member"),
        ("MessageList", "Message"),
        ("UserSearchResults", "UserMatch"),
        ("ChatSearchResults", "ChatMatch"),
    ];
    for (list, item) in lists {
        let Some(RefOr::T(Schema::Object(full))) = components.schemas.get(item).cloned() else {
            continue;
        };
        let mut partial = full;
        partial.required.clear();
        partial.description = Some(format!(
            "{item}, with only the fields asked for by `fields=`"
        ));
        let name = format!("{item}Fields");
        components
            .schemas
            .insert(name.clone(), RefOr::T(Schema::Object(partial)));
        if let Some(RefOr::T(Schema::Object(list))) = components.schemas.get_mut(list) {
            let json = serde_json::to_string(&*list).unwrap_or_default().replace(
                &format!("#/components/schemas/{item}\""),
                &format!("#/components/schemas/{name}\""),
            );
            if let Ok(updated) = serde_json::from_str(&json) {
                *list = updated;
            }
        }
    }
}

/// An array of `min` to `max` positive ids (`distinct`: no repeats allowed).
pub fn id_array(min: usize, max: usize, distinct: bool) -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(super::list::integer_schema(1, i64::MAX))
        .min_items(Some(min))
        .max_items(Some(max))
        .unique_items(distinct)
        .build()
}

/// The whole document (built once).
pub fn document() -> &'static OpenApiDoc {
    static DOC: OnceLock<OpenApiDoc> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        selectable_items(&mut doc);
        doc
    })
}

/// `/api/openapi.json` and the Swagger UI at `/api/docs/`. Registered before the `/api` scope,
/// which would otherwise claim these paths.
pub fn service() -> SwaggerUi {
    SwaggerUi::new("/api/docs/{_:.*}").url("/api/openapi.json", document().clone())
}

type MethodTable = Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)>;

/// The methods the document lists for the route template matching `path`, if any (for 405).
/// Literal templates (`/api/chats/direct`) win over parameterised ones (`/api/chats/{chat_id}`).
pub fn methods_for(path: &str) -> Option<Vec<&'static str>> {
    method_table()
        .iter()
        .find(|(def, _)| def.is_match(path))
        .map(|(_, methods)| methods.clone())
}

/// The methods of the literal (parameterless) template equal to `path`, if there is one.
pub fn static_methods(path: &str) -> Option<Vec<&'static str>> {
    method_table()
        .iter()
        .find(|(def, _)| !def.pattern().unwrap_or("{").contains('{') && def.is_match(path))
        .map(|(_, methods)| methods.clone())
}

fn method_table() -> &'static MethodTable {
    static ROUTES: OnceLock<MethodTable> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let mut out: Vec<(actix_web::dev::ResourceDef, Vec<&'static str>)> = document()
            .paths
            .paths
            .iter()
            .map(|(template, item)| {
                let mut methods = Vec::new();
                for (m, name) in [
                    (item.get.is_some(), "GET"),
                    (item.post.is_some(), "POST"),
                    (item.put.is_some(), "PUT"),
                    (item.patch.is_some(), "PATCH"),
                    (item.delete.is_some(), "DELETE"),
                ] {
                    if m {
                        methods.push(name);
                    }
                }
                (actix_web::dev::ResourceDef::new(template.as_str()), methods)
            })
            .collect();
        out.push((
            actix_web::dev::ResourceDef::new("/api/openapi.json"),
            vec!["GET"],
        ));
        out.sort_by_key(|(def, _)| def.pattern().unwrap_or("{").contains('{'));
        out
    })
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

    fn documented() -> Vec<(String, String)> {
        let doc = serde_json::to_value(document()).expect("json");
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("item").keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        out
    }

    /// Every route of the route table is in the document, and the document has no route the
    /// table lacks.
    #[test]
    fn document_covers_the_route_table() {
        let mut routes = route_table();
        assert!(routes.len() >= 30, "parsed too few routes: {routes:?}");
        assert!(routes.contains(&("GET".into(), "/api/health".into())));
        assert!(routes.contains(&("GET".into(), "/ws".into())));
        let mut documented = documented();
        routes.sort();
        documented.sort();
        let missing: Vec<_> = routes.iter().filter(|r| !documented.contains(r)).collect();
        assert!(missing.is_empty(), "routed but not documented: {missing:?}");
        let extra: Vec<_> = documented.iter().filter(|r| !routes.contains(r)).collect();
        assert!(extra.is_empty(), "documented but not routed: {extra:?}");
    }

    /// Every schema an operation refers to is a component, and every error answer is the
    /// envelope.
    #[test]
    fn references_resolve_and_errors_are_envelopes() {
        let doc = serde_json::to_value(document()).expect("json");
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("item") {
                for (status, r) in op["responses"].as_object().expect("responses") {
                    if status.starts_with('4') || status.starts_with('5') {
                        let schema = &r["content"]["application/json"]["schema"]["$ref"];
                        let is_envelope = schema == "#/components/schemas/ErrorEnvelope";
                        let admin_health = path == "/admin/production/health" && status == "503";
                        assert!(is_envelope || admin_health, "{method} {path} {status}: {r}");
                    }
                }
            }
        }
    }

    /// Authenticated operations declare 401, limited ones 429, every one with input 422.
    #[test]
    fn shared_statuses_are_listed() {
        let doc = serde_json::to_value(document()).expect("json");
        let op = |m: &str, p: &str| doc["paths"][p][m]["responses"].clone();
        for status in ["401", "403", "404", "422", "429", "503"] {
            assert!(
                op("get", "/api/chats/{chat_id}")[status].is_object(),
                "{status}"
            );
        }
        assert!(op("post", "/api/auth/register")["401"].is_null());
        assert!(op("post", "/api/auth/register")["409"].is_object());
        assert!(op("get", "/api/health")["429"].is_null());
        let list = &doc["paths"]["/api/chats"]["get"]["parameters"];
        let limit = list
            .as_array()
            .expect("params")
            .iter()
            .find(|p| p["name"] == "limit")
            .expect("limit");
        assert_eq!(limit["schema"]["minimum"], 1.0);
        assert_eq!(limit["schema"]["maximum"], 100.0);
    }

    /// The 405 table knows every documented template.
    #[test]
    fn methods_for_matches_templates() {
        assert_eq!(methods_for("/api/chats/12/join"), Some(vec!["POST"]));
        assert_eq!(methods_for("/api/users/me"), Some(vec!["GET", "PUT"]));
        assert_eq!(methods_for("/api/nope"), None);
        assert_eq!(methods_for("/api/chats/direct"), Some(vec!["POST"]));
        assert_eq!(static_methods("/api/chats/direct"), Some(vec!["POST"]));
        assert_eq!(static_methods("/api/chats/3"), None);
    }
}
