//! Group commit across rooms (issue 13, write path): many rooms' batches share transactions and
//! each chat still gets gap-free seqs in order with nothing lost; a refused op in one room of a
//! shared transaction fails alone; a stale room is fenced alone; edits, deletes and reactions
//! pipelined in one batch see each other in order; a queue over the cap is committed in chunks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fechatter::actors::commit::{self, CommitFailure, CommitSpec, Committed};
use fechatter::actors::committer::commit_together;
use fechatter::actors::room::{Op, OpOutcome};
use fechatter::actors::rooms::RoomError;
use futures_util::future::join_all;

use crate::common::ws::WsClient;
use crate::common::{TestApp, TestUser, spawn_app};
use crate::messages::fixture;

async fn db(app: &TestApp) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&app.database, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Every seq of the chat (messages and logged events), ascending, and its `last_seq`.
async fn seqs(client: &tokio_postgres::Client, chat: i64) -> (Vec<i64>, i64) {
    let rows = client
        .query(
            "SELECT seq FROM messages WHERE chat_id = $1 \
             UNION ALL SELECT seq FROM chat_events WHERE chat_id = $1 ORDER BY 1",
            &[&chat],
        )
        .await
        .expect("seqs");
    let last: i64 = client
        .query_one("SELECT last_seq FROM chats WHERE id = $1", &[&chat])
        .await
        .expect("last_seq")
        .get(0);
    (rows.iter().map(|r| r.get(0)).collect(), last)
}

/// Message ids of a chat in seq order, from the REST history (newest first, up to 100).
async fn history(app: &TestApp, user: &TestUser, chat: i64) -> Vec<(i64, String)> {
    let page = app
        .get(
            &format!("/api/messages?chat_id={chat}&limit=100"),
            &user.token,
        )
        .await
        .ok(200);
    let mut out: Vec<(i64, String)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["id"].as_i64().expect("id"),
                m["content"].as_str().expect("content").to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

fn spec(app: &TestApp, chat_id: i64, db_orders_writers: bool) -> CommitSpec {
    CommitSpec {
        store: app.state.store.clone(),
        chat_id,
        db_orders_writers,
        resolve_for: Duration::from_secs(2),
        faults: Arc::new(Default::default()),
        committer: None,
        max_ops: commit::DEFAULT_MAX_OPS,
    }
}

fn send(user: i64, content: &str, key: Option<&str>) -> Op {
    Op::Send {
        sender_id: user,
        content: content.into(),
        idempotency_key: key.map(str::to_owned),
    }
}

fn sent(r: &Result<OpOutcome, RoomError>) -> bool {
    matches!(r, Ok(OpOutcome::Sent { created: true, .. }))
}

fn done(r: Result<Committed, CommitFailure>) -> Committed {
    r.unwrap_or_else(|e| panic!("room failed: {e:?}"))
}

/// 20 rooms with 3 senders each sending 5 messages concurrently: every chat's seqs are
/// gap-free up to its `last_seq`, a member's WebSocket gets every message once in seq order,
/// the REST history holds them all, and some transactions carried several chats' messages.
#[actix_web::test]
async fn many_rooms_sending_at_once_get_gap_free_seqs_in_order() {
    const ROOMS: usize = 20;
    const PER_SENDER: usize = 5;
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let mut chats = Vec::new();
    for i in 0..ROOMS {
        let chat = app
            .create_channel(&f.owner, f.workspace, &format!("room-{i}"))
            .await;
        app.join(&f.member, chat).await;
        app.join(&f.outsider, chat).await;
        chats.push(chat);
    }
    let mut ws = WsClient::connect(&app, &f.owner.token, None).await;
    let senders = [&f.owner, &f.member, &f.outsider];
    let sends = chats.iter().flat_map(|&chat| {
        let app = &app;
        senders.iter().enumerate().map(move |(s, user)| async move {
            for i in 0..PER_SENDER {
                app.send(user, chat, &format!("c{chat}-s{s}-{i}")).await;
            }
        })
    });
    join_all(sends).await;

    let total = ROOMS * senders.len() * PER_SENDER;
    let mut live: HashMap<i64, Vec<(i64, String)>> = HashMap::new();
    for frame in ws.collect("message.created", total).await {
        let m = &frame["data"]["message"];
        live.entry(m["chat_id"].as_i64().expect("chat"))
            .or_default()
            .push((
                m["id"].as_i64().expect("id"),
                m["content"].as_str().expect("content").to_owned(),
            ));
    }
    let client = db(&app).await;
    for &chat in &chats {
        let (all, last) = seqs(&client, chat).await;
        assert_eq!(all, (1..=last).collect::<Vec<_>>(), "chat {chat}: a gap");
        let stored = history(&app, &f.owner, chat).await;
        assert_eq!(stored.len(), senders.len() * PER_SENDER, "chat {chat}");
        assert_eq!(
            live.get(&chat),
            Some(&stored),
            "chat {chat}: live vs history"
        );
        // Each sender's messages in the order it sent them.
        for s in 0..senders.len() {
            let mine: Vec<&str> = stored
                .iter()
                .map(|(_, c)| c.as_str())
                .filter(|c| c.starts_with(&format!("c{chat}-s{s}-")))
                .collect();
            let expected: Vec<String> = (0..PER_SENDER)
                .map(|i| format!("c{chat}-s{s}-{i}"))
                .collect();
            assert_eq!(mine, expected, "chat {chat}, sender {s}");
        }
    }
    // Rows written by one transaction share its xid: some carried several chats' messages.
    let widest: i64 = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(DISTINCT chat_id) AS n FROM messages \
             GROUP BY xmin::text) t",
            &[],
        )
        .await
        .expect("xmin")
        .get(0);
    assert!(
        widest >= 2,
        "no transaction held more than one chat's messages"
    );
}

