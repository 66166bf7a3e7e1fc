//! Workspaces: creation, the caller's workspaces, details with counted stats (the message
//! count sums the chats' live counts, kept by each commit: no scan of the messages), member
//! lists and invites (created by owners/admins, consumed atomically on acceptance).

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{Store, StoreError, StoreResult};

/// One of the caller's workspaces, as listed.
#[derive(Debug, Clone)]
pub struct WorkspaceSummary {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub member_count: i64,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// A workspace with its settings and counted stats.
#[derive(Debug, Clone)]
pub struct WorkspaceDetail {
    pub id: i64,
    pub name: String,
    pub description: Option<String>,
    pub logo_url: Option<String>,
    pub created_at: DateTime<Utc>,
    pub allow_guest_access: bool,
    pub require_2fa: bool,
    pub retention_days: i32,
    pub member_count: i64,
    pub channel_count: i64,
    pub message_count: i64,
}

/// A new workspace; its creator becomes the owner.
pub struct NewWorkspace<'a> {
    pub owner_id: i64,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub logo_url: Option<&'a str>,
}

/// A member of a workspace, as listed.
#[derive(Debug, Clone)]
pub struct WorkspaceMemberRow {
    pub id: i64,
    pub username: String,
    pub avatar_url: Option<String>,
    pub role: String,
    pub email: String,
}

/// A new invite.
pub struct NewInvite<'a> {
    pub workspace_id: i64,
    pub code: &'a str,
    /// Normalised email the invite is bound to, if any.
    pub email: Option<&'a str>,
    pub role: &'a str,
    pub created_by: i64,
    pub max_uses: i32,
    pub expires_in_days: i32,
}

/// What accepting an invite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// No invite has this code.
    Unknown,
    /// The invite is bound to another email.
    WrongEmail,
    /// The caller already belongs to the workspace: nothing consumed.
    AlreadyMember(i64),
    Expired,
    UsedUp,
    /// The caller joined the workspace; one use consumed.
    Joined(i64),
}

/// A sort/page request for a list query; `sort_sql` comes from an endpoint's whitelist.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub sort_sql: &'static str,
    pub desc: bool,
    pub limit: i64,
    pub offset: i64,
}

impl Page {
    pub fn direction(&self) -> &'static str {
        if self.desc { "DESC" } else { "ASC" }
    }
}

const DETAIL_COLUMNS: &str = "w.id, w.name, w.description, w.logo_url, w.created_at, \
     w.allow_guest_access, w.require_2fa, w.retention_days, \
     (SELECT count(*) FROM workspace_members m WHERE m.workspace_id = w.id), \
     (SELECT count(*) FROM chats c WHERE c.workspace_id = w.id AND c.kind = 'channel'), \
     (SELECT coalesce(sum(c.live_messages), 0)::bigint FROM chats c WHERE c.workspace_id = w.id)";

fn detail_from_row(r: &Row) -> WorkspaceDetail {
    WorkspaceDetail {
        id: r.get(0),
        name: r.get(1),
        description: r.get(2),
        logo_url: r.get(3),
        created_at: r.get(4),
        allow_guest_access: r.get(5),
        require_2fa: r.get(6),
        retention_days: r.get(7),
        member_count: r.get(8),
        channel_count: r.get(9),
        message_count: r.get(10),
    }
}

impl Store {
    /// Creates a workspace and makes its creator the owner (one transaction); returns its id.
    pub async fn create_workspace(&self, new: NewWorkspace<'_>) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO workspaces (name, description, logo_url, owner_id) \
                 VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .await?;
        let id: i64 = tx
            .query_one(
                &insert,
                &[&new.name, &new.description, &new.logo_url, &new.owner_id],
            )
            .await?
            .get(0);
        let member = tx
            .prepare_cached(
                "INSERT INTO workspace_members (workspace_id, user_id, role) \
                 VALUES ($1, $2, 'owner')",
            )
            .await?;
        tx.execute(&member, &[&id, &new.owner_id]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Whether the workspace exists (outer `None`: it does not) and the user's role in it
    /// (inner `None`: not a member).
    pub async fn workspace_role(
        &self,
        workspace_id: i64,
        user_id: i64,
    ) -> StoreResult<Option<Option<String>>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.role FROM workspaces w LEFT JOIN workspace_members m \
                   ON m.workspace_id = w.id AND m.user_id = $2 \
                 WHERE w.id = $1",
            )
            .await?;
        Ok(client
            .query_opt(&stmt, &[&workspace_id, &user_id])
            .await?
            .map(|r| r.get(0)))
    }

    /// The workspace with its settings and stats (messages counted exclude deleted ones).
    pub async fn workspace_detail(
        &self,
        workspace_id: i64,
    ) -> StoreResult<Option<WorkspaceDetail>> {
        let client = self.client().await?;
        let sql = format!("SELECT {DETAIL_COLUMNS} FROM workspaces w WHERE w.id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        Ok(client
            .query_opt(&stmt, &[&workspace_id])
            .await?
            .as_ref()
            .map(detail_from_row))
    }

