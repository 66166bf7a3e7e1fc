//! WebSocket inbound guards: a payload wrapper that reads each frame's header as it arrives and
//! refuses a frame announcing more than the current limit *before* its payload is buffered
//! (actix-ws buffers a whole frame before checking its size), and the per-connection inbound
//! frame budget (a token bucket; excess frames are answered with an error, sustained excess
//! closes the socket).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use bytes::Bytes;
use futures_util::Stream;

/// Control frames (ping, pong, close) carry at most this many bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The limit a connection's frames are held to, shared between the guard and the connection
/// task (which raises it once the client is authenticated).
#[derive(Clone)]
pub struct FrameLimit(Rc<LimitState>);

struct LimitState {
    /// Largest data message (a frame, or the fragments of one message together), bytes.
    max: Cell<u64>,
    /// Set when a frame was refused for its size (what it announced).
    refused: Cell<Option<u64>>,
}

impl FrameLimit {
    pub fn new(max: usize) -> Self {
        FrameLimit(Rc::new(LimitState {
            max: Cell::new(max as u64),
            refused: Cell::new(None),
        }))
    }

    pub fn set(&self, max: usize) {
        self.0.max.set(max as u64);
    }

    /// The announced size of the frame refused, if one was.
    pub fn refused(&self) -> Option<u64> {
        self.0.refused.get()
    }
}

/// Where the parser is in the client's byte stream.
enum Phase {
    /// Reading a frame header (2 to 14 bytes).
    Header { buf: [u8; 14], have: usize },
    /// Skipping over `left` payload bytes of the current frame.
    Payload { left: u64 },
    /// A frame was refused: nothing more is read.
    Refused,
}

/// Wraps the request payload of an upgraded connection; see the module docs.
pub struct GuardedPayload {
    inner: Payload,
    limit: FrameLimit,
    phase: Phase,
    /// Bytes of the data message being received so far (fragments add up).
    message: u64,
}

impl GuardedPayload {
    pub fn new(inner: Payload, limit: FrameLimit) -> Self {
        GuardedPayload {
            inner,
            limit,
            phase: Phase::Header {
                buf: [0; 14],
                have: 0,
            },
            message: 0,
        }
    }

    /// The header length once its first two bytes are known.
    fn header_len(b1: u8) -> usize {
        let ext = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    /// Checks a complete header; `Err(announced)` refuses the frame.
    fn admit(&mut self, h: &[u8]) -> Result<u64, u64> {
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes([h[2], h[3]]) as u64,
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[2..10]);
                u64::from_be_bytes(b)
            }
            n => n as u64,
        };
        if opcode & 0x08 != 0 {
            // Control frames may interleave with a fragmented message and never count to it.
            return if len > MAX_CONTROL_PAYLOAD {
                Err(len)
            } else {
                Ok(len)
            };
        }
        let total = self.message.saturating_add(len);
        if total > self.limit.0.max.get() {
            return Err(total);
        }
        self.message = if fin { 0 } else { total };
        Ok(len)
    }

    /// Runs the parser over `chunk`; `Err(announced)` if a frame in it is refused.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), u64> {
        let mut pos = 0;
        while pos < chunk.len() {
            match &mut self.phase {
                Phase::Refused => return Err(0),
                Phase::Payload { left } => {
                    let take = (*left).min((chunk.len() - pos) as u64);
                    *left -= take;
                    pos += take as usize;
                    if *left == 0 {
                        self.phase = Phase::Header {
                            buf: [0; 14],
                            have: 0,
                        };
                    }
                }
                Phase::Header { buf, have } => {
                    buf[*have] = chunk[pos];
                    *have += 1;
                    pos += 1;
                    if *have < 2 || *have < Self::header_len(buf[1]) {
                        continue;
                    }
                    let header = *buf;
                    let n = *have;
                    match self.admit(&header[..n]) {
                        Ok(0) => {
                            self.phase = Phase::Header {
                                buf: [0; 14],
                                have: 0,
                            }
                        }
                        Ok(len) => self.phase = Phase::Payload { left: len },
                        Err(announced) => {
                            self.phase = Phase::Refused;
                            return Err(announced);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Stream for GuardedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if matches!(this.phase, Phase::Refused) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scan(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(announced) => {
                    this.limit.0.refused.set(Some(announced));
                    Poll::Ready(Some(Err(PayloadError::Overflow)))
                }
            },
            other => other,
        }
    }
}

/// What the frame budget says about one inbound frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Budget {
    Accept,
    /// Over budget: answer with an error, drop the frame.
    Refuse,
    /// Over budget for too long: close the socket.
    Close,
}

/// Inbound frames per connection: `rate` per second with bursts of `burst`; more than
/// `close_after` refusals within [`FrameBudget::WINDOW`] closes the connection.
pub struct FrameBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    close_after: u32,
    refused: u32,
    window_start: Instant,
}

