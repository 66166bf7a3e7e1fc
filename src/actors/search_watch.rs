//! `SearchWatch` (Meilisearch only): notices a Meilisearch that came back without its data and
//! restores the index. Every `FECHATTER_MEILI_CHECK_SECS` it asks whether the live index still
//! exists with its filterable attributes and holds at least half of the messages surely
//! indexed by now (`MeiliEngine::index_lost`; the live count comes from the chats' kept
//! counts, less the outbox's backlog); when not — deleted, re-created with default settings
//! by the indexer's next write after an empty restart, or created empty by a server started
//! meanwhile — it applies the index and settings again and refills the index in place from
//! PostgreSQL (`refill_live`). Searches answer meanwhile and find more as it fills; the outbox
//! keeps feeding new writes. In a cluster every node notices the loss, but one refills at a time
//! (`SEARCH_REFILL_LOCK`, an advisory lock): the others skip while it holds it.

use std::time::Duration;

use actix::prelude::*;

use crate::store::Store;
use crate::store::search::meili::MeiliEngine;
use crate::store::search::refill_live;

pub struct SearchWatch {
    store: Store,
    engine: MeiliEngine,
    every: Duration,
    /// A check or refill is running (the next tick skips).
    busy: bool,
}

impl SearchWatch {
    /// Starts the watch; `every` zero means never.
    pub fn start(store: Store, engine: MeiliEngine, every: Duration) -> Option<Addr<Self>> {
        (!every.is_zero()).then(|| {
            SearchWatch {
                store,
                engine,
                every,
                busy: false,
            }
            .start()
        })
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let (store, engine) = (self.store.clone(), self.engine.clone());
        ctx.spawn(
            async move { restore_if_lost(&store, &engine).await }
                .into_actor(self)
                .map(|_, act, _| act.busy = false),
        );
    }
}

impl Actor for SearchWatch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.every, |act, ctx| act.check(ctx));
    }
}

/// One check: restores the index when it was lost. Errors (Meilisearch down) wait for the
/// next check; the indexer's own retries cover the writes meanwhile.
async fn restore_if_lost(store: &Store, engine: &MeiliEngine) {
    let indexed = match (store.live_message_total().await, store.outbox_len().await) {
        (Ok(live), Ok(backlog)) => live.saturating_sub(backlog).max(0) as u64,
        // The database is down: check the index itself only.
        _ => 0,
    };
    // Bounded like a search (`FECHATTER_SEARCH_TIMEOUT_MS`): a hung Meilisearch must not hold
    // the watch (the next tick checks again).
    match tokio::time::timeout(engine.search_timeout(), engine.index_lost(indexed)).await {
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "Meilisearch index check failed"),
        Err(_) => tracing::debug!("Meilisearch index check timed out"),
        Ok(Ok(true)) => {
            tracing::warn!(index = %engine.index_name(),
                "Meilisearch lost the index or its settings; restoring it from PostgreSQL");
            engine.forget_ready();
            if let Err(e) = engine.ensure_index().await {
                tracing::warn!(error = %e, "could not re-create the Meilisearch index");
                return;
            }
            match refill_live(store, engine).await {
                Ok(Some(n)) => tracing::info!(messages = n, "Meilisearch index restored"),
                Ok(None) => tracing::info!("another node is restoring the Meilisearch index"),
                Err(e) => tracing::warn!(error = %e, "Meilisearch refill failed; retrying"),
            }
        }
    }
}
