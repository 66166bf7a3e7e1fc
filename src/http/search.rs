//! Search: messages (`POST /api/search/messages`), users and chats (`GET /api/search/users`,
//! `GET /api/search/chats`), all within one workspace the caller belongs to.
//!
//! Message search covers only chats the caller is a member of: the handler computes that set
//! from `chat_members` and the engine filters on it inside the query. A `filters.chat_ids`
//! entry naming any other chat (another user's private chat, a chat of another workspace, a
//! channel the caller has not joined) is refused with 403, not silently dropped, so a client
//! never mistakes "no access" for "no matches".

use std::collections::HashSet;
use std::time::Instant;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Days, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, Json, require_id};
use super::list::{ListQuery, ListSpec, parse_fields, parse_order, select_in, selects};
use crate::state::AppState;
use crate::store::search::directory::NameSort;
use crate::store::search::scope::WorkspaceAccess;
use crate::store::search::{MessageQuery, SearchError};

/// Longest message query, in characters.
pub const QUERY_MAX_CHARS: usize = 512;
/// Longest user or chat query, in characters.
pub const NAME_QUERY_MAX_CHARS: usize = 100;
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;
/// Most ids in one `chat_ids` or `sender_ids` filter.
const MAX_FILTER_IDS: usize = 1000;

impl From<SearchError> for ApiError {
    fn from(e: SearchError) -> Self {
        match e {
            SearchError::Unavailable(m) => {
                tracing::warn!(error = %m, "search engine unavailable");
                ApiError::Unavailable("Search is temporarily unavailable, retry shortly".into())
            }
            SearchError::Store(s) => s.into(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = SearchResults)]
pub struct SearchResponse {
    results: Vec<ResultItem>,
    total: i64,
    page: i64,
    processing_time_ms: u64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SearchResult)]
struct ResultItem {
    message_id: i64,
    chat_id: i64,
    chat_name: String,
    /// HTML-escaped text with the matches in `<mark>`.
    content: String,
    sender: Sender,
    created_at: DateTime<Utc>,
    score: f64,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SearchSender)]
struct Sender {
    id: i64,
    username: String,
}

/// `POST /api/search/messages`
#[utoipa::path(post, path = "/api/search/messages", tag = "search",
    summary = "Full-text message search (search rate limit)", request_body = SearchMessagesRequest,
    responses((status = 200, body = SearchResponse),
        (status = 403, description = "Not a member of the workspace, or a chat_ids entry is not the caller's"),
        (status = 404, description = "No such workspace"),
        (status = 422, description = "date_from after date_to")))]
#[tracing::instrument(name = "Searching messages", skip_all, fields(user_id = user.id))]
pub async fn messages(
    state: web::Data<AppState>,
    user: AuthUser,
    body: Json<Value>,
) -> ApiResult<HttpResponse> {
    let started = Instant::now();
    let req = MessageSearch::parse(&body)?;
    check_workspace(&state, req.workspace_id, user.id).await?;
    let mine = state
        .store
        .member_chat_ids(req.workspace_id, user.id)
        .await?;
    let chat_ids = match &req.chat_ids {
        None => mine,
        Some(asked) => {
            let mine: HashSet<i64> = mine.into_iter().collect();
            if let Some(other) = asked.iter().find(|id| !mine.contains(id)) {
                return Err(ApiError::forbidden(format!(
                    "Chat {other} is not one of your chats in this workspace"
                )));
            }
            asked.clone()
        }
    };
    let query = MessageQuery {
        text: req.query,
        workspace_id: req.workspace_id,
        chat_ids,
        sender_ids: req.sender_ids,
        from: req.from,
        until: req.until,
        page: req.page,
        limit: req.limit,
    };
    let found = state.search.search_messages(&query).await?;
    let results = found
        .hits
        .into_iter()
        .map(|h| ResultItem {
            message_id: h.message_id,
            chat_id: h.chat_id,
            chat_name: h.chat_name,
            content: h.content,
            sender: Sender {
                id: h.sender_id,
                username: h.sender_username,
            },
            created_at: h.created_at,
            score: (h.score * 10_000.0).round() / 10_000.0,
        })
        .collect();
    Ok(HttpResponse::Ok().json(SearchResponse {
        results,
        total: found.total,
        page: query.page,
        processing_time_ms: started.elapsed().as_millis() as u64,
    }))
}

