//! Fechatter: a real-time chat server on actix actors, PostgreSQL and Meilisearch.
//!
//! # Layout
//! - [`http`]: the REST API, WebSocket and SSE endpoints: route table, handlers, error envelope,
//!   middleware (request id, rate limits).
//! - [`actors`]: `Hub`, `ChatRoom`, `Session`, `Presence`, `SearchIndexer` — the real-time core.
//! - [`store`]: PostgreSQL access, one module per aggregate, and the search engines.
//! - [`auth`]: password hashing and access tokens. [`validate`]: input rules.
//! - [`app`]: start-up (`Application::build`); [`cli`]: the binary's commands;
//!   [`config`]: every knob; [`embedded_pg`]: the embedded PostgreSQL cluster;
//!   [`shutdown`]: the bounded stop.
//! - [`load`]: the load generator behind the `fechatter-load` binary (a client; the server
//!   never calls it).
//! - [`cluster`]: cluster mode over Redis (`REDIS_URL`): broker, shared limits, presence,
//!   revocation; used by `http` and `actors`, uses neither.
//!
//! Dependencies point one way: `http → actors → store`, and `http → store` for plain reads.

pub mod actors;
pub mod app;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod embedded_pg;
pub mod faults;
pub mod http;
pub mod load;
pub mod log_throttle;
pub mod memory_trim;
pub mod metrics;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod validate;
