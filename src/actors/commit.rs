//! The chat room's unit of work: one batch of ops committed in one transaction (group commit),
//! each event at the next gap-free seq of the chat — shared with other rooms' batches when the
//! room has a [`Committer`] (`committer.rs`), alone otherwise; the transaction itself is
//! `commit_tx.rs`. A batch over `max_ops` is committed in chunks of at most that many ops.
//!
//! Isolation: an op whose data the database refuses fails alone. When a batch fails for any
//! reason other than the database being unreachable, its ops are retried one transaction each,
//! so one member's bad request never fails the others' sends queued in the same batch.
//!
//! A lost COMMIT reply (the connection dropped after COMMIT was sent) is resolved, not guessed:
//! the seq advance returns the transaction id and the room asks PostgreSQL (`txid_status`)
//! whether it committed before answering anyone.

use std::sync::Arc;
use std::time::Duration;

use super::commit_tx::{RoomBatch, RoomResult, attempt};
pub use super::committer::Committer;
use super::events::Event;
use super::room::{Op, OpOutcome};
use super::rooms::RoomError;
use crate::faults::Faults;
use crate::store::events as ev_store;
use crate::store::{Store, StoreError};

/// What an event does to the room besides being fanned out.
#[derive(Debug)]
pub enum Effect {
    None,
    Sent { sender_id: i64 },
    Joined { user_id: i64, role: String },
    Left { user_id: i64 },
}

/// A committed batch.
#[derive(Debug)]
pub struct Committed {
    pub last_seq: i64,
    /// Answers, in the order of the batch's ops.
    pub outcomes: Vec<Result<OpOutcome, RoomError>>,
    /// Events to fan out, in seq order.
    pub events: Vec<(Arc<Event>, Effect)>,
    pub persisted: usize,
    pub outbox: bool,
    /// The room's view of the chat can no longer be trusted (fenced or outcome unknown part
    /// way through an isolated retry): apply this, then reload.
    pub reload: bool,
}

/// Why nothing of a batch is known to be committed.
#[derive(Debug)]
pub enum CommitFailure {
    /// Nothing was committed; retrying is safe.
    Unavailable(String),
    /// Another writer moved the chat; nothing was committed; the room must reload.
    Fenced,
    /// The COMMIT's outcome could not be learnt in time; the room must reload.
    Unknown,
}

/// Everything a commit needs besides its ops.
#[derive(Clone)]
pub struct CommitSpec {
    pub store: Store,
    pub chat_id: i64,
    /// Take the base seq from the chat row under a lock (several nodes write the chat).
    pub db_orders_writers: bool,
    /// How long to spend learning a lost COMMIT's outcome.
    pub resolve_for: Duration,
    pub faults: Arc<Faults>,
    /// Commits this room's batches together with other rooms' (`None`: in its own transactions).
    pub committer: Option<Committer>,
    /// Most ops committed in one transaction (a longer batch is committed in chunks).
    pub max_ops: usize,
}

/// Most ops in one transaction when nothing else is configured.
pub const DEFAULT_MAX_OPS: usize = 500;

/// One attempt's failure.
pub(super) enum Attempt {
    /// The transaction failed; `unreachable` when the database could not be reached at all.
    Failed {
        error: StoreError,
        unreachable: bool,
    },
    Fenced,
    Unknown,
}

fn unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Db(e) => e.is_closed() || e.as_db_error().is_none(),
        _ => false,
    }
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        match error {
            // Another writer took the chat's position (or its seqs): nothing was committed.
            StoreError::Conflict(ref c)
                if c == ev_store::FENCED
                    || c == "messages_chat_id_seq_key"
                    || c == "chat_events_pkey" =>
            {
                Attempt::Fenced
            }
            error => Attempt::Failed {
                unreachable: unreachable(&error),
                error,
            },
        }
    }
}