/// 404 for a missing workspace, 403 when the caller is not a member.
async fn check_workspace(state: &AppState, workspace_id: i64, user_id: i64) -> ApiResult<()> {
    match state.store.workspace_access(workspace_id, user_id).await? {
        WorkspaceAccess::Missing => Err(ApiError::not_found("Workspace")),
        WorkspaceAccess::Outsider => Err(ApiError::forbidden(
            "You are not a member of this workspace",
        )),
        WorkspaceAccess::Member => Ok(()),
    }
}

/// The body of `POST /api/search/messages` as the OpenAPI document shows it; the handler reads
/// it field by field with [`MessageSearch::parse`] (which names the field of each problem).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SearchMessagesRequest {
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 512
    )]
    query: String,
    #[schema(minimum = 1)]
    workspace_id: i64,
    filters: Option<SearchFilters>,
    #[schema(minimum = 1, maximum = 1_000_000)]
    page: Option<i64>,
    #[schema(minimum = 1, maximum = 100)]
    limit: Option<i64>,
}

/// `filters.chat_ids` / `filters.sender_ids`: 1 to `MAX_FILTER_IDS` positive ids (repeats are ignored).
fn filter_ids() -> utoipa::openapi::schema::Array {
    crate::http::openapi::id_array(0, MAX_FILTER_IDS, false)
}

/// `filters` of a message search.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SearchFilters {
    /// Only these chats (each must be one of the caller's chats in the workspace).
    #[schema(schema_with = filter_ids)]
    chat_ids: Option<Vec<i64>>,
    #[schema(schema_with = filter_ids)]
    sender_ids: Option<Vec<i64>>,
    /// `YYYY-MM-DD` (a whole UTC day) or an RFC 3339 instant; inclusive.
    #[schema(format = Date)]
    date_from: Option<String>,
    /// `YYYY-MM-DD` or an RFC 3339 instant; inclusive.
    #[schema(format = Date)]
    date_to: Option<String>,
}

/// A validated message search body.
#[derive(Debug, PartialEq)]
struct MessageSearch {
    query: String,
    workspace_id: i64,
    chat_ids: Option<Vec<i64>>,
    sender_ids: Option<Vec<i64>>,
    /// Inclusive.
    from: Option<DateTime<Utc>>,
    /// Exclusive (a `date_to` day or instant is included: this is just past it).
    until: Option<DateTime<Utc>>,
    page: i64,
    limit: i64,
}

impl MessageSearch {
    /// Validates the body field by field, naming the field of the first problem.
    fn parse(body: &Value) -> ApiResult<Self> {
        let empty = Map::new();
        let obj = body
            .as_object()
            .ok_or_else(|| ApiError::validation("body", "must be a JSON object"))?;
        let query = match obj.get("query") {
            None | Some(Value::Null) => return Err(ApiError::validation("query", "is required")),
            Some(Value::String(s)) => s.trim().to_string(),
            Some(_) => return Err(ApiError::validation("query", "must be a string")),
        };
        if query.is_empty() {
            return Err(ApiError::validation("query", "must not be empty"));
        }
        if query.chars().count() > QUERY_MAX_CHARS {
            return Err(ApiError::validation(
                "query",
                format!("must be at most {QUERY_MAX_CHARS} characters"),
            ));
        }
        crate::validate::no_control("query", &query)?;
        let workspace_id = positive(obj, "workspace_id", "workspace_id")?
            .ok_or_else(|| ApiError::validation("workspace_id", "is required"))?;
        let filters = match obj.get("filters") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(f)) => f,
            Some(_) => return Err(ApiError::validation("filters", "must be an object")),
        };
        let chat_ids = ids(filters, "chat_ids")?;
        let sender_ids = ids(filters, "sender_ids")?;
        let from = date(filters, "date_from")?.map(|d| d.start);
        let until = date(filters, "date_to")?.map(|d| d.end);
        if let (Some(from), Some(until)) = (from, until)
            && from >= until
        {
            return Err(ApiError::validation(
                "filters.date_from",
                "must not be after date_to",
            ));
        }
        let page = positive(obj, "page", "page")?.unwrap_or(1);
        if page > 1_000_000 {
            return Err(ApiError::validation("page", "must be at most 1000000"));
        }
        let limit = match obj.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => v
                .as_i64()
                .filter(|l| (1..=MAX_LIMIT).contains(l))
                .ok_or_else(|| {
                    ApiError::validation(
                        "limit",
                        format!("must be an integer from 1 to {MAX_LIMIT}"),
                    )
                })?,
        };
        Ok(MessageSearch {
            query,
            workspace_id,
            chat_ids,
            sender_ids,
            from,
            until,
            page,
            limit,
        })
    }
}

