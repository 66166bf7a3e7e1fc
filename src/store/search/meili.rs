//! The Meilisearch engine: one index of message documents (primary key `id`), searchable on
//! `content`, filterable on `chat_id`, `sender_id`, `workspace_id` and `created_at` (a unix
//! timestamp in seconds with microsecond fractions, so date bounds are exact), sortable on
//! `created_at`. Writes come only from the `SearchIndexer` (and `fechatter reindex`).
//!
//! A search filters on the caller's chat ids inside Meilisearch; chat names and sender names
//! of the page come fresh from PostgreSQL, which also drops a hit whose deletion has not
//! reached the index yet (the indexer lags writes by about a second).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, anyhow};
use chrono::{DateTime, Utc};
use meilisearch_sdk::client::Client;
use meilisearch_sdk::errors::{Error as MeiliError, ErrorCode};
use meilisearch_sdk::search::{MatchingStrategies, Selectors};
use meilisearch_sdk::settings::{PaginationSetting, Settings};
use meilisearch_sdk::task_info::TaskInfo;
use meilisearch_sdk::tasks::Task;
use serde::{Deserialize, Serialize};

use super::highlight::{self, POST, PRE};
use super::{MessageHit, MessageHits, MessageQuery, SearchError};
use crate::store::{Store, StoreResult};

/// How long a search may take before it is answered 503, unless configured
/// (`FECHATTER_SEARCH_TIMEOUT_MS`).
const SEARCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a write task may take before the indexer retries it.
const TASK_TIMEOUT: Duration = Duration::from_secs(30);
const TASK_POLL: Duration = Duration::from_millis(20);
/// The attributes searches filter on: an index without them lost its settings.
const FILTERABLE: [&str; 4] = ["chat_id", "sender_id", "workspace_id", "created_at"];
/// The default of `FECHATTER_MEILI_REQUEST_TIMEOUT_MS`: how long one request to Meilisearch (a
/// write, or one poll of its task) may go unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The default of `FECHATTER_MEILI_REFILL_BELOW_PERCENT`.
const REFILL_BELOW_PERCENT: u64 = 50;
/// Fewer messages than this are not compared with the index's document count.
const MIN_COUNTED: u64 = 20;
/// Words kept around matches in long messages.
const CROP_WORDS: usize = 60;
/// Most matches Meilisearch counts exactly (`total` saturates there).
const MAX_TOTAL_HITS: usize = 10_000;

/// A message as stored in the index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDoc {
    pub id: i64,
    pub chat_id: i64,
    pub workspace_id: i64,
    pub sender_id: i64,
    pub chat_name: String,
    pub sender_username: String,
    pub content: String,
    /// Unix timestamp, seconds (fractional: microseconds).
    pub created_at: f64,
}

/// Seconds since the epoch, with microseconds, as the index stores `created_at`.
pub fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// The Meilisearch engine. Cheap to clone.
#[derive(Clone)]
pub struct MeiliEngine {
    client: Client,
    index: String,
    /// Set once the index exists with our settings (at start-up, or on the indexer's first
    /// successful contact when Meilisearch was down at start-up).
    ready: Arc<AtomicBool>,
    /// How long a search may wait for Meilisearch before it is answered 503.
    search_timeout: Duration,
    /// An index holding fewer documents than this percentage of the messages surely indexed
    /// counts as lost (`FECHATTER_MEILI_REFILL_BELOW_PERCENT`).
    refill_below_percent: u64,
    /// How long one write request, or one poll of its task, may go unanswered: a Meilisearch
    /// that accepts connections but never answers must not hold a refill (and its
    /// one-node-at-a-time lock) or a reindex for ever (`FECHATTER_MEILI_REQUEST_TIMEOUT_MS`).
    request_timeout: Duration,
}

