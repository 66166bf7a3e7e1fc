//! Real time: `GET /ws` (WebSocket) and `GET /api/events` (SSE). Both end in a `Session` actor;
//! this module only authenticates and moves frames between the socket and the session.
//!
//! WebSocket: the first frame must be `{"type":"auth","token":"Bearer …","last_event_id":"…"}`
//! within `FECHATTER_WS_AUTH_TIMEOUT_SECS` (a bearer token on the upgrade request, header or
//! `?access_token=`, also authenticates). The server pings every `FECHATTER_WS_PING_SECS` and
//! drops a peer silent for `FECHATTER_WS_TIMEOUT_SECS`. Close codes: see
//! `actors::session::close_code`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, bearer_token};
use crate::actors::events::frame_json;
use crate::actors::session::{
    ClientText, Outgoing, Refusal, Session, SessionArgs, SessionConfig, Transport, TransportClosed,
    close_code,
};
use crate::state::AppState;

/// Largest WebSocket message accepted from a client.
const MAX_CLIENT_FRAME: usize = 64 * 1024;

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn next_conn_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// The access token, for clients that cannot set `Authorization`.
    pub access_token: Option<String>,
    /// Resume after this event id (also `Last-Event-ID`).
    pub last_event_id: Option<String>,
}

#[derive(Deserialize)]
struct AuthFrame {
    #[serde(rename = "type")]
    kind: String,
    token: Option<String>,
    last_event_id: Option<String>,
}

/// A started session and its transport ends.
struct Started {
    addr: Addr<Session>,
    out: mpsc::Receiver<Outgoing>,
    close: oneshot::Receiver<(u16, String)>,
}

/// Starts a session for `user` and waits until it is subscribed (or refused).
async fn start_session(
    state: &AppState,
    user: AuthUser,
    transport: Transport,
    resume: Option<String>,
) -> Result<Started, ApiError> {
    let username: Arc<str> = state
        .store
        .user_by_id(user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("Invalid token"))?
        .username
        .into();
    let (out_tx, out_rx) = mpsc::channel(state.config.outbound_queue);
    let (close_tx, close_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let addr = Session::new(SessionArgs {
        conn: next_conn_id(),
        user_id: user.id,
        username,
        token_version: user.token_version,
        expires_at: user.expires_at,
        transport,
        out: out_tx,
        close: close_tx,
        ready: ready_tx,
        resume,
        store: state.store.clone(),
        hub: state.hub.clone(),
        presence: state.presence.clone(),
        config: SessionConfig::from_config(&state.config),
        faults: state.faults.clone(),
        cluster: state.cluster.as_ref().map(|c| c.presence()),
    })
    .start();
    match ready_rx.await {
        Ok(Ok(())) => Ok(Started {
            addr,
            out: out_rx,
            close: close_rx,
        }),
        Ok(Err(Refusal::TooManyConnections(max))) => Err(ApiError::RateLimited {
            message: format!("At most {max} concurrent connections per user"),
            retry_after_secs: 5,
        }),
        Ok(Err(Refusal::Unavailable(m))) => Err(ApiError::Unavailable(m)),
        Err(_) => Err(ApiError::Unavailable("session did not start".into())),
    }
}

/// `GET /api/events` — Server-Sent Events. Token from `Authorization: Bearer` or
/// `?access_token=`; resume from `Last-Event-ID` or `?last_event_id=`.
#[utoipa::path(get, path = "/api/events", tag = "realtime",
    summary = "Server-Sent Events stream", params(StreamQuery),
    responses((status = 200, description = "An endless text/event-stream", content_type = "text/event-stream", body = String)))]
pub async fn sse(
    state: web::Data<AppState>,
    req: HttpRequest,
    q: web::Query<StreamQuery>,
) -> ApiResult<HttpResponse> {
    let token = bearer_token(&req)
        .map(str::to_owned)
        .or_else(|| q.access_token.clone())
        .ok_or_else(|| ApiError::unauthorized("Missing bearer token (header or access_token)"))?;
    let user = state.authenticate(&token).await?;
    let resume = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| q.last_event_id.clone());
    let started = start_session(&state, user, Transport::Sse, resume).await?;
    let stream = futures_util::stream::unfold(started, |mut s| async move {
        match s.out.recv().await {
            Some(Outgoing::Sse(bytes)) => Some((Ok::<_, actix_web::Error>(bytes), s)),
            Some(Outgoing::Text(_)) => Some((Ok(bytes::Bytes::new()), s)),
            None => {
                s.addr.do_send(TransportClosed);
                None
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}

/// `GET /ws` — upgrades, then hands the socket to [`ws_connection`].
#[utoipa::path(get, path = "/ws", tag = "realtime",
    summary = "WebSocket upgrade; authenticate with the first frame or the bearer token",
    params(StreamQuery), security((), ("bearer" = [])),
    responses((status = 101, description = "Switching protocols"),
        (status = 422, description = "Not a WebSocket upgrade request")))]
pub async fn websocket(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Payload,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let early_token = bearer_token(&req)
        .map(str::to_owned)
        .or_else(|| q.access_token.clone());
    let (response, session, stream) = actix_ws::handle(&req, body)
        .map_err(|_| ApiError::validation("upgrade", "a WebSocket upgrade request is required"))?;
    let stream = stream
        .max_frame_size(MAX_CLIENT_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_CLIENT_FRAME);
    let state = state.into_inner();
    actix_web::rt::spawn(ws_connection(
        state,
        session,
        stream,
        early_token,
        q.last_event_id.clone(),
    ));
    Ok(response)
}

async fn close(session: actix_ws::Session, code: u16, reason: &str) {
    let _ = session
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(reason.to_string()),
        }))
        .await;
}