/// An optional positive integer member of `obj`.
fn positive(obj: &Map<String, Value>, key: &str, field: &str) -> ApiResult<Option<i64>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| ApiError::validation(field, "must be a positive integer")),
    }
}

/// An optional list of positive ids under `filters.<key>`, deduplicated; `[]` is no filter.
fn ids(filters: &Map<String, Value>, key: &str) -> ApiResult<Option<Vec<i64>>> {
    let field = format!("filters.{key}");
    let list = match filters.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(ApiError::validation(field, "must be an array of ids")),
    };
    // A client's filter form sends `[]` for "none picked": no filter, as when absent.
    if list.is_empty() {
        return Ok(None);
    }
    if list.len() > MAX_FILTER_IDS {
        return Err(ApiError::validation(
            field,
            format!("must hold at most {MAX_FILTER_IDS} ids"),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        match v.as_i64().filter(|n| *n >= 1) {
            Some(id) if !out.contains(&id) => out.push(id),
            Some(_) => {}
            None => {
                return Err(ApiError::validation(
                    field,
                    "must hold positive integer ids",
                ));
            }
        }
    }
    Ok(Some(out))
}

/// The instants a date filter stands for: from `start` (inclusive) to `end` (exclusive).
struct DateBound {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

/// `filters.<key>` as `YYYY-MM-DD` (a whole UTC day) or an RFC 3339 instant.
fn date(filters: &Map<String, Value>, key: &str) -> ApiResult<Option<DateBound>> {
    let field = format!("filters.{key}");
    let raw = match filters.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim(),
        Some(_) => return Err(ApiError::validation(field, "must be a date string")),
    };
    parse_date(raw)
        .map(Some)
        .ok_or_else(|| ApiError::validation(field, "must be YYYY-MM-DD or an RFC 3339 timestamp"))
}

fn parse_date(raw: &str) -> Option<DateBound> {
    if let Ok(day) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let start = day.and_hms_opt(0, 0, 0)?.and_utc();
        let end = day
            .checked_add_days(Days::new(1))?
            .and_hms_opt(0, 0, 0)?
            .and_utc();
        return Some(DateBound { start, end });
    }
    let at = DateTime::parse_from_rfc3339(raw).ok()?.with_timezone(&Utc);
    Some(DateBound {
        start: at,
        end: at.checked_add_signed(TimeDelta::microseconds(1))?,
    })
}

/// Query string of the user and chat searches.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NameSearchQuery {
    #[param(value_type = String, required = true, max_length = 100, pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$")]
    q: Option<String>,
    #[param(value_type = i64, required = true, minimum = 1)]
    workspace_id: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1_000_000)]
    page: Option<String>,
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
    /// `relevance` (the default: exact name, then prefix, then alphabetical), `name` (users:
    /// also `username`), `created_at` (users: when they signed up) or `id`.
    #[param(pattern = "^(relevance|name|username|created_at|id)?$")]
    sort: Option<String>,
    /// `desc` is the default for `relevance` (most relevant first), `asc` for the others.
    #[param(pattern = "^(asc|desc)?$")]
    order: Option<String>,
    #[param(ignore)]
    fields: Option<String>,
}

