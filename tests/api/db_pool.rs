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