/// What an op that failed alone answers: the database refused its data (a client's mistake
/// that validation did not catch) → 422; anything else → 503, retry.
fn alone_failed(e: &StoreError) -> RoomError {
    let refused_data = match e {
        StoreError::Db(db) => db.as_db_error().is_some_and(|d| {
            let class = &d.code().code()[..2];
            matches!(class, "22" | "23" | "54")
        }),
        StoreError::Conflict(_) | StoreError::Invalid(_) => true,
        _ => false,
    };
    if refused_data {
        RoomError::Invalid {
            field: "body",
            reason: "the request's data was refused by the database".into(),
        }
    } else {
        RoomError::Unavailable("could not store the change, retry".into())
    }
}

/// Commits `ops` after `base_seq` (through the room's committer when it has one), isolating
/// ops whose data the database refuses; at most `spec.max_ops` ops per transaction.
pub async fn commit(
    spec: &CommitSpec,
    base_seq: i64,
    ops: Vec<Op>,
) -> Result<Committed, CommitFailure> {
    let max = spec.max_ops.max(1);
    if ops.len() <= max {
        return chunk(spec, base_seq, ops).await;
    }
    let mut rest = ops;
    let mut all: Option<Committed> = None;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(max));
        let ops = std::mem::replace(&mut rest, tail);
        let n = ops.len();
        let base = all.as_ref().map_or(base_seq, |a| a.last_seq);
        match (chunk(spec, base, ops).await, all.as_mut()) {
            (Ok(done), None) => all = Some(done),
            (Ok(done), Some(a)) => {
                a.last_seq = done.last_seq;
                a.outcomes.extend(done.outcomes);
                a.events.extend(done.events);
                a.persisted += done.persisted;
                a.outbox |= done.outbox;
                a.reload |= done.reload;
            }
            (Err(failure), None) => return Err(failure),
            (Err(failure), Some(a)) => {
                // The earlier chunks are committed: answer them, fail this one and the rest.
                a.reload |= !matches!(failure, CommitFailure::Unavailable(_));
                let skipped = n + rest.len();
                a.outcomes.extend((0..skipped).map(|_| {
                    Err(RoomError::Unavailable(
                        "could not store the change, retry".into(),
                    ))
                }));
                break;
            }
        }
        if let Some(a) = all.as_mut().filter(|a| a.reload) {
            a.outcomes.extend(
                rest.drain(..)
                    .map(|_| Err(RoomError::Unavailable("chat room restarting, retry".into()))),
            );
        }
    }
    all.ok_or(CommitFailure::Unavailable("empty batch".into()))
}

/// One chunk: through the committer, or in its own transaction.
async fn chunk(spec: &CommitSpec, base_seq: i64, ops: Vec<Op>) -> Result<Committed, CommitFailure> {
    match &spec.committer {
        Some(committer) => committer.commit(spec, base_seq, ops).await,
        None => alone(spec, base_seq, ops).await,
    }
}

/// Commits one room's `ops` in a transaction of its own; when that fails for a reason other
/// than the database being unreachable, each op is retried alone.
pub(super) async fn alone(
    spec: &CommitSpec,
    base_seq: i64,
    ops: Vec<Op>,
) -> Result<Committed, CommitFailure> {
    match attempt_one(spec, base_seq, &ops).await {
        Ok(done) => Ok(done),
        Err(Attempt::Fenced) => Err(CommitFailure::Fenced),
        Err(Attempt::Unknown) => Err(CommitFailure::Unknown),
        Err(Attempt::Failed { error, unreachable }) if unreachable || ops.len() == 1 => {
            if unreachable {
                Err(CommitFailure::Unavailable(error.to_string()))
            } else {
                tracing::warn!(chat_id = spec.chat_id, error = %error, "op refused");
                Ok(Committed {
                    last_seq: base_seq,
                    outcomes: vec![Err(alone_failed(&error))],
                    events: Vec::new(),
                    persisted: 0,
                    outbox: false,
                    reload: false,
                })
            }
        }
        Err(Attempt::Failed { error, .. }) => {
            tracing::warn!(chat_id = spec.chat_id, error = %error, ops = ops.len(),
                "batch refused; committing its ops one by one");
            Ok(isolated(spec, base_seq, ops).await)
        }
    }
}