crate::fields_params!(UserFieldsParam, USER_FIELDS);
crate::fields_params!(ChatFieldsParam, CHAT_FIELDS);

/// `email` is shown only when named, as in `GET /api/users`.
const USER_FIELDS: &[&str] = &["id", "username", "avatar_url", "email"];
const CHAT_FIELDS: &[&str] = &["id", "name", "type", "description", "is_private"];

/// Page and limit only: the sort of a name search is not a column of the http layer's
/// choosing but a [`NameSort`] (the store builds its `ORDER BY`).
const NAME_LIST: ListSpec = ListSpec {
    sortable: &[],
    default_sort: ("", false),
    selectable: &[],
    default_limit: DEFAULT_LIMIT,
    max_limit: MAX_LIMIT,
};

/// A validated user or chat search.
struct NameQuery {
    q: String,
    workspace_id: i64,
    sort: (NameSort, bool),
    limit: i64,
    offset: i64,
    page: i64,
}

fn parse_name_query(p: &NameSearchQuery) -> ApiResult<NameQuery> {
    let q = p.q.as_deref().map(str::trim).unwrap_or("");
    if q.is_empty() {
        return Err(ApiError::validation("q", "is required"));
    }
    crate::validate::no_control("q", q)?;
    if q.chars().count() > NAME_QUERY_MAX_CHARS {
        return Err(ApiError::validation(
            "q",
            format!("must be 1 to {NAME_QUERY_MAX_CHARS} characters"),
        ));
    }
    let workspace_id = require_id("workspace_id", p.workspace_id.as_deref())?;
    let sort = match p.sort.as_deref().map(str::trim) {
        None | Some("") | Some("relevance") => NameSort::Relevance,
        Some("name" | "username") => NameSort::Name,
        Some("created_at") => NameSort::CreatedAt,
        Some("id") => NameSort::Id,
        Some(other) => {
            return Err(ApiError::validation(
                "sort",
                format!(
                    "unknown sort field `{other}`; one of: relevance, name, username, created_at, id"
                ),
            ));
        }
    };
    let desc = parse_order(p.order.as_deref(), sort == NameSort::Relevance)?;
    let list = ListQuery {
        page: p.page.clone(),
        limit: p.limit.clone(),
        sort: None,
        order: None,
        fields: None,
    }
    .parse(&NAME_LIST)?;
    Ok(NameQuery {
        q: q.to_string(),
        workspace_id,
        sort: (sort, desc),
        limit: list.limit,
        offset: list.offset(),
        page: list.page,
    })
}

#[derive(Serialize, ToSchema)]
#[schema(as = UserMatch)]
pub struct UserItem {
    id: i64,
    username: String,
    avatar_url: Option<String>,
    /// Only when `fields=` names it: fellow members' addresses are not in the default item.
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ChatMatch)]
pub struct ChatItem {
    id: i64,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    description: Option<String>,
    is_private: bool,
}

/// `GET /api/search/users?q=&workspace_id=`: members of the workspace by username or email
/// local part.
#[utoipa::path(get, path = "/api/search/users", tag = "search", summary = "Users by name (search rate limit)",
    params(NameSearchQuery, UserFieldsParam),
    responses((status = 200, body = crate::http::openapi::UserSearchResults),
        (status = 403, description = "Not a member of the workspace"), (status = 404, description = "No such workspace")))]
pub async fn users(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<NameSearchQuery>,
) -> ApiResult<HttpResponse> {
    let nq = parse_name_query(&query)?;
    let fields = parse_fields(query.fields.as_deref(), USER_FIELDS)?;
    let with_email = selects(&fields, "email");
    check_workspace(&state, nq.workspace_id, user.id).await?;
    let (found, total) = state
        .store
        .search_workspace_users(nq.workspace_id, &nq.q, nq.sort, nq.limit, nq.offset)
        .await?;
    let users: Vec<UserItem> = found
        .into_iter()
        .map(|u| UserItem {
            id: u.id,
            username: u.username,
            avatar_url: u.avatar_url,
            email: with_email.then_some(u.email),
        })
        .collect();
    let mut body = serde_json::json!({ "users": users, "total": total, "page": nq.page });
    select_in(&mut body, "users", &fields);
    Ok(HttpResponse::Ok().json(body))
}

