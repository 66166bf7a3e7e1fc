//! Search: one interface, two engines (Meilisearch, PostgreSQL full-text), picked by configuration.
//!
//! [`Search`] is what the HTTP layer and the chat rooms hold. Message search goes to the
//! configured engine; user and chat search (small, per-workspace) are always answered by
//! PostgreSQL (`directory`). Callers pass the chats a search may cover ([`MessageQuery::chat_ids`],
//! computed from `chat_members` by [`Store::member_chat_ids`]); both engines filter on them
//! inside the query, so a result page, its total and its highlights only ever come from those.
//!
//! # Layout
//! - `postgres`: the embedded engine (`tsvector` + GIN, `websearch_to_tsquery`, `ts_headline`,
//!   and a substring fallback for what the stemmer cannot split).
//! - `meili`: the Meilisearch engine (index settings, queries, document writes).
//! - `outbox`: rows recorded with each message write (both engines) and drained by the
//!   `SearchIndexer` into the configured engine, in batches, behind the write.
//! - `table`: `message_search`, the PostgreSQL engine's derived table (no index work happens
//!   in a send's transaction; with Meilisearch it is not written at all).
//! - `scope`: who may search what (workspace membership, the caller's chats).
//! - `directory`: user and chat search.
//! - `highlight`: turning engine highlights into safe `<mark>` HTML.
//! - `reindex`: `fechatter reindex`.

pub mod directory;
pub mod highlight;
pub mod meili;
pub mod outbox;
pub mod postgres;
mod reindex;
pub mod scope;
pub mod table;

use chrono::{DateTime, Utc};

use crate::actors::indexer::IndexerHandle;
use crate::config::Config;
use crate::store::{Store, StoreError};

pub use reindex::{refill_live, reindex};

/// Longest start-up waits for the Meilisearch index and its settings.
const STARTUP_INDEX_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// One message search, already validated and scoped to the caller.
#[derive(Debug, Clone)]
pub struct MessageQuery {
    /// The user's query (websearch syntax: `"quoted phrases"`, `-exclusions`, `or`).
    pub text: String,
    pub workspace_id: i64,
    /// The chats searched: the caller's chats in the workspace, or the subset the caller asked
    /// for. Never empty (an empty scope is answered without asking an engine).
    pub chat_ids: Vec<i64>,
    /// Only messages from these senders.
    pub sender_ids: Option<Vec<i64>>,
    /// Only messages created at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Only messages created strictly before this instant.
    pub until: Option<DateTime<Utc>>,
    /// 1-based.
    pub page: i64,
    pub limit: i64,
}

impl MessageQuery {
    pub fn offset(&self) -> i64 {
        (self.page - 1) * self.limit
    }
}

/// One matching message.
#[derive(Debug, Clone)]
pub struct MessageHit {
    pub message_id: i64,
    pub chat_id: i64,
    pub chat_name: String,
    /// HTML: the message text escaped, matches wrapped in `<mark>`…`</mark>`.
    pub content: String,
    pub sender_id: i64,
    pub sender_username: String,
    pub created_at: DateTime<Utc>,
    /// Relevance in 0..=1, higher is better.
    pub score: f64,
}

/// A page of matches and the number of matches in all pages.
#[derive(Debug, Clone, Default)]
pub struct MessageHits {
    pub hits: Vec<MessageHit>,
    pub total: i64,
}

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The external index cannot be reached or did not answer in time.
    #[error("search index unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The engine behind message search.
#[derive(Clone)]
pub enum Engine {
    Postgres,
    Meili(meili::MeiliEngine),
}

/// The bounds the `SearchIndexer` feeds the engine within ([`Search::indexer_bounds`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexerBounds {
    /// Most outbox rows per batch (`FECHATTER_INDEXER_BATCH`).
    pub batch: i64,
    /// Settings of each drain transaction (`FECHATTER_INDEXER_STATEMENT_TIMEOUT_MS`,
    /// `FECHATTER_INDEXER_WORK_MEM_KB`).
    pub limits: outbox::DrainLimits,
}

/// The configured search engine. Cheap to clone.
#[derive(Clone)]
pub struct Search {
    store: Store,
    engine: Engine,
    /// What the `SearchIndexer` is started with.
    bounds: IndexerBounds,
    /// Wakes the `SearchIndexer` (a no-op handle until start-up attaches it).
    indexer: IndexerHandle,
}

impl Search {
    /// Picks the engine: Meilisearch when `MEILI_URL` is set, PostgreSQL otherwise. With
    /// Meilisearch the index and its settings are applied now when the server is reachable;
    /// when it is not, start-up goes on (sends must keep working) and the indexer applies them
    /// on first contact.
    pub async fn from_config(config: &Config, store: &Store) -> anyhow::Result<Search> {
        let engine = match &config.meili_url {
            None => Engine::Postgres,
            Some(url) => {
                let engine = meili::MeiliEngine::new(
                    url,
                    config.meili_master_key.as_deref(),
                    &config.meili_index,
                )?
                .with_search_timeout(std::time::Duration::from_millis(config.search_timeout_ms))
                .with_refill_below_percent(config.meili_refill_below_percent)
                .with_request_timeout(std::time::Duration::from_millis(
                    config.meili_request_timeout_ms,
                ));
                // Bounded: a Meilisearch that accepts connections but never answers must not
                // hold up start-up.
                match tokio::time::timeout(STARTUP_INDEX_WAIT, engine.ensure_index()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, index = %config.meili_index,
                        "Meilisearch not ready at start-up; the indexer will retry"),
                    Err(_) => tracing::warn!(index = %config.meili_index,
                        "Meilisearch did not answer at start-up; the indexer will retry"),
                }
                Engine::Meili(engine)
            }
        };
        let bounds = IndexerBounds {
            batch: config.indexer_batch as i64,
            limits: outbox::DrainLimits {
                statement_timeout: std::time::Duration::from_millis(
                    config.indexer_statement_timeout_ms,
                ),
                work_mem_kb: config.indexer_work_mem_kb,
            },
        };
        Ok(Search {
            store: store.clone(),
            engine,
            bounds,
            indexer: IndexerHandle::default(),
        })
    }

    /// The configured engine (start-up hands it to the `SearchIndexer`, which feeds it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Name of the engine, for logs and health checks.
    pub fn engine_name(&self) -> &'static str {
        match self.engine {
            Engine::Postgres => "postgres",
            Engine::Meili(_) => "meilisearch",
        }
    }

    /// The bounds the `SearchIndexer` is started with (from the configuration).
    pub fn indexer_bounds(&self) -> IndexerBounds {
        self.bounds
    }

    /// Attaches the running indexer (start-up, before the `Search` is shared).
    pub fn set_indexer(&mut self, handle: IndexerHandle) {
        self.indexer = handle;
    }

    /// The handle the chat rooms call `notify()` on after committing outbox rows.
    pub fn indexer(&self) -> IndexerHandle {
        self.indexer.clone()
    }

    /// Searches messages within `q.chat_ids`.
    pub async fn search_messages(&self, q: &MessageQuery) -> Result<MessageHits, SearchError> {
        if q.chat_ids.is_empty() {
            return Ok(MessageHits::default());
        }
        let started = std::time::Instant::now();
        let result = match &self.engine {
            Engine::Postgres => Ok(postgres::search(&self.store, q).await?),
            Engine::Meili(m) => m.search(&self.store, q).await,
        };
        crate::metrics::search_latency(started.elapsed());
        result
    }
}
