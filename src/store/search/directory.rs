//! User and chat search within a workspace: case-insensitive prefix and substring matches,
//! by relevance (exact names first, then prefixes, then the rest alphabetically) or by a
//! column. Always PostgreSQL (these sets are small per workspace and must reflect membership
//! the instant it changes).

use super::postgres::like_pattern;
use tokio_postgres::types::Type;

use crate::store::{Store, StoreResult};

/// A workspace member found by name.
#[derive(Debug, Clone)]
pub struct UserMatch {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub email: String,
}

/// The order of a name search's matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSort {
    /// Exact name, then prefix, then alphabetical; `desc` (the default) is most relevant first.
    Relevance,
    /// The name (username), case-insensitively.
    Name,
    /// When the user signed up, or the chat was created.
    CreatedAt,
    Id,
}

/// The `ORDER BY` of a name search over `name` (an SQL expression) whose exact and prefix
/// patterns are the parameters `$exact` and `$prefix`; ties always broken by id.
fn name_order(
    sort: NameSort,
    desc: bool,
    name: &str,
    created_at: &str,
    id: &str,
    exact: u8,
    prefix: u8,
) -> String {
    let (first, last) = if desc {
        ("DESC", "ASC")
    } else {
        ("ASC", "DESC")
    };
    match sort {
        // Most relevant first is `desc`: true sorts after false ascending, hence the flip.
        NameSort::Relevance => format!(
            "lower({name}) = lower(${exact}) {first}, {name} ILIKE ${prefix} {first}, \
             lower({name}) {last}, {id} {last}"
        ),
        NameSort::Name => format!("lower({name}) {first}, {id} {first}"),
        NameSort::CreatedAt => format!("{created_at} {first}, {id} {first}"),
        NameSort::Id => format!("{id} {first}"),
    }
}

/// A chat found by name.
#[derive(Debug, Clone)]
pub struct ChatMatch {
    pub id: i64,
    pub name: String,
    /// `channel` or `direct`.
    pub kind: String,
    pub description: Option<String>,
    pub is_private: bool,
}

/// `s%` for ILIKE, wildcards escaped.
fn prefix_pattern(s: &str) -> String {
    let mut p = like_pattern(s);
    p.remove(0);
    p
}

impl Store {
    /// Members of `workspace_id` whose username or email local part contains `q`.
    /// Returns (page, total).
    pub async fn search_workspace_users(
        &self,
        workspace_id: i64,
        q: &str,
        (sort, desc): (NameSort, bool),
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<UserMatch>, i64)> {
        const MATCH: &str = "FROM workspace_members wm JOIN users u ON u.id = wm.user_id \
             WHERE wm.workspace_id = $1 \
               AND (u.username ILIKE $2 OR split_part(u.email_normalized, '@', 1) ILIKE $2)";
        let client = self.client().await?;
        let count = client
            .prepare_cached(&format!("SELECT count(*) {MATCH}"))
            .await?;
        // Typed: a column sort leaves the relevance patterns ($3, $4) unused.
        let page = client
            .prepare_typed_cached(
                &format!(
                    "SELECT u.id, u.username, u.avatar_url, u.email {MATCH} \
                     ORDER BY {} LIMIT $5 OFFSET $6",
                    name_order(sort, desc, "u.username", "u.created_at", "u.id", 3, 4)
                ),
                &[
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                ],
            )
            .await?;
        let contains = like_pattern(q);
        let prefix = prefix_pattern(q);
        let total: i64 = client
            .query_one(&count, &[&workspace_id, &contains])
            .await?
            .get(0);
        let rows = client
            .query(
                &page,
                &[&workspace_id, &contains, &q, &prefix, &limit, &offset],
            )
            .await?;
        let users = rows
            .iter()
            .map(|r| UserMatch {
                id: r.get(0),
                username: r.get(1),
                avatar_url: r.get(2),
                email: r.get(3),
            })
            .collect();
        Ok((users, total))
    }

    /// Chats of `workspace_id` visible to `user_id` (public channels, and private channels and
    /// direct messages it is a member of) whose name contains `q`. Returns (page, total).
    pub async fn search_visible_chats(
        &self,
        workspace_id: i64,
        user_id: i64,
        q: &str,
        (sort, desc): (NameSort, bool),
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<ChatMatch>, i64)> {
        const MATCH: &str = "FROM chats c WHERE c.workspace_id = $1 \
               AND ((c.kind = 'channel' AND NOT c.is_private) \
                    OR EXISTS (SELECT 1 FROM chat_members cm \
                               WHERE cm.chat_id = c.id AND cm.user_id = $2)) \
               AND c.name ILIKE $3";
        let client = self.client().await?;
        let count = client
            .prepare_cached(&format!("SELECT count(*) {MATCH}"))
            .await?;
        let page = client
            .prepare_typed_cached(
                &format!(
                    "SELECT c.id, c.name, c.kind, c.description, c.is_private {MATCH} \
                     ORDER BY {} LIMIT $6 OFFSET $7",
                    name_order(sort, desc, "c.name", "c.created_at", "c.id", 4, 5)
                ),
                &[
                    Type::INT8,
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::INT8,
                    Type::INT8,
                ],
            )
            .await?;
        let contains = like_pattern(q);
        let prefix = prefix_pattern(q);
        let total: i64 = client
            .query_one(&count, &[&workspace_id, &user_id, &contains])
            .await?
            .get(0);
        let rows = client
            .query(
                &page,
                &[
                    &workspace_id,
                    &user_id,
                    &contains,
                    &q,
                    &prefix,
                    &limit,
                    &offset,
                ],
            )
            .await?;
        let chats = rows
            .iter()
            .map(|r| ChatMatch {
                id: r.get(0),
                name: r.get(1),
                kind: r.get(2),
                description: r.get(3),
                is_private: r.get(4),
            })
            .collect();
        Ok((chats, total))
    }
}
