//! A connection's bounded outbound queue: its `Session` pushes frames, the socket's response
//! body (`http::outbound`) drains them. Both live on the connection's worker thread (the
//! session is started where the request is served), so the queue is a `VecDeque` in a
//! `RefCell` with two wakers: no atomics per frame, and no memory until frames are queued (an
//! idle connection's queue is empty and holds nothing; a drained one gives its space back).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::session::Outgoing;

/// Capacity kept by an emptied queue (more is given back).
const KEEP: usize = 16;

struct Inner {
    frames: VecDeque<Outgoing>,
    max: usize,
    reader: Option<Waker>,
    /// The session waits until this many slots are free.
    space: Option<(usize, Waker)>,
    sender_gone: bool,
    reader_gone: bool,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    Full,
    /// The socket is gone.
    Closed,
}

/// The session's end.
pub struct Outbox(Rc<RefCell<Inner>>);

/// The socket body's end.
pub struct OutboxReader(Rc<RefCell<Inner>>);

/// A queue of at most `max` frames.
pub fn outbox(max: usize) -> (Outbox, OutboxReader) {
    let inner = Rc::new(RefCell::new(Inner {
        frames: VecDeque::new(),
        max: max.max(1),
        reader: None,
        space: None,
        sender_gone: false,
        reader_gone: false,
    }));
    (Outbox(inner.clone()), OutboxReader(inner))
}

fn wake(w: Option<Waker>) {
    if let Some(w) = w {
        w.wake();
    }
}

impl Outbox {
    pub fn try_push(&self, frame: Outgoing) -> Result<(), PushError> {
        let mut q = self.0.borrow_mut();
        if q.reader_gone {
            return Err(PushError::Closed);
        }
        if q.frames.len() >= q.max {
            return Err(PushError::Full);
        }
        q.frames.push_back(frame);
        let w = q.reader.take();
        drop(q);
        wake(w);
        Ok(())
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        let q = self.0.borrow();
        q.max - q.frames.len()
    }

    pub fn max(&self) -> usize {
        self.0.borrow().max
    }

    /// A handle to wait for free slots with (a future outlives a borrow of the session).
    pub fn waiter(&self) -> SpaceWaiter {
        SpaceWaiter(self.0.clone())
    }
}

/// Waits for free slots in a connection's queue; does not keep the queue open.
pub struct SpaceWaiter(Rc<RefCell<Inner>>);

impl SpaceWaiter {
    /// Resolves once `n` slots are free (true), or the socket is gone (false).
    pub async fn wait_free(&self, n: usize) -> bool {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut q = self.0.borrow_mut();
            if q.reader_gone {
                return Poll::Ready(false);
            }
            let n = n.min(q.max);
            if q.max - q.frames.len() >= n {
                q.space = None;
                return Poll::Ready(true);
            }
            q.space = Some((n, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut q = self.0.borrow_mut();
        q.sender_gone = true;
        let w = q.reader.take();
        drop(q);
        wake(w);
    }
}

impl OutboxReader {
    /// The next frame; `Ready(None)` once the session is gone and the queue is empty.
    pub fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<Outgoing>> {
        let mut q = self.0.borrow_mut();
        match q.frames.pop_front() {
            Some(f) => {
                let mut woken = None;
                if let Some((n, _)) = &q.space {
                    if q.max - q.frames.len() >= *n {
                        woken = q.space.take().map(|(_, w)| w);
                    }
                }
                if q.frames.is_empty() && q.frames.capacity() > KEEP {
                    q.frames.shrink_to(KEEP);
                }
                drop(q);
                wake(woken);
                Poll::Ready(Some(f))
            }
            None if q.sender_gone => Poll::Ready(None),
            None => {
                if !q.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    q.reader = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        let mut q = self.0.borrow_mut();
        q.reader_gone = true;
        q.frames.clear();
        let w = q.space.take().map(|(_, w)| w);
        drop(q);
        wake(w);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures_util::FutureExt;

    fn frame() -> Outgoing {
        Outgoing {
            kind: "x",
            id: None,
            data: Bytes::new(),
        }
    }

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn bounded_then_closed() {
        let (tx, rx) = outbox(2);
        assert_eq!(tx.try_push(frame()), Ok(()));
        assert_eq!(tx.try_push(frame()), Ok(()));
        assert_eq!(tx.try_push(frame()), Err(PushError::Full));
        assert_eq!(tx.free(), 0);
        assert!(rx.poll_pop(&noop_cx()).is_ready());
        assert_eq!(tx.free(), 1);
        drop(rx);
        assert_eq!(tx.try_push(frame()), Err(PushError::Closed));
    }

    #[test]
    fn the_reader_ends_after_the_session() {
        let (tx, rx) = outbox(4);
        tx.try_push(frame()).expect("room");
        drop(tx);
        assert!(matches!(rx.poll_pop(&noop_cx()), Poll::Ready(Some(_))));
        assert!(matches!(rx.poll_pop(&noop_cx()), Poll::Ready(None)));
    }

    #[test]
    fn a_waiter_does_not_keep_the_queue_open() {
        let (tx, rx) = outbox(4);
        let waiter = tx.waiter();
        assert!(rx.poll_pop(&noop_cx()).is_pending());
        drop(tx);
        assert!(matches!(rx.poll_pop(&noop_cx()), Poll::Ready(None)));
        drop(waiter);
    }

    #[tokio::test]
    async fn wait_free_resolves_as_the_reader_drains() {
        let (tx, rx) = outbox(4);
        for _ in 0..4 {
            tx.try_push(frame()).expect("room");
        }
        let h = tx.waiter();
        let mut wait = Box::pin(async move { h.wait_free(2).await });
        assert!((&mut wait).now_or_never().is_none());
        let _ = rx.poll_pop(&noop_cx());
        let _ = rx.poll_pop(&noop_cx());
        assert!(wait.await);
        let h = tx.waiter();
        tx.try_push(frame()).expect("room");
        tx.try_push(frame()).expect("room");
        drop(rx);
        assert!(!h.wait_free(4).await);
    }
}