    /// One page of the user's workspaces and how many there are in all.
    pub async fn workspaces_of_user(
        &self,
        user_id: i64,
        page: Page,
    ) -> StoreResult<(Vec<WorkspaceSummary>, i64)> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT w.id, w.name, w.description, w.logo_url, \
               (SELECT count(*) FROM workspace_members x WHERE x.workspace_id = w.id), \
               m.role, w.created_at \
             FROM workspace_members m JOIN workspaces w ON w.id = m.workspace_id \
             WHERE m.user_id = $1 \
             ORDER BY {sort} {dir}, w.id {dir} LIMIT $2 OFFSET $3",
            sort = page.sort_sql,
            dir = page.direction(),
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&stmt, &[&user_id, &page.limit, &page.offset])
            .await?;
        let count = client
            .prepare_cached("SELECT count(*) FROM workspace_members WHERE user_id = $1")
            .await?;
        let total: i64 = client.query_one(&count, &[&user_id]).await?.get(0);
        let items = rows
            .iter()
            .map(|r| WorkspaceSummary {
                id: r.get(0),
                name: r.get(1),
                description: r.get(2),
                logo_url: r.get(3),
                member_count: r.get(4),
                role: r.get(5),
                created_at: r.get(6),
            })
            .collect();
        Ok((items, total))
    }

    /// One page of a workspace's members and how many there are in all.
    pub async fn workspace_members(
        &self,
        workspace_id: i64,
        page: Page,
    ) -> StoreResult<(Vec<WorkspaceMemberRow>, i64)> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT u.id, u.username, u.avatar_url, m.role, u.email \
             FROM workspace_members m JOIN users u ON u.id = m.user_id \
             WHERE m.workspace_id = $1 \
             ORDER BY {sort} {dir}, u.id {dir} LIMIT $2 OFFSET $3",
            sort = page.sort_sql,
            dir = page.direction(),
        );
        let stmt = client.prepare_cached(&sql).await?;
        let rows = client
            .query(&stmt, &[&workspace_id, &page.limit, &page.offset])
            .await?;
        let count = client
            .prepare_cached("SELECT count(*) FROM workspace_members WHERE workspace_id = $1")
            .await?;
        let total: i64 = client.query_one(&count, &[&workspace_id]).await?.get(0);
        let items = rows
            .iter()
            .map(|r| WorkspaceMemberRow {
                id: r.get(0),
                username: r.get(1),
                avatar_url: r.get(2),
                role: r.get(3),
                email: r.get(4),
            })
            .collect();
        Ok((items, total))
    }

    /// The ids and usernames of those of `user_ids` who belong to the workspace.
    pub async fn workspace_members_among(
        &self,
        workspace_id: i64,
        user_ids: &[i64],
    ) -> StoreResult<Vec<(i64, String)>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT u.id, u.username FROM workspace_members m JOIN users u ON u.id = m.user_id \
                 WHERE m.workspace_id = $1 AND m.user_id = ANY($2)",
            )
            .await?;
        let rows = client.query(&stmt, &[&workspace_id, &user_ids]).await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Stores an invite; returns its expiry. A taken code is [`StoreError::Conflict`].
    pub async fn create_invite(&self, new: NewInvite<'_>) -> StoreResult<DateTime<Utc>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO invites (workspace_id, code, email, role, created_by, max_uses, \
                   expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(days => $7)) \
                 RETURNING expires_at",
            )
            .await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &new.workspace_id,
                    &new.code,
                    &new.email,
                    &new.role,
                    &new.created_by,
                    &new.max_uses,
                    &new.expires_in_days,
                ],
            )
            .await
            .map_err(StoreError::from_db)?;
        Ok(row.get(0))
    }

    /// Accepts an invite for `user_id`: checks the email binding, then (unless the user is
    /// already a member) adds the membership and consumes one use in one transaction. The use
    /// is taken by a conditional UPDATE, so concurrent acceptances never exceed `max_uses`.
    pub async fn accept_invite(&self, code: &str, user_id: i64) -> StoreResult<AcceptOutcome> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lookup = tx
            .prepare_cached(
                "SELECT i.workspace_id, i.role, \
                   i.email IS NULL OR i.email = (SELECT email_normalized FROM users WHERE id = $2) \
                 FROM invites i WHERE i.code = $1",
            )
            .await?;
        let Some(invite) = tx.query_opt(&lookup, &[&code, &user_id]).await? else {
            return Ok(AcceptOutcome::Unknown);
        };
        let workspace_id: i64 = invite.get(0);
        let role: String = invite.get(1);
        let email_ok: bool = invite.get(2);
        if !email_ok {
            return Ok(AcceptOutcome::WrongEmail);
        }
        let member = tx
            .prepare_cached(
                "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, $3) \
                 ON CONFLICT (workspace_id, user_id) DO NOTHING",
            )
            .await?;
        if tx
            .execute(&member, &[&workspace_id, &user_id, &role])
            .await?
            == 0
        {
            // Dropping the transaction rolls it back; nothing was consumed.
            return Ok(AcceptOutcome::AlreadyMember(workspace_id));
        }
        let consume = tx
            .prepare_cached(
                "UPDATE invites SET uses = uses + 1 \
                 WHERE code = $1 AND uses < max_uses AND expires_at > now() RETURNING id",
            )
            .await?;
        if tx.query_opt(&consume, &[&code]).await?.is_none() {
            let why = tx
                .prepare_cached("SELECT expires_at <= now() FROM invites WHERE code = $1")
                .await?;
            let expired: bool = tx.query_one(&why, &[&code]).await?.get(0);
            return Ok(if expired {
                AcceptOutcome::Expired
            } else {
                AcceptOutcome::UsedUp
            });
        }
        tx.commit().await?;
        Ok(AcceptOutcome::Joined(workspace_id))
    }
}
