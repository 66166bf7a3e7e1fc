//! Real time: `GET /ws` (WebSocket) and `GET /api/events` (SSE). Both end in a `Session` actor;
//! this module authenticates, starts the session and hands it the client's frames; the frames
//! to the client are written by the response body (`outbound`) straight from the session's queue.
//!
//! WebSocket: the first frame must be `{"type":"auth","token":"Bearer …","last_event_id":"…"}`
//! within `FECHATTER_WS_AUTH_TIMEOUT_SECS` (a bearer token on the upgrade request, header or
//! `?access_token=`, also authenticates). The server pings every `FECHATTER_WS_PING_SECS` and
//! drops a peer silent for `FECHATTER_WS_TIMEOUT_SECS`. Close codes: see
//! `actors::session::close_code`, plus [`close_code`] here for what this module refuses.
//!
//! Inbound limits (see `ws_guard`): a frame announcing more than `FECHATTER_WS_PREAUTH_FRAME_BYTES`
//! before authentication, or `FECHATTER_WS_MAX_FRAME_BYTES` after, is refused from its header
//! (close 1009) before its payload is read; frames beyond the per-connection budget
//! (`FECHATTER_WS_FRAMES_PER_SEC`, burst `FECHATTER_WS_FRAME_BURST`) get an error frame
//! `RATE_LIMITED` and are dropped, and more than `FECHATTER_WS_FRAME_EXCESS_CLOSE` of those within
//! 10 s close the socket with 4009. A session that cannot start because the database is
//! unavailable gets an error frame `SERVICE_UNAVAILABLE` and close 1013 (try again later).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use actix_ws::AggregatedMessage;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::error::{ApiError, ApiResult};
use super::extract::{AuthUser, bearer_token};
use super::outbound::{OutboundBody, Writer};
use super::ws_guard::{Budget, FrameBudget, FrameLimit, GuardedPayload};
use crate::actors::events::frame_json;
use crate::actors::outbox::{Outbox, outbox};
use crate::actors::session::{
    ClientText, Outgoing, Refusal, Session, SessionArgs, SessionConfig, Transport, TransportClosed,
};
use crate::state::AppState;

/// Close codes of refusals made here (the session's own are in `actors::session::close_code`).
pub mod close_code {
    /// A frame announced more than the connection's limit (RFC 6455 "message too big").
    pub const FRAME_TOO_LARGE: u16 = 1009;
    /// The server cannot serve the session now (database unavailable): reconnect later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// The client kept sending frames beyond its budget.
    pub const FRAME_FLOOD: u16 = 4009;
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

/// A started session: its address and where it says why it closes.
struct Started {
    addr: Addr<Session>,
    close: oneshot::Receiver<(u16, String)>,
}

/// Starts a session for `user` writing to `out` and waits until it is subscribed (or refused).
async fn start_session(
    state: &AppState,
    user: AuthUser,
    transport: Transport,
    resume: Option<String>,
    out: Outbox<Outgoing>,
) -> Result<Started, ApiError> {
    // A reconnect storm queues here (bounded wait) rather than exhausting the pool.
    let wait = Duration::from_millis(state.config.session_start_wait_ms);
    let _turn = match tokio::time::timeout(wait, state.session_starts.clone().acquire_owned()).await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            return Err(ApiError::Unavailable(
                "too many connections starting; retry shortly".into(),
            ));
        }
    };
    let (close_tx, close_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let addr = Session::new(SessionArgs {
        conn: crate::actors::fanout::next_conn_id(),
        user_id: user.id,
        token_version: user.token_version,
        expires_at: user.expires_at,
        transport,
        out,
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
            close: close_rx,
        }),
        Ok(Err(Refusal::TooManyConnections(max))) => Err(ApiError::RateLimited {
            message: format!("At most {max} concurrent connections per user"),
            retry_after_secs: 5,
        }),
        Ok(Err(Refusal::Unavailable(m))) => Err(ApiError::Unavailable(m)),
        Ok(Err(Refusal::NoSuchUser)) => Err(ApiError::unauthorized("Invalid token")),
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
    let (out_tx, out_rx) = outbox(state.config.outbound_queue);
    let started = start_session(&state, user, Transport::Sse, resume, out_tx).await?;
    // The body is dropped as soon as the connection closes (the server does not allow
    // half-closed connections, so the peer's FIN ends it at once, not at the next write); its
    // drop tells the session, which frees the connection slot.
    let addr = started.addr;
    let stream = OutboundBody::sse(out_rx, move || addr.do_send(TransportClosed));
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
    let max = state.config.ws_max_frame_bytes;
    // Frames are sized from their headers as they arrive; the auth frame's budget first.
    let limit = FrameLimit::new(state.config.ws_preauth_frame_bytes);
    let guarded: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, actix_web::error::PayloadError>>>,
    > = Box::pin(GuardedPayload::new(body.into_inner(), limit.clone()));
    let body =
        web::Payload::from_request(&req, &mut actix_web::dev::Payload::from(guarded)).await?;
    let not_upgrade = || ApiError::validation("upgrade", "a WebSocket upgrade request is required");
    // actix-ws reads the client's frames; the frames to the client are written by our own body
    // straight from the session's outbound queue (no writer task, no second queue).
    let (_, _, stream) = actix_ws::handle(&req, body).map_err(|_| not_upgrade())?;
    let (out_tx, out_rx) = outbox(state.config.outbound_queue);
    let (outbound, writer) = OutboundBody::websocket(out_rx);
    let response: HttpResponse = actix_http::ws::handshake(req.head())
        .map_err(|_| not_upgrade())?
        .message_body(actix_web::body::BoxBody::new(
            actix_web::body::BodyStream::new(outbound),
        ))?
        .into();
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let state = state.into_inner();
    let connection = ws_connection(
        state,
        Socket {
            writer,
            out: Some(out_tx),
            stream,
            limit,
        },
        early_token,
        q.last_event_id.clone(),
    );
    actix_web::rt::spawn(connection);
    Ok(response)
}

