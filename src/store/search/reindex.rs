//! `fechatter reindex`: rebuilds the configured engine's index from PostgreSQL.
//!
//! The documents go into a fresh index (`<index>_rebuild`) which then swaps places with the
//! live one, so searches keep working during the rebuild. Messages written or changed while it
//! ran are put again after the swap (and the outbox replays anything else; upserts are
//! idempotent). With the PostgreSQL engine `message_search` is rebuilt in place (batches of
//! upserts, then rows of deleted messages removed), so searches keep working meanwhile.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};

use super::meili::{MeiliEngine, doc_from_row};
use crate::config::Config;
use crate::store::Store;

/// Messages read and sent per batch.
const BATCH: i64 = 1000;

/// Rebuilds the search index from PostgreSQL (`fechatter reindex`).
pub async fn reindex(config: &Config, database: &str) -> anyhow::Result<()> {
    let pg: tokio_postgres::Config = database.parse().context("parsing the database URL")?;
    let store = Store::new(pg, 4, Duration::from_secs(10))?;
    store.migrate().await.context("applying migrations")?;
    let client = store.client().await?;
    let live: i64 = client
        .query_one(
            "SELECT count(*) FROM messages WHERE deleted_at IS NULL",
            &[],
        )
        .await?
        .get(0);
    drop(client);
    let bar = ProgressBar::new(live.max(0) as u64);
    bar.set_style(ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} messages ({per_sec}, eta {eta})",
    )?);
    let Some(url) = &config.meili_url else {
        let done = store
            .rebuild_search_table(|n| bar.set_position(n.max(0) as u64))
            .await?;
        bar.finish();
        println!("PostgreSQL search table `message_search` rebuilt: {done} messages.");
        return Ok(());
    };
    let engine = MeiliEngine::new(url, config.meili_master_key.as_deref(), &config.meili_index)?
        .with_request_timeout(std::time::Duration::from_millis(
            config.meili_request_timeout_ms,
        ));
    engine
        .ensure_index()
        .await
        .context("reaching Meilisearch")?;
    let started: DateTime<Utc> = Utc::now();
    let rebuild = format!("{}_rebuild", config.meili_index);
    engine.drop_index(&rebuild).await?;
    engine.prepare_index(&rebuild).await?;
    let max_id = copy_live(&store, &engine, &rebuild, |n| bar.inc(n)).await?;
    bar.finish();
    engine.swap_and_drop(&config.meili_index, &rebuild).await?;
    let changed = catch_up(&store, &engine, max_id, started).await?;
    println!(
        "Meilisearch index `{}` rebuilt: {} messages (+{} changed during the rebuild).",
        config.meili_index,
        bar.position(),
        changed
    );
    Ok(())
}

/// Refills the live Meilisearch index from PostgreSQL in place (a Meilisearch that came back
/// without its data: the index was just made ready again, empty or nearly). Searches work
/// meanwhile and find more as it fills; returns the messages put, or `None` when another node
/// is refilling it already (one refill at a time in a cluster: `SEARCH_REFILL_LOCK`).
pub async fn refill_live(store: &Store, engine: &MeiliEngine) -> anyhow::Result<Option<u64>> {
    let refill = async {
        let started: DateTime<Utc> = Utc::now();
        let mut put = 0_u64;
        let max_id = copy_live(store, engine, engine.index_name(), |n| put += n).await?;
        let changed = catch_up(store, engine, max_id, started).await?;
        anyhow::Ok(put + changed as u64)
    };
    match store
        .exclusively(crate::store::SEARCH_REFILL_LOCK, refill)
        .await?
    {
        Some(done) => done.map(Some),
        None => Ok(None),
    }
}

/// Puts every live message into index `uid`, in id order, `BATCH` at a time (`progress` gets
/// each batch's size); returns the highest id put.
async fn copy_live(
    store: &Store,
    engine: &MeiliEngine,
    uid: &str,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<i64> {
    let mut after = 0_i64;
    loop {
        let client = store.client().await?;
        let rows = client
            .query(
                "SELECT m.id, m.chat_id, c.workspace_id, m.sender_id, c.name, u.username, \
                        m.content, m.created_at \
                 FROM messages m JOIN chats c ON c.id = m.chat_id JOIN users u ON u.id = m.sender_id \
                 WHERE m.id > $1 AND m.deleted_at IS NULL ORDER BY m.id LIMIT $2",
                &[&after, &BATCH],
            )
            .await?;
        drop(client);
        let Some(last) = rows.last() else {
            return Ok(after);
        };
        after = last.get(0);
        let docs: Vec<_> = rows.iter().map(doc_from_row).collect();
        engine.put_documents(uid, &docs).await?;
        progress(docs.len() as u64);
    }
}

/// Writes that raced a copy started at `started` up to `max_id` — newer messages and rows
/// changed since — put again into (or deleted from) the live index; returns how many.
async fn catch_up(
    store: &Store,
    engine: &MeiliEngine,
    max_id: i64,
    started: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let client = store.client().await?;
    let changed: Vec<i64> = client
        .query(
            "SELECT id FROM messages WHERE id > $1 OR updated_at >= $2 OR deleted_at >= $2",
            &[&max_id, &started],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    drop(client);
    for chunk in changed.chunks(BATCH as usize) {
        let (docs, gone) = store.message_documents(chunk).await?;
        engine.put_documents(engine.index_name(), &docs).await?;
        engine.delete_documents(engine.index_name(), &gone).await?;
    }
    Ok(changed.len())
}