impl FrameBudget {
    pub const WINDOW: Duration = Duration::from_secs(10);

    pub fn new(rate: u32, burst: u32, close_after: u32) -> Self {
        let now = Instant::now();
        FrameBudget {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            tokens: burst.max(1) as f64,
            last: now,
            close_after,
            refused: 0,
            window_start: now,
        }
    }

    pub fn take(&mut self) -> Budget {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Budget::Accept;
        }
        if now.duration_since(self.window_start) > Self::WINDOW {
            self.window_start = now;
            self.refused = 0;
        }
        self.refused += 1;
        if self.refused > self.close_after {
            Budget::Close
        } else {
            Budget::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> GuardedPayload {
        GuardedPayload::new(Payload::None, FrameLimit::new(max))
    }

    /// A masked client frame header announcing `len` bytes.
    fn header(fin: bool, opcode: u8, len: u64) -> Vec<u8> {
        let mut h = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u16::MAX as u64 {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    #[test]
    fn refuses_on_the_header_alone() {
        let mut g = guard(1024);
        assert_eq!(g.scan(&header(true, 1, 16 << 20)), Err(16 << 20));
        // Byte by byte: refused as soon as the header is complete.
        let mut g = guard(1024);
        let h = header(true, 2, 2000);
        for b in &h[..h.len() - 1] {
            assert_eq!(g.scan(&[*b]), Ok(()));
        }
        assert_eq!(g.scan(&h[h.len() - 1..]), Err(2000));
    }

    #[test]
    fn admits_frames_within_limit_across_chunks() {
        let mut g = guard(1024);
        let mut bytes = header(true, 1, 1000);
        bytes.extend(std::iter::repeat_n(b'x', 1000));
        bytes.extend(header(true, 9, 4)); // ping
        bytes.extend_from_slice(b"ping");
        bytes.extend(header(true, 1, 0));
        for chunk in bytes.chunks(7) {
            assert_eq!(g.scan(chunk), Ok(()));
        }
        assert!(matches!(g.phase, Phase::Header { have: 0, .. }));
    }

    #[test]
    fn fragments_add_up_and_control_frames_are_small() {
        let mut g = guard(1000);
        let mut bytes = header(false, 1, 600);
        bytes.extend(std::iter::repeat_n(b'x', 600));
        assert_eq!(g.scan(&bytes), Ok(()));
        assert_eq!(g.scan(&header(true, 0, 600)), Err(1200));
        let mut g = guard(1 << 20);
        assert_eq!(g.scan(&header(true, 9, 126)), Err(126));
    }

    #[test]
    fn the_limit_can_be_raised() {
        let limit = FrameLimit::new(100);
        let mut g = GuardedPayload::new(Payload::None, limit.clone());
        limit.set(10_000);
        assert_eq!(g.scan(&header(true, 1, 5000)), Ok(()));
    }

    #[test]
    fn budget_refuses_then_closes() {
        let mut b = FrameBudget::new(1, 3, 2);
        assert_eq!(b.take(), Budget::Accept);
        assert_eq!(b.take(), Budget::Accept);
        assert_eq!(b.take(), Budget::Accept);
        assert_eq!(b.take(), Budget::Refuse);
        assert_eq!(b.take(), Budget::Refuse);
        assert_eq!(b.take(), Budget::Close);
    }
}
