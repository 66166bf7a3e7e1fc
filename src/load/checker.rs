//! The delivery checker: did every client get every message of its rooms exactly once and in
//! order? Pure bookkeeping, no I/O.
//!
//! Every message the tool sends carries a [`Stamp`] in its content: the run, the sender, the
//! sender's sequence number `n` in that room (0, 1, 2, …) and the send time. The server promises
//! per-chat order, so for each client and each stream `(room, sender)` the `n`s must arrive
//! increasing by exactly one:
//! - a repeat of an `n` already seen is a **duplicate**;
//! - an `n` below the highest seen (and not seen before) arrived **out of order**;
//! - a jump forward is a gap, noted as it happens; whether it was a loss is only known at the
//!   end: **lost** = sent and acknowledged (201) to a room the client is in, never received.
//!
//! Expected sets come from acknowledged sends only: a send that failed may or may not have been
//! persisted, so its arrival is counted as `unexpected` (not an error) and its absence is fine.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// What the tool writes at the start of every message it sends:
/// `"{run}:{sender}:{n}:{unix_nanos}"` (padding may follow after a space).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Random per run, so messages of other runs in reused rooms are ignored.
    pub run: u32,
    pub sender: i64,
    pub n: u64,
    pub sent_nanos: u64,
}

impl Stamp {
    /// The content of a message: the stamp, then `pad_to` bytes in total of filler words.
    pub fn content(&self, pad_to: usize) -> String {
        let mut s = format!(
            "{}:{}:{}:{}",
            self.run, self.sender, self.n, self.sent_nanos
        );
        const FILLER: &str = " benchmark load message";
        while s.len() < pad_to {
            let take = (pad_to - s.len()).min(FILLER.len());
            s.push_str(&FILLER[..take]);
        }
        s
    }

    /// Reads a stamp from the start of a message's content; `None` for foreign messages.
    pub fn parse(content: &str) -> Option<Stamp> {
        let head = content.split(' ').next()?;
        let mut parts = head.split(':');
        let stamp = Stamp {
            run: parts.next()?.parse().ok()?,
            sender: parts.next()?.parse().ok()?,
            n: parts.next()?.parse().ok()?,
            sent_nanos: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

/// One sender's messages in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub room: i64,
    pub sender: i64,
}

/// What one arrival meant for its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The next expected number (or the first seen).
    InOrder,
    /// A jump forward over `missing` numbers (they may still come, out of order).
    Gap {
        missing: u64,
    },
    Duplicate,
    OutOfOrder,
}

/// The sequence numbers acknowledged per stream: the expected set.
#[derive(Debug, Default, Clone)]
pub struct Acked {
    streams: HashMap<StreamKey, HashSet<u64>>,
}

impl Acked {
    pub fn insert(&mut self, key: StreamKey, n: u64) {
        self.streams.entry(key).or_default().insert(n);
    }

    pub fn merge(&mut self, other: Acked) {
        for (key, ns) in other.streams {
            self.streams.entry(key).or_default().extend(ns);
        }
    }

    /// Acknowledged messages in `room`.
    pub fn in_room(&self, room: i64) -> u64 {
        self.streams
            .iter()
            .filter(|(k, _)| k.room == room)
            .map(|(_, ns)| ns.len() as u64)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.streams.values().map(|ns| ns.len() as u64).sum()
    }

    /// Message `n` of stream `key` was acknowledged.
    pub fn contains(&self, key: StreamKey, n: u64) -> bool {
        self.streams.get(&key).is_some_and(|ns| ns.contains(&n))
    }
}

/// A set of sequence numbers as sorted, disjoint, inclusive ranges (compact: a stream that
/// arrived whole is one range). How shards of a run exchange what they sent and received.
pub type Ranges = Vec<(u64, u64)>;

fn to_ranges<'a>(ns: impl IntoIterator<Item = &'a u64>) -> Ranges {
    let mut v: Vec<u64> = ns.into_iter().copied().collect();
    v.sort_unstable();
    let mut out: Ranges = Vec::new();
    for n in v {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => out.push((n, n)),
        }
    }
    out
}

fn from_ranges(r: &Ranges) -> impl Iterator<Item = u64> + '_ {
    r.iter().flat_map(|(a, b)| *a..=*b)
}

