//! The ordered feed of one chat's remote events on one node: hands out contiguous `seq`s in
//! order exactly once, holds events that arrive ahead of a missing one, and says which range is
//! missing so the room can fill it from PostgreSQL (after a short wait: pub/sub rarely reorders,
//! but it loses messages across a reconnect). Pure logic: no clock, no I/O.
//!
//! Use: `push` every broker event; on [`Pushed::Gap`] (or whenever [`Feed::missing`] is `Some`)
//! arm a timer of `FECHATTER_BROKER_GAP_MS`; when it fires and `missing()` is still `Some`,
//! read that range from PostgreSQL (`Store::replay`) and hand it to [`Feed::fill`]. On the
//! broker's "gap possible" signal read everything after [`Feed::next`] and `fill` up to the
//! last seq read.

use std::collections::BTreeMap;

/// Most events held ahead of a gap; past it [`Feed::overflowing`] asks for an immediate fill.
pub const MAX_AHEAD: usize = 10_000;

/// What one `push` produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed<T> {
    /// Deliverable now, in seq order (empty for a duplicate or an old seq). A gap may still
    /// remain after them: check [`Feed::missing`].
    Ready(Vec<T>),
    /// Held: the seqs `from..=to` are missing before it.
    Gap { from: i64, to: i64 },
}

/// One chat's feed. `T` is whatever the room delivers (an event).
#[derive(Debug)]
pub struct Feed<T> {
    /// The next seq to deliver.
    next: i64,
    ahead: BTreeMap<i64, T>,
}

impl<T> Feed<T> {
    /// A feed whose last delivered seq is `last_seq` (the room's position when it started).
    pub fn new(last_seq: i64) -> Self {
        Feed {
            next: last_seq + 1,
            ahead: BTreeMap::new(),
        }
    }

    /// The next seq expected.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// The last seq delivered.
    pub fn last(&self) -> i64 {
        self.next - 1
    }

    /// Events held ahead of a gap.
    pub fn buffered(&self) -> usize {
        self.ahead.len()
    }

    /// True when so much is held that the gap should be filled now rather than after the wait.
    pub fn overflowing(&self) -> bool {
        self.ahead.len() >= MAX_AHEAD
    }

    /// The first missing range (`from..=to`), when events are held behind it.
    pub fn missing(&self) -> Option<(i64, i64)> {
        self.ahead
            .keys()
            .next()
            .map(|&first| (self.next, first - 1))
    }

    /// One event at `seq`.
    pub fn push(&mut self, seq: i64, item: T) -> Pushed<T> {
        if seq < self.next {
            return Pushed::Ready(Vec::new());
        }
        if seq > self.next {
            self.ahead.entry(seq).or_insert(item);
            let (from, to) = self.missing().unwrap_or((self.next, seq - 1));
            return Pushed::Gap { from, to };
        }
        let mut out = vec![item];
        self.next += 1;
        self.drain(&mut out);
        Pushed::Ready(out)
    }

    /// Events read from PostgreSQL, which is the truth up to `upto`: each seq not delivered yet is
    /// delivered, and seqs up to `upto` that PostgreSQL did not return (a message created and
    /// since deleted is replayed only as its deletion) are skipped. Returns what to deliver, in
    /// order (a read event replaces a held copy of the same seq).
    pub fn fill(&mut self, upto: i64, items: impl IntoIterator<Item = (i64, T)>) -> Vec<T> {
        for (seq, item) in items {
            if seq >= self.next {
                self.ahead.insert(seq, item);
            }
        }
        let mut out = Vec::new();
        loop {
            self.drain(&mut out);
            if self.next > upto {
                break;
            }
            // `next` is missing from the truth: it no longer exists, skip it.
            self.next += 1;
        }
        out
    }

