//! Black-box API tests: each test starts the real server on a random loopback port against a
//! fresh database and talks HTTP/WebSocket/SSE to it. One binary, one module per area.

#[path = "../common/mod.rs"]
mod common;

mod admin;
mod auth;
mod availability;
mod batch;
mod browser;
mod chats;
mod cluster;
mod cluster_delivery;
mod cluster_kill9;
mod control_chars;
mod db_pool;
mod delivery;
mod faults;
mod group_commit;
mod health;
mod lists;
mod load;
mod messages;
mod openapi;
mod presence;
mod proptest_input;
mod ratelimit;
mod realtime;
mod resume_ids;
mod schemathesis;
mod search;
mod search_indexer;
mod search_latency;
mod search_meili_loss;
mod shutdown;
mod stalled_peers;
mod users;
mod workspaces;
