//! The state machine a room runs around its [`Feed`] in cluster mode: when to arm the gap timer,
//! when to read from PostgreSQL and which range, what to do with a resync that arrives while a
//! read is in flight, and how a capped read continues. Pure logic (the room owns the timer and
//! runs the reads); every method returns a [`Step`] to carry out.
//!
//! The room feeds it: every broker event ([`Relay::event`]), its own committed events
//! ([`Relay::local`]: a batch's base, read under the row lock, may be ahead of what the feed
//! delivered), the broker's `Resync` ([`Relay::resync`]), the gap timer firing
//! ([`Relay::timer_fired`]) and each read's result ([`Relay::read_done`]).

use std::time::Duration;

use super::feed::{Feed, Pushed};

/// A read from PostgreSQL to run: `Store::replay(chat, after, upto.unwrap_or(i64::MAX), limit)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub after: i64,
    /// `None`: everything after `after` (a resync: the extent of the loss is unknown).
    pub upto: Option<i64>,
    pub limit: i64,
}

/// What the room does next.
#[derive(Debug, PartialEq, Eq)]
pub struct Step<T> {
    /// Fan these out, in this order.
    pub deliver: Vec<T>,
    /// Arm the gap timer (call [`Relay::timer_fired`] after it).
    pub arm_timer: Option<Duration>,
    /// Run this read (then call [`Relay::read_done`] with it and its result).
    pub read: Option<Read>,
}

impl<T> Step<T> {
    fn new(deliver: Vec<T>) -> Self {
        Step {
            deliver,
            arm_timer: None,
            read: None,
        }
    }
}

/// One chat's relay on one node.
#[derive(Debug)]
pub struct Relay<T> {
    feed: Feed<T>,
    gap_wait: Duration,
    limit: i64,
    timer_armed: bool,
    reading: bool,
    /// A resync arrived during a read: read everything again after it.
    resync_pending: bool,
}

impl<T> Relay<T> {
    /// A relay whose last delivered seq is `last_seq`; gaps wait `gap_wait` before a read of at
    /// most `limit` events.
    pub fn new(last_seq: i64, gap_wait: Duration, limit: i64) -> Self {
        Relay {
            feed: Feed::new(last_seq),
            gap_wait,
            limit: limit.max(1),
            timer_armed: false,
            reading: false,
            resync_pending: false,
        }
    }

    /// The last seq delivered (the room's position).
    pub fn last(&self) -> i64 {
        self.feed.last()
    }

    /// An event from another node.
    pub fn event(&mut self, seq: i64, item: T) -> Step<T> {
        let deliver = match self.feed.push(seq, item) {
            Pushed::Ready(v) => v,
            Pushed::Gap { .. } => Vec::new(),
        };
        self.next(deliver, false)
    }

    /// One of this node's own committed events (in seq order, after the commit).
    pub fn local(&mut self, seq: i64, item: T) -> Step<T> {
        self.event(seq, item)
    }

    /// The broker says messages may have been lost.
    pub fn resync(&mut self) -> Step<T> {
        if self.reading {
            self.resync_pending = true;
            return Step::new(Vec::new());
        }
        let mut step = Step::new(Vec::new());
        step.read = Some(self.start_read(None));
        step
    }

    /// The gap timer fired.
    pub fn timer_fired(&mut self) -> Step<T> {
        self.timer_armed = false;
        if !self.reading && std::mem::take(&mut self.resync_pending) {
            let mut step = Step::new(Vec::new());
            step.read = Some(self.start_read(None));
            return step;
        }
        self.next(Vec::new(), true)
    }

    /// A read finished: `Ok(items)` in seq order, or `Err` (retried after the gap wait).
    pub fn read_done<E>(&mut self, read: Read, result: Result<Vec<(i64, T)>, E>) -> Step<T> {
        self.reading = false;
        let items = match result {
            Ok(items) => items,
            Err(_) => {
                // Try again later: a resync reads everything, a gap its range.
                if read.upto.is_none() {
                    self.resync_pending = true;
                }
                let mut step = Step::new(Vec::new());
                if !self.timer_armed {
                    self.timer_armed = true;
                    step.arm_timer = Some(self.gap_wait);
                }
                return step;
            }
        };
        let capped = items.len() as i64 >= read.limit;
        let last_read = items.last().map(|(s, _)| *s);
        // What PostgreSQL vouched for: up to the requested end, or to the last row of a capped
        // or open-ended read.
        let upto = match (read.upto, last_read) {
            (Some(u), Some(l)) if capped => l.min(u),
            (Some(u), _) => u,
            (None, Some(l)) => l,
            (None, None) => read.after,
        };
        let deliver = self.feed.fill(upto, items);
        if capped && read.upto.is_none_or(|u| upto < u) {
            // More behind the cap: keep reading the same way.
            let mut step = Step::new(deliver);
            step.read = Some(self.start_read(read.upto));
            return step;
        }
        if std::mem::take(&mut self.resync_pending) {
            let mut step = Step::new(deliver);
            step.read = Some(self.start_read(None));
            return step;
        }
        self.next(deliver, false)
    }

    fn start_read(&mut self, upto: Option<i64>) -> Read {
        self.reading = true;
        Read {
            after: self.feed.last(),
            upto,
            limit: self.limit,
        }
    }