impl MeiliEngine {
    pub fn new(url: &str, key: Option<&str>, index: &str) -> anyhow::Result<Self> {
        let client = Client::new(url.trim_end_matches('/'), key)
            .context("building the Meilisearch client")?;
        Ok(MeiliEngine {
            client,
            index: index.to_string(),
            ready: Arc::new(AtomicBool::new(false)),
            search_timeout: SEARCH_TIMEOUT,
            refill_below_percent: REFILL_BELOW_PERCENT,
            request_timeout: REQUEST_TIMEOUT,
        })
    }

    /// Bounds each write request and each poll of its task.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// `request`, failed when Meilisearch has not answered it within the request timeout.
    async fn answered<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, MeiliError>>,
    ) -> Result<T, TaskError> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(answer) => Ok(answer?),
            Err(_) => Err(TaskError::Other(format!(
                "Meilisearch did not answer {what} within {:?}",
                self.request_timeout
            ))),
        }
    }

    /// Sets the share of the surely indexed messages below which the index counts as lost.
    pub fn with_refill_below_percent(mut self, percent: u8) -> Self {
        self.refill_below_percent = u64::from(percent.clamp(1, 100));
        self
    }

    /// Bounds every search's wait for Meilisearch (then 503).
    pub fn with_search_timeout(mut self, timeout: Duration) -> Self {
        self.search_timeout = timeout;
        self
    }

    /// How long a search (or the index check) may wait for Meilisearch.
    pub fn search_timeout(&self) -> Duration {
        self.search_timeout
    }

    pub fn index_name(&self) -> &str {
        &self.index
    }

    /// Creates the index (primary key `id`) if missing and applies the settings, waiting for
    /// both tasks. Does nothing once it has succeeded.
    pub async fn ensure_index(&self) -> anyhow::Result<()> {
        if self.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        self.prepare_index(&self.index).await?;
        self.ready.store(true, Ordering::Release);
        tracing::info!(index = %self.index, "Meilisearch index ready");
        Ok(())
    }

    /// Creates `uid` with our primary key and settings (also used for a reindex's new index).
    pub async fn prepare_index(&self, uid: &str) -> anyhow::Result<()> {
        let task = self
            .answered(
                "creating an index",
                self.client.create_index(uid, Some("id")),
            )
            .await?;
        match self.wait(task).await {
            Ok(()) => {}
            Err(TaskError::Failed(e)) if e.error_code == ErrorCode::IndexAlreadyExists => {}
            Err(e) => return Err(anyhow!("creating index {uid}: {e}")),
        }
        let settings = Settings::new()
            .with_searchable_attributes(["content"])
            .with_filterable_attributes(FILTERABLE)
            .with_sortable_attributes(["created_at"])
            .with_ranking_rules([
                "words",
                "typo",
                "proximity",
                // Before `attribute` (which prefers matches early in the text), so a whole-word
                // match outranks a prefix match, as with the PostgreSQL engine.
                "exactness",
                "attribute",
                "sort",
                "created_at:desc",
            ])
            .with_pagination(PaginationSetting {
                max_total_hits: MAX_TOTAL_HITS,
            });
        let index = self.client.index(uid);
        let task = self
            .answered("applying settings", index.set_settings(&settings))
            .await?;
        self.wait(task)
            .await
            .map_err(|e| anyhow!("applying settings to {uid}: {e}"))
    }

    /// Whether the live index is gone or has lost its settings since it was made ready: a
    /// Meilisearch that came back without its data (the indexer's next write re-creates the
    /// index with default settings, so filtered searches fail and older messages are missing).
    /// Also when it holds fewer than `refill_below_percent` (half by default) of `indexed`, the
    /// messages surely indexed by now (live messages less the outbox's backlog): a server that
    /// started while Meilisearch was empty made a correct but empty index. False before the
    /// index was first made ready (the indexer does that).
    pub async fn index_lost(&self, indexed: u64) -> anyhow::Result<bool> {
        if !self.ready.load(Ordering::Acquire) {
            return Ok(false);
        }
        let filterable = match self
            .client
            .index(&self.index)
            .get_filterable_attributes()
            .await
        {
            Ok(f) => f,
            Err(MeiliError::Meilisearch(e)) if e.error_code == ErrorCode::IndexNotFound => {
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        if FILTERABLE
            .iter()
            .any(|a| !filterable.iter().any(|f| f.as_str() == *a))
        {
            return Ok(true);
        }
        if indexed < MIN_COUNTED {
            return Ok(false);
        }
        let stats = self.client.index(&self.index).get_stats().await?;
        let held = stats.number_of_documents as u64;
        Ok(held.saturating_mul(100) < indexed.saturating_mul(self.refill_below_percent))
    }

    /// Forgets that the index was made ready, so the next [`MeiliEngine::ensure_index`]
    /// creates it and applies the settings again.
    pub fn forget_ready(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Waits for a task; a failed task is an error. The SDK checks `TASK_TIMEOUT` between its
    /// polls, so a poll that is never answered is bounded here too.
    async fn wait(&self, task: TaskInfo) -> Result<(), TaskError> {
        let polls = task.wait_for_completion(&self.client, Some(TASK_POLL), Some(TASK_TIMEOUT));
        let bound = TASK_TIMEOUT + self.request_timeout;
        let done = match tokio::time::timeout(bound, polls).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(TaskError::Other(format!(
                    "Meilisearch did not report a task within {bound:?}"
                )));
            }
        };
        match done {
            Task::Succeeded { .. } => Ok(()),
            Task::Failed { content } => Err(TaskError::Failed(content.error)),
            other => Err(TaskError::Other(format!(
                "task {} unfinished",
                other.get_uid()
            ))),
        }
    }

    /// Adds or replaces `docs` in `uid` and waits until they are searchable.
    pub async fn put_documents(&self, uid: &str, docs: &[MessageDoc]) -> anyhow::Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        let index = self.client.index(uid);
        let task = self
            .answered("adding documents", index.add_or_replace(docs, Some("id")))
            .await?;
        Ok(self.wait(task).await?)
    }

    /// Removes the documents `ids` from `uid` and waits until it is done.
    pub async fn delete_documents(&self, uid: &str, ids: &[i64]) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let index = self.client.index(uid);
        let task = self
            .answered("deleting documents", index.delete_documents(ids))
            .await?;
        Ok(self.wait(task).await?)
    }

    /// Swaps the contents of `a` and `b` (a reindex publishing its new index), then deletes `b`.
    pub async fn swap_and_drop(&self, a: &str, b: &str) -> anyhow::Result<()> {
        let swap = meilisearch_sdk::client::SwapIndexes {
            indexes: (a.to_string(), b.to_string()),
            rename: None,
        };
        let task = self
            .answered("swapping indexes", self.client.swap_indexes([&swap]))
            .await?;
        self.wait(task).await?;
        let index = self.client.index(b);
        let task = self.answered("deleting an index", index.delete()).await?;
        Ok(self.wait(task).await?)
    }

    /// Deletes index `uid` if it exists (an aborted reindex's leftovers).
    pub async fn drop_index(&self, uid: &str) -> anyhow::Result<()> {
        let index = self.client.index(uid);
        let task = self.answered("deleting an index", index.delete()).await?;
        match self.wait(task).await {
            Ok(()) => Ok(()),
            Err(TaskError::Failed(e)) if e.error_code == ErrorCode::IndexNotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The search, filtered on `q.chat_ids` inside Meilisearch.
    pub async fn search(
        &self,
        store: &Store,
        q: &MessageQuery,
    ) -> Result<MessageHits, SearchError> {
        let filter = filter(q);
        let index = self.client.index(&self.index);
        let mut query = index.search();
        query
            .with_query(&q.text)
            .with_filter(&filter)
            .with_page(q.page as usize)
            .with_hits_per_page(q.limit as usize)
            .with_matching_strategy(MatchingStrategies::ALL)
            .with_attributes_to_retrieve(Selectors::Some(&["id"]))
            .with_attributes_to_highlight(Selectors::Some(&["content"]))
            .with_attributes_to_crop(Selectors::Some(&[("content", None)]))
            .with_crop_length(CROP_WORDS)
            .with_highlight_pre_tag(PRE)
            .with_highlight_post_tag(POST)
            .with_show_ranking_score(true);
        let found = match tokio::time::timeout(self.search_timeout, query.execute::<HitId>()).await
        {
            Err(_) => return Err(SearchError::Unavailable("search timed out".into())),
            Ok(Err(MeiliError::Meilisearch(e))) if e.error_code == ErrorCode::IndexNotFound => {
                // Nothing was ever indexed (Meilisearch was down since start-up).
                return Ok(MessageHits::default());
            }
            Ok(Err(e)) => return Err(SearchError::Unavailable(e.to_string())),
            Ok(Ok(found)) => found,
        };
        let total = found.total_hits.unwrap_or(0) as i64;
        let ids: Vec<i64> = found.hits.iter().map(|h| h.result.id).collect();
        let live = store.live_messages(&ids, &q.chat_ids).await?;
        let hits = found
            .hits
            .into_iter()
            .filter_map(|h| {
                let row = live.get(&h.result.id)?;
                let content = h
                    .formatted_result
                    .as_ref()
                    .and_then(|f| f.get("content"))
                    .and_then(|c| c.as_str())
                    .unwrap_or(&row.content);
                Some(MessageHit {
                    message_id: h.result.id,
                    chat_id: row.chat_id,
                    chat_name: row.chat_name.clone(),
                    content: highlight::render(content),
                    sender_id: row.sender_id,
                    sender_username: row.sender_username.clone(),
                    created_at: row.created_at,
                    score: h.ranking_score.unwrap_or(0.0).clamp(0.0, 1.0),
                })
            })
            .collect();
        Ok(MessageHits { hits, total })
    }
}

/// The filter expression: the chat scope always, then the optional filters.
fn filter(q: &MessageQuery) -> String {
    let list = |ids: &[i64]| {
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = vec![
        format!("workspace_id = {}", q.workspace_id),
        format!("chat_id IN [{}]", list(&q.chat_ids)),
    ];
    if let Some(senders) = &q.sender_ids {
        parts.push(format!("sender_id IN [{}]", list(senders)));
    }
    if let Some(from) = q.from {
        parts.push(format!("created_at >= {}", unix_seconds(from)));
    }
    if let Some(until) = q.until {
        parts.push(format!("created_at < {}", unix_seconds(until)));
    }
    parts.join(" AND ")
}

#[derive(Debug, Deserialize)]
struct HitId {
    id: i64,
}

#[derive(Debug, thiserror::Error)]
enum TaskError {
    #[error("task failed: {0}")]
    Failed(meilisearch_sdk::errors::MeilisearchError),
    #[error(transparent)]
    Meili(#[from] MeiliError),
    #[error("{0}")]
    Other(String),
}

/// A live (not deleted) message of a search page, as PostgreSQL has it now.
#[derive(Debug, Clone)]
pub struct LiveMessage {
    pub chat_id: i64,
    pub chat_name: String,
    pub sender_id: i64,
    pub sender_username: String,
    pub content: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// The messages among `ids` that are not deleted and belong to `chat_ids`.
    pub async fn live_messages(
        &self,
        ids: &[i64],
        chat_ids: &[i64],
    ) -> StoreResult<HashMap<i64, LiveMessage>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.id, m.chat_id, c.name, m.sender_id, u.username, m.content, m.created_at \
                 FROM messages m JOIN chats c ON c.id = m.chat_id JOIN users u ON u.id = m.sender_id \
                 WHERE m.id = ANY($1) AND m.chat_id = ANY($2) AND m.deleted_at IS NULL",
            )
            .await?;
        let rows = client.query(&stmt, &[&ids, &chat_ids]).await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get(0),
                    LiveMessage {
                        chat_id: r.get(1),
                        chat_name: r.get(2),
                        sender_id: r.get(3),
                        sender_username: r.get(4),
                        content: r.get(5),
                        created_at: r.get(6),
                    },
                )
            })
            .collect())
    }

    /// The index documents for `ids`: (documents to put, ids to delete — missing or deleted).
    pub async fn message_documents(&self, ids: &[i64]) -> StoreResult<(Vec<MessageDoc>, Vec<i64>)> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT m.id, m.chat_id, c.workspace_id, m.sender_id, c.name, u.username, \
                        m.content, m.created_at \
                 FROM messages m JOIN chats c ON c.id = m.chat_id JOIN users u ON u.id = m.sender_id \
                 WHERE m.id = ANY($1) AND m.deleted_at IS NULL",
            )
            .await?;
        let rows = client.query(&stmt, &[&ids]).await?;
        let docs: Vec<MessageDoc> = rows.iter().map(doc_from_row).collect();
        let live: std::collections::HashSet<i64> = docs.iter().map(|d| d.id).collect();
        let gone = ids
            .iter()
            .copied()
            .filter(|id| !live.contains(id))
            .collect();
        Ok((docs, gone))
    }
}

