//! `SearchIndexer`: drains the search outbox into the configured engine (Meilisearch, or the
//! PostgreSQL engine's `message_search` table), in batches, behind the write.
//!
//! State: the store, the engine, its bounds (`Search::indexer_bounds`, from the
//! configuration), the next batch's size, and whether a drain is running. Chat rooms wake it
//! through an [`IndexerHandle`] after committing messages (with their outbox rows, in the same
//! transaction); a timer wakes it every second too, so after Meilisearch was down (or this node
//! crashed between commit and indexing) it catches up from PostgreSQL on its own. What arrives
//! during a drain is taken by the next one, so batches grow with the write rate.
//!
//! Progress: each drain transaction runs under the indexer's own statement timeout
//! (`FECHATTER_INDEXER_STATEMENT_TIMEOUT_MS`); a batch that overruns it rolls back and is retried
//! at half the size, and the size grows back by a quarter per full batch, so a batch too costly
//! to finish in time cannot be retried unchanged forever (RELIABILITY.md, "The search indexer
//! always makes progress").
//!
//! Delivery: at least once. A batch's outbox rows are deleted only after Meilisearch confirmed
//! the batch's tasks (PostgreSQL: in the transaction that wrote `message_search`); a failed
//! batch stays and is retried. Replays are harmless: a document or row is upserted by primary
//! key from the message's current row, or deleted when the message is gone.

use std::time::Duration;

use actix::prelude::*;

use crate::store::Store;
use crate::store::search::meili::MeiliEngine;
use crate::store::search::outbox::{DrainError, DrainLimits};
use crate::store::search::{Engine, IndexerBounds};

/// How often the outbox is checked without being woken.
const TICK: Duration = Duration::from_secs(1);
/// Longest drain: an engine that stops answering mid-request must not wedge the indexer
/// (the unfinished batch rolls back and is retried).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The size of the next batch: up to the configured most, halved when a batch overran the
/// statement timeout, grown back by a quarter per full batch that did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchSize {
    max: i64,
    now: i64,
}

impl BatchSize {
    fn new(max: i64) -> Self {
        let max = max.max(1);
        BatchSize { max, now: max }
    }

    /// Halves the size; false when it already was one row (nothing smaller to try).
    fn shrink(&mut self) -> bool {
        if self.now <= 1 {
            return false;
        }
        self.now /= 2;
        true
    }

    fn grow(&mut self) {
        self.now = (self.now + (self.now / 4).max(1)).min(self.max);
    }
}

/// Handle the chat rooms use to tell the indexer that new outbox rows are committed.
/// The default handle (no indexer attached yet) does nothing.
#[derive(Clone, Default)]
pub struct IndexerHandle {
    addr: Option<Addr<SearchIndexer>>,
}

impl IndexerHandle {
    /// New outbox rows were committed: index them soon. Never blocks. A full mailbox already
    /// holds a wake-up, and a drain in progress runs again when it ends, so dropping is fine.
    pub fn notify(&self) {
        if let Some(addr) = &self.addr {
            let _ = addr.try_send(Wake);
        }
    }
}

/// Index what the outbox holds.
#[derive(Message)]
#[rtype(result = "()")]
struct Wake;

pub struct SearchIndexer {
    store: Store,
    engine: Engine,
    bounds: IndexerBounds,
    /// The next batch's size (carried across drains; a drain works on a copy).
    batch: BatchSize,
    /// A drain future is running (only one at a time).
    draining: bool,
    /// Woken during a drain: drain again when it ends.
    again: bool,
    /// The last drain failed (logged once per outage, not every second).
    failing: bool,
}

