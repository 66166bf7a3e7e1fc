//! Server configuration: every knob is an environment variable (and a `serve` flag), listed by
//! `fechatter serve --help`. Validation happens once, at start-up, with one clear line per problem.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Everything `fechatter serve` can be told. Field docs double as `--help` text.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FECHATTER_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// PostgreSQL URL. Without it, an embedded cluster is started under FECHATTER_DATA.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Data directory for the embedded PostgreSQL cluster and the generated JWT secret.
    #[arg(long, env = "FECHATTER_DATA", default_value = ".fechatter")]
    pub data_dir: PathBuf,

    /// HMAC secret for access tokens (at least 32 bytes). Default: generated once, kept in FECHATTER_DATA.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Bearer token for /admin/*. Admin endpoints are disabled when unset.
    #[arg(long, env = "FECHATTER_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Meilisearch URL. Without it, search uses PostgreSQL full-text search.
    #[arg(long, env = "MEILI_URL")]
    pub meili_url: Option<String>,

    /// Meilisearch master (or API) key.
    #[arg(long, env = "MEILI_MASTER_KEY", hide_env_values = true)]
    pub meili_master_key: Option<String>,

    /// Meilisearch index name.
    #[arg(long, env = "MEILI_INDEX", default_value = "messages")]
    pub meili_index: String,

    /// Public base URL of the web client, used to build invite links.
    #[arg(
        long,
        env = "FECHATTER_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,

    /// Access token lifetime, seconds.
    #[arg(
        long,
        env = "FECHATTER_ACCESS_TOKEN_TTL_SECS",
        default_value_t = 86_400
    )]
    pub access_token_ttl_secs: u64,

    /// How long after expiry a token may still be refreshed, seconds (default 7 days).
    #[arg(long, env = "FECHATTER_REFRESH_WINDOW_SECS", default_value_t = 7 * 86_400)]
    pub refresh_window_secs: u64,

    /// Requests per hour per user (per IP before login).
    #[arg(long, env = "FECHATTER_RATE_LIMIT_PER_HOUR", default_value_t = 1000)]
    pub rate_limit_per_hour: u32,

    /// Requests per hour per client IP for requests without a valid token (registration,
    /// login, health probes). Higher than the per-user limit: many users share an IP (NAT).
    #[arg(
        long,
        env = "FECHATTER_IP_RATE_LIMIT_PER_HOUR",
        default_value_t = 20_000
    )]
    pub ip_rate_limit_per_hour: u32,

    /// Search requests per minute per user.
    #[arg(long, env = "FECHATTER_SEARCH_RATE_PER_MIN", default_value_t = 100)]
    pub search_rate_per_min: u32,

    /// Login and register requests per minute per client IP.
    #[arg(long, env = "FECHATTER_AUTH_RATE_PER_MIN", default_value_t = 600)]
    pub auth_rate_per_min: u32,

    /// Failed logins per account within 15 minutes before the account is temporarily locked.
    #[arg(
        long,
        env = "FECHATTER_LOGIN_FAILURES_PER_ACCOUNT",
        default_value_t = 10
    )]
    pub login_failures_per_account: u32,

    /// Failed logins per client IP within 15 minutes before that IP is refused.
    #[arg(long, env = "FECHATTER_LOGIN_FAILURES_PER_IP", default_value_t = 100)]
    pub login_failures_per_ip: u32,

    /// Concurrent WebSocket/SSE connections per user.
    #[arg(long, env = "FECHATTER_MAX_WS_PER_USER", default_value_t = 10)]
    pub max_ws_per_user: u32,

    /// Seconds a new WebSocket has to send its auth frame.
    #[arg(long, env = "FECHATTER_WS_AUTH_TIMEOUT_SECS", default_value_t = 5)]
    pub ws_auth_timeout_secs: u64,

    /// Seconds between server pings (WebSocket) and ping events (SSE).
    #[arg(long, env = "FECHATTER_WS_PING_SECS", default_value_t = 15)]
    pub ws_ping_secs: u64,

    /// Seconds of silence after which a WebSocket peer is dropped.
    #[arg(long, env = "FECHATTER_WS_TIMEOUT_SECS", default_value_t = 45)]
    pub ws_timeout_secs: u64,

    /// Outbound frames queued per connection before a slow reader is cut off.
    #[arg(long, env = "FECHATTER_OUTBOUND_QUEUE", default_value_t = 512)]
    pub outbound_queue: usize,

    /// Most events replayed on reconnect; beyond it the client gets `resync.required`.
    #[arg(long, env = "FECHATTER_REPLAY_MAX", default_value_t = 1000)]
    pub replay_max: i64,

    /// Workspaces with more online users than this get no pushed presence updates.
    #[arg(long, env = "FECHATTER_PRESENCE_FANOUT_MAX", default_value_t = 1000)]
    pub presence_fanout_max: usize,

    /// Seconds a chat room with no subscribers stays in memory.
    #[arg(long, env = "FECHATTER_ROOM_IDLE_SECS", default_value_t = 60)]
    pub room_idle_secs: u64,

    /// Seconds a typing indicator lasts without renewal.
    #[arg(long, env = "FECHATTER_TYPING_TTL_SECS", default_value_t = 5)]
    pub typing_ttl_secs: u64,

    /// Largest request body, bytes.
    #[arg(long, env = "FECHATTER_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Most operations in one POST /api/batch.
    #[arg(long, env = "FECHATTER_BATCH_MAX_OPS", default_value_t = 50)]
    pub batch_max_ops: usize,

    /// PostgreSQL connection pool size.
    #[arg(long, env = "FECHATTER_DB_POOL_SIZE", default_value_t = 32)]
    pub db_pool_size: usize,

    /// Milliseconds to wait for a pooled connection before answering 503.
    #[arg(long, env = "FECHATTER_DB_POOL_TIMEOUT_MS", default_value_t = 2000)]
    pub db_pool_timeout_ms: u64,

    /// HTTP worker threads (default: one per core).
    #[arg(long, env = "FECHATTER_WORKERS")]
    pub workers: Option<usize>,

    /// Arbiters (threads) the chat rooms are spread over (default: one per core).
    #[arg(long, env = "FECHATTER_ROOM_THREADS")]
    pub room_threads: Option<usize>,

    /// Listen backlog.
    #[arg(long, env = "FECHATTER_BACKLOG", default_value_t = 4096)]
    pub backlog: u32,

    /// Most simultaneous connections per worker.
    #[arg(long, env = "FECHATTER_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Password hashes computed at once (each takes ~19 MiB for a few ms).
    #[arg(long, env = "FECHATTER_HASH_CONCURRENCY", default_value_t = 4)]
    pub hash_concurrency: usize,

    /// Log format: `text` or `json`. Filter with RUST_LOG.
    #[arg(long, env = "FECHATTER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    // --- Database fault bounds (issue 16): a database that is down or hung answers 503 fast. ---
    /// Milliseconds to open a database connection (socket and handshake) before giving up.
    #[arg(long, env = "FECHATTER_DB_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub db_connect_timeout_ms: u64,

    /// Server-side statement_timeout of every pooled connection, milliseconds (0: none).
    #[arg(
        long,
        env = "FECHATTER_DB_STATEMENT_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub db_statement_timeout_ms: u64,

    /// Server-side idle_in_transaction_session_timeout, milliseconds (0: none).
    #[arg(
        long,
        env = "FECHATTER_DB_IDLE_TX_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub db_idle_tx_timeout_ms: u64,

    /// Milliseconds a database may stay silent while it owes a reply before the connection is
    /// dropped and the request answers 503 (bounds a frozen server); must exceed the statement timeout.
    #[arg(long, env = "FECHATTER_DB_REPLY_TIMEOUT_MS", default_value_t = 6000)]
    pub db_reply_timeout_ms: u64,

    /// Seconds of idleness before TCP keepalive probes on database connections.
    #[arg(long, env = "FECHATTER_DB_KEEPALIVE_SECS", default_value_t = 10)]
    pub db_keepalive_secs: u64,

    /// TCP_USER_TIMEOUT of database connections, milliseconds (unacknowledged data).
    #[arg(long, env = "FECHATTER_DB_TCP_USER_TIMEOUT_MS", default_value_t = 6000)]
    pub db_tcp_user_timeout_ms: u64,
}

