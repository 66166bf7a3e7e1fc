//! `SearchIndexer`: drains the search outbox into the configured engine (Meilisearch, or the
//! PostgreSQL engine's `message_search` table), in batches, behind the write.
//!
//! State: the store, the engine, and whether a drain is running. Chat rooms wake it through an
//! [`IndexerHandle`] after committing messages (with their outbox rows, in the same
//! transaction); a timer wakes it every second too, so after Meilisearch was down (or this node
//! crashed between commit and indexing) it catches up from PostgreSQL on its own. What arrives
//! during a drain is taken by the next one, so batches grow with the write rate.
//!
//! Delivery: at least once. A batch's outbox rows are deleted only after Meilisearch confirmed
//! the batch's tasks (PostgreSQL: in the transaction that wrote `message_search`); a failed
//! batch stays and is retried. Replays are harmless: a document or row is upserted by primary
//! key from the message's current row, or deleted when the message is gone.

use std::time::Duration;

use actix::prelude::*;

use crate::store::Store;
use crate::store::search::Engine;
use crate::store::search::meili::MeiliEngine;

/// Outbox rows taken per batch.
const BATCH: i64 = 500;
/// How often the outbox is checked without being woken.
const TICK: Duration = Duration::from_secs(1);
/// Longest drain: an engine that stops answering mid-request must not wedge the indexer
/// (the unfinished batch rolls back and is retried).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// A drain future is running (only one at a time).
    draining: bool,
    /// Woken during a drain: drain again when it ends.
    again: bool,
    /// The last drain failed (logged once per outage, not every second).
    failing: bool,
}

impl SearchIndexer {
    /// Starts the indexer on the current arbiter.
    pub fn start(store: Store, engine: Engine) -> IndexerHandle {
        let addr = Actor::start(SearchIndexer {
            store,
            engine,
            draining: false,
            again: false,
            failing: false,
        });
        IndexerHandle { addr: Some(addr) }
    }

    fn kick(&mut self, ctx: &mut Context<Self>) {
        if self.draining {
            self.again = true;
            return;
        }
        self.draining = true;
        let store = self.store.clone();
        let engine = self.engine.clone();
        async move {
            tokio::time::timeout(DRAIN_TIMEOUT, drain(&store, &engine))
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("indexing timed out")))
        }
        .into_actor(self)
        .map(|result, act, ctx| {
            act.draining = false;
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
        self.kick(ctx);
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
async fn drain(store: &Store, engine: &Engine) -> anyhow::Result<()> {
    match engine {
        Engine::Meili(m) => drain_meili(store, m).await,
        Engine::Postgres => loop {
            match store.drain_outbox_into_table(BATCH).await? {
                Some(n) if n as i64 == BATCH => continue,
                _ => return Ok(()),
            }
        },
    }
}

/// Drains the outbox into Meilisearch.
async fn drain_meili(store: &Store, engine: &MeiliEngine) -> anyhow::Result<()> {
    // Also how settings reach a Meilisearch that was down at start-up.
    engine.ensure_index().await?;
    loop {
        let taken = store
            .drain_outbox(BATCH, |ids| async move {
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
            .await?;
        match taken {
            Some(n) if n as i64 == BATCH => continue,
            _ => return Ok(()),
        }
    }
}
