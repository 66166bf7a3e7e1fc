//! Property tests for every parser of client input: the resume id (`Position`), WebSocket frames
//! sent over a real socket, and list query strings sent to a real list endpoint. Case counts are
//! small (CI runs on two cores); the seed is fixed so a failure reproduces.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use fechatter::actors::events::Position;

use crate::common::spawn_app;

/// `n` values of `strategy`, drawn deterministically (for properties checked against a live
/// server, where proptest's synchronous runner cannot await).
fn samples<S: Strategy>(strategy: S, n: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("strategy generates")
                .current()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text parses or is refused; it never panics, and what parses names positive chats
    /// and non-negative sequences only.
    #[test]
    fn position_parse_is_total(s in "\\PC{0,64}") {
        if let Some(p) = Position::parse(&s) {
            prop_assert!(p.0.iter().all(|(chat, seq)| *chat > 0 && *seq >= 0));
        }
    }

    /// Near-valid ids (digits, dots, dashes, signs, spaces) never panic either.
    #[test]
    fn position_parse_near_valid(s in "[0-9.\\- +]{0,40}") {
        if let Some(p) = Position::parse(&s) {
            prop_assert!(p.0.iter().all(|(chat, seq)| *chat > 0 && *seq >= 0));
        }
    }

    /// Every position the server hands out parses back to itself.
    #[test]
    fn position_round_trips(map in proptest::collection::btree_map(1i64..i64::MAX, 0i64..i64::MAX, 0..20)) {
        let p = Position(map.clone());
        let parsed = Position::parse(&p.encode()).expect("own encoding parses");
        prop_assert_eq!(parsed.0, map);
    }
}

/// One client frame: text of any shape, near-protocol JSON, or binary.
fn frame() -> impl Strategy<Value = Message> {
    let kinds = prop_oneof![
        Just("ping".to_string()),
        Just("auth".to_string()),
        Just("typing.start".to_string()),
        Just("typing.stop".to_string()),
        "[a-z._]{0,12}",
        "\\PC{0,8}",
    ];
    let chat_id = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!({"nested": [1, 2]})),
    ];
    prop_oneof![
        (kinds, chat_id)
            .prop_map(|(k, c)| Message::Text(json!({"type": k, "chat_id": c}).to_string().into())),
        "\\PC{0,40}".prop_map(|s| Message::Text(s.into())),
        Just(Message::Text("{\"type\":".into())),
        Just(Message::Text(json!({"type": 7}).to_string().into())),
        Just(Message::Text(json!(["type", "ping"]).to_string().into())),
        proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| Message::Binary(b.into())),
    ]
}

/// The next JSON text frame within the deadline; `None` when the socket closed or stayed silent.
async fn next_json<S>(ws: &mut S) -> Option<Value>
where
    S: StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => {
                let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                // Presence of the caller's own connection is not an answer to a frame.
                if v["type"] != "presence.update" {
                    return Some(v);
                }
            }
            Ok(Message::Close(frame)) => panic!("socket closed: {frame:?}"),
            Ok(_) => continue,
            Err(e) => panic!("socket error: {e}"),
        }
    }
}

/// Arbitrary frames over a real, authenticated WebSocket: each gets exactly one answer (pong,
/// auth.success or an error frame), and the socket stays open and usable.
#[actix_web::test]
async fn arbitrary_websocket_frames_get_an_answer() {
    let app = spawn_app().await;
    // A user in no chat: typing frames are refused (an error frame), never relayed.
    let user = app.register("framer").await;
    let cases = samples(proptest::collection::vec(frame(), 1..6), 12);
    for frames in cases {
        let url = format!("ws://{}/ws", app.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        let auth = json!({"type": "auth", "token": format!("Bearer {}", user.token)});
        ws.send(Message::Text(auth.to_string().into()))
            .await
            .expect("send auth");
        let ok = next_json(&mut ws).await.expect("auth answer");
        assert_eq!(ok["type"], "auth.success", "{ok}");
        for f in &frames {
            ws.send(f.clone()).await.expect("send frame");
            let answer = next_json(&mut ws)
                .await
                .unwrap_or_else(|| panic!("no answer to {f:?}"));
            let kind = answer["type"].as_str().unwrap_or_default();
            assert!(
                ["pong", "auth.success", "error"].contains(&kind),
                "{f:?} answered {answer}"
            );
            if kind == "error" {
                assert!(answer["data"]["code"].is_string(), "{answer}");
            }
        }
        // Still open and serving.
        ws.send(Message::Text(json!({"type": "ping"}).to_string().into()))
            .await
            .expect("send ping");
        let pong = next_json(&mut ws).await.expect("pong");
        assert_eq!(pong["type"], "pong", "after {frames:?}: {pong}");
        let _ = ws.close(None).await;
    }
}

/// One query parameter: a list parameter or a stray one, with a value of any shape.
fn query_pair() -> impl Strategy<Value = (String, String)> {
    let name = prop_oneof![
        Just("page".to_string()),
        Just("limit".to_string()),
        Just("sort".to_string()),
        Just("order".to_string()),
        Just("fields".to_string()),
        Just("workspace_id".to_string()),
        "[a-z_]{1,8}",
    ];
    let value = prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        (0i64..200).prop_map(|v| v.to_string()),
        Just("name".to_string()),
        Just("desc".to_string()),
        Just("id,name".to_string()),
        "\\PC{0,12}",
        Just("%00".to_string()),
    ];
    (name, value)
}

/// Arbitrary list query strings: always 200 (a page that honours the parameters) or a 422
/// naming a field; never a server error.
#[actix_web::test]
async fn arbitrary_list_queries_are_200_or_422() {
    let app = spawn_app().await;
    let user = app.register("querier").await;
    let ws = app.create_workspace(&user, "q").await;
    app.create_channel(&user, ws, "one").await;
    for pairs in samples(proptest::collection::vec(query_pair(), 0..5), 48) {
        let mut url = reqwest::Url::parse(&app.url("/api/chats")).expect("url");
        for (k, v) in &pairs {
            url.query_pairs_mut().append_pair(k, v);
        }
        let query: BTreeMap<&str, &str> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let path = format!("/api/chats?{}", url.query().unwrap_or(""));
        let resp = app.call(Method::GET, &path, Some(&user.token), None).await;
        match resp.status.as_u16() {
            200 => {
                let limit = resp.body["chats"].as_array().expect("chats").len();
                assert!(limit <= 100, "{path}: {}", resp.body);
            }
            403 | 404 => {
                // A workspace_id that is not the caller's.
                assert!(query.contains_key("workspace_id"), "{path}: {}", resp.body);
            }
            422 => assert!(
                resp.body["error"]["details"]["field"].is_string(),
                "{path}: {}",
                resp.body
            ),
            other => panic!("{path} answered {other}: {}", resp.body),
        }
    }
}
