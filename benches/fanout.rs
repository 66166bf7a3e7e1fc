//! Event serialisation and fan-out in process, with the crate's own types.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-bench cargo bench --bench fanout
//! ```
//!
//! - `event/serialise`: `Event::new` of a `message.created` (done once per message by the room).
//! - `event/ws_frame`: the per-recipient frame: the connection's `Position` encoded and spliced
//!   in as `id` (`Event::ws_frame`), as every session does for every event.
//! - `fanout/actors/N`: a room-like loop `try_send`s `Push::Event(Arc<Event>)` to N actix
//!   recipients (started on an arbiter of their own, as sessions live on other threads than
//!   rooms); each one, like `Session::emit`, advances its position, builds its frame and
//!   `try_send`s it into a bounded tokio mpsc (its outbound queue). Timed until the last
//!   recipient has queued the last frame.
//! - `fanout/plain_loop/N`: the baseline: the same frames built and queued into N bounded tokio
//!   mpsc channels by one plain loop, no actors. The ratio of the two is the actor layer's cost.
//!
//! - `frame/before/C` and `frame/after/C`: one recipient's frame for a connection following C
//!   chats, from the event to the bytes in the socket's write buffer. Before (up to commit
//!   e90a584): the full position encoded as `id`, the frame built as a `String`, then encoded
//!   by the WebSocket codec into the write buffer (actix-ws's writer). After: the id (a
//!   checkpoint plus the chats that moved once C > `FECHATTER_ID_CHATS_MAX`) and the event's
//!   shared bytes written straight into the buffer (`http::outbound::ws_text`).
//!
//! Throughput is deliveries (frames queued) per second; each iteration fans out `EVENTS` events.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::prelude::*;
use chrono::Utc;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fechatter::actors::events::{Event, EventKind, MessageData, MessageView, Position, SenderView};
use fechatter::actors::room::Push;
use tokio::sync::{Notify, mpsc};

const CHAT_ID: i64 = 4242;
/// Events fanned out per iteration (below the queues' capacities, so nothing is dropped).
const EVENTS: usize = 16;
/// The server's defaults: `FECHATTER_OUTBOUND_QUEUE` (512) and a session mailbox of twice that.
const OUTBOUND_QUEUE: usize = 512;
const MAILBOX: usize = 2 * OUTBOUND_QUEUE;

/// A `message.created` for a message of about 200 bytes of JSON (`data` object).
fn message_view(seq: i64) -> MessageView {
    let now = Utc::now();
    MessageView {
        id: 1_000_000 + seq,
        chat_id: CHAT_ID,
        sender_id: 17,
        sender: SenderView {
            id: 17,
            username: "alice".into(),
            avatar_url: None,
        },
        content: "Shipping the release at five, please review the changelog".into(),
        created_at: now,
        updated_at: now,
        reactions: Vec::new(),
        idempotency_key: None,
    }
}

fn created(seq: i64) -> Arc<Event> {
    let view = message_view(seq);
    Event::new(
        EventKind::MessageCreated,
        Some(CHAT_ID),
        Some(seq),
        &MessageData { message: &view },
    )
}

fn position(seq: i64) -> Position {
    // A connection following a few chats, as a typical user does.
    let mut p = Position::default();
    for (i, chat) in [7, 19, 311, 90_001].into_iter().enumerate() {
        p.0.insert(chat, 1000 + i as i64 * 731);
    }
    p.0.insert(CHAT_ID, seq);
    p
}

/// What `Session::emit_event` does for a persisted event: advance the position, build the frame
/// with the position as `id`, queue it without waiting.
fn emit(positions: &mut Position, out: &mpsc::Sender<String>, event: &Event) -> bool {
    if let (Some(chat), Some(seq)) = (event.chat_id, event.seq) {
        match positions.0.get_mut(&chat) {
            Some(p) if seq > *p => *p = seq,
            _ => return false,
        }
    }
    let id = positions.encode();
    out.try_send(event.ws_frame(Some(&id))).is_ok()
}

fn events(c: &mut Criterion) {
    let view = message_view(1);
    let event = created(1);
    let pos = position(1);
    println!(
        "message.created data: {} bytes; WebSocket frame: {} bytes",
        event.data.len(),
        event.ws_frame(Some(&pos.encode())).len()
    );
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("serialise", |b| {
        b.iter(|| {
            Event::new(
                EventKind::MessageCreated,
                Some(CHAT_ID),
                Some(black_box(2)),
                &MessageData {
                    message: black_box(&view),
                },
            )
        })
    });
    g.bench_function("ws_frame", |b| {
        b.iter(|| {
            let id = black_box(&pos).encode();
            black_box(&event).ws_frame(Some(&id))
        })
    });
    g.finish();
}

// ---- actors --------------------------------------------------------------------------------

/// Counts frames queued by all sinks; wakes the bench when `target` is reached.
struct Done {
    count: AtomicUsize,
    target: AtomicUsize,
    notify: Notify,
}

impl Done {
    fn add(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target.load(Ordering::Acquire) {
            self.notify.notify_one();
        }
    }
}

/// A session stand-in: position, frame, bounded outbound queue.
struct Sink {
    positions: Position,
    out: mpsc::Sender<String>,
    done: Arc<Done>,
}

impl Actor for Sink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(MAILBOX);
    }
}

impl Handler<Push> for Sink {
    type Result = ();

    fn handle(&mut self, msg: Push, _: &mut Self::Context) {
        if let Push::Event(event) = msg
            && emit(&mut self.positions, &self.out, &event)
        {
            self.done.add();
        }
    }
}

/// A room's subscriber list, fanned out to as `ChatRoom::fanout` does.
struct Subscriber {
    recipient: Recipient<Push>,
}