    /// After a change: read the gap now (when held events overflow, or the timer has fired),
    /// or arm the timer.
    fn next(&mut self, deliver: Vec<T>, timer_fired: bool) -> Step<T> {
        let mut step = Step::new(deliver);
        if self.reading {
            return step;
        }
        let Some((_, to)) = self.feed.missing() else {
            return step;
        };
        if timer_fired || self.feed.overflowing() {
            step.read = Some(self.start_read(Some(to)));
        } else if !self.timer_armed {
            self.timer_armed = true;
            step.arm_timer = Some(self.gap_wait);
        }
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(200);

    fn relay() -> Relay<&'static str> {
        Relay::new(0, WAIT, 100)
    }

    #[test]
    fn in_order_events_need_no_timer_and_no_read() {
        let mut r = relay();
        assert_eq!(r.event(1, "a"), Step::new(vec!["a"]));
        assert_eq!(r.local(2, "b"), Step::new(vec!["b"]));
        assert_eq!(r.last(), 2);
    }

    #[test]
    fn a_gap_arms_the_timer_once_and_a_late_event_closes_it() {
        let mut r = relay();
        let s = r.event(2, "b");
        assert_eq!(
            (s.deliver.len(), s.arm_timer, s.read),
            (0, Some(WAIT), None)
        );
        assert_eq!(r.event(3, "c").arm_timer, None, "already armed");
        assert_eq!(r.event(1, "a").deliver, vec!["a", "b", "c"]);
        // The timer fires with nothing missing: nothing to read.
        assert_eq!(r.timer_fired(), Step::new(vec![]));
    }

    #[test]
    fn a_gap_still_open_when_the_timer_fires_is_read_then_filled() {
        let mut r = relay();
        r.event(1, "a");
        r.event(4, "d");
        let s = r.timer_fired();
        let read = s.read.expect("a read");
        assert_eq!(
            read,
            Read {
                after: 1,
                upto: Some(3),
                limit: 100
            }
        );
        // Broker events during the read wait; no second read or timer.
        assert_eq!(r.event(6, "f"), Step::new(vec![]));
        let s = r.read_done::<()>(read, Ok(vec![(2, "b"), (3, "c")]));
        assert_eq!(s.deliver, vec!["b", "c", "d"]);
        // 5 is still missing before 6: the timer again.
        assert_eq!((s.arm_timer, s.read), (Some(WAIT), None));
    }

    #[test]
    fn a_resync_reads_everything_after_the_position() {
        let mut r = relay();
        r.event(1, "a");
        let read = r.resync().read.expect("a read");
        assert_eq!(
            read,
            Read {
                after: 1,
                upto: None,
                limit: 100
            }
        );
        let s = r.read_done::<()>(read, Ok(vec![(2, "b"), (3, "c")]));
        assert_eq!(s, Step::new(vec!["b", "c"]));
        assert!(r.event(3, "c again").deliver.is_empty());
        assert_eq!(r.event(4, "d").deliver, vec!["d"]);
    }

    #[test]
    fn a_resync_during_a_read_reads_again_after_it() {
        let mut r = relay();
        r.event(2, "b");
        let gap = r.timer_fired().read.expect("gap read");
        assert_eq!(r.resync(), Step::new(vec![]));
        let s = r.read_done::<()>(gap, Ok(vec![(1, "a")]));
        assert_eq!(s.deliver, vec!["a", "b"]);
        assert_eq!(
            s.read,
            Some(Read {
                after: 2,
                upto: None,
                limit: 100
            })
        );
    }

    #[test]
    fn a_capped_read_continues_where_it_stopped() {
        let mut r: Relay<i64> = Relay::new(0, WAIT, 2);
        let read = r.resync().read.expect("read");
        let s = r.read_done::<()>(read, Ok(vec![(1, 1), (2, 2)]));
        assert_eq!(s.deliver, vec![1, 2]);
        let more = s.read.expect("more");
        assert_eq!(
            more,
            Read {
                after: 2,
                upto: None,
                limit: 2
            }
        );
        let s = r.read_done::<()>(more, Ok(vec![(3, 3)]));
        assert_eq!((s.deliver, s.read), (vec![3], None));
    }

    #[test]
    fn a_failed_read_is_retried_after_the_wait() {
        let mut r = relay();
        r.event(3, "c");
        let read = r.timer_fired().read.expect("read");
        let s = r.read_done(read, Err("db down"));
        assert_eq!(
            (s.deliver.len(), s.arm_timer, s.read),
            (0, Some(WAIT), None)
        );
        let again = r.timer_fired().read.expect("retried");
        assert_eq!(
            again,
            Read {
                after: 0,
                upto: Some(2),
                limit: 100
            }
        );
        assert_eq!(
            r.read_done::<()>(again, Ok(vec![(1, "a"), (2, "b")]))
                .deliver,
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn a_failed_resync_read_is_retried_as_a_resync() {
        let mut r = relay();
        let read = r.resync().read.expect("read");
        let s = r.read_done(read, Err("db down"));
        assert_eq!(s.arm_timer, Some(WAIT));
        let again = r.timer_fired().read.expect("retried");
        assert_eq!(
            again,
            Read {
                after: 0,
                upto: None,
                limit: 100
            }
        );
    }

    #[test]
    fn deleted_messages_in_a_gap_are_skipped() {
        // seq 2 was created and since deleted (its deletion is seq 3): the read returns only 3.
        let mut r = relay();
        r.event(1, "a");
        r.event(4, "d");
        let read = r.timer_fired().read.expect("read");
        let s = r.read_done::<()>(read, Ok(vec![(3, "deleted 2")]));
        assert_eq!(s, Step::new(vec!["deleted 2", "d"]));
    }
}
