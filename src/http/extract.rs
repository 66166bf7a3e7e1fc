//! Extractors: the authenticated caller, and error handlers that turn malformed JSON, paths and
//! queries into the contract's 422 envelope.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};

use super::error::ApiError;
use crate::state::AppState;

/// The caller, authenticated by `Authorization: Bearer <access token>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: i64,
    /// The token version the token was issued under (a password change bumps it).
    pub token_version: i32,
    /// When the token expires, unix seconds (real-time connections close then).
    pub expires_at: i64,
}

/// The bearer token of a request, if it has one.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Authenticated once per request (the rate limiter may already have done it).
        if let Some(user) = req.extensions().get::<AuthUser>() {
            let user = *user;
            return Box::pin(async move { Ok(user) });
        }
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        let req = req.clone();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no app state")))?;
            let token = token.ok_or_else(|| ApiError::unauthorized("Missing bearer token"))?;
            let user = state.authenticate(&token).await?;
            req.extensions_mut().insert(user);
            Ok(user)
        })
    }
}

/// JSON bodies: any content type accepted, size-limited, errors as 422 envelopes.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .error_handler(|err, _req| {
            let reason = match &err {
                JsonPayloadError::Overflow { limit } => {
                    format!("request body exceeds {limit} bytes")
                }
                JsonPayloadError::OverflowKnownLength { length, limit } => {
                    format!("request body of {length} bytes exceeds {limit} bytes")
                }
                JsonPayloadError::Deserialize(e) => deserialize_reason(e),
                other => other.to_string(),
            };
            let field = match &err {
                JsonPayloadError::Deserialize(e) => json_field(e),
                _ => "body".to_string(),
            };
            ApiError::validation(field, reason).into()
        })
}

fn deserialize_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("malformed JSON: {e}"),
        _ => e.to_string(),
    }
}

/// Best-effort name of the field a serde error is about (`missing field `x``, `unknown field`).
fn json_field(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    msg.split('`')
        .nth(1)
        .filter(|s| !s.is_empty() && s.len() < 64)
        .unwrap_or("body")
        .to_string()
}

/// Path segments (ids): a non-numeric id is a 422 naming the segment, except on a literal path
/// that a template also matches (`GET /api/chats/direct` reaching `GET /api/chats/{chat_id}`):
/// that is a method the literal path does not serve, 405.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err: PathError, req| {
        if let Some(allowed) = super::openapi::static_methods(req.path())
            && !allowed.contains(&req.method().as_str())
        {
            return actix_web::error::InternalError::from_response(
                err,
                super::method_not_allowed(req, &allowed),
            )
            .into();
        }
        ApiError::validation("path", format!("invalid path parameter: {err}")).into()
    })
}

/// Query strings: errors as 422.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        ApiError::validation("query", err.to_string()).into()
    })
}

/// Parses an optional query value as an integer id, naming the field on failure.
pub fn parse_id(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v > 0)
            .map(Some)
            .ok_or_else(|| ApiError::validation(field, "must be a positive integer")),
    }
}

/// Like [`parse_id`] but the value must be present.
pub fn require_id(field: &str, raw: Option<&str>) -> Result<i64, ApiError> {
    parse_id(field, raw)?.ok_or_else(|| ApiError::validation(field, "is required"))
}

/// A JSON body: like `web::Json`, but a wrongly typed value names its field in
/// `details.field` (`content`, `preferences.theme`), malformed JSON is a 422 on `body`, and the
/// size limit is the server's `FECHATTER_MAX_BODY_BYTES`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parses `bytes` as `T`, naming the offending field on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::validation("body", "a JSON body is required"));
    }
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::validation(json_field(&e), deserialize_reason(&e)))?;
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path.is_empty() || path == "." {
            json_field(&inner)
        } else {
            path
        };
        ApiError::validation(field, deserialize_reason(&inner))
    })
}

/// JSON (and JSON Schema) has one number type: `3.0` is the integer 3. Rewrites such numbers
/// as integers so that integer fields accept them.
pub fn integral_floats_to_integers(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f >= i64::MIN as f64
                && f < i64::MAX as f64
            {
                *v = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bytes = web::Bytes::from_request(req, payload);
        Box::pin(async move {
            let bytes = bytes.await.map_err(|e| {
                let reason = match e.as_error::<actix_web::error::PayloadError>() {
                    Some(actix_web::error::PayloadError::Overflow) => {
                        "request body is too large".to_string()
                    }
                    _ => format!("could not read the request body: {e}"),
                };
                ApiError::validation("body", reason)
            })?;
            parse_json(&bytes).map(Json)
        })
    }
}
