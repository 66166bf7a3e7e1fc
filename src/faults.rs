//! Fault hooks: ways for tests to make rare failures happen on the real code path (a lost
//! COMMIT reply, a slow or failing session start). Every hook is off unless configured with
//! its hidden `FECHATTER_FAULT_*` knob; when off it costs one relaxed atomic load.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::config::Config;

#[derive(Debug, Default)]
pub struct Faults {
    lose_commit_replies: AtomicU32,
    session_start_failures: AtomicU32,
    room_load_failures: AtomicU32,
    unpublished_commits: AtomicU32,
    late_refused_bytes: AtomicU32,
    session_start_delay: Duration,
}

/// Takes one unit from a countdown; true while it had any left.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    pub fn from_config(c: &Config) -> Self {
        Faults {
            lose_commit_replies: AtomicU32::new(c.fault_lose_commit_replies),
            session_start_failures: AtomicU32::new(c.fault_session_start_failures),
            room_load_failures: AtomicU32::new(c.fault_room_load_failures),
            unpublished_commits: AtomicU32::new(c.fault_unpublished_commits),
            late_refused_bytes: AtomicU32::new(c.fault_late_refused_bytes),
            session_start_delay: Duration::from_millis(c.fault_session_start_delay_ms),
        }
    }

    /// True when this (successful) COMMIT's reply is to be treated as lost.
    pub fn lose_commit_reply(&self) -> bool {
        take(&self.lose_commit_replies)
    }

    /// True when this chat room's state load is to fail.
    pub fn fail_room_load(&self) -> bool {
        take(&self.room_load_failures)
    }

    /// True when this committed batch is not to be published (cluster mode).
    pub fn skip_publish(&self) -> bool {
        take(&self.unpublished_commits)
    }

    /// True when this connection refused at accept is to keep what its client already sent.
    pub fn keep_refused_bytes(&self) -> bool {
        take(&self.late_refused_bytes)
    }

    /// True when this session start is to fail after registering with presence.
    pub fn fail_session_start(&self) -> bool {
        take(&self.session_start_failures)
    }

    /// How long a session start pauses after registering (zero: not at all).
    pub fn session_start_delay(&self) -> Duration {
        self.session_start_delay
    }
}
