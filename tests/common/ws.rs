//! WebSocket and SSE test clients.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::TestApp;

/// How long a test waits for an expected event before failing.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking the server's protocol.
pub struct WsClient {
    stream: Stream,
    /// The `id` of the last event received that had one (the resume position).
    pub last_event_id: Option<String>,
}

impl WsClient {
    /// Opens a socket without authenticating.
    pub async fn connect_raw(app: &TestApp) -> WsClient {
        let url = format!("ws://{}/ws", app.addr);
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("ws connect");
        WsClient {
            stream,
            last_event_id: None,
        }
    }

    /// Opens a socket, authenticates (optionally resuming) and waits for `auth.success`.
    pub async fn connect(app: &TestApp, token: &str, last_event_id: Option<&str>) -> WsClient {
        let mut ws = Self::connect_raw(app).await;
        let mut auth = json!({"type": "auth", "token": format!("Bearer {token}")});
        if let Some(id) = last_event_id {
            auth["last_event_id"] = json!(id);
        }
        ws.send(auth).await;
        let ok = ws.next_of("auth.success").await;
        ws.last_event_id = ok["data"]["last_event_id"].as_str().map(str::to_owned);
        ws
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON frame within `within`; `None` on timeout or close.
    pub async fn next_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .ok()??;
            match msg.ok()? {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).expect("server frames are JSON");
                    if let Some(id) = v["id"].as_str() {
                        self.last_event_id = Some(id.to_string());
                    }
                    return Some(v);
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next JSON frame (fails the test after the deadline).
    pub async fn next(&mut self) -> Value {
        self.next_within(EVENT_DEADLINE)
            .await
            .expect("expected a frame")
    }

    /// The next frame of type `kind`, skipping other types (presence, typing, ...).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self
                .next_within(left)
                .await
                .unwrap_or_else(|| panic!("no `{kind}` frame before the deadline"));
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Collects frames of type `kind` until `n` have arrived.
    pub async fn collect(&mut self, kind: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next_of(kind).await);
        }
        out
    }

    /// Reads until the server closes; returns the close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => panic!("socket not closed before the deadline"),
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    eprintln!("socket error instead of a close frame: {e}");
                    return None;
                }
                Ok(Some(Ok(Message::Close(frame)))) => return frame,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        // Drain until the server acknowledges, so the server has seen the close.
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(Duration::from_secs(5), self.stream.next()).await
        {}
    }
}

/// An SSE client.
pub struct SseClient {
    stream: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<eventsource_stream::Event, String>> + Send>,
    >,
    pub last_event_id: Option<String>,
}

/// One SSE event.
#[derive(Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl SseClient {
    /// Opens `/api/events` with a bearer header (or `?access_token=` when `via_query`).
    pub async fn connect(
        app: &TestApp,
        token: &str,
        last_event_id: Option<&str>,
        via_query: bool,
    ) -> Result<SseClient, reqwest::StatusCode> {
        use eventsource_stream::Eventsource;
        let mut req = if via_query {
            app.http
                .get(app.url(&format!("/api/events?access_token={token}")))
        } else {
            app.http.get(app.url("/api/events")).bearer_auth(token)
        };
        req = req
            .header("Accept", "text/event-stream")
            .timeout(Duration::from_secs(600));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.expect("sse request");
        if !resp.status().is_success() {
            return Err(resp.status());
        }
        let stream = resp
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        let mut client = SseClient {
            stream: Box::pin(stream),
            last_event_id: None,
        };
        client.next_of("ready").await;
        Ok(client)
    }

    pub async fn next(&mut self) -> SseEvent {
        let ev = tokio::time::timeout(EVENT_DEADLINE, self.stream.next())
            .await
            .expect("sse event before the deadline")
            .expect("sse stream open")
            .expect("sse parse");
        if !ev.id.is_empty() {
            self.last_event_id = Some(ev.id.clone());
        }
        SseEvent {
            event: ev.event,
            id: ev.id,
            data: serde_json::from_str(&ev.data).unwrap_or(Value::Null),
        }
    }

    /// Reads until the server ends the stream; false if it is still open at the deadline.
    pub async fn ended(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + EVENT_DEADLINE;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next persisted event, skipping ephemeral ones (presence, typing), which are live
    /// and never part of a replay: a presence change may arrive before the replay it races.
    pub async fn next_persisted(&mut self) -> SseEvent {
        loop {
            let e = self.next().await;
            if !matches!(
                e.event.as_str(),
                "presence.update" | "typing.start" | "typing.stop"
            ) {
                return e;
            }
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> SseEvent {
        loop {
            let e = self.next().await;
            if e.event == kind {
                return e;
            }
        }
    }
}
