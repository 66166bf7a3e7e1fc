//! Search latency on the PostgreSQL engine (ignored by default: it loads 100k–1M messages).
//!
//! ```sh
//! SEARCH_BENCH_MESSAGES=100000 cargo nextest run --run-ignored only search_latency --no-capture
//! SEARCH_BENCH_MESSAGES=1000000 cargo nextest run --run-ignored only search_latency --no-capture
//! ```
//!
//! One user is a member of 20 channels holding all the messages (the worst case: the whole
//! table is in scope). Messages are 6–15 words, 80% from a 120-word chat vocabulary (skewed
//! towards its first words) and 20% rare tokens `tokNNNNN`. Each query below runs 50 times (`SEARCH_BENCH_RUNS`)
//! through `POST /api/search/messages` (end to end, over HTTP); the test prints p50/p99.

use std::time::Instant;

use serde_json::json;

use crate::common::{spawn_app_with, test_config};

const VOCABULARY: &str = "meeting project deadline status update release bug fix deploy review \
    team lunch coffee plan sprint demo customer issue ticket merge branch test build server \
    database query index search message chat channel design draft document report weekly daily \
    budget cost price invoice order payment account login password email phone call video slack \
    calendar schedule today tomorrow monday friday morning afternoon evening week month quarter \
    goal target metric dashboard chart graph data analysis insight idea proposal feedback comment \
    question answer help support urgent important priority blocker risk launch marketing sales \
    product feature roadmap backlog story task estimate hours days late early quick short long \
    great thanks please sorry hello everyone anyone someone office remote home travel flight hotel \
    train taxi weather rain sunny holiday vacation birthday party cake pizza";

const QUERIES: &[(&str, &str)] = &[
    ("common word", "meeting"),
    ("two words", "project deadline"),
    ("phrase", "\"status update\""),
    ("exclusion", "release -bug"),
    ("rare token", "tok4242"),
    ("prefix fallback", "deadl"),
];

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[actix_web::test]
#[ignore = "benchmark; see the module docs"]
async fn search_latency_postgres() {
    let n: i64 = std::env::var("SEARCH_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let mut config = test_config(&[]);
    config.meili_url = None;
    config.meili_master_key = None;
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let ws = app.create_workspace(&alice, "bench").await;
    let mut chats = Vec::new();
    for i in 0..20 {
        chats.push(app.create_channel(&alice, ws, &format!("bench-{i}")).await);
    }

    let loading = Instant::now();
    let c = app.state.store.client().await.expect("db");
    let words: Vec<&str> = VOCABULARY.split_whitespace().collect();
    c.execute(
        "INSERT INTO messages (chat_id, seq, sender_id, content, created_at) \
         SELECT ($1::bigint[])[1 + g % array_length($1, 1)], g, $2, w.content, \
                now() - make_interval(secs => g) \
         FROM generate_series(1, $3::bigint) g, \
         LATERAL (SELECT string_agg( \
                    CASE WHEN random() < 0.8 \
                         THEN ($4::text[])[1 + floor(power(random(), 2) * array_length($4, 1))::int] \
                         ELSE 'tok' || floor(random() * 100000)::int END, ' ') AS content \
                  FROM generate_series(1, 6 + (g % 10)::int + 0 * g) k) w",
        &[&chats, &alice.id, &n, &words],
    )
    .await
    .expect("load messages");
    c.execute(
        "UPDATE chats SET last_seq = $2 WHERE id = ANY($1)",
        &[&chats, &n],
    )
    .await
    .expect("seqs");
    c.batch_execute("VACUUM ANALYZE messages")
        .await
        .expect("analyze");
    // What the indexer does behind sends, all at once (the messages bypassed the rooms).
    app.state
        .store
        .rebuild_search_table(|_| {})
        .await
        .expect("search table");
    println!("loaded {n} messages in {:.1?}", loading.elapsed());
    if let Ok(sql) = std::env::var("SEARCH_BENCH_EXPLAIN") {
        for stmt in sql.split(";;") {
            let sql = stmt.replace("$CHATS", &format!("{chats:?}").replace(['[', ']'], ""));
            for r in c
                .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"))
                .await
                .expect("explain")
            {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = r {
                    println!("{}", row.get(0).unwrap_or(""));
                }
            }
        }
    }

    let runs: usize = std::env::var("SEARCH_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let mut all = Vec::new();
    for (label, q) in QUERIES {
        let mut times = Vec::with_capacity(runs);
        let mut total = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let r = app
                .post(
                    "/api/search/messages",
                    &alice.token,
                    json!({"query": q, "workspace_id": ws}),
                )
                .await
                .ok(200);
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            total = r["total"].as_i64().expect("total");
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{n} messages  {label:<16} {q:<20} matches {total:>7}  p50 {:>7.1} ms  p99 {:>7.1} ms",
            percentile(&times, 0.5),
            percentile(&times, 0.99)
        );
        all.extend(times);
    }
    all.sort_by(f64::total_cmp);
    println!(
        "{n} messages  all queries: p50 {:.1} ms  p99 {:.1} ms ({} searches)",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.len()
    );
}
