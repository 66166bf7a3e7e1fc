//! The database pool: a pooled connection outlives the runtime of the thread that opened it.

use std::time::Duration;

use fechatter::store::Store;

use crate::common::fresh_database;

/// A connection opened on a runtime that then ends (an HTTP worker's, when the server stops)
/// still serves queries elsewhere. Before, its socket and driver task lived on that runtime
/// and died with it: presence's `last_seen` writes during a graceful stop failed with
/// "connection closed".
#[actix_web::test]
async fn a_connection_outlives_the_runtime_that_opened_it() {
    let database = fresh_database().await;
    let pg: tokio_postgres::Config = database.parse().expect("database config");
    let store = Store::new(pg, 1, Duration::from_secs(5)).expect("pool");
    let opener = store.clone();
    // A thread with its own runtime opens the pool's only connection and hands it over; the
    // runtime ends with the thread.
    let client = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let client = opener.client().await.expect("open a connection");
                client
                    .query_one("SELECT 1", &[])
                    .await
                    .expect("query there");
                client
            })
    })
    .join()
    .expect("opener thread");
    let row = tokio::time::timeout(Duration::from_secs(10), client.query_one("SELECT 2", &[]))
        .await
        .expect("the query hangs")
        .expect("the connection died with the runtime that opened it");
    assert_eq!(row.get::<_, i32>(0), 2);
}

/// `Store::exclusively` (one node refills a lost search index at a time): while one caller
/// holds the lock another (another node's store on the same database) is told so and does not
/// run its work; a finished holder released it, and so does one whose future was dropped
/// mid-way — its connection closes rather than going back to the pool holding the lock.
#[actix_web::test]
async fn an_exclusive_section_runs_once_at_a_time_and_always_releases() {
    const KEY: i64 = 0x7465_7374;
    let database = fresh_database().await;
    let pg: tokio_postgres::Config = database.parse().expect("database config");
    let node_a = Store::new(pg.clone(), 2, Duration::from_secs(5)).expect("pool");
    let node_b = Store::new(pg, 2, Duration::from_secs(5)).expect("pool");

    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let (leave_tx, leave_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = {
        let node_a = node_a.clone();
        tokio::spawn(async move {
            node_a
                .exclusively(KEY, async move {
                    let _ = entered_tx.send(());
                    let _ = leave_rx.await;
                    "a's work"
                })
                .await
        })
    };
    entered_rx.await.expect("a entered");
    let mut ran = false;
    let refused = node_b
        .exclusively(KEY, async { ran = true })
        .await
        .expect("query");
    assert!(refused.is_none() && !ran, "b ran while a held the lock");
    let _ = leave_tx.send(());
    let done = holder.await.expect("task").expect("query");
    assert_eq!(done, Some("a's work"));
    assert_eq!(
        node_b.exclusively(KEY, async { 1 }).await.expect("query"),
        Some(1),
        "a finished and released it"
    );

    // A holder dropped mid-way (its task cancelled) frees the lock too.
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let cancelled = {
        let node_a = node_a.clone();
        tokio::spawn(async move {
            node_a
                .exclusively(KEY, async move {
                    let _ = entered_tx.send(());
                    std::future::pending::<()>().await
                })
                .await
        })
    };
    entered_rx.await.expect("a entered again");
    cancelled.abort();
    let _ = cancelled.await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if node_b
            .exclusively(KEY, async {})
            .await
            .expect("query")
            .is_some()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a dropped holder kept the lock"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