fn send_error(writer: &Writer, code: &str, message: &str) {
    let data = json!({ "code": code, "message": message }).to_string();
    let _ = writer.text(frame_json("error", None, data.as_bytes()));
}

/// The client's end of a WebSocket: where the transport's own frames go, the session's queue,
/// where frames come from, and their limit.
struct Socket {
    writer: Writer,
    /// The session's end of the outbound queue, until the session is started with it.
    out: Option<Outbox<Outgoing>>,
    stream: actix_ws::AggregatedMessageStream,
    limit: FrameLimit,
}

/// Why no auth frame was accepted.
enum NoAuth {
    /// Closed, timed out or not an auth frame (4000).
    Missing,
    /// A frame over the pre-auth size (1009).
    TooLarge,
    /// Frames beyond the budget (4009).
    Flood,
}

/// Applies the frame budget; `Err` when the socket must close.
fn within_budget(writer: &Writer, budget: &mut FrameBudget) -> Result<bool, ()> {
    match budget.take() {
        Budget::Accept => Ok(true),
        Budget::Refuse => {
            send_error(writer, "RATE_LIMITED", "too many frames; slow down");
            Ok(false)
        }
        Budget::Close => Err(()),
    }
}

/// Waits for the auth frame; returns (token, last_event_id) or why not.
async fn await_auth(
    socket: &mut Socket,
    budget: &mut FrameBudget,
    timeout: Duration,
) -> Result<(String, Option<String>), NoAuth> {
    let Socket {
        writer,
        stream,
        limit,
        ..
    } = socket;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = match tokio::time::timeout_at(deadline, stream.recv()).await {
            Err(_) => {
                send_error(writer, "UNAUTHORIZED", "auth frame not received in time");
                return Err(NoAuth::Missing);
            }
            Ok(Some(Err(_))) if limit.refused().is_some() => return Err(NoAuth::TooLarge),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(AggregatedMessage::Close(_)))) => {
                return Err(NoAuth::Missing);
            }
            Ok(Some(Ok(m))) => m,
        };
        match within_budget(writer, budget) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(()) => return Err(NoAuth::Flood),
        }
        match msg {
            AggregatedMessage::Text(text) => {
                return match serde_json::from_str::<AuthFrame>(&text) {
                    Ok(AuthFrame {
                        kind,
                        token: Some(token),
                        last_event_id,
                    }) if kind == "auth" => Ok((token, last_event_id)),
                    _ => {
                        send_error(
                            writer,
                            "UNAUTHORIZED",
                            r#"the first frame must be {"type":"auth","token":"Bearer <token>"}"#,
                        );
                        Err(NoAuth::Missing)
                    }
                };
            }
            AggregatedMessage::Ping(b) => {
                let _ = writer.pong(b);
            }
            _ => {}
        }
    }
}

/// The close code for a session that could not start (or a token that could not be checked).
fn refusal_close(e: &ApiError, otherwise: u16) -> u16 {
    match e {
        ApiError::RateLimited { .. } => crate::actors::session::close_code::TOO_MANY_CONNECTIONS,
        ApiError::Unavailable(_) => close_code::TRY_AGAIN_LATER,
        ApiError::Internal(_) => 1011,
        _ => otherwise,
    }
}

