//! A connection's bounded outbound queue: its `Session` pushes frames, the socket's response
//! body (`http::outbound`) drains them (the connection's own control frames — pongs, pings,
//! the close frame — use a second, small one of the same kind). Both live on the connection's worker thread (the
//! session is started where the request is served), so the queue is a `VecDeque` in a
//! `RefCell` with two wakers: no atomics per frame, and no memory until frames are queued (an
//! idle connection's queue is empty and holds nothing; a drained one gives its space back).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Capacity kept by an emptied queue (more is given back).
const KEEP: usize = 16;

struct Inner<T> {
    frames: VecDeque<T>,
    max: usize,
    reader: Option<Waker>,
    /// The sender waits until this many slots are free (or for the reader to go: 0).
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

/// The sender's end (the session).
pub struct Outbox<T>(Rc<RefCell<Inner<T>>>);

/// The reader's end (the socket's body).
pub struct OutboxReader<T>(Rc<RefCell<Inner<T>>>);

/// A queue of at most `max` items.
pub fn outbox<T>(max: usize) -> (Outbox<T>, OutboxReader<T>) {
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

impl<T> Outbox<T> {
    pub fn try_push(&self, item: T) -> Result<(), PushError> {
        self.push(item, false)
    }

    /// Pushes even past the bound (a close frame always fits).
    pub fn push_over(&self, item: T) -> Result<(), PushError> {
        self.push(item, true)
    }

    fn push(&self, item: T, over: bool) -> Result<(), PushError> {
        let mut q = self.0.borrow_mut();
        if q.reader_gone {
            return Err(PushError::Closed);
        }
        if q.frames.len() >= q.max && !over {
            return Err(PushError::Full);
        }
        q.frames.push_back(item);
        let w = q.reader.take();
        drop(q);
        wake(w);
        Ok(())
    }

    /// Free slots.
    pub fn free(&self) -> usize {
        let q = self.0.borrow();
        q.max.saturating_sub(q.frames.len())
    }

    pub fn max(&self) -> usize {
        self.0.borrow().max
    }

    /// A handle to wait for free slots with (a future outlives a borrow of the session).
    pub fn waiter(&self) -> SpaceWaiter<T> {
        SpaceWaiter(self.0.clone())
    }

    /// Resolves when the reader is gone (the connection closed).
    pub async fn closed(&self) {
        self.waiter().wait_free(usize::MAX).await;
    }
}

/// Waits for free slots in a connection's queue; does not keep the queue open.
pub struct SpaceWaiter<T>(Rc<RefCell<Inner<T>>>);

impl<T> SpaceWaiter<T> {
    /// Resolves once `n` slots are free (true; `n` above the bound never is), or the reader is
    /// gone (false).
    pub async fn wait_free(&self, n: usize) -> bool {
        std::future::poll_fn(|cx: &mut Context<'_>| {
            let mut q = self.0.borrow_mut();
            if q.reader_gone {
                return Poll::Ready(false);
            }
            if q.max.saturating_sub(q.frames.len()) >= n {
                q.space = None;
                return Poll::Ready(true);
            }
            q.space = Some((n, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        let mut q = self.0.borrow_mut();
        q.sender_gone = true;
        let w = q.reader.take();
        drop(q);
        wake(w);
    }
}

impl<T> OutboxReader<T> {
    /// The next item; `Ready(None)` once the sender is gone and the queue is empty.
    pub fn poll_pop(&self, cx: &Context<'_>) -> Poll<Option<T>> {
        let mut q = self.0.borrow_mut();
        match q.frames.pop_front() {
            Some(f) => {
                let mut woken = None;
                if let Some((n, _)) = &q.space
                    && q.max.saturating_sub(q.frames.len()) >= *n
                {
                    woken = q.space.take().map(|(_, w)| w);
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

impl<T> Drop for OutboxReader<T> {
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
    use futures_util::FutureExt;

    fn frame() -> u32 {
        7
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
        assert_eq!(tx.push_over(frame()), Ok(()), "past the bound on purpose");
        assert!(rx.poll_pop(&noop_cx()).is_ready());
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
        let (tx, rx) = outbox::<u32>(4);
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
        let closed = tx.waiter();
        drop(rx);
        assert!(!h.wait_free(4).await);
        assert!(!closed.wait_free(usize::MAX).await);
        tx.closed().await;
    }
}
