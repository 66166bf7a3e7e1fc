//! The command line of `fechatter-load`: every knob, with defaults that work against a local
//! server (`fechatter serve` on 127.0.0.1:8080 with raised limits, see BENCHMARKS.md).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fechatter-load",
    version,
    about = "Load generator for Fechatter: idle connections, chat delivery checks, fan-out, REST mix",
    long_about = "Load generator for Fechatter. Traffic goes only to loopback (127.0.0.0/8).\n\n\
        Run the server with raised limits, e.g.\n  \
        FECHATTER_RATE_LIMIT_PER_HOUR=100000000 FECHATTER_IP_RATE_LIMIT_PER_HOUR=100000000 \
        FECHATTER_SEARCH_RATE_PER_MIN=10000000 \
        FECHATTER_AUTH_RATE_PER_MIN=10000000 FECHATTER_MAX_WS_PER_USER=1000 \
        cargo run --release -- serve\n\n\
        Exit code: 0 on success, 1 when messages were lost, duplicated or reordered, 2 on errors."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Open N authenticated idle WebSocket connections, hold them, report connect rate,
    /// failures and the server's resident memory per connection.
    Connect(ConnectArgs),
    /// U users in R rooms each sending at a rate for a duration; every client checks it gets
    /// every message of its rooms exactly once and in order; send→receive latency.
    Chat(ChatArgs),
    /// One room with N member connections and one sender: deliveries per second and the time
    /// until the last member has each message. Optionally against the baseline server too.
    Fanout(FanoutArgs),
    /// A REST mix (login, list chats, send, list messages, search) at a concurrency:
    /// requests/s, latency percentiles per route, errors by status.
    Http(HttpArgs),
    /// Merges the --json summaries of the shards of one `chat --shard I/N` run: delivery
    /// checked across all shards, latency histograms merged exactly. Or of several `connect`
    /// processes run at once: totals, combined rate, server memory per connection.
    Merge(super::shard::MergeArgs),
    /// The chat scenario at rising rates until saturation (persisted HTTP sends, every
    /// delivery checked): each step's acked msg/s and latency, and the knee.
    Ramp(super::ramp::RampArgs),
    /// The fault suite: starts its own PostgreSQL (synchronous_commit=on) and the real server
    /// binary, puts them through a fault under load and checks nothing acknowledged is lost.
    Fault(FaultArgs),
    /// A local cluster for benchmarks: one PostgreSQL, one redis-server and N server nodes,
    /// held until Ctrl-C.
    ClusterUp(super::cluster_up::ClusterUpArgs),
    /// A plain actix-ws broadcast server without actors, auth or storage: the fan-out baseline.
    /// It speaks just enough of the protocol (auth frame, POST /api/messages) for `fanout`.
    BaselineServer(BaselineArgs),
}

