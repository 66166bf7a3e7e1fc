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

    /// Failed logins per account (from all addresses) within 15 minutes before the account counts
    /// as under a spread attack: addresses with failures on it are then refused, others let
    /// through once per second (see FECHATTER_LOGIN_FAILURES_PER_PAIR for one address).
    #[arg(
        long,
        env = "FECHATTER_LOGIN_FAILURES_PER_ACCOUNT",
        default_value_t = 50
    )]
    pub login_failures_per_account: u32,

    /// Failed logins per client IP within 15 minutes before that IP is refused.
    #[arg(long, env = "FECHATTER_LOGIN_FAILURES_PER_IP", default_value_t = 100)]
    pub login_failures_per_ip: u32,

    /// Concurrent WebSocket/SSE connections per user.
    #[arg(long, env = "FECHATTER_MAX_WS_PER_USER", default_value_t = 10)]
    pub max_ws_per_user: u32,

    /// Most unread messages a chat's `unread_count` counts: it saturates there, so listing chats
    /// never scans the whole history of a chat unread for long.
    #[arg(long, env = "FECHATTER_UNREAD_COUNT_MAX", default_value_t = 10_000)]
    pub unread_count_max: u32,

    /// Deepest `GET /api/messages` page, in messages skipped (`(page - 1) × limit`); deeper
    /// history is read with `before_id`, which costs the same at any depth.
    #[arg(long, env = "FECHATTER_MAX_MESSAGE_OFFSET", default_value_t = 10_000)]
    pub max_message_offset: u32,

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

    /// Events read from PostgreSQL per replay page (replay is streamed as the client reads).
    #[arg(long, env = "FECHATTER_REPLAY_PAGE", default_value_t = 200)]
    pub replay_page: i64,

    /// Most chats an event id lists: a connection following more stores a resume checkpoint
    /// and its ids name it plus the chats that moved since (a new checkpoint when more than
    /// this many moved).
    #[arg(long, env = "FECHATTER_ID_CHATS_MAX", default_value_t = 16)]
    pub id_chats_max: usize,

    /// Least milliseconds between two resume checkpoints of one connection.
    #[arg(long, env = "FECHATTER_CHECKPOINT_INTERVAL_MS", default_value_t = 1000)]
    pub checkpoint_interval_ms: u64,

    /// Hours a resume checkpoint is kept (an id naming a pruned one gets `resync.required`).
    #[arg(
        long,
        env = "FECHATTER_CHECKPOINT_RETENTION_HOURS",
        default_value_t = 168
    )]
    pub checkpoint_retention_hours: i64,

    /// Milliseconds between relayed `typing.start` frames of one connection in one chat.
    #[arg(long, env = "FECHATTER_TYPING_INTERVAL_MS", default_value_t = 1000)]
    pub typing_interval_ms: u64,

    /// Seconds a room spends finding out whether a commit whose reply was lost took effect.
    #[arg(long, env = "FECHATTER_COMMIT_RESOLVE_SECS", default_value_t = 5)]
    pub commit_resolve_secs: u64,

    // --- Group commit across rooms (issue 13, write path). ---
    /// Shared commit transactions in flight at once; the rooms' batches queued meanwhile are
    /// committed together in the next one (0: each room commits its own transactions).
    #[arg(long, env = "FECHATTER_COMMIT_IN_FLIGHT", default_value_t = 2)]
    pub commit_in_flight: usize,

    /// Most chat rooms whose batches share one commit transaction.
    #[arg(long, env = "FECHATTER_COMMIT_MAX_ROOMS", default_value_t = 100)]
    pub commit_max_rooms: usize,

    /// Most ops (sends, edits, ...) in one commit transaction; a room's longer queue is
    /// committed in chunks of at most this many.
    #[arg(long, env = "FECHATTER_COMMIT_MAX_OPS", default_value_t = 500)]
    pub commit_max_ops: usize,

    /// Fault hook (tests only): the next N room commits succeed but their reply is lost.
    #[arg(
        long,
        env = "FECHATTER_FAULT_LOSE_COMMIT_REPLIES",
        default_value_t = 0,
        hide = true
    )]
    pub fault_lose_commit_replies: u32,

    /// Fault hook (tests only): session start-up pauses this long after registering.
    #[arg(
        long,
        env = "FECHATTER_FAULT_SESSION_START_DELAY_MS",
        default_value_t = 0,
        hide = true
    )]
    pub fault_session_start_delay_ms: u64,

    /// Fault hook (tests only): the next N chat room loads fail.
    #[arg(
        long,
        env = "FECHATTER_FAULT_ROOM_LOAD_FAILURES",
        default_value_t = 0,
        hide = true
    )]
    pub fault_room_load_failures: u32,

    /// Fault hook (tests only): the next N committed batches are not published to the other
    /// nodes (as if the node died between its COMMIT and its publish).
    #[arg(
        long,
        env = "FECHATTER_FAULT_UNPUBLISHED_COMMITS",
        default_value_t = 0,
        hide = true
    )]
    pub fault_unpublished_commits: u32,

    /// Fault hook (tests only): the next N session start-ups fail after registering.
    #[arg(
        long,
        env = "FECHATTER_FAULT_SESSION_START_FAILURES",
        default_value_t = 0,
        hide = true
    )]
    pub fault_session_start_failures: u32,

    /// Fault hook (tests only): the next N connections refused at accept keep what the client
    /// had already sent (as if it arrived just after the refusal's discard).
    #[arg(
        long,
        env = "FECHATTER_FAULT_LATE_REFUSED_BYTES",
        default_value_t = 0,
        hide = true
    )]
    pub fault_late_refused_bytes: u32,

    /// Seconds a graceful stop (SIGTERM/SIGINT) waits for open requests to finish, and then
    /// for presence to record the `last_seen` of the users still online.
    #[arg(long, env = "FECHATTER_SHUTDOWN_TIMEOUT_SECS", default_value_t = 10)]
    pub shutdown_timeout_secs: u64,

    /// Seconds between checks that the Meilisearch index still exists with its settings (a
    /// Meilisearch that lost its data is refilled from PostgreSQL); 0: never.
    #[arg(long, env = "FECHATTER_MEILI_CHECK_SECS", default_value_t = 30)]
    pub meili_check_secs: u64,

    /// The check also refills an index holding fewer documents than this percentage of the
    /// messages surely indexed by now (the chats' live counts less the outbox's backlog). Near
    /// 100 it notices small losses but may refill an index whose indexing merely lags; the
    /// default notices a loss of over half.
    #[arg(long, env = "FECHATTER_MEILI_REFILL_BELOW_PERCENT", default_value_t = 50,
          value_parser = clap::value_parser!(u8).range(1..=100))]
    pub meili_refill_below_percent: u8,

    /// Milliseconds one write request to Meilisearch (or one poll of its task) may go
    /// unanswered before the refill or reindex that made it fails and is retried (the indexer's
    /// drains have their own bound, 120 s).
    #[arg(long, env = "FECHATTER_MEILI_REQUEST_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub meili_request_timeout_ms: u64,

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

    /// Real-time sessions that may start at once (each reads the user's chats); more wait.
    #[arg(
        long,
        env = "FECHATTER_SESSION_START_CONCURRENCY",
        default_value_t = 16
    )]
    pub session_start_concurrency: usize,

    /// Milliseconds a new real-time connection may wait for its turn to start before it is
    /// refused (WebSocket close 1013, SSE 503).
    #[arg(long, env = "FECHATTER_SESSION_START_WAIT_MS", default_value_t = 10000)]
    pub session_start_wait_ms: u64,

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

    /// Password hashes computed at once (each takes ~19 MiB and ~30 ms of a core); 0: half the
    /// cores (at least 1), so hashing never occupies every core.
    #[arg(long, env = "FECHATTER_HASH_CONCURRENCY", default_value_t = 0)]
    pub hash_concurrency: usize,

    /// Log format: `text` or `json`. Filter with RUST_LOG.
    #[arg(long, env = "FECHATTER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    // ---- cluster (issue 15): several nodes sharing PostgreSQL and Redis ----
    /// Redis URL (`redis://host:port/db`, `redis+unix:///path/redis.sock`). Set: cluster mode
    /// (rooms, presence, rate limits and revocation shared through Redis). Unset: one node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// This node's id in the cluster (letters, digits, `-`, `_`). Default: generated at start-up.
    #[arg(long, env = "FECHATTER_NODE_ID")]
    pub node_id: Option<String>,

    /// Seconds a node counts as alive after its last heartbeat; its connections stop counting
    /// (presence, connection limit) and are cleaned up after that.
    #[arg(long, env = "FECHATTER_NODE_TTL_SECS", default_value_t = 15)]
    pub node_ttl_secs: u64,

    /// Seconds between a node's heartbeats (must be below FECHATTER_NODE_TTL_SECS).
    #[arg(long, env = "FECHATTER_NODE_HEARTBEAT_SECS", default_value_t = 5)]
    pub node_heartbeat_secs: u64,

    /// Milliseconds an out-of-order broker event waits for the events before it, before the gap
    /// is filled from PostgreSQL.
    #[arg(long, env = "FECHATTER_BROKER_GAP_MS", default_value_t = 200)]
    pub broker_gap_ms: u64,

    /// Prefix of every Redis key and channel (several clusters may share one Redis).
    #[arg(long, env = "FECHATTER_REDIS_PREFIX", default_value = "fechatter")]
    pub redis_prefix: String,

    // ---- performance (issue 13) ----
    /// Milliseconds presence changes are collected before one `presence.update` per workspace
    /// goes out (0: each change at once).
    #[arg(long, env = "FECHATTER_PRESENCE_COALESCE_MS", default_value_t = 200)]
    pub presence_coalesce_ms: u64,

    /// Most frames (changes × the workspace's online connections) one workspace's presence
    /// window may send as one contract-shaped `presence.update` per change; a costlier window is
    /// one frame listing its `changes` (0: always one frame for several changes).
    #[arg(
        long,
        env = "FECHATTER_PRESENCE_SEPARATE_FRAMES",
        default_value_t = 4096
    )]
    pub presence_separate_frames: usize,

    // --- Availability (denial-of-service limits) ---
    /// Proxies whose `Forwarded` / `X-Forwarded-For` is believed: comma-separated IPs and CIDRs
    /// (e.g. `10.0.0.1,192.168.0.0/16`). Empty: the TCP peer is the client.
    #[arg(long, env = "FECHATTER_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    /// Largest WebSocket message from an authenticated client, bytes (refused from its header).
    #[arg(long, env = "FECHATTER_WS_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_frame_bytes: usize,

    /// Largest WebSocket message before authentication (the auth frame), bytes.
    #[arg(long, env = "FECHATTER_WS_PREAUTH_FRAME_BYTES", default_value_t = 8 * 1024)]
    pub ws_preauth_frame_bytes: usize,

    /// Inbound WebSocket frames per second per connection (sustained).
    #[arg(long, env = "FECHATTER_WS_FRAMES_PER_SEC", default_value_t = 20)]
    pub ws_frames_per_sec: u32,

    /// Inbound WebSocket frames a connection may send in a burst.
    #[arg(long, env = "FECHATTER_WS_FRAME_BURST", default_value_t = 60)]
    pub ws_frame_burst: u32,

    /// Over-budget frames within 10 s after which the socket is closed (4009).
    #[arg(long, env = "FECHATTER_WS_FRAME_EXCESS_CLOSE", default_value_t = 100)]
    pub ws_frame_excess_close: u32,

    /// Seconds a client has to send a whole request body; then 408 and the connection closes.
    #[arg(long, env = "FECHATTER_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,

    /// Open connections per client address (trusted proxies exempt); more answer 503.
    #[arg(long, env = "FECHATTER_MAX_CONNECTIONS_PER_IP", default_value_t = 4096)]
    pub max_connections_per_ip: usize,

    /// File descriptors kept free of client connections (database, files, accept): past
    /// (open-file limit − this) new connections are answered 503 and closed.
    #[arg(long, env = "FECHATTER_FD_HEADROOM", default_value_t = 512)]
    pub fd_headroom: usize,

    /// Bearer token required by `GET /metrics` (unset: open, as before).
    #[arg(long, env = "FECHATTER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Separate address serving only `/metrics` (the main listener then answers it 404).
    #[arg(long, env = "FECHATTER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Failed logins per (account, client address) within 15 minutes before that pair is locked.
    #[arg(long, env = "FECHATTER_LOGIN_FAILURES_PER_PAIR", default_value_t = 10)]
    pub login_failures_per_pair: u32,

    /// Failed logins per second server-wide that are hashed; beyond, failures from addresses
    /// without a recent success are refused with 429 before hashing.
    #[arg(long, env = "FECHATTER_LOGIN_FAILURES_PER_SEC", default_value_t = 5)]
    pub login_failures_per_sec: u32,

    /// Keys each login-guard map holds at most (oldest dropped first).
    #[arg(long, env = "FECHATTER_LOGIN_GUARD_KEYS", default_value_t = 100_000)]
    pub login_guard_keys: usize,

    /// Identical log lines allowed per 10 s; the rest are counted and summarised.
    #[arg(long, env = "FECHATTER_LOG_REPEAT_PER_10S", default_value_t = 10)]
    pub log_repeat_per_10s: u32,

    /// Request bodies still arriving per client address (the forwarded one behind a trusted
    /// proxy); a body beyond gets only `FECHATTER_BODY_OVER_CAP_MS` to arrive, then 429 + close.
    #[arg(long, env = "FECHATTER_PENDING_BODIES_PER_IP", default_value_t = 1024)]
    pub pending_bodies_per_ip: usize,

    /// Request bodies still arriving, server-wide; a body beyond gets only
    /// `FECHATTER_BODY_OVER_CAP_MS` to arrive, then 503 + close.
    #[arg(long, env = "FECHATTER_MAX_PENDING_BODIES", default_value_t = 4096)]
    pub max_pending_bodies: usize,

    /// Milliseconds a body over a pending-body cap has to arrive whole.
    #[arg(long, env = "FECHATTER_BODY_OVER_CAP_MS", default_value_t = 100)]
    pub body_over_cap_ms: u64,

    /// Open requests (a stream or WebSocket until it ends) per client forwarded by a trusted
    /// proxy, whose own connections are exempt from the per-address cap; more answer 429.
    #[arg(
        long,
        env = "FECHATTER_MAX_REQUESTS_PER_FORWARDED_CLIENT",
        default_value_t = 4096
    )]
    pub max_requests_per_forwarded_client: usize,

    /// Seconds between returns of freed heap memory to the OS (`malloc_trim`; 0: never).
    #[arg(long, env = "FECHATTER_MALLOC_TRIM_SECS", default_value_t = 10)]
    pub malloc_trim_secs: u64,

    /// Nice value of the password-hashing threads (0–19; 0: the process's own): request threads
    /// preempt a running hash, so a login flood's hashes use only the CPU left over.
    #[arg(long, env = "FECHATTER_HASH_NICE", default_value_t = 19, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub hash_nice: i32,

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

    // --- Search fault bound (issue 16): a Meilisearch that is down or hung answers 503 fast. ---
    /// Milliseconds a message search may wait for Meilisearch before it answers 503
    /// `SERVICE_UNAVAILABLE` with `Retry-After`.
    #[arg(long, env = "FECHATTER_SEARCH_TIMEOUT_MS", default_value_t = 5000)]
    pub search_timeout_ms: u64,

    // --- Search indexer bounds: its catch-up always makes progress (RELIABILITY.md). ---
    /// Most search-outbox rows the indexer takes per batch; a batch that overruns the
    /// indexer's statement timeout is retried at half the size, and the size grows back by a
    /// quarter per full batch.
    #[arg(long, env = "FECHATTER_INDEXER_BATCH", default_value_t = 500)]
    pub indexer_batch: u32,

    /// Server-side statement_timeout of the indexer's statements (SET LOCAL in each drain
    /// transaction), milliseconds; must be below the reply timeout.
    #[arg(
        long,
        env = "FECHATTER_INDEXER_STATEMENT_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub indexer_statement_timeout_ms: u64,

    /// work_mem of the indexer's statements (SET LOCAL), kB, at least 64: also the chunk in
    /// which an insert merges a full GIN pending list, each chunk kept even if the statement is
    /// then cancelled, so a long merge progresses across retries.
    #[arg(long, env = "FECHATTER_INDEXER_WORK_MEM_KB", default_value_t = 1024)]
    pub indexer_work_mem_kb: u32,

    // --- Client sockets (issue 17): a peer that stops reading holds bounded kernel memory. ---
    /// SO_SNDBUF of every accepted connection, bytes (the kernel doubles it; 0 = the kernel's
    /// autotuned default, up to `net.ipv4.tcp_wmem`'s maximum, several MB per socket).
    #[arg(long, env = "FECHATTER_SOCKET_SEND_BUFFER", default_value_t = 262144)]
    pub socket_send_buffer: usize,

    /// TCP_USER_TIMEOUT of every accepted connection, milliseconds: a peer that acknowledges
    /// nothing sent for this long (gone, or a full receive window it never drains) is dropped
    /// by the kernel, with its buffers (0 = the kernel's retransmission default, ~15 minutes).
    #[arg(
        long,
        env = "FECHATTER_SOCKET_USER_TIMEOUT_MS",
        default_value_t = 30000
    )]
    pub socket_user_timeout_ms: u64,

    // --- Presence under connection storms (issue 13, third session) ---
    /// `presence.update` frames per second presence aims to stay under: after a window whose
    /// frames went to F connections, the next window lasts F ÷ this (at least
    /// FECHATTER_PRESENCE_COALESCE_MS, at most FECHATTER_PRESENCE_COALESCE_MAX_MS); 0 (the
    /// default): never stretched. Opt-in: longer windows mean larger frames, and every
    /// connection's write buffer keeps the capacity of the largest (BENCHMARKS.md).
    #[arg(long, env = "FECHATTER_PRESENCE_FRAMES_PER_SEC", default_value_t = 0)]
    pub presence_frames_per_sec: u64,

    /// Longest a stretched presence window lasts, milliseconds (at most 10000).
    #[arg(
        long,
        env = "FECHATTER_PRESENCE_COALESCE_MAX_MS",
        default_value_t = 2000
    )]
    pub presence_coalesce_max_ms: u64,
}

