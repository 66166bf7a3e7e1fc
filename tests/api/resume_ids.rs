//! Compact resume ids: a connection following more chats than `FECHATTER_ID_CHATS_MAX` gets
//! ids naming a stored checkpoint plus the chats that moved since, whatever the number of
//! chats it follows; resuming from such an id loses and repeats nothing; a checkpoint is only
//! its user's.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::common::ws::{SseClient, WsClient};
use crate::common::{TestApp, TestUser, spawn_app_with, test_config};

const CHATS: usize = 24;
const MAX: usize = 4;

struct Many {
    owner: TestUser,
    member: TestUser,
    chats: Vec<i64>,
}

/// `member` is in `CHATS` channels created by `owner`.
async fn many_chats(app: &TestApp) -> Many {
    let owner = app.register("owner").await;
    let member = app.register("member").await;
    let workspace = app.create_workspace(&owner, "Many").await;
    app.add_to_workspace(&owner, workspace, &member).await;
    let mut chats = Vec::new();
    for i in 0..CHATS {
        let chat = app
            .create_channel(&owner, workspace, &format!("c{i}"))
            .await;
        app.join(&member, chat).await;
        chats.push(chat);
    }
    Many {
        owner,
        member,
        chats,
    }
}

async fn app() -> TestApp {
    spawn_app_with(test_config(&[
        "--id-chats-max",
        &MAX.to_string(),
        "--checkpoint-interval-ms",
        "0",
    ]))
    .await
}

/// The chats an id lists (after the checkpoint, if any).
fn listed(id: &str) -> usize {
    let pairs = id.split_once('~').map_or(id, |(_, p)| p);
    pairs.split('-').filter(|p| p.contains('.')).count()
}

/// Ids stay short while messages arrive in every chat, and a resume from any of them gets
/// exactly what was missed, per chat in order.
#[actix_web::test]
async fn ids_name_a_checkpoint_and_resume_exactly() {
    let app = app().await;
    let m = many_chats(&app).await;
    let mut ws = WsClient::connect(&app, &m.member.token, None).await;
    let hello = ws.last_event_id.clone().expect("an id in auth.success");
    assert!(
        hello.contains('~') && listed(&hello) <= MAX,
        "a connection in {CHATS} chats starts from a checkpoint: {hello}"
    );
    // A message in every chat: each id lists only the chats that moved since the checkpoint.
    for (i, chat) in m.chats.iter().enumerate() {
        app.send(&m.owner, *chat, &format!("first {i}")).await;
        let ev = ws.next_of("message.created").await;
        let id = ev["id"].as_str().expect("id");
        assert!(id.contains('~'), "{id}");
        // A new checkpoint is stored once more than MAX moved; until it is, a few more.
        assert!(listed(id) <= 2 * MAX + 2, "id {id} lists too many chats");
    }
    let resume = ws.last_event_id.clone().expect("resume id");
    ws.close().await;
    // Missed: two messages in every chat.
    let mut missed: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for round in 0..2 {
        for chat in &m.chats {
            let sent = app.send(&m.owner, *chat, &format!("away {round}")).await;
            missed.entry(*chat).or_default().push(sent["id"].clone());
        }
    }
    let mut back = WsClient::connect(&app, &m.member.token, Some(&resume)).await;
    let replayed = back.collect("message.created", 2 * CHATS).await;
    let mut got: BTreeMap<i64, Vec<Value>> = BTreeMap::new();
    for e in &replayed {
        let msg = &e["data"]["message"];
        got.entry(msg["chat_id"].as_i64().expect("chat"))
            .or_default()
            .push(msg["id"].clone());
    }
    assert_eq!(got, missed, "every missed message once, per chat in order");
    // Nothing more: a live message comes next, not a duplicate.
    app.send(&m.owner, m.chats[0], "live").await;
    let live = back.next_of("message.created").await;
    assert_eq!(live["data"]["message"]["content"], "live");
}

/// The same over SSE: `Last-Event-ID` with a checkpoint id.
#[actix_web::test]
async fn sse_resumes_from_a_checkpoint_id() {
    let app = app().await;
    let m = many_chats(&app).await;
    let mut sse = SseClient::connect(&app, &m.member.token, None, true)
        .await
        .expect("sse");
    for chat in &m.chats[..8] {
        app.send(&m.owner, *chat, "seen").await;
        sse.next_of("message.created").await;
    }
    let resume = sse.last_event_id.clone().expect("an id");
    assert!(resume.contains('~'), "{resume}");
    drop(sse);
    let away = app.send(&m.owner, m.chats[20], "away").await;
    let mut back = SseClient::connect(&app, &m.member.token, Some(&resume), false)
        .await
        .expect("sse");
    let ev = back.next_of("message.created").await;
    assert_eq!(ev.data["message"]["id"], away["id"]);
}

/// Another user's checkpoint, or one that does not exist, is an invalid id: nothing of that
/// user's chats is replayed, `resync.required` says so.
#[actix_web::test]
async fn a_checkpoint_is_only_its_users() {
    let app = app().await;
    let m = many_chats(&app).await;
    let ws = WsClient::connect(&app, &m.member.token, None).await;
    let theirs = ws.last_event_id.clone().expect("id");
    ws.close().await;
    let cp = theirs.split_once('~').expect("checkpoint id").0.to_owned();
    // The owner is in all the chats too, with everything still to see from the member's start.
    for forged in [format!("{cp}~"), "999999~".to_string()] {
        let mut ws = WsClient::connect(&app, &m.owner.token, Some(&forged)).await;
        let ev = ws.next_of("resync.required").await;
        assert_eq!(ev["data"]["reason"], "invalid_last_event_id", "{forged}");
        ws.close().await;
    }
}
