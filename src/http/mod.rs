//! The HTTP API: the route table (below, the whole API at a glance), one module per resource,
//! the error envelope and the middleware. Handlers are thin: extract, validate, call the store
//! or an actor, map the result. No SQL here.

pub mod address_caps;
pub mod admin;
pub mod auth;
pub mod batch;
pub mod body_timeout;
pub mod chats;
pub mod client_ip;
pub mod conn_limit;
pub mod error;
pub mod extract;
pub mod forwarded_cap;
pub mod health;
pub mod list;
pub mod login_guard;
pub mod messages;
pub mod metrics_guard;
pub mod openapi;
pub mod outbound;
pub mod ratelimit;
pub mod realtime;
pub mod request_id;
pub mod search;
pub mod socket_opts;
pub mod stats;
pub mod users;
pub mod web_client;
pub mod workspaces;
pub mod ws_guard;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, ResponseError, web};

use error::ApiError;

/// Every route of the server.
pub fn routes(cfg: &mut web::ServiceConfig) {
    // The OpenAPI document and docs page (before the /api scope, which would claim them).
    cfg.service(openapi::service());
    cfg.service(
        web::scope("/api")
            .route("/health", web::get().to(health::health))
            // Authentication
            .route("/auth/register", web::post().to(auth::register))
            .route("/auth/login", web::post().to(auth::login))
            .route("/auth/refresh", web::post().to(auth::refresh))
            .route(
                "/auth/change-password",
                web::put().to(auth::change_password),
            )
            // Users
            .route("/users/me", web::get().to(users::me))
            .route("/users/me", web::put().to(users::update_me))
            .route("/users", web::get().to(users::list))
            // Workspaces
            .route("/workspaces", web::get().to(workspaces::list))
            .route("/workspaces", web::post().to(workspaces::create))
            .route("/workspaces/{workspace_id}", web::get().to(workspaces::get))
            .route(
                "/workspaces/{workspace_id}/invites",
                web::post().to(workspaces::invite),
            )
            .route(
                "/invites/{code}/accept",
                web::post().to(workspaces::accept_invite),
            )
            // Chats
            .route("/chats", web::get().to(chats::list))
            .route("/chats", web::post().to(chats::create))
            .route("/chats/direct", web::post().to(chats::create_direct))
            .route("/chats/{chat_id}", web::get().to(chats::get))
            .route("/chats/{chat_id}/join", web::post().to(chats::join))
            .route("/chats/{chat_id}/leave", web::post().to(chats::leave))
            .route("/chats/{chat_id}/members", web::get().to(chats::members))
            .route(
                "/chats/{chat_id}/members",
                web::post().to(chats::add_member),
            )
            .route("/chats/{chat_id}/read", web::post().to(chats::mark_read))
            // Messages
            .route("/messages", web::get().to(messages::list))
            .route("/messages", web::post().to(messages::send))
            .route("/messages/{message_id}", web::put().to(messages::update))
            .route("/messages/{message_id}", web::delete().to(messages::delete))
            .route(
                "/messages/{message_id}/reactions",
                web::post().to(messages::add_reaction),
            )
            .route(
                "/messages/{message_id}/reactions/{emoji}",
                web::delete().to(messages::remove_reaction),
            )
            // Real time
            .route("/events", web::get().to(realtime::sse))
            // Search
            .route("/search/messages", web::post().to(search::messages))
            .route("/search/users", web::get().to(search::users))
            .route("/search/chats", web::get().to(search::chats))
            // Batch
            .route("/batch", web::post().to(batch::batch)),
    )
    .route("/ws", web::get().to(realtime::websocket))
    .route("/admin/production/health", web::get().to(admin::health))
    .route(
        "/admin/production/metrics/{service_name}",
        web::get().to(admin::metrics),
    )
    .route("/metrics", web::get().to(admin::prometheus));
}

/// Fallback for unmatched requests: the web client's files and routes (GET/HEAD outside `/api`,
/// `/ws`, `/metrics`, `/admin`); 405 with `Allow` for a known API path and a method it does not
/// serve (the methods come from the OpenAPI document, i.e. from the handlers); else the 404
/// envelope.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    if let Some(resp) = web_client::serve(&req) {
        return Ok(resp);
    }
    if let Some(allowed) = openapi::methods_for(req.path()) {
        return Ok(method_not_allowed(&req, &allowed));
    }
    Err(ApiError::NotFound(format!(
        "No route for {} {}",
        req.method(),
        req.path()
    )))
}

/// 405 in the envelope, with `Allow: <allowed>`.
pub fn method_not_allowed(req: &HttpRequest, allowed: &[&str]) -> actix_web::HttpResponse {
    let err = ApiError::MethodNotAllowed(format!(
        "Method {} is not allowed on {}; allowed: {}",
        req.method(),
        req.path(),
        allowed.join(", ")
    ));
    let mut resp = actix_web::ResponseError::error_response(&err);
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&allowed.join(", ")) {
        resp.headers_mut().insert(actix_web::http::header::ALLOW, v);
    }
    resp
}

/// Whether `method` is one of HTTP's standard methods (RFC 9110 and PATCH).
fn is_standard_method(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ]
    .contains(method)
}

/// Answers a request whose method is not a standard one before the rate limiter, the body, the
/// caps and the router: 405 with `Allow` on a path of the API (as the router's fallback would),
/// else the 404 envelope. No route serves such a method, so the answer is the same as the
/// router's; it costs one look-up in the method table instead of the whole request path
/// (a flood of made-up methods spent its time in the router's pattern matching and in the
/// layers around it). Sits inside the request id (the envelope quotes it) and the request
/// counters (`/metrics` labels the method `other`).
pub async fn unknown_method(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if is_standard_method(req.method()) {
        return next.call(req).await.map(|r| r.map_into_boxed_body());
    }
    let resp = match openapi::methods_for(req.path()) {
        Some(allowed) => method_not_allowed(req.request(), &allowed),
        None => ApiError::NotFound(format!("No route for {} {}", req.method(), req.path()))
            .error_response(),
    };
    Ok(req.into_response(resp))
}
