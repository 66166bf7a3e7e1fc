//! Messages persisted per second: the room's group commit vs one INSERT per message, against a
//! real PostgreSQL (its own durable cluster: fsync and synchronous commit on).
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench group_commit
//! BENCH_DURABILITY=throwaway cargo bench --bench group_commit   # fsync off, reported apart
//! BENCH_DATABASE_URL='host=… dbname=…' cargo bench --bench group_commit  # an existing database
//! ```
//!
//! - `room_commit/<R>rooms/<B>`: R chats (1 or 8) each commit batches of B sends (1, 10, 50,
//!   100) concurrently through `fechatter::actors::commit::commit_batch` — the code path of a room's
//!   flush: one transaction, idempotency lookup, one multi-row INSERT … RETURNING, fenced seq
//!   advance, search outbox rows, events serialised. Every send carries an idempotency key, as
//!   clients send them.
//! - `shared_commit/<R>rooms/<B>`: the same R batches of B sends committed in *one* shared
//!   transaction (`fechatter::actors::committer::commit_together`, the committer's code path:
//!   group commit across rooms).
//! - `single_insert/<R>rooms`: the baseline: one autocommit `INSERT INTO messages (chat_id, seq,
//!   sender_id, content, idempotency_key) VALUES (…)` per message, R connections at once.
//! - `room_actor/<R>rooms/<S>`: the real `ChatRoom` actors (started by the real `Hub` on its
//!   arbiters): S concurrent senders per room, each sending `SENDS_PER_SENDER` messages one after
//!   the other (`Apply(Op::Send)`, answered after the commit). The room batches whatever arrived
//!   while its previous commit was in flight, so batches are about S — the server's persisted
//!   messages/s minus HTTP.
//!
//! Throughput is messages persisted (committed) per second.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fechatter::actors::commit::{self, CommitSpec, commit_batch};
use fechatter::actors::committer::commit_together;
use fechatter::actors::hub::{GetRoom, Hub};
use fechatter::actors::indexer::IndexerHandle;
use fechatter::actors::room::{Apply, ChatRoom, Op, OpOutcome};
use fechatter::config::Config;
use fechatter::store::Store;
use futures_util::future::join_all;

const BATCHES: [usize; 4] = [1, 10, 50, 100];
const SHARED_BATCHES: [usize; 2] = [1, 10];
const ROOMS: [usize; 2] = [1, 8];
const SENDERS: [usize; 3] = [10, 50, 100];
const SENDS_PER_SENDER: usize = 4;

/// A chat being written and its last committed seq (one writer at a time, like its room).
struct Chat {
    id: i64,
    seq: AtomicI64,
}

fn sends(user: i64, chat: i64, from_seq: i64, n: usize) -> Vec<Op> {
    (0..n as i64)
        .map(|i| Op::Send {
            sender_id: user,
            content: common::bench_content(from_seq + i + 1),
            idempotency_key: Some(format!("gc-{chat}-{}", from_seq + i + 1)),
        })
        .collect()
}

async fn room_commit(store: &Store, user: i64, chat: &Chat, batch: usize) {
    let base = chat.seq.load(Ordering::Acquire);
    let (last, persisted) = commit_batch(
        store.clone(),
        chat.id,
        base,
        sends(user, chat.id, base, batch),
    )
    .await
    .expect("commit");
    assert_eq!(persisted, batch);
    chat.seq.store(last, Ordering::Release);
}

async fn shared_commit(store: &Store, user: i64, chats: &[Arc<Chat>], batch: usize) {
    let batches = chats
        .iter()
        .map(|chat| {
            let base = chat.seq.load(Ordering::Acquire);
            let spec = CommitSpec {
                store: store.clone(),
                chat_id: chat.id,
                db_orders_writers: false,
                resolve_for: Duration::from_secs(5),
                faults: Default::default(),
                committer: None,
                max_ops: commit::DEFAULT_MAX_OPS,
            };
            (spec, base, sends(user, chat.id, base, batch))
        })
        .collect();
    for (chat, result) in chats.iter().zip(commit_together(batches).await) {
        let done = result.expect("shared commit");
        assert_eq!(done.persisted, batch);
        chat.seq.store(done.last_seq, Ordering::Release);
    }
}

