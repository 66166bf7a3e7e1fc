//! Search: the same behavioural tests on both engines (PostgreSQL full-text, and a real
//! Meilisearch when one is available; otherwise those print why and pass), plus Meilisearch's
//! indexer catch-up and `fechatter reindex`.
//!
//! Waiting for the index: [`settle`] polls until the search outbox is drained (the indexer
//! deletes outbox rows only after the engine has them: Meilisearch confirmed the batch, or
//! `message_search` was written in the same transaction), and [`eventually`] polls a
//! search; both with a deadline, never a fixed sleep.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use fechatter::store::search::outbox::{self, OutboxOp};
use serde_json::{Value, json};

use crate::common::meili::{Switch, meili};
use crate::common::{Resp, TestApp, TestUser, spawn_app_with, test_config};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Engine {
    Postgres,
    Meili,
}

/// Declares each listed behaviour as a test on each engine: `search::postgres::<name>` and
/// `search::meilisearch::<name>`.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $( #[actix_web::test] async fn $name() { super::$name(super::Engine::Postgres).await } )*
        }
        mod meilisearch {
            $( #[actix_web::test] async fn $name() { super::$name(super::Engine::Meili).await } )*
        }
    };
}

on_both_engines!(
    ranks_exact_matches_first_and_highlights,
    highlights_are_escaped_html,
    every_filter_narrows_results,
    paginates_with_a_stable_total,
    never_leaks_other_users_private_chats,
    edits_and_deletes_reach_the_index,
    finds_cjk_text_and_prefixes,
    rejects_invalid_requests,
    users_and_chats_by_name_within_visibility,
);

/// The server on `engine` (Meilisearch: a fresh index of its own), or `None` to skip.
async fn spawn(engine: Engine) -> Option<TestApp> {
    let mut config = test_config(&[]);
    match engine {
        Engine::Postgres => {
            config.meili_url = None;
            config.meili_master_key = None;
        }
        Engine::Meili => {
            let m = meili()?;
            config.meili_url = Some(m.url.clone());
            config.meili_master_key = Some(m.key.clone());
            config.meili_index = format!("t_{}", uuid::Uuid::new_v4().simple());
        }
    }
    Some(spawn_app_with(config).await)
}

// ---- fixtures: through the API (messages go through the chat rooms, which record the outbox
// row in the same transaction and wake the indexer) ----

async fn db(app: &TestApp) -> deadpool_postgres::Object {
    app.state.store.client().await.expect("db")
}

/// A workspace owned by `owner` with `members` invited and accepted.
async fn workspace(app: &TestApp, owner: &TestUser, members: &[&TestUser]) -> i64 {
    let ws = app.create_workspace(owner, "acme").await;
    for m in members {
        app.add_to_workspace(owner, ws, m).await;
    }
    ws
}

/// A chat of `kind` (`channel`/`direct`) with `members` (the first creates it).
async fn chat(
    app: &TestApp,
    ws: i64,
    name: &str,
    kind: &str,
    private: bool,
    members: &[&TestUser],
) -> i64 {
    let owner = members[0];
    if kind == "direct" {
        let others: Vec<i64> = members[1..].iter().map(|m| m.id).collect();
        let r = app
            .post(
                "/api/chats/direct",
                &owner.token,
                json!({"workspace_id": ws, "user_ids": others}),
            )
            .await;
        assert!(r.status.is_success(), "{}", r.body);
        return r.body["id"].as_i64().expect("chat id");
    }
    let id = app
        .post(
            "/api/chats",
            &owner.token,
            json!({"workspace_id": ws, "name": name, "type": "channel",
                   "description": format!("about {name}"), "is_private": private}),
        )
        .await
        .ok(201)["id"]
        .as_i64()
        .expect("chat id");
    for m in &members[1..] {
        if private {
            let r = app
                .post(
                    &format!("/api/chats/{id}/members"),
                    &owner.token,
                    json!({"user_id": m.id}),
                )
                .await;
            assert!(r.status.is_success(), "{}", r.body);
        } else {
            app.join(m, id).await;
        }
    }
    id
}

