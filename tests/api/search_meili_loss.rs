//! A Meilisearch that loses its data: the server notices (`SearchWatch`) and refills the index
//! from PostgreSQL, so searches filter again and find the messages written before the loss.

use std::time::{Duration, Instant};

use crate::common::meili::meili;
use crate::common::{Resp, TestApp, TestUser, spawn_app_on, spawn_app_with, test_config};

/// Longest wait for the index to catch up (the check runs every second here).
const DEADLINE: Duration = Duration::from_secs(30);

/// Polls a search for `query` in `ws` until its answer satisfies `done`; fails after the
/// deadline with the last answer.
async fn until(app: &TestApp, user: &TestUser, ws: i64, query: &str, done: impl Fn(&Resp) -> bool) {
    let r = app.search_until(user, ws, query, DEADLINE, &done).await;
    assert!(
        done(&r),
        "search {query:?}: last answer {} {}",
        r.status,
        r.body
    );
}

/// The search found exactly the messages `want` (sorted).
fn found(r: &Resp, want: &[i64]) -> bool {
    let mut ids: Vec<i64> = r.body["results"]
        .as_array()
        .map(|a| a.iter().filter_map(|h| h["message_id"].as_i64()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    r.status == 200 && ids == want
}

/// The run's Meilisearch and a configuration on a fresh index of it, checked every second.
fn watched_meili() -> Option<(
    &'static crate::common::meili::Meili,
    fechatter::config::Config,
)> {
    let m = meili()?;
    let mut config = test_config(&["--meili-check-secs", "1"]);
    config.meili_url = Some(m.url.clone());
    config.meili_master_key = Some(m.key.clone());
    config.meili_index = format!("t_{}", uuid::Uuid::new_v4().simple());
    Some((m, config))
}

/// Deletes `index` in Meilisearch and waits until it is gone.
async fn delete_index(m: &crate::common::meili::Meili, index: &str) {
    let api = reqwest::Client::new();
    let deleted = api
        .delete(format!("{}/indexes/{index}", m.url))
        .bearer_auth(&m.key)
        .send()
        .await
        .expect("delete the index");
    assert_eq!(deleted.status(), 202, "{:?}", deleted.text().await);
    let started = Instant::now();
    loop {
        let got = api
            .get(format!("{}/indexes/{index}", m.url))
            .bearer_auth(&m.key)
            .send()
            .await
            .expect("get the index");
        if got.status() == 404 {
            return;
        }
        assert!(started.elapsed() < DEADLINE, "the index was not deleted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The index deleted under the server (as after Meilisearch restarts on an empty data
/// directory): the indexer's next write re-creates it with default settings — filtered
/// searches fail, older messages are gone — until the watch re-applies the settings and
/// refills it (before: never, without `fechatter reindex`).
#[actix_web::test]
async fn a_lost_meilisearch_index_is_restored_from_postgres() {
    let Some((m, config)) = watched_meili() else {
        return;
    };
    let index = config.meili_index.clone();
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let ws = app.create_workspace(&alice, "acme").await;
    let chat = app.create_channel(&alice, ws, "general").await;
    let before = app.send(&alice, chat, "aurora before the loss").await["id"]
        .as_i64()
        .expect("id");
    until(&app, &alice, ws, "aurora", |r| found(r, &[before])).await;

    delete_index(m, &index).await;
    let after = app.send(&alice, chat, "aurora after the loss").await["id"]
        .as_i64()
        .expect("id");
    until(&app, &alice, ws, "aurora", |r| found(r, &[before, after])).await;
    app.stop().await;
}

/// A server started while Meilisearch is empty makes a correct, empty index: the watch sees it
/// holds fewer than half of the messages already indexed (the chats' live counts) and refills
/// it (before: the older messages stayed unsearchable until `fechatter reindex`).
#[actix_web::test]
async fn a_server_started_on_an_emptied_meilisearch_refills_it() {
    let Some((m, config)) = watched_meili() else {
        return;
    };
    let index = config.meili_index.clone();
    let app = spawn_app_with(config.clone()).await;
    let alice = app.register("alice").await;
    let ws = app.create_workspace(&alice, "acme").await;
    let chat = app.create_channel(&alice, ws, "general").await;
    for i in 0..30 {
        app.send(&alice, chat, &format!("borealis number {i}"))
            .await;
    }
    until(&app, &alice, ws, "borealis", |r| {
        r.status == 200 && r.body["total"] == 30
    })
    .await;
    app.stop().await;

    delete_index(m, &index).await;
    let again = spawn_app_on(config, app.database.clone()).await;
    until(&again, &alice, ws, "borealis", |r| {
        r.status == 200 && r.body["total"] == 30
    })
    .await;
    again.stop().await;
}
