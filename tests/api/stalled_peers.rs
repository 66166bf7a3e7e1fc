//! A client that stops reading holds bounded server resources: its socket's send buffer is
//! capped, and once it has acknowledged nothing for `FECHATTER_SOCKET_USER_TIMEOUT_MS` the
//! kernel drops the connection — also after its session was closed as a slow consumer, when
//! the close frame can no longer be written.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{spawn_app_with, test_config};
use crate::messages::fixture;

/// Whether the server side of the connection `server_port` ← `client_port` is still in the
/// kernel's table (any state but the final ones).
fn server_side_open(server_port: u16, client_port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let port = |c: &str| {
            c.rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        let (Some(local), Some(remote), Some(state)) = (cols.get(1), cols.get(2), cols.get(3))
        else {
            return false;
        };
        // 06 TIME_WAIT, 07 CLOSE: nothing held any more.
        port(local) == Some(server_port)
            && port(remote) == Some(client_port)
            && !matches!(*state, "06" | "07")
    })
}

#[actix_web::test]
async fn a_peer_that_never_reads_is_dropped() {
    let app = spawn_app_with(test_config(&[
        "--outbound-queue",
        "16",
        "--socket-send-buffer",
        "16384",
        "--socket-user-timeout-ms",
        "1000",
    ]))
    .await;
    let f = fixture(&app).await;
    // The stalled client: a tiny receive buffer, authenticated, then never reads again.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(app.addr).await.expect("connect");
    let client_port = stream.local_addr().expect("local addr").port();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", app.addr), stream)
        .await
        .expect("handshake");
    let auth = json!({"type": "auth", "token": format!("Bearer {}", f.member.token)});
    ws.send(Message::Text(auth.to_string().into()))
        .await
        .expect("auth");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("auth answered")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "auth.success" {
                break;
            }
        }
    }
    let server_port = app.addr.port();
    assert!(server_side_open(server_port, client_port));
    // Messages until the server has given up on the connection (bounded).
    let big = "x".repeat(3900);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    while server_side_open(server_port, client_port) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds the connection of a peer that never reads ({sent} sent)"
        );
        if sent < 400 {
            app.send(&f.owner, f.chat, &format!("{sent} {big}")).await;
            sent += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The client, still holding its end, is the only one left with anything.
    drop(ws);
    // Everyone else is served as before.
    let m = app.send(&f.owner, f.chat, "after").await;
    assert_eq!(m["content"], "after");
}