async fn single_insert(store: &Store, user: i64, chat: &Chat) {
    let client = store.client().await.expect("client");
    let stmt = client
        .prepare_cached(
            "INSERT INTO messages (chat_id, seq, sender_id, content, idempotency_key) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .await
        .expect("prepare");
    let seq = chat.seq.fetch_add(1, Ordering::AcqRel) + 1;
    client
        .execute(
            &stmt,
            &[
                &chat.id,
                &seq,
                &user,
                &common::bench_content(seq),
                &format!("gc-{}-{seq}", chat.id),
            ],
        )
        .await
        .expect("insert");
}

/// One sender: `n` sends, each awaited (answered after its commit), as a client does.
async fn send_loop(room: Addr<ChatRoom>, user: i64, key: Arc<AtomicI64>, n: usize) {
    for _ in 0..n {
        let k = key.fetch_add(1, Ordering::Relaxed);
        let op = Op::Send {
            sender_id: user,
            content: common::bench_content(k),
            idempotency_key: Some(format!("ra-{k}")),
        };
        match room.send(Apply { op }).await {
            Ok(Ok(OpOutcome::Sent { created: true, .. })) => {}
            other => panic!("send failed: {other:?}"),
        }
    }
}

fn group_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let durability = common::durability();
    let (db, user, chats) = rt.block_on(async {
        let db = common::database("group_commit", durability, 16).await;
        let total = ROOMS.iter().sum::<usize>()
            * (BATCHES.len() + SHARED_BATCHES.len() + 1 + SENDERS.len());
        let (user, _, ids) = common::seed(&db.store, "gc", total).await;
        let client = common::connect(&db.conn).await;
        let fsync: String = client
            .query_one("SHOW fsync", &[])
            .await
            .expect("fsync")
            .get(0);
        let sync: String = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .expect("synchronous_commit")
            .get(0);
        println!("PostgreSQL: fsync={fsync} synchronous_commit={sync} ({durability:?})");
        (db, user, ids)
    });
    let mut fresh = chats.into_iter().map(|id| {
        Arc::new(Chat {
            id,
            seq: AtomicI64::new(0),
        })
    });
    let store = db.store.clone();

    let mut g = c.benchmark_group("group_commit");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(6));
    for rooms in ROOMS {
        for batch in BATCHES {
            let set: Vec<Arc<Chat>> = fresh.by_ref().take(rooms).collect();
            g.throughput(Throughput::Elements((rooms * batch) as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("room_commit/{rooms}rooms"), batch),
                &batch,
                |b, &batch| {
                    b.to_async(&rt).iter(|| {
                        join_all(
                            set.iter()
                                .map(|chat| room_commit(&store, user, chat, batch)),
                        )
                    })
                },
            );
        }
        for batch in SHARED_BATCHES {
            let set: Vec<Arc<Chat>> = fresh.by_ref().take(rooms).collect();
            g.throughput(Throughput::Elements((rooms * batch) as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("shared_commit/{rooms}rooms"), batch),
                &batch,
                |b, &batch| {
                    b.to_async(&rt)
                        .iter(|| shared_commit(&store, user, &set, batch))
                },
            );
        }
        let set: Vec<Arc<Chat>> = fresh.by_ref().take(rooms).collect();
        g.throughput(Throughput::Elements(rooms as u64));
        g.bench_function(format!("single_insert/{rooms}rooms"), |b| {
            b.to_async(&rt)
                .iter(|| join_all(set.iter().map(|chat| single_insert(&store, user, chat))))
        });
    }
    // The real rooms, in an actix system of their own (the server's runtime model).
    let system = actix::System::new();
    let key = Arc::new(AtomicI64::new(0));
    let hub = system.block_on(async {
        let config = Config::from_args(["--room-idle-secs", "3600"]).expect("config");
        let store = Store::new(
            db.conn.parse().expect("connection string"),
            16,
            Duration::from_secs(10),
        )
        .expect("pool");
        Hub::new(
            store,
            Default::default(),
            IndexerHandle::default(),
            &config,
            Default::default(),
            None,
        )
        .start()
    });
    for rooms in ROOMS {
        for senders in SENDERS {
            let set: Vec<i64> = fresh.by_ref().take(rooms).map(|c| c.id).collect();
            let addrs: Vec<Addr<ChatRoom>> = system.block_on(async {
                let mut addrs = Vec::new();
                for chat_id in &set {
                    addrs.push(hub.send(GetRoom { chat_id: *chat_id }).await.expect("hub"));
                }
                addrs
            });
            let per_iter = rooms * senders * SENDS_PER_SENDER;
            g.throughput(Throughput::Elements(per_iter as u64));
            g.bench_with_input(
                BenchmarkId::new(format!("room_actor/{rooms}rooms"), senders),
                &senders,
                |b, &senders| {
                    b.iter_custom(|iters| {
                        let started = std::time::Instant::now();
                        for _ in 0..iters {
                            system.block_on(join_all(addrs.iter().flat_map(|room| {
                                (0..senders).map(|_| {
                                    send_loop(room.clone(), user, key.clone(), SENDS_PER_SENDER)
                                })
                            })));
                        }
                        started.elapsed()
                    })
                },
            );
        }
    }
    g.finish();
    drop(store);
    rt.block_on(async move { drop(db) });
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
