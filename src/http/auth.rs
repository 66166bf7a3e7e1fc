//! Authentication: register, login, refresh, change password (brute-force protection is
//! `login_guard`).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json, bearer_token};
use crate::auth::TokenError;
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::users::{NewUser, UserRow};
use crate::validate;

#[derive(Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(value_type = String, required = true, max_length = 254, pattern = r"^[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f]+(\.[^\s@.\x00-\x1f\x7f-\x9f]+)+$")]
    pub email: Option<String>,
    /// 2 to 32 letters, digits, `_`, `.` or `-` (letters of any script; the pattern shows the
    /// ASCII ones).
    #[schema(value_type = String, required = true, pattern = r"^[A-Za-z0-9_.\-]{2,32}$")]
    pub username: Option<String>,
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(value_type = String, required = true, max_length = 254, pattern = r"^[^\s@\x00-\x1f\x7f-\x9f]+@[^\s@.\x00-\x1f\x7f-\x9f]+(\.[^\s@.\x00-\x1f\x7f-\x9f]+)+$")]
    pub email: Option<String>,
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 128)]
    pub current_password: Option<String>,
    #[schema(value_type = String, required = true, min_length = 8, max_length = 128)]
    pub new_password: Option<String>,
}

/// The user object of auth responses.
#[derive(Serialize, ToSchema)]
pub struct AuthUserBody {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuthResponse {
    pub token: String,
    pub user: AuthUserBody,
    pub expires_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn required<'a>(field: &str, v: &'a Option<String>) -> ApiResult<&'a str> {
    v.as_deref()
        .ok_or_else(|| ApiError::validation(field, "is required"))
}

fn auth_response(state: &AppState, user: &UserRow) -> ApiResult<AuthResponse> {
    let issued = state.tokens.issue(user.id, user.token_version)?;
    Ok(AuthResponse {
        token: issued.token,
        expires_at: issued.expires_at,
        user: AuthUserBody {
            id: user.id,
            email: user.email.clone(),
            username: user.username.clone(),
            avatar_url: user.avatar_url.clone(),
        },
    })
}

pub use super::client_ip::client_ip;
pub use super::login_guard::LoginGuard;

/// `POST /api/auth/register`
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", summary = "Create an account (limited per IP)",
    request_body = RegisterRequest, security(()),
    responses((status = 201, body = AuthResponse),
        (status = 409, description = "Email already registered")))]
pub async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<RegisterRequest>,
) -> ApiResult<HttpResponse> {
    state.limits.check_auth(client_ip(&req)).await?;
    let (email, email_key) = validate::email(required("email", &body.email)?)?;
    let username = validate::username(required("username", &body.username)?)?;
    let password = required("password", &body.password)?;
    validate::password("password", password)?;
    let hash = state.passwords.hash(password.to_string()).await?;
    let user = state
        .store
        .create_user(NewUser {
            email: &email,
            email_normalized: &email_key,
            username: &username,
            password_hash: &hash,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::Conflict("Email is already registered".into()),
            other => other.into(),
        })?;
    tracing::info!(user_id = user.id, "user registered");
    Ok(HttpResponse::Created().json(auth_response(&state, &user)?))
}

/// `POST /api/auth/login`
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", summary = "Log in (limited per IP and per account)",
    request_body = LoginRequest, security(()),
    responses((status = 200, body = AuthResponse),
        (status = 401, description = "Wrong email or password")))]
pub async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<LoginRequest>,
) -> ApiResult<HttpResponse> {
    let ip = client_ip(&req);
    state.limits.check_auth(ip).await?;
    let email = required("email", &body.email)?;
    let password = required("password", &body.password)?;
    if password.is_empty() {
        return Err(ApiError::validation("password", "is required"));
    }
    // Validated before it becomes a lock-out key (bodies may be 64 KiB; emails are ≤ 254, no
    // control characters).
    let email_key = validate::login_email(email)?;
    let attempt = state.login_guard.begin(&email_key, ip)?;
    let user = state.store.user_by_email(&email_key).await?;
    // Always run one verification, so unknown emails take as long as wrong passwords.
    let ok = state
        .passwords
        .verify_with_priority(
            password.to_string(),
            user.as_ref().map(|u| u.password_hash.clone()),
            attempt.priority(),
        )
        .await?;
    match user {
        Some(user) if ok => {
            attempt.succeeded();
            Ok(HttpResponse::Ok().json(auth_response(&state, &user)?))
        }
        _ => {
            attempt.failed();
            Err(ApiError::unauthorized("Invalid email or password"))
        }
    }
}

/// `POST /api/auth/refresh` — takes a (possibly expired) token, returns a fresh one.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth",
    summary = "New token for a current or recently expired one",
    responses((status = 200, body = TokenResponse)))]
pub async fn refresh(state: web::Data<AppState>, req: HttpRequest) -> ApiResult<HttpResponse> {
    let token = bearer_token(&req).ok_or_else(|| ApiError::unauthorized("Missing bearer token"))?;
    let claims = state
        .tokens
        .validate_for_refresh(token)
        .map_err(|e| match e {
            TokenError::RefreshWindowPassed => {
                ApiError::unauthorized("Token expired too long ago to refresh; log in again")
            }
            _ => ApiError::unauthorized("Invalid token"),
        })?;
    match state.token_version(claims.sub).await? {
        Some(v) if v == claims.tv => {}
        _ => return Err(ApiError::unauthorized("Token revoked")),
    }
    let issued = state.tokens.issue(claims.sub, claims.tv)?;
    Ok(HttpResponse::Ok().json(TokenResponse {
        token: issued.token,
        expires_at: issued.expires_at,
    }))
}

/// `PUT /api/auth/change-password` — revokes every token issued before; returns a new one.
#[utoipa::path(put, path = "/api/auth/change-password", tag = "auth",
    summary = "Change password (revokes earlier tokens)", request_body = ChangePasswordRequest,
    responses((status = 200, body = crate::http::openapi::PasswordChanged),
        (status = 422, description = "current_password is incorrect")))]
pub async fn change_password(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<ChangePasswordRequest>,
) -> ApiResult<HttpResponse> {
    let current = required("current_password", &body.current_password)?;
    let new = required("new_password", &body.new_password)?;
    validate::password("new_password", new)?;
    let row = state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid token"))?;
    let ok = state
        .passwords
        .verify(current.to_string(), Some(row.password_hash.clone()))
        .await?;
    if !ok {
        return Err(ApiError::validation("current_password", "is incorrect"));
    }
    let hash = state.passwords.hash(new.to_string()).await?;
    let version = state.store.set_password(user.id, &hash).await?;
    state.set_token_version(user.id, version);
    // Real-time connections opened with the older tokens close now.
    crate::actors::session::revoke(&state.registry, user.id, version);
    let issued = state.tokens.issue(user.id, version)?;
    tracing::info!(user_id = user.id, "password changed; older tokens revoked");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "message": "Password changed",
        "token": issued.token,
        "expires_at": issued.expires_at,
    })))
}