/// Options every scenario shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Server base URL, or several comma-separated (`--url` too): client connections and
    /// senders are spread over them round robin (set-up uses the first). On loopback only.
    #[arg(
        long,
        visible_alias = "url",
        env = "FECHATTER_LOAD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,

    /// Write a JSON summary to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Keep the set-up (users with tokens, workspace, rooms) in this file: loaded when it exists
    /// and was made for the same shape and server, else created and written.
    #[arg(long)]
    pub reuse: Option<PathBuf>,

    /// Prefix of the emails of the users this run creates (default: random).
    #[arg(long)]
    pub prefix: Option<String>,

    /// Users set up at once (each registration costs the server an Argon2 hash).
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,

    /// WebSocket handshakes in flight at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Spread client sockets over this many source addresses, 127.0.0.1 … 127.0.0.N (each
    /// has ~28k ephemeral ports towards one server address).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub source_ips: u8,

    /// Read buffer per client connection, bytes (tungstenite's default of 128 KiB costs
    /// ~138 KB of client memory per connection).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer: usize,

    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,

    /// Connections to open. One process holds at most ~19.9k sockets (20k file descriptors):
    /// run several `connect` processes (each with its own --reuse file) to go beyond.
    #[arg(long, default_value_t = 1000)]
    pub conns: usize,

    /// Connections per user (the server allows FECHATTER_MAX_WS_PER_USER, default 10).
    #[arg(long, default_value_t = 10)]
    pub conns_per_user: usize,

    /// Seconds to hold the connections once open.
    #[arg(long, default_value_t = 30)]
    pub hold_secs: u64,

    /// The server's process id: its VmRSS (/proc/PID/status) is read before and after, and
    /// its CPU time over the connect phase is reported per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// PostgreSQL's postmaster pid (embedded: `FECHATTER_DATA/pg/postmaster.pid`): the CPU
    /// time of it and its backends over the connect phase, per connection.
    #[arg(long)]
    pub db_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,

    /// Users, each with one connection and one sender.
    #[arg(long, default_value_t = 100)]
    pub users: usize,

    /// Rooms (channels) the users are spread over.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,

    /// Rooms each user is in.
    #[arg(long, default_value_t = 1)]
    pub rooms_per_user: usize,

    /// Messages per second, all users together.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,

    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Message size, bytes of content.
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,

    /// Seconds to wait after every connection is open, before the first send: the work of the
    /// connect wave (sessions starting, presence to every member) is then behind the measured
    /// sends instead of in their tail. 0: send at once.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    pub warmup_secs: u64,

    /// Most seconds to wait, after the last send, for deliveries still in flight.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,

    /// HTTP connections the senders share (per process, all servers together): at most this
    /// many sends are in flight at once, the others wait for one (the wait counts in their
    /// latency, which runs from each send's scheduled time; the summary reports it). The
    /// server then holds the users' WebSockets plus at most this many HTTP connections.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub http_connections: u32,

    /// Run only shard I of N (`I/N`, 0-based): the connections and senders of users with
    /// index ≡ I (mod N). Start N processes at once with the same --reuse file (made first,
    /// e.g. by a `--duration-secs 0` run) and --run-id, then `merge` their --json summaries.
    #[arg(long, default_value = "0/1")]
    pub shard: super::shard::Shard,

    /// The run id stamped into every message (shards of one run must share it; default:
    /// random).
    #[arg(long)]
    pub run_id: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,

    /// Member connections in the room.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,

    /// Connections per member user (raise FECHATTER_MAX_WS_PER_USER to match). Presence:
    /// the server coalesces presence changes per workspace (FECHATTER_PRESENCE_COALESCE_MS),
    /// one frame per window to every online member, while members connect.
    #[arg(long, default_value_t = 10)]
    pub conns_per_user: usize,

    /// Messages the sender sends, one after the other.
    #[arg(long, default_value_t = 20)]
    pub messages: u64,

    /// Message size, bytes of content.
    #[arg(long, default_value_t = 200)]
    pub message_bytes: usize,

    /// Pause between sends, milliseconds (0: next send as soon as the last is acknowledged).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,

    /// Most seconds to wait, after the last send, for deliveries still in flight.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,

    /// Also run the same fan-out against this baseline server (`fechatter-load
    /// baseline-server`) and report the ratio.
    #[arg(long)]
    pub baseline_url: Option<String>,

    /// The target is a baseline server: no set-up, no real tokens.
    #[arg(long)]
    pub baseline: bool,

    /// The server's process id (same machine): report its CPU time per delivery over the
    /// send phase (from the first send to the last delivery).
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// The baseline server's process id, likewise.
    #[arg(long)]
    pub baseline_pid: Option<u32>,

    /// Also run the same fan-out through a NATS server's WebSocket listener
    /// (`ws://127.0.0.1:PORT`, no TLS; `scripts/broker-baseline.sh` starts one): the receivers
    /// subscribe to one subject, one publisher sends the same frames; reports the ratio.
    #[arg(long)]
    pub nats_ws_url: Option<String>,

    /// The NATS server's process id: its CPU time per delivery, as for --server-pid.
    #[arg(long)]
    pub nats_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    #[command(flatten)]
    pub common: Common,

    /// Users the requests are spread over.
    #[arg(long, default_value_t = 20)]
    pub users: usize,

    /// Rooms (each user is in one).
    #[arg(long, default_value_t = 5)]
    pub rooms: usize,

    /// Requests in flight.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,

    /// Seconds of load.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,

    /// Relative weights: login, list_chats, send, list_messages, search.
    #[arg(
        long,
        default_value = "login=1,list_chats=3,send=3,list_messages=3,search=1"
    )]
    pub mix: String,

    /// Message size of sends, bytes.
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,
}