/// One stream's numbers, for a shard digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRanges {
    pub room: i64,
    pub sender: i64,
    pub ns: Ranges,
}

/// What one client received, for a shard digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientDigest {
    pub rooms: Vec<i64>,
    pub streams: Vec<StreamRanges>,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Acked {
    /// The acknowledged numbers per stream, as ranges.
    pub fn digest(&self) -> Vec<StreamRanges> {
        self.streams
            .iter()
            .map(|(k, ns)| StreamRanges {
                room: k.room,
                sender: k.sender,
                ns: to_ranges(ns),
            })
            .collect()
    }

    /// Adds a digest's numbers.
    pub fn absorb(&mut self, digest: &[StreamRanges]) {
        for s in digest {
            let key = StreamKey {
                room: s.room,
                sender: s.sender,
            };
            self.streams
                .entry(key)
                .or_default()
                .extend(from_ranges(&s.ns));
        }
    }
}

impl ClientLog {
    /// What this client received, as ranges per stream.
    pub fn digest(&self) -> ClientDigest {
        ClientDigest {
            rooms: self.rooms.clone(),
            streams: self
                .streams
                .iter()
                .map(|(k, l)| StreamRanges {
                    room: k.room,
                    sender: k.sender,
                    ns: to_ranges(&l.seen),
                })
                .collect(),
            received: self.received,
            duplicated: self.duplicated,
            out_of_order: self.out_of_order,
        }
    }

    /// The log a digest describes (duplicate and order counts as the shard saw them).
    pub fn from_digest(d: &ClientDigest) -> ClientLog {
        let mut log = ClientLog::new(d.rooms.clone());
        for s in &d.streams {
            let key = StreamKey {
                room: s.room,
                sender: s.sender,
            };
            let seen: HashSet<u64> = from_ranges(&s.ns).collect();
            let highest = seen.iter().max().copied();
            log.streams.insert(key, StreamLog { seen, highest });
        }
        log.received = d.received;
        log.duplicated = d.duplicated;
        log.out_of_order = d.out_of_order;
        log
    }
}

#[derive(Debug, Default)]
struct StreamLog {
    seen: HashSet<u64>,
    highest: Option<u64>,
}

/// Everything one client connection received, per stream.
#[derive(Debug, Default)]
pub struct ClientLog {
    rooms: Vec<i64>,
    streams: HashMap<StreamKey, StreamLog>,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub gaps: u64,
}

impl ClientLog {
    /// A log for a client that is a member of `rooms`.
    pub fn new(rooms: Vec<i64>) -> Self {
        ClientLog {
            rooms,
            ..Default::default()
        }
    }

    pub fn rooms(&self) -> &[i64] {
        &self.rooms
    }

    /// Records the arrival of message `n` of `key`.
    pub fn record(&mut self, key: StreamKey, n: u64) -> Observation {
        self.received += 1;
        let log = self.streams.entry(key).or_default();
        if !log.seen.insert(n) {
            self.duplicated += 1;
            return Observation::Duplicate;
        }
        let observation = match log.highest {
            Some(h) if n < h => {
                self.out_of_order += 1;
                return Observation::OutOfOrder;
            }
            Some(h) if n > h + 1 => Observation::Gap { missing: n - h - 1 },
            _ => Observation::InOrder,
        };
        if let Observation::Gap { .. } = observation {
            self.gaps += 1;
        }
        log.highest = Some(n);
        observation
    }
}

/// The verdict over all clients.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Deliveries the acknowledged sends call for (acked messages × clients in their room).
    pub expected: u64,
    /// Distinct expected messages received.
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Received, but never acknowledged to the sender (its send failed or timed out).
    pub unexpected: u64,
}

impl Tally {
    /// True when nothing was lost, duplicated or reordered.
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.out_of_order == 0
    }
}