async fn send_error(session: &mut actix_ws::Session, code: &str, message: &str) {
    let data = json!({ "code": code, "message": message }).to_string();
    let _ = session
        .text(frame_json("error", None, data.as_bytes()))
        .await;
}

/// Waits for the auth frame; returns (token, last_event_id) or closes the socket.
async fn await_auth(
    session: &mut actix_ws::Session,
    stream: &mut actix_ws::AggregatedMessageStream,
    timeout: Duration,
) -> Option<(String, Option<String>)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.recv()).await {
            Err(_) => {
                send_error(session, "UNAUTHORIZED", "auth frame not received in time").await;
                return None;
            }
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(AggregatedMessage::Close(_)))) => return None,
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            AggregatedMessage::Text(text) => {
                return match serde_json::from_str::<AuthFrame>(&text) {
                    Ok(f) if f.kind == "auth" && f.token.is_some() => {
                        f.token.map(|t| (t, f.last_event_id))
                    }
                    _ => {
                        send_error(
                            session,
                            "UNAUTHORIZED",
                            r#"the first frame must be {"type":"auth","token":"Bearer <token>"}"#,
                        )
                        .await;
                        None
                    }
                };
            }
            AggregatedMessage::Ping(b) => {
                let _ = session.pong(&b).await;
            }
            _ => {}
        }
    }
}

/// One WebSocket connection: authentication, then the frame pump between socket and session.
async fn ws_connection(
    state: Arc<AppState>,
    mut session: actix_ws::Session,
    mut stream: actix_ws::AggregatedMessageStream,
    early_token: Option<String>,
    early_resume: Option<String>,
) {
    let config = state.config.clone();
    let mut early_user = None;
    if let Some(token) = early_token {
        if let Ok(user) = state.authenticate(&token).await {
            early_user = Some(user);
        }
    }
    let (user, resume) = match early_user {
        Some(u) => (u, early_resume),
        None => {
            let Some((token, resume)) = await_auth(
                &mut session,
                &mut stream,
                Duration::from_secs(config.ws_auth_timeout_secs),
            )
            .await
            else {
                close(
                    session,
                    close_code::AUTH_REQUIRED,
                    "authentication required",
                )
                .await;
                return;
            };
            match state.authenticate(&token).await {
                Ok(u) => (u, resume),
                Err(e) => {
                    send_error(&mut session, e.code(), &e.to_string()).await;
                    close(session, close_code::AUTH_FAILED, "invalid token").await;
                    return;
                }
            }
        }
    };
    let started = match start_session(&state, user, Transport::WebSocket, resume).await {
        Ok(s) => s,
        Err(e) => {
            send_error(&mut session, e.code(), &e.to_string()).await;
            let code = match e {
                ApiError::RateLimited { .. } => close_code::TOO_MANY_CONNECTIONS,
                _ => 1011,
            };
            close(session, code, "connection refused").await;
            return;
        }
    };
    let Started {
        addr,
        mut out,
        close: mut close_rx,
    } = started;
    drop(state);
    let mut heartbeat = tokio::time::interval(Duration::from_secs(config.ws_ping_secs));
    heartbeat.tick().await;
    let timeout = Duration::from_secs(config.ws_timeout_secs);
    let mut last_heard = Instant::now();
    let mut close_open = true;
    let end: Option<(u16, String)> = loop {
        tokio::select! {
            msg = stream.recv() => match msg {
                Some(Ok(AggregatedMessage::Text(text))) => {
                    last_heard = Instant::now();
                    addr.do_send(ClientText(text.to_string()));
                }
                Some(Ok(AggregatedMessage::Ping(b))) => {
                    last_heard = Instant::now();
                    if session.pong(&b).await.is_err() { break None; }
                }
                Some(Ok(AggregatedMessage::Pong(_))) => last_heard = Instant::now(),
                Some(Ok(AggregatedMessage::Binary(_))) => {
                    last_heard = Instant::now();
                    send_error(&mut session, "VALIDATION_ERROR", "binary frames are not supported").await;
                }
                Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                Some(Err(e)) => break Some((1002, format!("protocol error: {e}"))),
            },
            frame = out.recv() => match frame {
                Some(Outgoing::Text(text)) => if session.text(text).await.is_err() { break None; },
                Some(Outgoing::Sse(_)) => {}
                // The session stopped; it may have said why just before.
                None => break close_rx.try_recv().ok(),
            },
            reason = &mut close_rx, if close_open => match reason {
                Ok(reason) => break Some(reason),
                Err(_) => close_open = false,
            },
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > timeout {
                    break Some((close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout".into()));
                }
                if session.ping(b"").await.is_err() { break None; }
            }
        }
    };
    addr.do_send(TransportClosed);
    if let Some((code, reason)) = end {
        close(session, code, &reason).await;
    } else {
        let _ = session.close(None).await;
    }
}