#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub addr: SocketAddr,

    /// Worker threads (default: one per core, as the server).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Frames buffered per connection before a slow one is dropped.
    #[arg(long, default_value_t = 4096)]
    pub queue: usize,
}

/// A fault scenario of `fechatter-load fault`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultScenario {
    /// `kill -9` of the server under chat load, restarted each time.
    Kill9,
    /// PostgreSQL stopped under load, then started again.
    PgStop,
    /// PostgreSQL frozen (SIGSTOP of all its processes) under load, then thawed.
    PgFreeze,
    /// Every connection dropped at once, then all reconnecting with their last ids.
    Storm,
    /// A client in a busy chat that does not read: closed 4008, then resumes and gets all.
    Slow,
    /// Chat load for a long time: nothing lost, server memory flat.
    Soak,
    /// Meilisearch (the real binary, a subprocess) killed with SIGKILL under load, then
    /// restarted: sends unaffected, search 503 while it is down, then every message findable.
    Meili,
    /// Every scenario above, one after the other (the single-server suite).
    All,
    /// A cluster (`--nodes` servers, one Redis, one PostgreSQL) under chat load, one node
    /// `kill -9`ed and restarted per cycle: its clients move to the other nodes and resume.
    /// Needs `redis-server`.
    ClusterKill9,
}

#[derive(Args, Debug, Clone)]
pub struct FaultArgs {
    /// Which fault.
    #[arg(value_enum, default_value = "all")]
    pub scenario: FaultScenario,

    /// The small, fast version (seconds, tens of clients), as CI runs it.
    #[arg(long)]
    pub quick: bool,

    /// The server binary (default: `fechatter` beside this binary; use the release build).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,

    /// Working directory for the throwaway cluster and logs (default: a new one under /tmp).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,

    /// Users (each one reader connection and one sender). Default: 10 quick, 100 full.
    #[arg(long)]
    pub users: Option<usize>,

    /// Rooms the users are spread over. Default: users / 10.
    #[arg(long)]
    pub rooms: Option<usize>,

    /// Messages per second, all senders together. Default: 50 quick, 200 full.
    #[arg(long)]
    pub rate: Option<f64>,

    /// `kill9`: kill cycles. Default: 3 quick, 20 full.
    #[arg(long)]
    pub cycles: Option<u32>,

    /// `pg-stop`/`pg-freeze`/`meili`: seconds PostgreSQL (Meilisearch) is away. Default: 3 quick, 10 full.
    pub outage_secs: Option<u64>,

    /// `storm`: connections. Default: 50 quick, 10,000 full.
    #[arg(long)]
    pub conns: Option<usize>,

    /// `slow`: messages (2 kB each) sent to the slow consumer's chat. Default: 1,000 quick, 6,000 full (2,000 × 2 kB
    /// fit in loopback socket buffers plus the 512-frame queue and never overflow).
    #[arg(long)]
    pub slow_messages: Option<u64>,

    /// `soak`: seconds. Default: 10 quick, 600 full.
    #[arg(long)]
    pub soak_secs: Option<u64>,

    /// The server's FECHATTER_DB_REPLY_TIMEOUT_MS: the bound every answer must meet while
    /// PostgreSQL is away (plus FECHATTER_DB_POOL_TIMEOUT_MS when all connections are taken).
    #[arg(long, default_value_t = 3000)]
    pub db_bound_ms: u64,

    /// Write the JSON summary of every scenario to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// `all`: leave out this scenario (repeatable).
    #[arg(long, value_enum)]
    pub skip: Vec<FaultScenario>,

    /// `meili`: the Meilisearch server binary (default: `../shared/meilisearch/meilisearch`
    /// of the source tree, else `meilisearch` on PATH; `all` skips the scenario without one).
    #[arg(long, env = "FECHATTER_MEILI_BIN")]
    pub meili_bin: Option<PathBuf>,

    /// `cluster-kill9`: server nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=16))]
    pub nodes: u8,

    /// Self-check of the suite: readers reconnect without their last event id, so the run
    /// must report lost messages (it proves the checker counts).
    #[arg(long)]
    pub no_resume: bool,
}
