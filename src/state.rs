//! Shared application state handed to every handler (`web::Data<AppState>`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use dashmap::DashMap;

use crate::actors::hub::Hub;
use crate::actors::presence::Presence;
use crate::actors::rooms::Rooms;
use crate::auth::{Passwords, TokenError, Tokens};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::error::ApiError;
use crate::http::extract::AuthUser;
use crate::store::Store;
use crate::store::search::Search;

/// How long a cached token version is trusted before it is re-read, on one node (cluster mode
/// caches nothing).
const TOKEN_VERSION_TTL: Duration = Duration::from_secs(30);

pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub tokens: Tokens,
    pub passwords: Passwords,
    /// Registry of chat rooms (the only one).
    pub hub: Addr<Hub>,
    /// Front door to the chat rooms (the single writers of their chats).
    pub rooms: Rooms,
    /// Who is online, and the per-user connection limit.
    pub presence: Addr<Presence>,
    /// The configured search engine.
    pub search: Search,
    /// Brute-force protection for logins.
    pub login_guard: crate::http::auth::LoginGuard,
    /// Per-user/per-IP request limits.
    pub limits: crate::http::ratelimit::RateLimits,
    /// Live counters for the admin endpoints.
    pub stats: crate::http::admin::Stats,
    /// How `POST /api/batch` reaches this server (bound address, sub-request secret).
    pub loopback: crate::http::batch::Loopback,
    /// Cluster mode (`REDIS_URL`): the shared state and the broker; `None` on one node.
    pub cluster: Option<Cluster>,
    /// user id → (token version, when read). Filled lazily from the database; one node only.
    token_versions: DashMap<i64, (i32, Instant)>,
    pub started_at: Instant,
    /// Fault hooks (tests only; off unless configured).
    pub faults: Arc<crate::faults::Faults>,
    /// Open real-time connections per user (written by presence).
    pub registry: crate::actors::presence::ConnRegistry,
    /// Real-time sessions starting at once (each reads the user's chats): a reconnect storm
    /// waits its turn instead of exhausting the database pool.
    pub session_starts: Arc<tokio::sync::Semaphore>,
}

/// The parts of [`AppState`] built before the HTTP server starts.
pub struct StateParts {
    pub config: Arc<Config>,
    pub store: Store,
    pub tokens: Tokens,
    pub passwords: Passwords,
    pub hub: Addr<Hub>,
    pub presence: Addr<Presence>,
    pub search: Search,
    pub faults: Arc<crate::faults::Faults>,
    pub registry: crate::actors::presence::ConnRegistry,
    pub cluster: Option<Cluster>,
}

impl AppState {
    pub fn new(p: StateParts) -> Self {
        AppState {
            session_starts: Arc::new(tokio::sync::Semaphore::new(
                p.config.session_start_concurrency.max(1),
            )),
            rooms: Rooms::new(p.hub.clone()),
            login_guard: crate::http::auth::LoginGuard::new(&p.config),
            limits: crate::http::ratelimit::RateLimits::new(&p.config, p.cluster.as_ref()),
            cluster: p.cluster,
            stats: crate::http::admin::Stats::default(),
            loopback: crate::http::batch::Loopback::default(),
            config: p.config,
            store: p.store,
            tokens: p.tokens,
            passwords: p.passwords,
            hub: p.hub,
            presence: p.presence,
            search: p.search,
            token_versions: DashMap::new(),
            started_at: Instant::now(),
            faults: p.faults,
            registry: p.registry,
        }
    }

    /// Validates an access token (signature, `alg`, expiry) and that it was issued under the
    /// user's current token version (a password change revokes older tokens).
    pub async fn authenticate(&self, token: &str) -> Result<AuthUser, ApiError> {
        // The WebSocket auth frame's `"Bearer <token>"`: the scheme in any case, as in the
        // HTTP header (`extract::bearer_token`), or the bare token.
        let token = token.trim();
        let token = match token.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => token,
        };
        let claims = self.tokens.validate(token).map_err(|e| match e {
            TokenError::Expired => ApiError::unauthorized("Token expired"),
            _ => ApiError::unauthorized("Invalid token"),
        })?;
        let current = self.token_version(claims.sub).await?;
        match current {
            Some(v) if v == claims.tv => Ok(AuthUser {
                id: claims.sub,
                token_version: claims.tv,
                expires_at: claims.exp,
            }),
            Some(_) => Err(ApiError::unauthorized("Token revoked")),
            None => Err(ApiError::unauthorized("Invalid token")),
        }
    }

    /// The user's token version, from the cache or the database. In cluster mode always from
    /// the database: a password change on another node must be seen by the next request here.
    pub async fn token_version(&self, user_id: i64) -> Result<Option<i32>, ApiError> {
        if self.cluster.is_some() {
            return Ok(self.store.token_version(user_id).await?);
        }
        if let Some(entry) = self.token_versions.get(&user_id)
            && entry.1.elapsed() < TOKEN_VERSION_TTL
        {
            return Ok(Some(entry.0));
        }
        let version = self.store.token_version(user_id).await?;
        match version {
            Some(v) => {
                self.token_versions.insert(user_id, (v, Instant::now()));
            }
            None => {
                self.token_versions.remove(&user_id);
            }
        }
        Ok(version)
    }

    /// Records a new token version after a password change on this node; in cluster mode also
    /// tells every node to close the user's sockets.
    pub fn set_token_version(&self, user_id: i64, version: i32) {
        self.token_versions
            .insert(user_id, (version, Instant::now()));
        if let Some(cluster) = &self.cluster {
            cluster.revoke(user_id, version);
        }
    }
}
