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

/// Deletes the documents `ids` from `index` in Meilisearch and waits until the task is done.
async fn delete_documents(m: &crate::common::meili::Meili, index: &str, ids: &[i64]) {
    let api = reqwest::Client::new();
    let task: serde_json::Value = api
        .post(format!("{}/indexes/{index}/documents/delete-batch", m.url))
        .bearer_auth(&m.key)
        .json(ids)
        .send()
        .await
        .expect("delete documents")
        .json()
        .await
        .expect("task");
    let uid = task["taskUid"].as_i64().expect("taskUid");
    let started = Instant::now();
    loop {
        let got: serde_json::Value = api
            .get(format!("{}/tasks/{uid}", m.url))
            .bearer_auth(&m.key)
            .send()
            .await
            .expect("get the task")
            .json()
            .await
            .expect("task");
        if got["status"] == "succeeded" {
            return;
        }
        assert!(
            got["status"] != "failed" && started.elapsed() < DEADLINE,
            "deleting documents: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A partial loss (a third of the documents gone from Meilisearch) is refilled when
/// `FECHATTER_MEILI_REFILL_BELOW_PERCENT` asks for more than what is left (before: a fixed
/// half, so a loss of a third stayed until `fechatter reindex`).
#[actix_web::test]
async fn a_partial_loss_is_refilled_when_the_threshold_asks() {
    let Some((m, mut config)) = watched_meili() else {
        return;
    };
    config.meili_refill_below_percent = 90;
    let index = config.meili_index.clone();
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let ws = app.create_workspace(&alice, "acme").await;
    let chat = app.create_channel(&alice, ws, "general").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        let sent = app.send(&alice, chat, &format!("zephyr number {i}")).await;
        ids.push(sent["id"].as_i64().expect("id"));
    }
    until(&app, &alice, ws, "zephyr", |r| {
        r.status == 200 && r.body["total"] == 30
    })
    .await;

    delete_documents(m, &index, &ids[..10]).await;
    until(&app, &alice, ws, "zephyr", |r| {
        r.status == 200 && r.body["total"] == 30
    })
    .await;
    app.stop().await;
}
