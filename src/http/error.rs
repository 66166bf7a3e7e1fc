//! The one error type of the HTTP layer, rendered as the contract's envelope:
//! `{"error": {"code", "message", "details"}, "request_id"}`.

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::store::StoreError;

tokio::task_local! {
    /// The id of the request being served; set by the request-id middleware for the whole
    /// handling of one request, so errors rendered anywhere below can quote it.
    pub static REQUEST_ID: String;
}

/// The current request's id, or a fresh one outside a request.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| new_request_id())
}

/// A new request id: `req_` and 32 hex digits.
pub fn new_request_id() -> String {
    format!("req_{}", uuid::Uuid::new_v4().simple())
}

/// Every way a request can fail, each mapped to one status and one `error.code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Validation {
        field: String,
        reason: String,
        message: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A validation failure on one field.
    pub fn validation(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let field = field.into();
        let reason = reason.into();
        ApiError::Validation {
            message: format!("Invalid input data: {field}: {reason}"),
            field,
            reason,
        }
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::NotFound(format!("{what} not found"))
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        ApiError::Forbidden(msg.into())
    }

    pub fn unauthorized(msg: impl Into<String>) -> Self {
        ApiError::Unauthorized(msg.into())
    }

    /// The contract's `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "UNAUTHORIZED",
            ApiError::Forbidden(_) => "FORBIDDEN",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::Validation { .. } => "VALIDATION_ERROR",
            ApiError::Conflict(_) => "CONFLICT",
            ApiError::RateLimited { .. } => "RATE_LIMITED",
            ApiError::MethodNotAllowed(_) => "METHOD_NOT_ALLOWED",
            ApiError::Unavailable(_) => "SERVICE_UNAVAILABLE",
            ApiError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation { field, reason, .. } => {
                json!({ "field": field, "reason": reason })
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                json!({ "retry_after_seconds": retry_after_secs })
            }
            _ => json!({}),
        }
    }

    /// The envelope as JSON (also used by the WebSocket error frames and batch results).
    pub fn envelope(&self, request_id: &str) -> Value {
        let message = match self {
            // Never leak internals to clients; the log has the cause.
            ApiError::Internal(_) => "Internal server error".to_string(),
            other => other.to_string(),
        };
        json!({
            "error": { "code": self.code(), "message": message, "details": self.details() },
            "request_id": request_id,
        })
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let request_id = current_request_id();
        if let ApiError::Internal(e) = self {
            tracing::error!(request_id = %request_id, error = ?e, "internal error");
        }
        let mut resp = HttpResponse::build(self.status_code()).json(self.envelope(&request_id));
        let retry = match self {
            ApiError::RateLimited {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                ApiError::Unavailable("Service temporarily unavailable, retry shortly".into())
            }
            StoreError::Conflict(c) => {
                ApiError::Conflict(format!("Conflicts with existing data ({c})"))
            }
            // The database refused a value: the request's fault; which field is not known here
            // (input validation names it first; this is the safety net).
            StoreError::Invalid(reason) => ApiError::validation("body", reason),
            // Errors carried through anyhow may still be a driver error: classify it too.
            StoreError::Other(e) => match e.downcast::<tokio_postgres::Error>() {
                Ok(db) => StoreError::from_db(db).into(),
                Err(e) => ApiError::Internal(e),
            },
            other => ApiError::Internal(anyhow::Error::new(other)),
        }
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Unavailable(format!("Service busy ({e}), retry shortly"))
    }
}

impl From<crate::actors::rooms::RoomError> for ApiError {
    fn from(e: crate::actors::rooms::RoomError) -> Self {
        use crate::actors::rooms::RoomError;
        match e {
            RoomError::NotFound(what) => ApiError::not_found(what),
            RoomError::Forbidden(m) => ApiError::Forbidden(m),
            RoomError::Invalid { field, reason } => ApiError::validation(field, reason),
            RoomError::Unavailable(m) => ApiError::Unavailable(m),
            RoomError::Store(s) => s.into(),
        }
    }
}
