//! Actors: the real-time core. `Hub` (registry of rooms), `ChatRoom` (one per chat: the single
//! writer of its messages and their fan-out), `Session` (one per WebSocket/SSE connection),
//! `WorkerFanout` (one per thread hosting sessions: a room's event reaches that thread's
//! followers in one message), `Presence` (who is online, connection limits), `SearchIndexer` (feeds the search index) and
//! `SearchWatch` (restores a Meilisearch index lost with its data).
//!
//! Actors know nothing of HTTP; they talk to `store`.

pub mod commit;
mod commit_tx;
pub mod committer;
pub mod events;
pub mod fanout;
pub mod hub;
pub mod indexer;
pub mod outbox;
pub mod presence;
pub mod relay;
pub mod room;
pub mod rooms;
pub mod search_watch;
pub mod session;