impl SearchIndexer {
    /// Starts the indexer on the current arbiter, feeding `engine` within `bounds`.
    pub fn start(store: Store, engine: Engine, bounds: IndexerBounds) -> IndexerHandle {
        let addr = Actor::start(SearchIndexer {
            store,
            engine,
            bounds,
            batch: BatchSize::new(bounds.batch),
            draining: false,
            again: false,
            failing: false,
        });
        IndexerHandle { addr: Some(addr) }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        let bounds = self.bounds;
        if self.draining {
            self.again = true;
            return;
        }
        self.draining = true;
        let store = self.store.clone();
        let engine = self.engine.clone();
        let mut batch = self.batch;
        async move {
            let drained = drain(&store, &engine, bounds.limits, &mut batch);
            let result = tokio::time::timeout(DRAIN_TIMEOUT, drained)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("indexing timed out")));
            (result, batch)
        }
        .into_actor(self)
        .map(move |(result, batch), act, ctx| {
            act.draining = false;
            if batch.now < batch.max && act.batch.now == act.batch.max {
                tracing::warn!(
                    batch = batch.now,
                    timeout_ms = bounds.limits.statement_timeout.as_millis() as u64,
                    "search indexing batches overran the indexer's statement timeout; smaller batches now"
                );
            } else if batch.now == batch.max && act.batch.now < act.batch.max {
                tracing::info!(batch = batch.now, "search indexing batches back to full size");
            }
            act.batch = batch;
            match result {
                Err(e) => {
                    // Retried on the next tick; nothing is lost.
                    if !act.failing {
                        tracing::warn!(error = %e, "search indexing failed; retrying every second");
                    }
                    act.failing = true;
                    act.again = false;
                }
                Ok(()) if act.failing => {
                    tracing::info!("search indexing recovered");
                    act.failing = false;
                }
                Ok(()) => {}
            }
            if std::mem::take(&mut act.again) {
                act.kick(ctx);
            }
        })
        .spawn(ctx);
    }
}

impl Actor for SearchIndexer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
        ctx.run_interval(TICK, |act, ctx| act.kick(ctx));
    }
}

impl Handler<Wake> for SearchIndexer {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.kick(ctx);
    }
}

/// Drains the outbox batch by batch until it is empty (or another node holds the drain lock).
/// A batch that overran the statement timeout was rolled back whole: it is retried at once at
/// half the size, so a backlog of rows too costly to index 500 at a time still drains (a single
/// row that overruns fails the drain, retried on the next tick).
async fn drain(
    store: &Store,
    engine: &Engine,
    limits: DrainLimits,
    batch: &mut BatchSize,
) -> anyhow::Result<()> {
    if let Engine::Meili(m) = engine {
        // Also how settings reach a Meilisearch that was down at start-up.
        m.ensure_index().await?;
    }
    loop {
        let size = batch.now;
        let taken = match engine {
            Engine::Postgres => store.drain_outbox_into_table(size, limits).await,
            Engine::Meili(m) => drain_meili(store, m, size, limits).await,
        };
        match taken {
            Ok(Some(n)) if n as i64 == size => batch.grow(),
            Ok(_) => return Ok(()),
            Err(DrainError::TimedOut) if batch.shrink() => {
                tracing::debug!(
                    from = size,
                    to = batch.now,
                    "indexer batch timed out; halved"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One batch into Meilisearch.
async fn drain_meili(
    store: &Store,
    engine: &MeiliEngine,
    size: i64,
    limits: DrainLimits,
) -> Result<Option<usize>, DrainError> {
    store
        .drain_outbox(size, limits, |ids| async move {
            let (docs, gone) = store.message_documents(&ids).await?;
            engine.put_documents(engine.index_name(), &docs).await?;
            engine.delete_documents(engine.index_name(), &gone).await?;
            tracing::debug!(
                upserted = docs.len(),
                deleted = gone.len(),
                "indexed a batch"
            );
            Ok(())
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::BatchSize;

    #[test]
    fn batch_halves_to_one_and_grows_back_to_the_most() {
        let mut b = BatchSize::new(500);
        let mut sizes = vec![b.now];
        while b.shrink() {
            sizes.push(b.now);
        }
        assert_eq!(sizes, [500, 250, 125, 62, 31, 15, 7, 3, 1]);
        let mut grown = 0;
        while b.now < b.max {
            b.grow();
            grown += 1;
        }
        assert_eq!(b.now, 500);
        assert!(grown < 40, "{grown} full batches to grow back");
        assert_eq!(BatchSize::new(0).now, 1);
    }
}