/// One WebSocket connection: authentication, then the frame pump between socket and session.
/// Its future lives as long as the connection, and an `async fn` is as large as the largest
/// future it awaits: the one-off steps (reading the auth frame, checking the token, starting
/// the session) are boxed, so their state is freed when they finish instead of being carried by
/// every idle connection (2,920 → 1,072 bytes per connection, debug build; BENCHMARKS.md).
async fn ws_connection(
    state: Arc<AppState>,
    mut socket: Socket,
    early_token: Option<String>,
    early_resume: Option<String>,
) {
    let config = state.config.clone();
    let mut budget = FrameBudget::new(
        config.ws_frames_per_sec,
        config.ws_frame_burst,
        config.ws_frame_excess_close,
    );
    let mut early_user = None;
    if let Some(token) = early_token
        && let Ok(user) = Box::pin(state.authenticate(&token)).await
    {
        early_user = Some(user);
    }
    let (user, resume) = match early_user {
        Some(u) => (u, early_resume),
        None => {
            let (token, resume) = match Box::pin(await_auth(
                &mut socket,
                &mut budget,
                Duration::from_secs(config.ws_auth_timeout_secs),
            ))
            .await
            {
                Ok(auth) => auth,
                Err(why) => {
                    let (code, reason) = match why {
                        NoAuth::Missing => (
                            crate::actors::session::close_code::AUTH_REQUIRED,
                            "authentication required",
                        ),
                        NoAuth::TooLarge => (close_code::FRAME_TOO_LARGE, "frame too large"),
                        NoAuth::Flood => (close_code::FRAME_FLOOD, "too many frames"),
                    };
                    socket.writer.close(Some((code, reason)));
                    return;
                }
            };
            match Box::pin(state.authenticate(&token)).await {
                Ok(u) => (u, resume),
                Err(e) => {
                    send_error(&socket.writer, e.code(), &e.to_string());
                    let code = refusal_close(&e, crate::actors::session::close_code::AUTH_FAILED);
                    let reason = if code == crate::actors::session::close_code::AUTH_FAILED {
                        "invalid token"
                    } else {
                        "try again later"
                    };
                    socket.writer.close(Some((code, reason)));
                    return;
                }
            }
        }
    };
    let Some(out) = socket.out.take() else {
        return; // started once only
    };
    let start = start_session(&state, user, Transport::WebSocket, resume, out);
    let started = match Box::pin(start).await {
        Ok(s) => s,
        Err(e) => {
            send_error(&socket.writer, e.code(), &e.to_string());
            socket
                .writer
                .close(Some((refusal_close(&e, 1011), "connection refused")));
            return;
        }
    };
    let Started {
        addr,
        close: mut close_rx,
    } = started;
    drop(state);
    socket.limit.set(config.ws_max_frame_bytes);
    let Socket {
        writer,
        mut stream,
        limit,
        ..
    } = socket;
    let mut heartbeat = tokio::time::interval(Duration::from_secs(config.ws_ping_secs));
    heartbeat.tick().await;
    let timeout = Duration::from_secs(config.ws_timeout_secs);
    let mut last_heard = Instant::now();
    let end: Option<(u16, String)> = loop {
        tokio::select! {
            msg = stream.recv() => {
                let msg = match msg {
                    Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                    Some(Err(_)) if limit.refused().is_some() => {
                        break Some((close_code::FRAME_TOO_LARGE, "frame too large".into()));
                    }
                    Some(Err(e)) => break Some((1002, format!("protocol error: {e}"))),
                    Some(Ok(m)) => m,
                };
                last_heard = Instant::now();
                match within_budget(&writer, &mut budget) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(()) => break Some((close_code::FRAME_FLOOD, "too many frames".into())),
                }
                match msg {
                    AggregatedMessage::Text(text) => addr.do_send(ClientText(text.to_string())),
                    AggregatedMessage::Ping(b) => {
                        if writer.pong(b).is_err() { break None; }
                    }
                    AggregatedMessage::Pong(_) | AggregatedMessage::Close(_) => {}
                    AggregatedMessage::Binary(_) => {
                        send_error(&writer, "VALIDATION_ERROR", "binary frames are not supported");
                    }
                }
            },
            // The session closes with a reason, or stopped (its end of the oneshot dropped).
            reason = &mut close_rx => break reason.ok(),
            // The connection closed under us.
            _ = writer.closed() => break None,
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > timeout {
                    break Some((crate::actors::session::close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout".into()));
                }
                if writer.ping().is_err() { break None; }
            }
        }
    };
    addr.do_send(TransportClosed);
    writer.close(end.as_ref().map(|(code, reason)| (*code, reason.as_str())));
}