/// `GET /api/search/chats?q=&workspace_id=`: public channels of the workspace and the private
/// chats and direct messages the caller is a member of.
#[utoipa::path(get, path = "/api/search/chats", tag = "search", summary = "Chats by name (search rate limit)",
    params(NameSearchQuery, ChatFieldsParam),
    responses((status = 200, body = crate::http::openapi::ChatSearchResults),
        (status = 403, description = "Not a member of the workspace"), (status = 404, description = "No such workspace")))]
pub async fn chats(
    state: web::Data<AppState>,
    user: AuthUser,
    query: web::Query<NameSearchQuery>,
) -> ApiResult<HttpResponse> {
    let nq = parse_name_query(&query)?;
    let fields = parse_fields(query.fields.as_deref(), CHAT_FIELDS)?;
    check_workspace(&state, nq.workspace_id, user.id).await?;
    let (found, total) = state
        .store
        .search_visible_chats(
            nq.workspace_id,
            user.id,
            &nq.q,
            nq.sort,
            nq.limit,
            nq.offset,
        )
        .await?;
    let chats: Vec<ChatItem> = found
        .into_iter()
        .map(|c| ChatItem {
            id: c.id,
            name: c.name,
            kind: c.kind,
            description: c.description,
            is_private: c.is_private,
        })
        .collect();
    let mut body = serde_json::json!({ "chats": chats, "total": total, "page": nq.page });
    select_in(&mut body, "chats", &fields);
    Ok(HttpResponse::Ok().json(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(body: Value) -> String {
        match MessageSearch::parse(&body) {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn validates_each_field() {
        let ok = json!({"query": "x", "workspace_id": 1});
        assert!(MessageSearch::parse(&ok).is_ok());
        assert_eq!(field(json!({"workspace_id": 1})), "query");
        assert_eq!(field(json!({"query": "  ", "workspace_id": 1})), "query");
        assert_eq!(
            field(json!({"query": "a".repeat(513), "workspace_id": 1})),
            "query"
        );
        assert_eq!(field(json!({"query": "x"})), "workspace_id");
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1, "limit": 101})),
            "limit"
        );
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1, "limit": 0})),
            "limit"
        );
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1, "page": 0})),
            "page"
        );
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1, "filters": {"date_to": "2024-13-01"}})),
            "filters.date_to"
        );
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1,
                         "filters": {"date_from": "2024-02-01", "date_to": "2024-01-31"}})),
            "filters.date_from"
        );
        assert_eq!(
            field(json!({"query": "x", "workspace_id": 1, "filters": {"chat_ids": ["a"]}})),
            "filters.chat_ids"
        );
    }

    #[test]
    fn date_to_includes_the_whole_day() {
        let r = MessageSearch::parse(&json!({"query": "x", "workspace_id": 1,
            "filters": {"date_from": "2024-01-01", "date_to": "2024-01-01"}}))
        .expect("valid");
        assert_eq!(
            r.from.map(|d| d.to_rfc3339()).as_deref(),
            Some("2024-01-01T00:00:00+00:00")
        );
        assert_eq!(
            r.until.map(|d| d.to_rfc3339()).as_deref(),
            Some("2024-01-02T00:00:00+00:00")
        );
        let r = MessageSearch::parse(&json!({"query": "x", "workspace_id": 1,
            "filters": {"date_to": "2024-01-01T10:00:00+02:00"}}))
        .expect("valid");
        assert_eq!(
            r.until.map(|d| d.to_rfc3339()).as_deref(),
            Some("2024-01-01T08:00:00.000001+00:00")
        );
    }
}
