//! `baseline-server`: the fan-out baseline — a plain loopback WebSocket broadcast on actix-web
//! and actix-ws (the server's own WebSocket stack), with no actors, no authentication, no
//! storage and no per-chat positions. One tokio broadcast channel; one task per connection
//! copies each frame onto its socket.
//!
//! It speaks just enough of Fechatter's protocol for `fanout --baseline`: any first text frame
//! is answered with `auth.success`; `POST /api/messages {chat_id, content}` answers 201 and
//! broadcasts a `message.created` frame shaped like the real one (same fields, same size).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_ws::Message;
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::args::BaselineArgs;

/// How long a new connection has to send its first frame.
const AUTH_DEADLINE: Duration = Duration::from_secs(30);

struct Hub {
    frames: broadcast::Sender<Arc<str>>,
    next_seq: AtomicI64,
}

#[derive(Deserialize)]
struct SendBody {
    chat_id: i64,
    content: String,
}

/// Serves until interrupted.
pub async fn serve(a: &BaselineArgs) -> anyhow::Result<()> {
    if !a.addr.ip().is_loopback() {
        bail!("--addr must be a loopback address (got {})", a.addr);
    }
    let (frames, _) = broadcast::channel(a.queue.max(16));
    let hub = web::Data::new(Hub {
        frames,
        next_seq: AtomicI64::new(1),
    });
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(hub.clone())
            .route("/ws", web::get().to(websocket))
            .route("/api/messages", web::post().to(send))
            .route("/api/health", web::get().to(HttpResponse::Ok))
    })
    .backlog(4096)
    .max_connections(100_000);
    if let Some(w) = a.workers {
        server = server.workers(w.max(1));
    }
    let server = server
        .bind(a.addr)
        .with_context(|| format!("binding {}", a.addr))?;
    eprintln!("baseline broadcast server on http://{}", a.addr);
    server.run().await.context("baseline server")
}

async fn send(hub: web::Data<Hub>, body: web::Json<SendBody>) -> HttpResponse {
    let seq = hub.next_seq.fetch_add(1, Ordering::Relaxed);
    let (message, frame) = created(seq, body.chat_id, &body.content);
    // No receivers is fine: nobody is connected.
    let _ = hub.frames.send(frame.into());
    HttpResponse::Created().json(message)
}

/// A message as REST returns it and its `message.created` frame, shaped like the real server's
/// (same fields, same size). The broker baseline ([`super::nats`]) publishes the same frame.
pub fn created(seq: i64, chat_id: i64, content: &str) -> (serde_json::Value, String) {
    let now = chrono::Utc::now();
    let message = json!({
        "id": seq, "chat_id": chat_id, "sender_id": 1,
        "sender": {"id": 1, "username": "load_owner", "avatar_url": null},
        "content": content, "created_at": now, "updated_at": now, "reactions": [],
    });
    let frame = format!(
        r#"{{"type":"message.created","id":"{chat_id}.{seq}","data":{{"message":{message}}}}}"#
    );
    (message, frame)
}

async fn websocket(
    hub: web::Data<Hub>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(connection(hub.into_inner(), session, stream));
    Ok(response)
}

async fn connection(
    hub: Arc<Hub>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::MessageStream,
) {
    // The first text frame stands for authentication.
    let first = tokio::time::timeout(AUTH_DEADLINE, async {
        while let Some(Ok(msg)) = stream.next().await {
            if let Message::Text(_) = msg {
                return true;
            }
        }
        false
    })
    .await;
    if first != Ok(true) {
        let _ = session.close(None).await;
        return;
    }
    // Subscribe before answering, so nothing sent after `auth.success` is missed.
    let mut frames = hub.frames.subscribe();
    let hello =
        r#"{"type":"auth.success","data":{"user_id":1,"connection_id":0,"last_event_id":"0"}}"#;
    if session.text(hello).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(f) => if session.text(f.to_string()).await.is_err() { break },
                // A slow reader is cut off, as the real server does.
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Ping(b))) => if session.pong(&b).await.is_err() { break },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = session.close(None).await;
}