async fn channel(app: &TestApp, ws: i64, name: &str, members: &[&TestUser]) -> i64 {
    chat(app, ws, name, "channel", false, members).await
}

async fn send(app: &TestApp, user: &TestUser, chat: i64, content: &str) -> i64 {
    app.send(user, chat, content).await["id"]
        .as_i64()
        .expect("message id")
}

async fn edit(app: &TestApp, user: &TestUser, message: i64, content: &str) {
    app.put(
        &format!("/api/messages/{message}"),
        &user.token,
        json!({ "content": content }),
    )
    .await
    .ok(200);
}

async fn delete(app: &TestApp, user: &TestUser, message: i64) {
    app.delete(&format!("/api/messages/{message}"), &user.token)
        .await
        .ok(200);
}

/// Runs `sql` (with `params`) and records `op` for the message it returns, in one transaction,
/// as the rooms do (for what the API cannot do, such as back-dating a message).
async fn write(
    app: &TestApp,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    op: OutboxOp,
) -> i64 {
    let mut c = db(app).await;
    let tx = c.transaction().await.expect("tx");
    let id: i64 = tx.query_one(sql, params).await.expect("write").get(0);
    outbox::record(&tx, &[(id, op)]).await.expect("outbox");
    tx.commit().await.expect("commit");
    app.state.search.indexer().notify();
    id
}

async fn set_created_at(app: &TestApp, message: i64, at: &str) {
    let at: chrono::DateTime<chrono::Utc> = at.parse().expect("timestamp");
    write(
        app,
        "UPDATE messages SET created_at = $2 WHERE id = $1 RETURNING id",
        &[&message, &at],
        OutboxOp::Upsert,
    )
    .await;
}