/// In one shared transaction, room A's op the database refuses (a NUL byte in a key) fails
/// alone: A's other sends and room B's send are committed; room C, whose base is stale, is
/// fenced alone.
#[actix_web::test]
async fn a_refused_op_in_one_room_does_not_fail_another_rooms_send() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let b = app.create_channel(&f.owner, f.workspace, "b").await;
    let c = app.create_channel(&f.owner, f.workspace, "c").await;
    let store = &app.state.store;
    let base =
        |chat: i64| async move { store.chat_last_seq(chat).await.expect("seq").expect("chat") };
    let (base_a, base_b, base_c) = (base(f.chat).await, base(b).await, base(c).await);
    let results = commit_together(vec![
        (
            spec(&app, f.chat, false),
            base_a,
            vec![
                send(f.owner.id, "a first", Some("k1")),
                send(f.member.id, "a poison", Some("bad\0key")),
                send(f.member.id, "a third", None),
            ],
        ),
        (
            spec(&app, b, false),
            base_b,
            vec![send(f.owner.id, "b only", Some("kb"))],
        ),
        (
            spec(&app, c, false),
            base_c + 7,
            vec![send(f.owner.id, "c stale", None)],
        ),
    ])
    .await;
    let mut results = results.into_iter();
    let a = done(results.next().expect("a"));
    let bb = done(results.next().expect("b"));
    let cc = results.next().expect("c");
    assert!(sent(&a.outcomes[0]), "{:?}", a.outcomes[0]);
    assert!(
        matches!(a.outcomes[1], Err(RoomError::Invalid { .. })),
        "{:?}",
        a.outcomes[1]
    );
    assert!(sent(&a.outcomes[2]), "{:?}", a.outcomes[2]);
    assert_eq!(a.last_seq, base_a + 2);
    assert!(sent(&bb.outcomes[0]), "{:?}", bb.outcomes[0]);
    assert_eq!(bb.last_seq, base_b + 1);
    assert!(matches!(cc, Err(CommitFailure::Fenced)), "{cc:?}");

    let contents = |h: Vec<(i64, String)>| h.into_iter().map(|(_, c)| c).collect::<Vec<_>>();
    assert_eq!(
        contents(history(&app, &f.owner, f.chat).await),
        ["a first", "a third"]
    );
    assert_eq!(contents(history(&app, &f.owner, b).await), ["b only"]);
    assert!(history(&app, &f.owner, c).await.is_empty());
    let client = db(&app).await;
    for chat in [f.chat, b, c] {
        let (all, last) = seqs(&client, chat).await;
        assert_eq!(all, (1..=last).collect::<Vec<_>>(), "chat {chat}");
    }
}