/// A row of (id, chat_id, workspace_id, sender_id, chat name, username, content, created_at).
pub fn doc_from_row(r: &tokio_postgres::Row) -> MessageDoc {
    MessageDoc {
        id: r.get(0),
        chat_id: r.get(1),
        workspace_id: r.get(2),
        sender_id: r.get(3),
        chat_name: r.get(4),
        sender_username: r.get(5),
        content: r.get(6),
        created_at: unix_seconds(r.get(7)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Meilisearch that accepts connections and never answers (hung, or a black hole behind
    /// a load balancer): every write gives up after the request timeout, so a refill fails and
    /// is retried instead of holding its lock for ever (before: `put_documents` never returned).
    #[tokio::test]
    async fn writes_to_a_silent_meilisearch_give_up_after_the_request_timeout() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", silent.local_addr().expect("addr"));
        // Accepts and holds every connection, reading nothing, answering nothing.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                open.push(socket);
            }
        });
        let engine = MeiliEngine::new(&url, Some("key"), "messages")
            .expect("engine")
            .with_request_timeout(Duration::from_millis(200));
        let doc = MessageDoc {
            id: 1,
            chat_id: 1,
            workspace_id: 1,
            sender_id: 1,
            chat_name: "general".into(),
            sender_username: "alice".into(),
            content: "hello".into(),
            created_at: 0.0,
        };
        let bound = Duration::from_secs(10);
        let put = tokio::time::timeout(bound, engine.put_documents("messages", &[doc])).await;
        let err = put
            .expect("put_documents hung")
            .expect_err("no answer is an error");
        assert!(err.to_string().contains("did not answer"), "{err}");
        let prepared = tokio::time::timeout(bound, engine.prepare_index("messages")).await;
        assert!(prepared.expect("prepare_index hung").is_err());
        held.abort();
    }

    #[test]
    fn filter_scopes_to_chats_first() {
        let q = MessageQuery {
            text: "x".into(),
            workspace_id: 7,
            chat_ids: vec![1, 2],
            sender_ids: Some(vec![3]),
            from: DateTime::from_timestamp(1_704_067_200, 0),
            until: DateTime::from_timestamp(1_704_153_600, 500_000_000),
            page: 1,
            limit: 20,
        };
        assert_eq!(
            filter(&q),
            "workspace_id = 7 AND chat_id IN [1, 2] AND sender_id IN [3] \
             AND created_at >= 1704067200 AND created_at < 1704153600.5"
        );
    }
}