/// Polls until the search outbox is empty: every write so far is searchable.
async fn settle(app: &TestApp) {
    let started = Instant::now();
    loop {
        let left = app.state.store.outbox_len().await.expect("outbox");
        if left == 0 {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{left} outbox rows still unindexed after {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `f` until `done` holds for its value; fails after the deadline.
async fn eventually<F, Fut>(what: &str, mut f: F, done: impl Fn(&Value) -> bool) -> Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Value>,
{
    let started = Instant::now();
    loop {
        let v = f().await;
        if done(&v) {
            return v;
        }
        assert!(started.elapsed() < DEADLINE, "{what}: last answer {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn search_raw(app: &TestApp, user: &TestUser, body: Value) -> Resp {
    app.post("/api/search/messages", &user.token, body).await
}

/// Searches `query` in `ws` with `extra` merged into the body; asserts 200.
async fn search(app: &TestApp, user: &TestUser, ws: i64, query: &str, extra: Value) -> Value {
    let mut body = json!({"query": query, "workspace_id": ws});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    search_raw(app, user, body).await.ok(200)
}

fn ids(r: &Value) -> Vec<i64> {
    r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["message_id"].as_i64().expect("message_id"))
        .collect()
}

fn sorted(mut v: Vec<i64>) -> Vec<i64> {
    v.sort_unstable();
    v
}

// ---- behaviours ----

async fn ranks_exact_matches_first_and_highlights(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    send(&app, &alice, general, "deployment finished").await;
    let exact = send(&app, &alice, general, "we deploy on fridays").await;
    send(&app, &alice, general, "deployed yesterday").await;
    send(&app, &alice, general, "lunch at noon").await;
    send(&app, &alice, general, "a meeting that is important").await;
    let phrase = send(&app, &alice, general, "the important meeting is at ten").await;
    settle(&app).await;

    let r = search(&app, &alice, ws, "deploy", json!({})).await;
    assert_eq!(r["total"], 3, "{r}");
    assert_eq!(r["page"], 1);
    assert!(r["processing_time_ms"].is_u64());
    let first = &r["results"][0];
    assert_eq!(first["message_id"], exact, "{r}");
    assert_eq!(first["content"], "we <mark>deploy</mark> on fridays");
    assert_eq!(first["chat_id"], general);
    assert_eq!(first["chat_name"], "general");
    assert_eq!(first["sender"]["id"], alice.id);
    assert_eq!(first["sender"]["username"], "alice");
    assert!(
        first["created_at"]
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok()),
        "{first}"
    );
    let scores: Vec<f64> = r["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["score"].as_f64().expect("score"))
        .collect();
    assert!(scores.iter().all(|s| (0.0..=1.0).contains(s)), "{scores:?}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    assert!(scores[0] > scores[2], "exact above stemmed: {scores:?}");

    let r = search(&app, &alice, ws, "important meeting", json!({})).await;
    assert_eq!(r["total"], 2, "{r}");
    assert_eq!(r["results"][0]["message_id"], phrase, "{r}");
    assert!(
        r["results"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("<mark>important</mark> <mark>meeting</mark>")),
        "{r}"
    );
}

async fn highlights_are_escaped_html(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    send(
        &app,
        &alice,
        general,
        "<script>alert(1)</script> & <mark>warning</mark> sign",
    )
    .await;
    settle(&app).await;
    let r = search(&app, &alice, ws, "sign", json!({})).await;
    assert_eq!(r["total"], 1, "{r}");
    let content = r["results"][0]["content"].as_str().expect("content");
    assert!(content.contains("&lt;script&gt;"), "{content}");
    assert!(!content.contains("<script>"), "{content}");
    assert!(content.contains("&lt;mark&gt;"), "{content}");
    assert!(content.contains("<mark>sign</mark>"), "{content}");
}

async fn every_filter_narrows_results(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let ws = workspace(&app, &alice, &[&bob]).await;
    let general = channel(&app, ws, "general", &[&alice, &bob]).await;
    let random = channel(&app, ws, "random", &[&alice, &bob]).await;
    let m1 = send(&app, &alice, general, "status alpha").await;
    let m2 = send(&app, &bob, general, "status beta").await;
    let m3 = send(&app, &alice, random, "status gamma").await;
    set_created_at(&app, m1, "2024-01-01T10:00:00Z").await;
    set_created_at(&app, m2, "2024-01-02T23:59:59.5Z").await;
    set_created_at(&app, m3, "2024-01-03T00:00:00Z").await;
    settle(&app).await;

    let cases = [
        (json!({}), vec![m1, m2, m3]),
        (json!({"chat_ids": [random]}), vec![m3]),
        (json!({"chat_ids": [general, random]}), vec![m1, m2, m3]),
        (json!({"sender_ids": [bob.id]}), vec![m2]),
        // A filter form's "none picked" (before: 422).
        (json!({"chat_ids": [], "sender_ids": []}), vec![m1, m2, m3]),
        (json!({"date_from": "2024-01-02"}), vec![m2, m3]),
        (json!({"date_to": "2024-01-02"}), vec![m1, m2]),
        (
            json!({"date_from": "2024-01-02", "date_to": "2024-01-02"}),
            vec![m2],
        ),
        (json!({"date_to": "2024-01-02T23:59:59.5Z"}), vec![m1, m2]),
        (json!({"date_to": "2024-01-02T23:59:59Z"}), vec![m1]),
        (json!({"date_from": "2024-01-03T01:00:00+01:00"}), vec![m3]),
        (
            json!({"chat_ids": [general], "sender_ids": [alice.id], "date_to": "2024-12-31"}),
            vec![m1],
        ),
    ];
    for (filters, expected) in cases {
        let r = search(&app, &alice, ws, "status", json!({ "filters": filters })).await;
        assert_eq!(sorted(ids(&r)), sorted(expected.clone()), "{filters}: {r}");
        assert_eq!(r["total"], expected.len(), "{filters}: {r}");
    }
}

async fn paginates_with_a_stable_total(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(send(&app, &alice, general, &format!("weekly report number {i}")).await);
    }
    send(&app, &alice, general, "something else").await;
    settle(&app).await;

    let mut seen = Vec::new();
    for (page, size) in [(1, 10), (2, 10), (3, 5), (4, 0)] {
        let r = search(
            &app,
            &alice,
            ws,
            "report",
            json!({"page": page, "limit": 10}),
        )
        .await;
        assert_eq!(r["total"], 25, "page {page}: {r}");
        assert_eq!(r["page"], page);
        assert_eq!(ids(&r).len(), size, "page {page}: {r}");
        seen.extend(ids(&r));
    }
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 25, "no repeats");
    assert_eq!(sorted(seen), sorted(sent));
    let r = search(&app, &alice, ws, "report", json!({})).await;
    assert_eq!(ids(&r).len(), 20, "default limit");
    let r = search(&app, &alice, ws, "report", json!({"limit": 100})).await;
    assert_eq!(ids(&r).len(), 25);
}

async fn never_leaks_other_users_private_chats(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let ws = workspace(&app, &alice, &[&bob]).await;
    let general = channel(&app, ws, "general", &[&alice, &bob]).await;
    let secret = chat(&app, ws, "bob-private", "channel", true, &[&bob]).await;
    let unjoined = channel(&app, ws, "unjoined", &[&bob]).await;
    let public = send(&app, &bob, general, "launch party on friday").await;
    let hidden = send(&app, &bob, secret, "launch codes are zebra").await;
    send(&app, &bob, unjoined, "launch checklist zebra").await;
    let other_ws = workspace(&app, &bob, &[]).await;
    let elsewhere = channel(&app, other_ws, "bob-elsewhere", &[&bob]).await;
    send(&app, &bob, elsewhere, "launch zebra elsewhere").await;
    settle(&app).await;

    // Bob sees his private chat; Alice never does: not in results, total or highlights.
    let r = search(&app, &bob, ws, "launch", json!({})).await;
    assert!(ids(&r).contains(&hidden), "{r}");
    for q in ["launch", "zebra", "codes", "launch codes", "zeb"] {
        let r = search(&app, &alice, ws, q, json!({"limit": 100})).await;
        let found = ids(&r);
        assert!(found.iter().all(|id| *id == public), "{q}: {r}");
        assert_eq!(r["total"], found.len(), "{q}: {r}");
        assert!(!r.to_string().contains("zebra"), "{q}: {r}");
    }
    // Naming a chat she cannot see is refused, never answered.
    for chat_id in [secret, unjoined, elsewhere, 999_999] {
        search_raw(
            &app,
            &alice,
            json!({"query": "launch", "workspace_id": ws, "filters": {"chat_ids": [general, chat_id]}}),
        )
        .await
        .err(403, "FORBIDDEN");
    }
    // Outside the workspace: 403; no such workspace: 404.
    search_raw(
        &app,
        &alice,
        json!({"query": "launch", "workspace_id": other_ws}),
    )
    .await
    .err(403, "FORBIDDEN");
    search_raw(
        &app,
        &alice,
        json!({"query": "launch", "workspace_id": 999_999}),
    )
    .await
    .err(404, "NOT_FOUND");
}

async fn edits_and_deletes_reach_the_index(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let m = send(&app, &alice, general, "original banana bread").await;
    let keep = send(&app, &alice, general, "banana split").await;
    settle(&app).await;
    assert_eq!(
        ids(&search(&app, &alice, ws, "banana", json!({})).await).len(),
        2
    );

    edit(&app, &alice, m, "changed cherry pie").await;
    settle(&app).await;
    let r = search(&app, &alice, ws, "banana", json!({})).await;
    assert_eq!(ids(&r), vec![keep], "{r}");
    let r = search(&app, &alice, ws, "cherry", json!({})).await;
    assert_eq!(ids(&r), vec![m], "{r}");
    assert_eq!(
        r["results"][0]["content"],
        "changed <mark>cherry</mark> pie"
    );

    delete(&app, &alice, m).await;
    settle(&app).await;
    let r = search(&app, &alice, ws, "cherry", json!({})).await;
    assert_eq!(r["total"], 0, "{r}");
    assert!(ids(&r).is_empty());
}

/// The derived search table lags the commit (the indexer runs after it): a message deleted or
/// edited since is not shown with its old text (before: found, and highlighted, until the
/// indexer caught up — for ever if it never did). The lag is made permanent here by writing
/// the message without an outbox row.
#[actix_web::test]
async fn postgres_hides_hits_the_indexer_has_not_caught_up_with() {
    let Some(app) = spawn(Engine::Postgres).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let deleted = send(&app, &alice, general, "walrus secret one").await;
    let edited = send(&app, &alice, general, "walrus secret two").await;
    let kept = send(&app, &alice, general, "walrus three").await;
    settle(&app).await;
    assert_eq!(
        ids(&search(&app, &alice, ws, "walrus", json!({})).await).len(),
        3
    );
    let c = db(&app).await;
    c.execute(
        "UPDATE messages SET deleted_at = now() WHERE id = $1",
        &[&deleted],
    )
    .await
    .expect("delete behind the indexer's back");
    c.execute(
        "UPDATE messages SET content = 'walrus two' WHERE id = $1",
        &[&edited],
    )
    .await
    .expect("edit behind the indexer's back");
    let r = search(&app, &alice, ws, "walrus", json!({})).await;
    assert_eq!(ids(&r), vec![kept], "{r}");
    let r = search(&app, &alice, ws, "secret", json!({})).await;
    assert!(ids(&r).is_empty(), "{r}");
}

async fn finds_cjk_text_and_prefixes(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let cjk = send(&app, &alice, general, "你好世界").await;
    let long = send(&app, &alice, general, "deployment finished").await;
    settle(&app).await;

    let r = search(&app, &alice, ws, "世界", json!({})).await;
    assert_eq!(ids(&r), vec![cjk], "{r}");
    assert!(
        r["results"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("<mark>世界</mark>")),
        "{r}"
    );
    let r = search(&app, &alice, ws, "deplo", json!({})).await;
    assert_eq!(ids(&r), vec![long], "{r}");
    assert!(
        r["results"][0]["content"]
            .as_str()
            .is_some_and(|c| c.contains("<mark>")),
        "{r}"
    );
}

async fn rejects_invalid_requests(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let long = "a".repeat(513);
    let cases = [
        (json!({"workspace_id": ws}), "query"),
        (json!({"query": "", "workspace_id": ws}), "query"),
        (json!({"query": "   ", "workspace_id": ws}), "query"),
        (json!({"query": long, "workspace_id": ws}), "query"),
        (json!({"query": "x"}), "workspace_id"),
        (json!({"query": "x", "workspace_id": "one"}), "workspace_id"),
        (
            json!({"query": "x", "workspace_id": ws, "limit": 101}),
            "limit",
        ),
        (
            json!({"query": "x", "workspace_id": ws, "limit": 0}),
            "limit",
        ),
        (json!({"query": "x", "workspace_id": ws, "page": 0}), "page"),
        (
            json!({"query": "x", "workspace_id": ws, "filters": {"date_from": "yesterday"}}),
            "filters.date_from",
        ),
        (
            json!({"query": "x", "workspace_id": ws, "filters": {"date_to": "2024-02-30"}}),
            "filters.date_to",
        ),
        (
            json!({"query": "x", "workspace_id": ws, "filters": {"date_from": "2024-03-02", "date_to": "2024-03-01"}}),
            "filters.date_from",
        ),
        (
            json!({"query": "x", "workspace_id": ws, "filters": {"chat_ids": "1"}}),
            "filters.chat_ids",
        ),
        (
            json!({"query": "x", "workspace_id": ws, "filters": {"sender_ids": [0]}}),
            "filters.sender_ids",
        ),
    ];
    for (body, field) in cases {
        let err = search_raw(&app, &alice, body.clone())
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], field, "{body}: {err}");
    }
    let ok = "a".repeat(512);
    search(&app, &alice, ws, &ok, json!({})).await;
    for path in ["/api/search/users", "/api/search/chats"] {
        for q in ["", &"q".repeat(101)] {
            let err = app
                .get(&format!("{path}?q={q}&workspace_id={ws}"), &alice.token)
                .await
                .err(422, "VALIDATION_ERROR");
            assert_eq!(err["error"]["details"]["field"], "q", "{path} {err}");
        }
        let err = app
            .get(&format!("{path}?q=a"), &alice.token)
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "workspace_id");
        let err = app
            .get(
                &format!("{path}?q=a&workspace_id={ws}&limit=101"),
                &alice.token,
            )
            .await
            .err(422, "VALIDATION_ERROR");
        assert_eq!(err["error"]["details"]["field"], "limit");
    }
    app.call(
        reqwest::Method::POST,
        "/api/search/messages",
        None,
        Some(json!({"query": "x", "workspace_id": ws})),
    )
    .await
    .err(401, "UNAUTHORIZED");
}

async fn users_and_chats_by_name_within_visibility(engine: Engine) {
    let Some(app) = spawn(engine).await else {
        return;
    };
    let alice = app.register("alice").await;
    let bob = app.register("bobby").await;
    let carol = app.register("carol").await;
    let outsider = app.register("bobcat").await;
    let ws = workspace(&app, &alice, &[&bob, &carol]).await;
    workspace(&app, &outsider, &[]).await;
    let general = channel(&app, ws, "general-chat", &[&alice, &bob, &carol]).await;
    let plans = chat(&app, ws, "secret-plans", "channel", true, &[&bob]).await;
    let dm = chat(&app, ws, "alice, bobby", "direct", true, &[&alice, &bob]).await;
    let genealogy = channel(&app, ws, "genealogy", &[&carol]).await;

    let users = |r: &Value| -> Vec<i64> {
        r["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["id"].as_i64().expect("id"))
            .collect()
    };
    let chats = |r: &Value| -> Vec<i64> {
        r["chats"]
            .as_array()
            .expect("chats")
            .iter()
            .map(|c| c["id"].as_i64().expect("id"))
            .collect()
    };

    // Users: prefix or substring of the username or email local part, members only.
    let r = app
        .get(
            &format!("/api/search/users?q=BOB&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(users(&r), vec![bob.id], "{r}");
    assert_eq!(r["total"], 1);
    assert_eq!(r["users"][0]["username"], "bobby");
    assert!(r["users"][0].get("email").is_none(), "{r}");
    assert!(r["users"][0]["avatar_url"].is_null());
    let r = app
        .get(
            &format!("/api/search/users?q=aro&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(users(&r), vec![carol.id], "{r}");
    let local = carol.email.split('@').next().expect("local part");
    let fragment = &local[local.len() - 8..];
    let r = app
        .get(
            &format!("/api/search/users?q={fragment}&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(users(&r), vec![carol.id], "email local part: {r}");
    let r = app
        .get(
            &format!("/api/search/users?q=l&workspace_id={ws}&limit=1&page=2"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(r["total"], 2, "{r}");
    assert_eq!(users(&r).len(), 1);

    // Chats: public channels and the caller's own private chats and DMs.
    let r = app
        .get(
            &format!("/api/search/chats?q=GEN&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(
        chats(&r),
        vec![genealogy, general],
        "prefix matches, alphabetical: {r}"
    );
    assert_eq!(r["chats"][1]["type"], "channel");
    assert_eq!(r["chats"][1]["is_private"], false);
    assert_eq!(r["chats"][1]["description"], "about general-chat");
    let r = app
        .get(
            &format!("/api/search/chats?q=plans&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(r["total"], 0, "{r}");
    let r = app
        .get(
            &format!("/api/search/chats?q=plans&workspace_id={ws}"),
            &bob.token,
        )
        .await
        .ok(200);
    assert_eq!(chats(&r), vec![plans], "{r}");
    let r = app
        .get(
            &format!("/api/search/chats?q=bobby&workspace_id={ws}"),
            &carol.token,
        )
        .await
        .ok(200);
    assert_eq!(r["total"], 0, "{r}");
    let r = app
        .get(
            &format!("/api/search/chats?q=bobby&workspace_id={ws}"),
            &alice.token,
        )
        .await
        .ok(200);
    assert_eq!(chats(&r), vec![dm], "{r}");
    assert_eq!(r["chats"][0]["type"], "direct");

    // Outsiders and missing workspaces.
    app.get(
        &format!("/api/search/users?q=a&workspace_id={ws}"),
        &outsider.token,
    )
    .await
    .err(403, "FORBIDDEN");
    app.get(
        &format!("/api/search/chats?q=a&workspace_id={ws}"),
        &outsider.token,
    )
    .await
    .err(403, "FORBIDDEN");
    app.get("/api/search/chats?q=a&workspace_id=999999", &alice.token)
        .await
        .err(404, "NOT_FOUND");
}

// ---- Meilisearch only ----

/// Sends succeed while Meilisearch is down; once it is back, the indexer catches up from the
/// outbox and every message becomes searchable.
#[actix_web::test]
async fn meilisearch_indexer_catches_up_after_an_outage() {
    let Some(m) = meili() else { return };
    let switch = Switch::start(m.addr).await;
    let mut config = test_config(&[]);
    config.meili_url = Some(switch.url.clone());
    config.meili_master_key = Some(m.key.clone());
    config.meili_index = format!("t_{}", uuid::Uuid::new_v4().simple());
    let app = spawn_app_with(config).await;
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(send(&app, &alice, general, &format!("outage note {i}")).await);
    }
    search_raw(&app, &alice, json!({"query": "outage", "workspace_id": ws}))
        .await
        .err(503, "SERVICE_UNAVAILABLE");
    assert_eq!(
        app.state.store.outbox_len().await.expect("outbox"),
        3,
        "kept"
    );

    switch.set_up(true);
    // Searches answer 503 until the proxy forwards again, then the indexed results.
    let r = eventually(
        "catch-up",
        || async {
            search_raw(&app, &alice, json!({"query": "outage", "workspace_id": ws}))
                .await
                .body
        },
        |r| r["total"] == 3,
    )
    .await;
    assert_eq!(sorted(ids(&r)), sent);
    settle(&app).await;
}

/// `fechatter reindex` rebuilds the index from PostgreSQL (here: after it was emptied).
#[actix_web::test]
async fn meilisearch_reindex_rebuilds_from_postgres() {
    let Some(app) = spawn(Engine::Meili).await else {
        return;
    };
    let alice = app.register("alice").await;
    let ws = workspace(&app, &alice, &[]).await;
    let general = channel(&app, ws, "general", &[&alice]).await;
    let kept = send(&app, &alice, general, "rebuild me please").await;
    let gone = send(&app, &alice, general, "rebuild me not").await;
    settle(&app).await;
    let config = app.state.config.as_ref().clone();
    let m = meili().expect("meili");
    let client = meilisearch_sdk::client::Client::new(&m.url, Some(&m.key)).expect("client");
    client
        .index(&config.meili_index)
        .delete_all_documents()
        .await
        .expect("clear")
        .wait_for_completion(&client, None, None)
        .await
        .expect("cleared");
    // Deleted without telling the index: the rebuild must not bring it back.
    db(&app)
        .await
        .execute(
            "UPDATE messages SET deleted_at = now() WHERE id = $1",
            &[&gone],
        )
        .await
        .expect("delete");
    assert_eq!(
        search(&app, &alice, ws, "rebuild", json!({})).await["total"],
        0
    );

    fechatter::store::search::reindex(&config, &app.database)
        .await
        .expect("reindex");
    let r = search(&app, &alice, ws, "rebuild", json!({})).await;
    assert_eq!(ids(&r), vec![kept], "{r}");
    assert_eq!(r["total"], 1);
}