/// A configuration problem, reported as one line at start-up.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks values that clap's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if let Some(secret) = &self.jwt_secret {
            if secret.len() < 32 {
                return fail("JWT_SECRET must be at least 32 bytes");
            }
        }
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                return fail("FECHATTER_ADMIN_TOKEN must be at least 16 characters");
            }
        }
        if self.meili_url.is_some() && self.meili_master_key.is_none() {
            return fail("MEILI_URL is set but MEILI_MASTER_KEY is not");
        }
        if let Some(u) = &self.meili_url {
            if url::Url::parse(u).is_err() {
                return fail("MEILI_URL is not a valid URL");
            }
        }
        if url::Url::parse(&self.public_url).is_err() {
            return fail("FECHATTER_PUBLIC_URL is not a valid URL");
        }
        if self.access_token_ttl_secs == 0 {
            return fail("FECHATTER_ACCESS_TOKEN_TTL_SECS must be positive");
        }
        let positive = [
            (
                self.rate_limit_per_hour as u64,
                "FECHATTER_RATE_LIMIT_PER_HOUR",
            ),
            (
                self.search_rate_per_min as u64,
                "FECHATTER_SEARCH_RATE_PER_MIN",
            ),
            (self.auth_rate_per_min as u64, "FECHATTER_AUTH_RATE_PER_MIN"),
            (
                self.ip_rate_limit_per_hour as u64,
                "FECHATTER_IP_RATE_LIMIT_PER_HOUR",
            ),
            (self.max_ws_per_user as u64, "FECHATTER_MAX_WS_PER_USER"),
            (
                self.login_failures_per_account as u64,
                "FECHATTER_LOGIN_FAILURES_PER_ACCOUNT",
            ),
            (
                self.login_failures_per_ip as u64,
                "FECHATTER_LOGIN_FAILURES_PER_IP",
            ),
            (self.ws_auth_timeout_secs, "FECHATTER_WS_AUTH_TIMEOUT_SECS"),
            (self.ws_ping_secs, "FECHATTER_WS_PING_SECS"),
            (self.ws_timeout_secs, "FECHATTER_WS_TIMEOUT_SECS"),
            (self.outbound_queue as u64, "FECHATTER_OUTBOUND_QUEUE"),
            (self.db_pool_size as u64, "FECHATTER_DB_POOL_SIZE"),
            (self.hash_concurrency as u64, "FECHATTER_HASH_CONCURRENCY"),
            (self.batch_max_ops as u64, "FECHATTER_BATCH_MAX_OPS"),
            (self.replay_max as u64, "FECHATTER_REPLAY_MAX"),
            (self.typing_ttl_secs, "FECHATTER_TYPING_TTL_SECS"),
        ];
        for (value, name) in positive {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        for (value, name) in [
            (
                self.db_connect_timeout_ms,
                "FECHATTER_DB_CONNECT_TIMEOUT_MS",
            ),
            (self.db_reply_timeout_ms, "FECHATTER_DB_REPLY_TIMEOUT_MS"),
            (self.db_keepalive_secs, "FECHATTER_DB_KEEPALIVE_SECS"),
            (
                self.db_tcp_user_timeout_ms,
                "FECHATTER_DB_TCP_USER_TIMEOUT_MS",
            ),
            (self.db_pool_timeout_ms, "FECHATTER_DB_POOL_TIMEOUT_MS"),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be positive")));
            }
        }
        if self.db_statement_timeout_ms > 0
            && self.db_reply_timeout_ms <= self.db_statement_timeout_ms
        {
            return fail(
                "FECHATTER_DB_REPLY_TIMEOUT_MS must exceed FECHATTER_DB_STATEMENT_TIMEOUT_MS",
            );
        }
        if self.ws_timeout_secs <= self.ws_ping_secs {
            return fail("FECHATTER_WS_TIMEOUT_SECS must exceed FECHATTER_WS_PING_SECS");
        }
        if self.max_body_bytes < 1024 {
            return fail("FECHATTER_MAX_BODY_BYTES must be at least 1024");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return fail("FECHATTER_LOG_FORMAT must be `text` or `json`");
        }
        Ok(())
    }

    /// The database bounds (pool, connect, statement, reply watchdog, TCP).
    pub fn db_limits(&self) -> crate::store::DbLimits {
        let ms = Duration::from_millis;
        crate::store::DbLimits {
            pool_size: self.db_pool_size,
            pool_wait: ms(self.db_pool_timeout_ms),
            connect_timeout: ms(self.db_connect_timeout_ms),
            statement_timeout: ms(self.db_statement_timeout_ms),
            idle_in_transaction_timeout: ms(self.db_idle_tx_timeout_ms),
            reply_timeout: ms(self.db_reply_timeout_ms),
            keepalive_idle: Duration::from_secs(self.db_keepalive_secs),
            tcp_user_timeout: ms(self.db_tcp_user_timeout_ms),
        }
    }

    pub fn access_token_ttl(&self) -> Duration {
        Duration::from_secs(self.access_token_ttl_secs)
    }
}

#[derive(clap::Parser)]
// A later flag overrides an earlier one (test rigs append to a default argument list).
#[command(args_override_self = true)]
struct ConfigOnly {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// Parses a configuration from command-line style arguments (environment variables apply
    /// too); used by tests and tools that build a server in-process.
    pub fn from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser;
        let mut all: Vec<std::ffi::OsString> = vec!["fechatter".into()];
        all.extend(args.into_iter().map(Into::into));
        ConfigOnly::try_parse_from(all).map(|c| c.config)
    }
}