    /// Moves every contiguous held event from `next` on into `out`.
    fn drain(&mut self, out: &mut Vec<T>) {
        while let Some(item) = self.ahead.remove(&self.next) {
            out.push(item);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(p: Pushed<&'static str>) -> Vec<&'static str> {
        match p {
            Pushed::Ready(v) => v,
            Pushed::Gap { from, to } => panic!("unexpected gap {from}..={to}"),
        }
    }

    #[test]
    fn in_order_events_pass_straight_through() {
        let mut f = Feed::new(10);
        assert_eq!(ready(f.push(11, "a")), vec!["a"]);
        assert_eq!(ready(f.push(12, "b")), vec!["b"]);
        assert_eq!(f.last(), 12);
        assert_eq!(f.missing(), None);
    }

    #[test]
    fn duplicates_and_old_seqs_are_dropped() {
        let mut f = Feed::new(10);
        assert_eq!(ready(f.push(11, "a")), vec!["a"]);
        assert!(ready(f.push(11, "a again")).is_empty());
        assert!(ready(f.push(3, "ancient")).is_empty());
        assert_eq!(f.next(), 12);
    }

    #[test]
    fn ahead_of_order_events_wait_for_the_missing_one() {
        let mut f = Feed::new(0);
        assert_eq!(f.push(3, "c"), Pushed::Gap { from: 1, to: 2 });
        assert_eq!(f.push(2, "b"), Pushed::Gap { from: 1, to: 1 });
        assert_eq!(f.push(5, "e"), Pushed::Gap { from: 1, to: 1 });
        assert_eq!(f.buffered(), 3);
        assert_eq!(ready(f.push(1, "a")), vec!["a", "b", "c"]);
        // 4 is still missing, 5 is held behind it.
        assert_eq!(f.missing(), Some((4, 4)));
        assert_eq!(ready(f.push(4, "d")), vec!["d", "e"]);
        assert_eq!((f.missing(), f.buffered(), f.next()), (None, 0, 6));
    }

    #[test]
    fn a_fill_delivers_the_gap_then_what_was_held() {
        let mut f = Feed::new(0);
        f.push(1, "a");
        assert_eq!(f.push(4, "d"), Pushed::Gap { from: 2, to: 3 });
        let out = f.fill(3, [(2, "b"), (3, "c")]);
        assert_eq!(out, vec!["b", "c", "d"]);
        assert_eq!(f.next(), 5);
    }

    #[test]
    fn seqs_missing_from_the_truth_are_skipped() {
        // seq 2 was a message since deleted: PostgreSQL replays only its deletion (seq 4).
        let mut f = Feed::new(1);
        assert_eq!(f.push(5, "e"), Pushed::Gap { from: 2, to: 4 });
        let out = f.fill(4, [(3, "c"), (4, "deleted 2")]);
        assert_eq!(out, vec!["c", "deleted 2", "e"]);
        assert_eq!(f.missing(), None);
    }

    #[test]
    fn a_fill_never_repeats_what_was_delivered() {
        let mut f = Feed::new(0);
        f.push(1, "a");
        f.push(2, "b");
        // A resync reads everything after the room's position, overlapping nothing already out.
        assert_eq!(f.fill(3, [(2, "b"), (3, "c")]), vec!["c"]);
        assert!(ready(f.push(3, "c late")).is_empty());
        assert_eq!(f.fill(0, []), Vec::<&str>::new());
    }

    #[test]
    fn a_fill_short_of_the_held_events_keeps_the_rest_waiting() {
        let mut f = Feed::new(0);
        f.push(10, "j");
        // PostgreSQL answered a capped read: 1..=5 only.
        let out = f.fill(5, (1..=5).map(|s| (s, "x")));
        assert_eq!(out.len(), 5);
        assert_eq!(f.missing(), Some((6, 9)));
    }

    #[test]
    fn overflow_is_reported() {
        let mut f = Feed::new(0);
        for s in 2..(2 + MAX_AHEAD as i64) {
            f.push(s, ());
        }
        assert!(f.overflowing());
        assert_eq!(f.fill(1, [(1, ())]).len(), MAX_AHEAD + 1);
        assert!(!f.overflowing());
    }
}
