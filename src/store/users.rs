//! Users: accounts, profiles and the token version that a password change bumps.

use chrono::{DateTime, Utc};
use tokio_postgres::Row;

use super::{Store, StoreError, StoreResult};

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub username: String,
    pub password_hash: String,
    pub avatar_url: Option<String>,
    pub theme: String,
    pub language: String,
    pub notifications_enabled: bool,
    pub token_version: i32,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A new account; `email_normalized` is the unique login key.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub username: &'a str,
    pub password_hash: &'a str,
}

/// A partial profile update: `None` leaves a field as it is.
#[derive(Default)]
pub struct ProfileUpdate {
    pub username: Option<String>,
    /// `Some(None)` clears the avatar.
    pub avatar_url: Option<Option<String>>,
    pub theme: Option<String>,
    pub language: Option<String>,
    pub notifications_enabled: Option<bool>,
}

const COLUMNS: &str = "id, email, username, password_hash, avatar_url, theme, language, \
                       notifications_enabled, token_version, last_seen_at, created_at";

fn from_row(r: &Row) -> UserRow {
    UserRow {
        id: r.get(0),
        email: r.get(1),
        username: r.get(2),
        password_hash: r.get(3),
        avatar_url: r.get(4),
        theme: r.get(5),
        language: r.get(6),
        notifications_enabled: r.get(7),
        token_version: r.get(8),
        last_seen_at: r.get(9),
        created_at: r.get(10),
    }
}

impl Store {
    /// Creates an account. A taken email is [`StoreError::Conflict`].
    pub async fn create_user(&self, new: NewUser<'_>) -> StoreResult<UserRow> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO users (email, email_normalized, username, password_hash) \
             VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let row = client
            .query_one(
                &stmt,
                &[
                    &new.email,
                    &new.email_normalized,
                    &new.username,
                    &new.password_hash,
                ],
            )
            .await
            .map_err(StoreError::from_db)?;
        Ok(from_row(&row))
    }

    /// The user with this normalised email.
    pub async fn user_by_email(&self, email_normalized: &str) -> StoreResult<Option<UserRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM users WHERE email_normalized = $1");
        let stmt = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&stmt, &[&email_normalized]).await?;
        Ok(row.as_ref().map(from_row))
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: i64) -> StoreResult<Option<UserRow>> {
        let client = self.client().await?;
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
        let stmt = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&stmt, &[&id]).await?;
        Ok(row.as_ref().map(from_row))
    }

    /// The current token version of a user (None: no such user).
    pub async fn token_version(&self, id: i64) -> StoreResult<Option<i32>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT token_version FROM users WHERE id = $1")
            .await?;
        Ok(client.query_opt(&stmt, &[&id]).await?.map(|r| r.get(0)))
    }

    /// Applies a partial profile update and returns the new row.
    pub async fn update_profile(&self, id: i64, u: ProfileUpdate) -> StoreResult<Option<UserRow>> {
        let client = self.client().await?;
        let sql = format!(
            "UPDATE users SET \
               username = COALESCE($2, username), \
               avatar_url = CASE WHEN $3 THEN $4 ELSE avatar_url END, \
               theme = COALESCE($5, theme), \
               language = COALESCE($6, language), \
               notifications_enabled = COALESCE($7, notifications_enabled), \
               updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let stmt = client.prepare_cached(&sql).await?;
        let avatar_set = u.avatar_url.is_some();
        let avatar = u.avatar_url.flatten();
        let row = client
            .query_opt(
                &stmt,
                &[
                    &id,
                    &u.username,
                    &avatar_set,
                    &avatar,
                    &u.theme,
                    &u.language,
                    &u.notifications_enabled,
                ],
            )
            .await?;
        Ok(row.as_ref().map(from_row))
    }

    /// Replaces the password hash and bumps the token version; returns the new version.
    pub async fn set_password(&self, id: i64, password_hash: &str) -> StoreResult<i32> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE users SET password_hash = $2, token_version = token_version + 1, \
                 updated_at = now() WHERE id = $1 RETURNING token_version",
            )
            .await?;
        Ok(client
            .query_one(&stmt, &[&id, &password_hash])
            .await?
            .get(0))
    }

    /// Records when a user was last connected (presence going offline).
    pub async fn touch_last_seen(&self, id: i64, at: DateTime<Utc>) -> StoreResult<()> {
        self.touch_last_seen_many(&[id], at).await
    }

    /// Records `at` as the last time each of `ids` was seen; never moves one back (two writes
    /// for a user may land out of order).
    pub async fn touch_last_seen_many(&self, ids: &[i64], at: DateTime<Utc>) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE users SET last_seen_at = GREATEST(last_seen_at, $2) WHERE id = ANY($1)",
            )
            .await?;
        client.execute(&stmt, &[&ids, &at]).await?;
        Ok(())
    }
}
