//! Users: the caller's profile, and the member list of a workspace.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json};
use super::list::{FieldsQuery, parse_fields, select};
use crate::state::AppState;
use crate::store::users::{ProfileUpdate, UserRow};
use crate::validate;

pub use super::workspaces::list_users as list;

#[derive(Serialize, ToSchema)]
pub struct Preferences {
    #[schema(example = "dark")]
    pub theme: String,
    pub language: String,
    pub notifications_enabled: bool,
}

/// `GET /api/users/me` body.
#[derive(Serialize, ToSchema)]
pub struct Profile {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub avatar_url: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub preferences: Preferences,
}

impl From<UserRow> for Profile {
    fn from(u: UserRow) -> Self {
        Profile {
            id: u.id,
            email: u.email,
            username: u.username,
            avatar_url: u.avatar_url,
            created_at: u.created_at,
            preferences: Preferences {
                theme: u.theme,
                language: u.language,
                notifications_enabled: u.notifications_enabled,
            },
        }
    }
}

/// Distinguishes an absent field (`None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default, ToSchema)]
pub struct PreferencesUpdate {
    #[schema(pattern = "^(light|dark|system)$")]
    pub theme: Option<String>,
    /// A language tag such as `en` or `zh-CN`.
    #[schema(pattern = r"^[A-Za-z][A-Za-z0-9_\-]{1,15}$")]
    pub language: Option<String>,
    pub notifications_enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
pub struct UpdateProfileRequest {
    /// 2 to 32 letters (any script), digits, `_`, `.` or `-`.
    #[schema(pattern = r"^[A-Za-z0-9_.\-]{2,32}$")]
    pub username: Option<String>,
    /// An http(s) URL; `null` or `""` removes the avatar.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, max_length = 2048, pattern = r"^$|^https?://[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*(/[A-Za-z0-9._~\-]*)*$")]
    pub avatar_url: Option<Option<String>>,
    pub preferences: Option<PreferencesUpdate>,
}

pub const THEMES: &[&str] = &["light", "dark", "system"];

/// Fields `GET /api/users/me?fields=` can keep.
const PROFILE_FIELDS: &[&str] = &[
    "id",
    "email",
    "username",
    "avatar_url",
    "created_at",
    "preferences",
];

crate::fields_params!(ProfileFieldsParam, PROFILE_FIELDS);

/// `GET /api/users/me` (`fields=` keeps only the named fields, as on lists).
#[utoipa::path(get, path = "/api/users/me", tag = "users", summary = "The caller's profile",
    params(ProfileFieldsParam),
    responses((status = 200, body = Profile),
        (status = 422, description = "`fields` names no field of the profile")))]
pub async fn me(
    state: web::Data<AppState>,
    user: AuthUser,
    q: web::Query<FieldsQuery>,
) -> ApiResult<HttpResponse> {
    let fields = parse_fields(q.fields.as_deref(), PROFILE_FIELDS)?;
    let row = state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid token"))?;
    if fields.is_none() {
        return Ok(HttpResponse::Ok().json(Profile::from(row)));
    }
    let mut body = serde_json::to_value(Profile::from(row))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("encoding a profile: {e}")))?;
    select(&mut body, &fields);
    Ok(HttpResponse::Ok().json(body))
}

/// `PUT /api/users/me` — partial update of username, avatar and preferences.
#[utoipa::path(put, path = "/api/users/me", tag = "users",
    summary = "Update the caller's profile (partial)", request_body = UpdateProfileRequest,
    responses((status = 200, body = Profile)))]
pub async fn update_me(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<UpdateProfileRequest>,
) -> ApiResult<HttpResponse> {
    let body = body.into_inner();
    let mut update = ProfileUpdate::default();
    if let Some(name) = &body.username {
        update.username = Some(validate::username(name)?);
    }
    if let Some(avatar) = &body.avatar_url {
        update.avatar_url = Some(match avatar.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(validate::http_url("avatar_url", url)?),
        });
    }
    let prefs = body.preferences.unwrap_or_default();
    if let Some(theme) = prefs.theme {
        let theme = theme.trim().to_ascii_lowercase();
        if !THEMES.contains(&theme.as_str()) {
            return Err(ApiError::validation(
                "preferences.theme",
                "must be one of: light, dark, system",
            ));
        }
        update.theme = Some(theme);
    }
    if let Some(lang) = prefs.language {
        let lang = lang.trim().to_string();
        let ok = (2..=16).contains(&lang.len())
            && lang
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            && lang.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !ok {
            return Err(ApiError::validation(
                "preferences.language",
                "must be a language tag such as `en` or `zh-CN`",
            ));
        }
        update.language = Some(lang);
    }
    update.notifications_enabled = prefs.notifications_enabled;
    let row = state
        .store
        .update_profile(user.id, update)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid token"))?;
    Ok(HttpResponse::Ok().json(Profile::from(row)))
}