/// A configuration problem, reported as one line at start-up.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Checks values that clap's types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if let Some(secret) = &self.jwt_secret
            && secret.len() < 32
        {
            return fail("JWT_SECRET must be at least 32 bytes");
        }
        if let Some(token) = &self.admin_token
            && token.len() < 16
        {
            return fail("FECHATTER_ADMIN_TOKEN must be at least 16 characters");
        }
        if self.meili_url.is_some() && self.meili_master_key.is_none() {
            return fail("MEILI_URL is set but MEILI_MASTER_KEY is not");
        }
        if let Some(u) = &self.meili_url
            && url::Url::parse(u).is_err()
        {
            return fail("MEILI_URL is not a valid URL");
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
            (self.unread_count_max as u64, "FECHATTER_UNREAD_COUNT_MAX"),
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
            (self.search_timeout_ms, "FECHATTER_SEARCH_TIMEOUT_MS"),
            (self.indexer_batch as u64, "FECHATTER_INDEXER_BATCH"),
            (
                self.indexer_statement_timeout_ms,
                "FECHATTER_INDEXER_STATEMENT_TIMEOUT_MS",
            ),
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
        if self.indexer_work_mem_kb < 64 {
            return fail("FECHATTER_INDEXER_WORK_MEM_KB must be at least 64");
        }
        if self.db_reply_timeout_ms <= self.indexer_statement_timeout_ms {
            return fail(
                "FECHATTER_DB_REPLY_TIMEOUT_MS must exceed FECHATTER_INDEXER_STATEMENT_TIMEOUT_MS",
            );
        }
        if self.ws_timeout_secs <= self.ws_ping_secs {
            return fail("FECHATTER_WS_TIMEOUT_SECS must exceed FECHATTER_WS_PING_SECS");
        }
        if self.max_body_bytes < 1024 {
            return fail("FECHATTER_MAX_BODY_BYTES must be at least 1024");
        }
        if let Err(e) = crate::http::client_ip::TrustedProxies::parse(&self.trusted_proxies) {
            return Err(ConfigError(format!("FECHATTER_TRUSTED_PROXIES: {e}")));
        }
        if self.ws_max_frame_bytes < 1024 || self.ws_preauth_frame_bytes < 1024 {
            return fail(
                "FECHATTER_WS_MAX_FRAME_BYTES and FECHATTER_WS_PREAUTH_FRAME_BYTES must be at least 1024",
            );
        }
        if self.ws_frames_per_sec == 0 || self.ws_frame_burst == 0 || self.body_timeout_secs == 0 {
            return fail(
                "FECHATTER_WS_FRAMES_PER_SEC, FECHATTER_WS_FRAME_BURST and FECHATTER_BODY_TIMEOUT_SECS must be positive",
            );
        }
        if self.max_connections_per_ip == 0
            || self.pending_bodies_per_ip == 0
            || self.max_pending_bodies == 0
            || self.body_over_cap_ms == 0
            || self.max_requests_per_forwarded_client == 0
            || self.login_failures_per_pair == 0
            || self.login_failures_per_sec == 0
            || self.login_guard_keys == 0
        {
            return fail(
                "FECHATTER_MAX_CONNECTIONS_PER_IP, FECHATTER_PENDING_BODIES_PER_IP, FECHATTER_MAX_PENDING_BODIES, FECHATTER_BODY_OVER_CAP_MS, FECHATTER_MAX_REQUESTS_PER_FORWARDED_CLIENT, FECHATTER_LOGIN_FAILURES_PER_PAIR, FECHATTER_LOGIN_FAILURES_PER_SEC and FECHATTER_LOGIN_GUARD_KEYS must be positive",
            );
        }
        if let Some(token) = &self.metrics_token
            && token.len() < 16
        {
            return fail("FECHATTER_METRICS_TOKEN must be at least 16 characters");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return fail("FECHATTER_LOG_FORMAT must be `text` or `json`");
        }
        if self.presence_coalesce_ms > 10_000 {
            return fail("FECHATTER_PRESENCE_COALESCE_MS must be at most 10000");
        }
        if self.presence_coalesce_max_ms > 10_000 {
            return fail("FECHATTER_PRESENCE_COALESCE_MAX_MS must be at most 10000");
        }
        self.validate_cluster()
    }

    /// The cluster block's checks (only `REDIS_URL` turns cluster mode on).
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let fail = |m: &str| Err(ConfigError(m.to_string()));
        if let Some(u) = &self.redis_url
            && redis::Client::open(u.as_str()).is_err()
        {
            return fail("REDIS_URL is not a valid Redis URL");
        }
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return fail("FECHATTER_NODE_ID must be 1-64 letters, digits, `-` or `_`");
            }
        }
        if self.node_heartbeat_secs == 0 || self.broker_gap_ms == 0 {
            return fail(
                "FECHATTER_NODE_HEARTBEAT_SECS and FECHATTER_BROKER_GAP_MS must be positive",
            );
        }
        if self.node_ttl_secs <= self.node_heartbeat_secs {
            return fail("FECHATTER_NODE_TTL_SECS must exceed FECHATTER_NODE_HEARTBEAT_SECS");
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(char::is_whitespace) {
            return fail("FECHATTER_REDIS_PREFIX must be non-empty without spaces");
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
            unread_count_max: i64::from(self.unread_count_max),
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