/// Compares what each client received with what was acknowledged in its rooms.
pub fn tally<'a>(acked: &Acked, clients: impl IntoIterator<Item = &'a ClientLog>) -> Tally {
    let mut t = Tally::default();
    for client in clients {
        t.duplicated += client.duplicated;
        t.out_of_order += client.out_of_order;
        for (key, ns) in &acked.streams {
            if !client.rooms.contains(&key.room) {
                continue;
            }
            t.expected += ns.len() as u64;
            let seen = client.streams.get(key).map(|l| &l.seen);
            let got = seen.map_or(0, |s| ns.iter().filter(|n| s.contains(n)).count() as u64);
            t.delivered += got;
            t.lost += ns.len() as u64 - got;
        }
        for (key, log) in &client.streams {
            let acked_ns = acked.streams.get(key);
            t.unexpected += log
                .seen
                .iter()
                .filter(|n| !acked_ns.is_some_and(|a| a.contains(n)))
                .count() as u64;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: StreamKey = StreamKey { room: 7, sender: 3 };

    fn acked(ns: impl IntoIterator<Item = u64>) -> Acked {
        let mut a = Acked::default();
        for n in ns {
            a.insert(KEY, n);
        }
        a
    }

    fn feed(ns: &[u64]) -> (ClientLog, Vec<Observation>) {
        let mut log = ClientLog::new(vec![KEY.room]);
        let obs = ns.iter().map(|n| log.record(KEY, *n)).collect();
        (log, obs)
    }

    #[test]
    fn digests_round_trip_through_ranges() {
        let (log, _) = feed(&[0, 1, 2, 5, 6, 9, 9]);
        let d = log.digest();
        assert_eq!(d.streams[0].ns, vec![(0, 2), (5, 6), (9, 9)]);
        let back = ClientLog::from_digest(&d);
        let a = acked(0..10);
        let mut merged = Acked::default();
        merged.absorb(&a.digest());
        assert_eq!(tally(&merged, [&back]), tally(&a, [&log]));
    }

    #[test]
    fn a_clean_stream_is_clean() {
        let (log, obs) = feed(&[0, 1, 2, 3]);
        assert!(obs.iter().all(|o| *o == Observation::InOrder));
        let t = tally(&acked(0..4), [&log]);
        assert_eq!(t.expected, 4);
        assert_eq!(t.delivered, 4);
        assert!(t.is_clean(), "{t:?}");
    }

    /// A gap that is never filled is a loss.
    #[test]
    fn reports_a_gap_as_lost() {
        let (log, obs) = feed(&[0, 1, 3]);
        assert_eq!(obs[2], Observation::Gap { missing: 1 });
        let t = tally(&acked(0..4), [&log]);
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (1, 0, 0));
        assert!(!t.is_clean());
    }

    #[test]
    fn reports_a_duplicate() {
        let (log, obs) = feed(&[0, 1, 1, 2]);
        assert_eq!(obs[2], Observation::Duplicate);
        let t = tally(&acked(0..3), [&log]);
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 1, 0));
    }

    /// A late arrival fills its gap: out of order, not lost.
    #[test]
    fn reports_a_reorder() {
        let (log, obs) = feed(&[0, 2, 1, 3]);
        assert_eq!(obs[1], Observation::Gap { missing: 1 });
        assert_eq!(obs[2], Observation::OutOfOrder);
        let t = tally(&acked(0..4), [&log]);
        assert_eq!((t.lost, t.duplicated, t.out_of_order), (0, 0, 1));
    }

    /// Failed sends are not expected; if they arrive anyway they are only noted.
    #[test]
    fn unacknowledged_sends_are_not_losses() {
        let (log, _) = feed(&[0, 1, 2]);
        let t = tally(&acked([0, 2]), [&log]);
        assert_eq!((t.expected, t.lost, t.unexpected), (2, 0, 1));
        assert!(t.is_clean());
    }

    /// Only rooms the client is in are expected of it.
    #[test]
    fn other_rooms_are_not_expected() {
        let log = ClientLog::new(vec![99]);
        let t = tally(&acked(0..5), [&log]);
        assert_eq!(t.expected, 0);
        assert!(t.is_clean());
    }

    #[test]
    fn stamps_round_trip() {
        let s = Stamp {
            run: 42,
            sender: 7,
            n: 3,
            sent_nanos: 1_700_000_000_000_000_000,
        };
        let c = s.content(200);
        assert_eq!(c.len(), 200);
        assert_eq!(Stamp::parse(&c), Some(s));
        assert_eq!(Stamp::parse(&s.content(0)), Some(s));
        for foreign in ["hello", "1:2:3", "1:2:3:x", "1:2:3:4:5", ""] {
            assert_eq!(Stamp::parse(foreign), None, "{foreign}");
        }
    }
}