/// Edits, deletes and reactions of one batch (one statement each, pipelined) see each other
/// in op order, next to another room's send in the same transaction (cluster-mode bases).
#[actix_web::test]
async fn pipelined_changes_see_each_other_in_order() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let other = app.create_channel(&f.owner, f.workspace, "other").await;
    let m = app.send(&f.owner, f.chat, "original").await["id"]
        .as_i64()
        .expect("id");
    let (owner, member) = (f.owner.id, f.member.id);
    let react = |user: i64, add: bool| Op::React {
        user_id: user,
        message_id: m,
        emoji: "👍".into(),
        add,
    };
    let ops = vec![
        Op::Edit {
            user_id: member,
            message_id: m,
            content: "not yours".into(),
        },
        Op::Edit {
            user_id: owner,
            message_id: m,
            content: "edited".into(),
        },
        react(member, true),
        react(member, true),
        react(owner, true),
        react(member, false),
        Op::Delete {
            user_id: member,
            message_id: m,
            moderator: false,
        },
        Op::Delete {
            user_id: owner,
            message_id: m,
            moderator: false,
        },
        react(owner, true),
    ];
    let mut results = commit_together(vec![
        (spec(&app, f.chat, true), 0, ops),
        (
            spec(&app, other, true),
            0,
            vec![send(owner, "elsewhere", None)],
        ),
    ])
    .await
    .into_iter();
    let a = done(results.next().expect("a"));
    let o = done(results.next().expect("other"));
    let out = &a.outcomes;
    assert!(
        matches!(out[0], Err(RoomError::Forbidden(_))),
        "{:?}",
        out[0]
    );
    match &out[1] {
        Ok(OpOutcome::Edited(v)) => assert_eq!(v.content, "edited"),
        other => panic!("{other:?}"),
    }
    let users = |r: &Result<OpOutcome, RoomError>| match r {
        Ok(OpOutcome::Reacted { reactions, changed }) => (
            *changed,
            reactions
                .iter()
                .map(|r| r.users.clone())
                .collect::<Vec<_>>(),
        ),
        other => panic!("{other:?}"),
    };
    assert_eq!(users(&out[2]), (true, vec![vec![member]]));
    assert_eq!(users(&out[3]), (false, vec![vec![member]]));
    // Reactions of one transaction share its timestamp: the tie is broken by user id.
    let mut both = vec![member, owner];
    both.sort_unstable();
    assert_eq!(users(&out[4]), (true, vec![both]));
    assert_eq!(users(&out[5]), (true, vec![vec![owner]]));
    assert!(
        matches!(out[6], Err(RoomError::Forbidden(_))),
        "{:?}",
        out[6]
    );
    assert!(matches!(out[7], Ok(OpOutcome::Deleted)), "{:?}", out[7]);
    assert!(
        matches!(out[8], Err(RoomError::NotFound(_))),
        "{:?}",
        out[8]
    );
    // One edit, three reaction changes, one delete: five events after the send's seq.
    let kinds: Vec<&str> = a.events.iter().map(|(e, _)| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message.updated",
            "reaction.added",
            "reaction.added",
            "reaction.removed",
            "message.deleted"
        ]
    );
    assert!(sent(&o.outcomes[0]));
    let client = db(&app).await;
    for chat in [f.chat, other] {
        let (all, last) = seqs(&client, chat).await;
        assert_eq!(all, (1..=last).collect::<Vec<_>>(), "chat {chat}");
    }
    assert!(history(&app, &f.owner, f.chat).await.is_empty());
}

/// A room's queue longer than `max_ops` is committed in chunks of at most that many ops (one
/// transaction each), gap-free and answered in order.
#[actix_web::test]
async fn a_queue_over_the_cap_is_committed_in_chunks() {
    let app = spawn_app().await;
    let f = fixture(&app).await;
    let base = app
        .state
        .store
        .chat_last_seq(f.chat)
        .await
        .expect("seq")
        .expect("chat");
    let spec = CommitSpec {
        max_ops: 2,
        ..spec(&app, f.chat, false)
    };
    let ops = (0..5)
        .map(|i| send(f.owner.id, &format!("m{i}"), None))
        .collect();
    let out = done(commit::commit(&spec, base, ops).await);
    assert_eq!(out.last_seq, base + 5);
    assert!(out.outcomes.iter().all(sent), "{:?}", out.outcomes);
    let seqs: Vec<i64> = out.events.iter().filter_map(|(e, _)| e.seq).collect();
    assert_eq!(seqs, (base + 1..=base + 5).collect::<Vec<_>>());
    let client = db(&app).await;
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM messages WHERE chat_id = $1",
            &[&f.chat],
        )
        .await
        .expect("xmin")
        .get(0);
    assert_eq!(transactions, 3);
}
