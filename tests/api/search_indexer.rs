//! The search indexer always makes progress: a backlog whose full batch cannot be indexed
//! within the indexer's statement timeout still drains (the indexer retries smaller batches
//! instead of the same one forever), and search then finds every message. RELIABILITY.md,
//! "The search indexer always makes progress".
//!
//! Rows are made costly to index by a trigger on `message_search` that sleeps per row (a
//! stand-in for a slow disk or a long GIN pending-list merge); the backlog is built while the
//! test holds the indexer's drain lock, so it arrives as one batch.

use std::time::{Duration, Instant};

use fechatter::store::search::outbox::DRAIN_LOCK;
use serde_json::json;

use crate::common::{spawn_app_with, test_config};

const DEADLINE: Duration = Duration::from_secs(30);
/// Messages in the backlog.
const BACKLOG: usize = 100;
/// The indexer's statement timeout in this test, and what indexing one row costs: a batch of
/// more than 50 rows cannot finish in time, so the first (of all 100) times out.
const TIMEOUT_MS: &str = "200";
const ROW_COST_SECS: f64 = 0.004;

#[actix_web::test]
async fn a_backlog_too_costly_for_one_batch_still_drains() {
    let app = spawn_app_with(test_config(&["--indexer-statement-timeout-ms", TIMEOUT_MS])).await;
    let owner = app.register("owner").await;
    let ws = app.create_workspace(&owner, "acme").await;
    let chat = app.create_channel(&owner, ws, "general").await;

    // Hold the drain lock (as another node draining would): the outbox only grows.
    let lock = app.state.store.client().await.expect("db");
    lock.execute("SELECT pg_advisory_lock($1)", &[&DRAIN_LOCK])
        .await
        .expect("lock");
    for i in 0..BACKLOG {
        app.send(&owner, chat, &format!("backlogged note {i}"))
            .await;
    }
    assert_eq!(
        app.state.store.outbox_len().await.expect("outbox"),
        BACKLOG as i64
    );
    lock.batch_execute(&format!(
        "CREATE FUNCTION costly_row() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep({ROW_COST_SECS}); RETURN NEW; END $$; \
         CREATE TRIGGER costly_row BEFORE INSERT ON message_search \
         FOR EACH ROW EXECUTE FUNCTION costly_row();"
    ))
    .await
    .expect("trigger");
    lock.execute("SELECT pg_advisory_unlock($1)", &[&DRAIN_LOCK])
        .await
        .expect("unlock");
    drop(lock);
    app.state.search.indexer().notify();

    // A batch of all 100 rows times out every time; only smaller ones can drain it.
    let started = Instant::now();
    loop {
        let left = app.state.store.outbox_len().await.expect("outbox");
        if left == 0 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{left} of {BACKLOG} outbox rows still unindexed after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = app
        .post(
            "/api/search/messages",
            &owner.token,
            json!({"query": "backlogged", "workspace_id": ws}),
        )
        .await
        .ok(200);
    assert_eq!(r["total"], BACKLOG as i64, "{r}");

    // Sends kept working throughout, and still do.
    app.send(&owner, chat, "after the catch-up").await;
}