fn fanout_loop(subscribers: &mut HashMap<u64, Subscriber>, event: &Arc<Event>) -> usize {
    let mut delivered = 0;
    let mut gone = Vec::new();
    for (conn, sub) in subscribers.iter() {
        match sub.recipient.try_send(Push::Event(event.clone())) {
            Ok(()) => delivered += 1,
            Err(SendError::Full(_)) | Err(SendError::Closed(_)) => gone.push(*conn),
        }
    }
    for conn in gone {
        subscribers.remove(&conn);
    }
    delivered
}

fn fanout(c: &mut Criterion) {
    let system = actix::System::new();
    let mut g = c.benchmark_group("fanout");
    g.measurement_time(Duration::from_secs(8));
    g.sample_size(20);
    for n in [100usize, 1_000, 10_000] {
        g.throughput(Throughput::Elements((n * EVENTS) as u64));

        // Actors: N sinks on one arbiter, fed from this thread.
        let (mut subscribers, mut receivers, done, arbiter) = system.block_on(async {
            let arbiter = Arbiter::new();
            let done = Arc::new(Done {
                count: AtomicUsize::new(0),
                target: AtomicUsize::new(usize::MAX),
                notify: Notify::new(),
            });
            let mut subscribers = HashMap::with_capacity(n);
            let mut receivers = Vec::with_capacity(n);
            for conn in 0..n as u64 {
                let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
                let done = done.clone();
                let addr = Sink::start_in_arbiter(&arbiter.handle(), move |_| Sink {
                    positions: position(0),
                    out: tx,
                    done,
                });
                subscribers.insert(
                    conn,
                    Subscriber {
                        recipient: addr.recipient(),
                    },
                );
                receivers.push(rx);
            }
            (subscribers, receivers, done, arbiter)
        });
        let mut seq = 0i64;
        g.bench_with_input(BenchmarkId::new("actors", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<Arc<Event>> = (0..EVENTS)
                        .map(|_| {
                            seq += 1;
                            created(seq)
                        })
                        .collect();
                    done.count.store(0, Ordering::Release);
                    done.target.store(n * EVENTS, Ordering::Release);
                    let started = Instant::now();
                    system.block_on(async {
                        let notified = done.notify.notified();
                        let mut sent = 0;
                        for event in &batch {
                            sent += fanout_loop(&mut subscribers, event);
                        }
                        assert_eq!(sent, n * EVENTS, "a sink's mailbox was full");
                        tokio::time::timeout(Duration::from_secs(60), notified)
                            .await
                            .expect("every recipient queued every frame");
                    });
                    total += started.elapsed();
                    for rx in &mut receivers {
                        while rx.try_recv().is_ok() {}
                    }
                }
                total
            })
        });
        arbiter.stop();
        drop(subscribers);

        // Baseline: the same frames into N bounded channels, one plain loop.
        let mut plain: Vec<(Position, mpsc::Sender<String>, mpsc::Receiver<String>)> = (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
                (position(0), tx, rx)
            })
            .collect();
        let mut seq = 0i64;
        g.bench_with_input(BenchmarkId::new("plain_loop", n), &n, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch: Vec<Arc<Event>> = (0..EVENTS)
                        .map(|_| {
                            seq += 1;
                            created(seq)
                        })
                        .collect();
                    let started = Instant::now();
                    let mut sent = 0;
                    for event in &batch {
                        for (positions, tx, _) in plain.iter_mut() {
                            sent += usize::from(emit(positions, tx, event));
                        }
                    }
                    total += started.elapsed();
                    assert_eq!(sent, n * EVENTS);
                    for (_, _, rx) in &mut plain {
                        while rx.try_recv().is_ok() {}
                    }
                }
                total
            })
        });
    }
    g.finish();
}

/// A position in `chats` chats (the event's chat among them).
fn position_in(chats: usize, seq: i64) -> Position {
    let mut p = Position::default();
    for i in 0..chats.saturating_sub(1) {
        p.0.insert(10_000 + i as i64 * 37, 1000 + i as i64 * 7);
    }
    p.0.insert(CHAT_ID, seq);
    p
}

fn frame_path(c: &mut Criterion) {
    use actix_http::ws::{Codec, Message};
    use bytes::BytesMut;
    use fechatter::actors::events::ResumeId;
    use fechatter::actors::session::Outgoing;
    use tokio_util::codec::Encoder;
    let event = created(1);
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(1));
    for chats in [5usize, 200] {
        let pos = position_in(chats, 1);
        let mut buf = BytesMut::with_capacity(1 << 16);
        let mut codec = Codec::new();
        g.bench_with_input(BenchmarkId::new("before", chats), &chats, |b, _| {
            b.iter(|| {
                let id = black_box(&pos).encode();
                let text = black_box(&event).ws_frame(Some(&id));
                let _ = codec.encode(Message::Text(text.into()), &mut buf);
                buf.clear();
            })
        });
        g.bench_with_input(BenchmarkId::new("after", chats), &chats, |b, &chats| {
            b.iter(|| {
                let pos = black_box(&pos);
                let id = if chats > 16 {
                    // A checkpoint plus the few chats that moved since (here: this one).
                    ResumeId::encode_checkpoint(123_456, [(CHAT_ID, pos.0[&CHAT_ID])].into_iter())
                } else {
                    pos.encode()
                };
                let frame = Outgoing {
                    kind: event.kind.as_str(),
                    id: Some(id),
                    data: event.data.clone(),
                };
                fechatter::http::outbound::ws_text(&mut buf, black_box(&frame));
                buf.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, events, fanout, frame_path);
criterion_main!(benches);
