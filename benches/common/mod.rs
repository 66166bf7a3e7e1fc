//! Shared by the database benches: a PostgreSQL to run against and the rows they need.
//!
//! By default a bench starts its own cluster from the installed binaries in
//! `/tmp/fechatter-bench-<name>-<pid>` (stopped and removed at the end); with
//! `BENCH_DATABASE_URL` it uses that database instead (it must exist; it is migrated).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use fechatter::embedded_pg::{Durability, EmbeddedPostgres};
use fechatter::store::Store;

/// A migrated database, and the cluster the bench started for it (if any).
pub struct BenchDb {
    pub store: Store,
    /// libpq keyword string of the database.
    pub conn: String,
    pg: Option<(EmbeddedPostgres, PathBuf)>,
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        if let Some((pg, root)) = self.pg.take() {
            pg.stop();
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// `BENCH_DURABILITY=throwaway` runs the bench's own cluster with fsync off; the default is
/// durable (fsync and synchronous commit on, as `fechatter serve` runs it).
pub fn durability() -> Durability {
    match std::env::var("BENCH_DURABILITY").as_deref() {
        Ok("throwaway") => Durability::Throwaway,
        _ => Durability::Durable,
    }
}

/// Starts (or attaches to) the database and migrates it. Call from inside a tokio runtime.
pub async fn database(name: &str, durability: Durability, pool: usize) -> BenchDb {
    let (conn, pg) = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let root = PathBuf::from(format!(
                "/tmp/fechatter-bench-{name}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&root).expect("bench root");
            // The cluster runs as the postgres user when we are root: it must reach the dir.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
                .expect("chmod bench root");
            let pg = EmbeddedPostgres::start(&root.join("pg"), &root.join("run"), 5432, durability)
                .expect("start PostgreSQL");
            let admin = connect(&pg.connection_string("postgres")).await;
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create database");
            (pg.connection_string(name), Some((pg, root)))
        }
    };
    let store = Store::new(
        conn.parse().expect("connection string"),
        pool,
        Duration::from_secs(10),
    )
    .expect("pool");
    store.migrate().await.expect("migrate");
    BenchDb { store, conn, pg }
}

pub async fn connect(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// One user, one workspace, `chats` channels with the user as owner: (user, workspace, chats).
pub async fn seed(store: &Store, tag: &str, chats: usize) -> (i64, i64, Vec<i64>) {
    let c = store.client().await.expect("client");
    let user: i64 = c
        .query_one(
            "INSERT INTO users (email, email_normalized, username, password_hash) \
             VALUES ($1, $1, $2, 'x') RETURNING id",
            &[
                &format!("{tag}-{}@bench.invalid", uuid::Uuid::new_v4()),
                &tag,
            ],
        )
        .await
        .expect("user")
        .get(0);
    let ws: i64 = c
        .query_one(
            "INSERT INTO workspaces (name, owner_id) VALUES ($1, $2) RETURNING id",
            &[&tag, &user],
        )
        .await
        .expect("workspace")
        .get(0);
    c.execute(
        "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
        &[&ws, &user],
    )
    .await
    .expect("workspace member");
    let mut ids = Vec::with_capacity(chats);
    for i in 0..chats {
        let id: i64 = c
            .query_one(
                "INSERT INTO chats (workspace_id, name, kind, created_by) \
                 VALUES ($1, $2, 'channel', $3) RETURNING id",
                &[&ws, &format!("{tag}-{i}"), &user],
            )
            .await
            .expect("chat")
            .get(0);
        c.execute(
            "INSERT INTO chat_members (chat_id, user_id, role) VALUES ($1, $2, 'owner')",
            &[&id, &user],
        )
        .await
        .expect("chat member");
        ids.push(id);
    }
    (user, ws, ids)
}

/// The message text both the room benches and `scripts/pgbench-insert.sql` write (~80 bytes).
pub fn bench_content(n: i64) -> String {
    format!("bench message {n} lorem ipsum dolor sit amet consectetur adipiscing elit sed do")
}
