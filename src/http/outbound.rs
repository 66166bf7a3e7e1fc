//! The response body of a real-time connection. It drains the session's outbound queue (and,
//! on a WebSocket, the transport task's control frames) straight into the socket's write
//! buffer: each frame is rendered as it is written (the event's shared JSON bytes with this
//! connection's `id` spliced in, no intermediate string per recipient), and every frame that is
//! ready is encoded into one buffer, so a burst costs one socket write.
//!
//! There is no queue between the session and the socket other than the outbound queue itself:
//! actix-web polls this body whenever its write buffer has room (about 32 KiB), so a client
//! that does not read leaves the queue to fill, and the session's slow-consumer policy applies.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::ws::{CloseCode, CloseReason, Codec, Message};
use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;
use futures_util::Stream;
use tokio_util::codec::Encoder;

use crate::actors::outbox::{Outbox, OutboxReader, PushError, outbox};
use crate::actors::session::{Outgoing, Transport};

/// Most bytes encoded per poll (the write buffer's own bound is about 32 KiB).
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Frames the WebSocket transport task writes itself (outside the session's queue).
#[derive(Debug)]
pub enum Control {
    Text(String),
    Ping,
    Pong(Bytes),
    /// A close frame (with a code and reason, or none): the body ends after it.
    Close(Option<(u16, String)>),
}

/// Capacity of the control queue: pongs, pings and error frames; never awaited (a client that
/// does not read loses control frames, then its connection). A close frame always fits.
const CONTROL_CAPACITY: usize = 32;

/// The WebSocket transport task's handle on the socket's outgoing side. Never blocks: a full
/// control queue drops the frame, `Err` means the body is gone.
pub struct Writer(Outbox<Control>);

/// The body is gone (the connection closed).
#[derive(Debug)]
pub struct Closed;

impl Writer {
    fn push(&self, c: Control) -> Result<(), Closed> {
        match self.0.try_push(c) {
            Ok(()) | Err(PushError::Full) => Ok(()),
            Err(PushError::Closed) => Err(Closed),
        }
    }

    pub fn text(&self, text: String) -> Result<(), Closed> {
        self.push(Control::Text(text))
    }

    pub fn ping(&self) -> Result<(), Closed> {
        self.push(Control::Ping)
    }

    pub fn pong(&self, payload: Bytes) -> Result<(), Closed> {
        self.push(Control::Pong(payload))
    }

    /// Sends a close frame with `code` and `reason` (none for `None`); the body ends after it.
    pub fn close(&self, reason: Option<(u16, &str)>) {
        let close = Control::Close(reason.map(|(c, r)| (c, close_reason(r).to_string())));
        let _ = self.0.push_over(close);
    }

    /// Resolves when the body is gone (the connection closed).
    pub async fn closed(&self) {
        self.0.closed().await
    }
}

/// The longest close reason a close frame can carry: a control frame's payload is at most 125
/// bytes (RFC 6455 §5.5), two of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// `reason` cut to [`MAX_CLOSE_REASON`] bytes at a character boundary.
fn close_reason(reason: &str) -> &str {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// The body of a WebSocket (frames) or SSE (text/event-stream) response.
pub struct OutboundBody {
    transport: Transport,
    frames: OutboxReader<Outgoing>,
    frames_open: bool,
    control: Option<OutboxReader<Control>>,
    codec: Codec,
    buf: BytesMut,
    done: bool,
    on_drop: Option<Box<dyn FnOnce()>>,
}

impl OutboundBody {
    /// A WebSocket body and the transport task's writer. The body ends after a close frame or
    /// once the writer is dropped.
    pub fn websocket(frames: OutboxReader<Outgoing>) -> (Self, Writer) {
        let (tx, rx) = outbox(CONTROL_CAPACITY);
        (
            Self::new(Transport::WebSocket, frames, Some(rx)),
            Writer(tx),
        )
    }

    /// An SSE body: ends when the session drops its end of the queue; `on_drop` runs when the
    /// body is dropped (the stream ended or the connection closed).
    pub fn sse(frames: OutboxReader<Outgoing>, on_drop: impl FnOnce() + 'static) -> Self {
        let mut body = Self::new(Transport::Sse, frames, None);
        body.on_drop = Some(Box::new(on_drop));
        body
    }

    fn new(
        transport: Transport,
        frames: OutboxReader<Outgoing>,
        control: Option<OutboxReader<Control>>,
    ) -> Self {
        OutboundBody {
            transport,
            frames,
            frames_open: true,
            control,
            codec: Codec::new(),
            buf: BytesMut::new(),
            done: false,
            on_drop: None,
        }
    }

    fn encode(&mut self, frame: &Outgoing) {
        match self.transport {
            Transport::WebSocket => ws_text(&mut self.buf, frame),
            Transport::Sse => sse_text(&mut self.buf, frame),
        }
    }

    /// Encodes a control frame; true when it was the close frame.
    fn encode_control(codec: &mut Codec, buf: &mut BytesMut, c: Control) -> bool {
        let (msg, last) = match c {
            Control::Text(t) => (Message::Text(ByteString::from(t)), false),
            Control::Ping => (Message::Ping(Bytes::new()), false),
            Control::Pong(b) => (Message::Pong(b), false),
            Control::Close(reason) => (
                Message::Close(reason.map(|(code, reason)| CloseReason {
                    code: CloseCode::Other(code),
                    description: Some(reason),
                })),
                true,
            ),
        };
        // Encoding our own server frames cannot fail (no masking, lengths fit).
        let _ = codec.encode(msg, buf);
        last
    }
}

impl Drop for OutboundBody {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl Stream for OutboundBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        // Control frames first: a close frame ends the body.
        let mut control_gone = false;
        if let Some(control) = &this.control {
            loop {
                match control.poll_pop(cx) {
                    Poll::Ready(Some(c)) => {
                        if Self::encode_control(&mut this.codec, &mut this.buf, c) {
                            this.done = true;
                            break;
                        }
                    }
                    Poll::Ready(None) => {
                        control_gone = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
        }
        if !this.done {
            while this.frames_open && this.buf.len() < MAX_BATCH_BYTES {
                match this.frames.poll_pop(cx) {
                    Poll::Ready(Some(frame)) => this.encode(&frame),
                    Poll::Ready(None) => this.frames_open = false,
                    Poll::Pending => break,
                }
            }
            // SSE ends with the session; a WebSocket with its transport task.
            let ended = match this.transport {
                Transport::Sse => !this.frames_open,
                Transport::WebSocket => control_gone,
            };
            if ended {
                this.done = true;
            }
        }
        if !this.buf.is_empty() {
            // The whole buffer goes: an idle connection keeps no allocation, and one large
            // frame (a busy presence window) does not leave its capacity behind for good.
            return Poll::Ready(Some(Ok(std::mem::take(&mut this.buf).freeze())));
        }
        if this.done {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// Appends `frame` as a WebSocket text frame: `{"type":..,"id":..,"data":..}` (`id` only
/// when the frame has one), written straight after an unmasked header.
pub fn ws_text(buf: &mut BytesMut, f: &Outgoing) {
    const TYPE: &[u8] = b"{\"type\":\"";
    const ID: &[u8] = b"\",\"id\":\"";
    const DATA: &[u8] = b"\",\"data\":";
    let id_len = f.id.as_ref().map_or(0, |id| ID.len() + id.len());
    let len = TYPE.len() + f.kind.len() + id_len + DATA.len() + f.data.len() + 1;
    buf.reserve(len + 10);
    buf.put_u8(0x81); // FIN + text
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    buf.put_slice(TYPE);
    buf.put_slice(f.kind.as_bytes());
    if let Some(id) = &f.id {
        buf.put_slice(ID);
        buf.put_slice(id.as_bytes());
    }
    buf.put_slice(DATA);
    buf.put_slice(&f.data);
    buf.put_u8(b'}');
}

/// Appends `frame` as an SSE event: `id:`, `event:` and `data:` lines and a blank line (the
/// data is one line: JSON has no raw newlines).
pub fn sse_text(buf: &mut BytesMut, f: &Outgoing) {
    buf.reserve(f.data.len() + f.kind.len() + 32 + f.id.as_ref().map_or(0, |i| i.len()));
    if let Some(id) = &f.id {
        buf.put_slice(b"id: ");
        buf.put_slice(id.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"event: ");
    buf.put_slice(f.kind.as_bytes());
    buf.put_slice(b"\ndata: ");
    buf.put_slice(&f.data);
    buf.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::Decoder;

    fn frame(id: Option<&str>, data: &str) -> Outgoing {
        Outgoing {
            kind: "message.created",
            id: id.map(str::to_owned),
            data: Bytes::from(data.to_owned()),
        }
    }

    /// Decodes the server frames in `buf` as a client would.
    fn decode_all(mut buf: BytesMut) -> Vec<actix_http::ws::Frame> {
        let mut codec = Codec::new().client_mode().max_size(1 << 20);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).expect("valid frame") {
            out.push(f);
        }
        assert!(buf.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn websocket_frames_are_the_event_json_with_the_id_spliced_in() {
        for size in [10, 200, 70_000] {
            let data = format!("{{\"x\":\"{}\"}}", "a".repeat(size));
            let mut buf = BytesMut::new();
            ws_text(&mut buf, &frame(Some("3.7"), &data));
            ws_text(&mut buf, &frame(None, "{}"));
            let frames = decode_all(buf);
            let texts: Vec<serde_json::Value> = frames
                .iter()
                .map(|f| match f {
                    actix_http::ws::Frame::Text(b) => serde_json::from_slice(b).expect("json"),
                    other => panic!("not text: {other:?}"),
                })
                .collect();
            assert_eq!(texts[0]["type"], "message.created");
            assert_eq!(texts[0]["id"], "3.7");
            assert_eq!(texts[0]["data"]["x"].as_str().map(str::len), Some(size));
            assert!(texts[1].get("id").is_none());
        }
    }

    #[test]
    fn sse_frames_match_the_contract() {
        let mut buf = BytesMut::new();
        sse_text(&mut buf, &frame(Some("1.2"), "{\"a\":1}"));
        sse_text(&mut buf, &frame(None, "{}"));
        assert_eq!(
            &buf[..],
            b"id: 1.2\nevent: message.created\ndata: {\"a\":1}\n\nevent: message.created\ndata: {}\n\n"
        );
    }

    #[tokio::test]
    async fn a_burst_is_one_buffer_and_close_ends_the_body() {
        use futures_util::StreamExt;
        let (tx, rx) = crate::actors::outbox::outbox(16);
        let (mut body, writer) = OutboundBody::websocket(rx);
        for n in 0..5 {
            tx.try_push(frame(Some(&format!("1.{n}")), "{}"))
                .expect("room");
        }
        let chunk = body.next().await.expect("chunk").expect("ok");
        assert_eq!(decode_all(BytesMut::from(&chunk[..])).len(), 5);
        writer.close(Some((4008, "slow consumer")));
        tx.try_push(frame(None, "{}")).expect("room");
        let chunk = body.next().await.expect("chunk").expect("ok");
        let frames = decode_all(BytesMut::from(&chunk[..]));
        assert!(
            matches!(frames.last(), Some(actix_http::ws::Frame::Close(Some(r))) if r.code == CloseCode::Other(4008))
        );
        assert!(body.next().await.is_none());
    }

    #[tokio::test]
    async fn sse_body_ends_with_the_session_and_runs_its_drop_hook() {
        use futures_util::StreamExt;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let dropped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crate::actors::outbox::outbox(4);
        let flag = dropped.clone();
        let mut body = OutboundBody::sse(rx, move || flag.store(true, Ordering::SeqCst));
        tx.try_push(frame(Some("1.1"), "{}")).expect("room");
        drop(tx);
        assert!(body.next().await.is_some());
        assert!(body.next().await.is_none());
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn close_reasons_fit_a_control_frame() {
        let long = format!("protocol error: {}", "é".repeat(100));
        let cut = close_reason(&long);
        assert!(cut.len() <= MAX_CLOSE_REASON && long.starts_with(cut));
        assert_eq!(close_reason("slow consumer"), "slow consumer");
        let mut buf = BytesMut::new();
        let done = OutboundBody::encode_control(
            &mut Codec::new(),
            &mut buf,
            Control::Close(Some((1002, cut.to_string()))),
        );
        assert!(done);
        let frames = decode_all(buf);
        assert!(matches!(
            frames.last(),
            Some(actix_http::ws::Frame::Close(Some(_)))
        ));
    }

    #[tokio::test]
    async fn a_written_buffer_leaves_no_capacity_behind() {
        use futures_util::StreamExt;
        let (tx, rx) = crate::actors::outbox::outbox(16);
        let (mut body, _writer) = OutboundBody::websocket(rx);
        let big = format!("\"{}\"", "p".repeat(30_000));
        tx.try_push(frame(Some("1.1"), &big)).expect("room");
        let chunk = body.next().await.expect("chunk").expect("ok");
        assert!(chunk.len() > 30_000);
        // Nothing of the large frame's allocation stays with the idle connection.
        assert_eq!(body.buf.capacity(), 0);
    }
}