/// One transaction for one room.
async fn attempt_one(spec: &CommitSpec, base_seq: i64, ops: &[Op]) -> Result<Committed, Attempt> {
    let rooms = [RoomBatch {
        chat_id: spec.chat_id,
        base_seq,
        ops,
    }];
    match attempt(spec, &rooms).await?.pop() {
        Some(RoomResult::Done(done)) => Ok(done),
        _ => Err(Attempt::Fenced),
    }
}

/// Commits each op in its own transaction, in order; a failing op fails alone.
async fn isolated(spec: &CommitSpec, base_seq: i64, ops: Vec<Op>) -> Committed {
    let mut all = Committed {
        last_seq: base_seq,
        outcomes: Vec::with_capacity(ops.len()),
        events: Vec::new(),
        persisted: 0,
        outbox: false,
        reload: false,
    };
    for op in ops {
        if all.reload {
            all.outcomes.push(Err(RoomError::Unavailable(
                "chat room restarting, retry".into(),
            )));
            continue;
        }
        match attempt_one(spec, all.last_seq, std::slice::from_ref(&op)).await {
            Ok(done) => {
                all.last_seq = done.last_seq;
                all.outcomes.extend(done.outcomes);
                all.events.extend(done.events);
                all.persisted += done.persisted;
                all.outbox |= done.outbox;
            }
            Err(Attempt::Failed { error, unreachable }) => {
                all.outcomes.push(Err(if unreachable {
                    RoomError::Unavailable("could not store the change, retry".into())
                } else {
                    tracing::warn!(chat_id = spec.chat_id, error = %error, "op refused");
                    alone_failed(&error)
                }));
            }
            Err(Attempt::Fenced) | Err(Attempt::Unknown) => {
                all.reload = true;
                all.outcomes.push(Err(RoomError::Unavailable(
                    "chat room restarting, retry".into(),
                )));
            }
        }
    }
    all
}

/// Asks PostgreSQL whether transaction `xid` committed, for at most `spec.resolve_for`.
pub(super) async fn resolve(spec: &CommitSpec, xid: i64) -> Option<bool> {
    let deadline = tokio::time::Instant::now() + spec.resolve_for;
    let mut pause = Duration::from_millis(20);
    loop {
        // Each query is clipped to the time left, so the window is the bound, not window + one
        // more reply timeout.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let status = tokio::time::timeout(left, spec.store.transaction_status(xid)).await;
        if let Ok(Ok(Some(committed))) = status {
            tracing::warn!(
                chat_id = spec.chat_id,
                xid,
                committed,
                "commit reply lost; outcome resolved"
            );
            return Some(committed);
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::error!(chat_id = spec.chat_id, xid, "commit outcome unknown");
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Commits one batch of `ops` for `chat_id` after `base_seq` exactly as a room's flush does
/// (one transaction, one multi-row INSERT, fenced seq advance, events serialised) and returns
/// the chat's new last seq and the number of messages persisted. Used by benches
/// (`benches/group_commit.rs`); the server itself only commits through `ChatRoom`.
#[doc(hidden)]
pub async fn commit_batch(
    store: Store,
    chat_id: i64,
    base_seq: i64,
    ops: Vec<Op>,
) -> Result<(i64, usize), StoreError> {
    let spec = CommitSpec {
        store,
        chat_id,
        db_orders_writers: false,
        resolve_for: Duration::from_secs(5),
        faults: Arc::new(Faults::default()),
        committer: None,
        max_ops: DEFAULT_MAX_OPS,
    };
    match commit(&spec, base_seq, ops).await {
        Ok(done) => Ok((done.last_seq, done.persisted)),
        Err(e) => Err(StoreError::Other(anyhow::anyhow!("commit failed: {e:?}"))),
    }
}
