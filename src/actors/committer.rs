//! `Committer`: group commit across chat rooms. Rooms hand it their batches; it commits every
//! batch queued while its previous transactions were in flight in one shared transaction
//! (at most `max_rooms` rooms and `max_ops` ops), and answers each room with its own result.
//! A shared transaction the database refuses for a reason other than being unreachable is
//! retried room by room (each isolating its refused ops), so one room's bad op never fails
//! another room's sends.

use std::collections::VecDeque;
use std::sync::Arc;

use actix::Arbiter;
use futures_util::future::join_all;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::commit::{self, Attempt, CommitFailure, CommitSpec, Committed};
use super::commit_tx::{RoomBatch, RoomResult, attempt};
use super::room::Op;

/// Limits of the shared transactions.
#[derive(Debug, Clone, Copy)]
pub struct CommitterConfig {
    /// Most rooms in one shared transaction.
    pub max_rooms: usize,
    /// Most ops in one shared transaction.
    pub max_ops: usize,
    /// Shared transactions in flight at once (each on its own connection).
    pub in_flight: usize,
}

/// A room's batch waiting for a shared transaction.
struct Request {
    /// The room's spec (its `committer` cleared: a request never comes back here).
    spec: CommitSpec,
    base_seq: i64,
    ops: Vec<Op>,
    reply: oneshot::Sender<Result<Committed, CommitFailure>>,
}

/// The handle rooms commit through (cheap to clone).
#[derive(Clone)]
pub struct Committer {
    // Unbounded but bounded in practice: each room has at most one batch in flight.
    requests: mpsc::UnboundedSender<Request>,
}

impl Committer {
    /// Starts the committer on a thread of its own. Must run inside an actix `System`.
    pub fn start(config: CommitterConfig) -> Committer {
        let (requests, rx) = mpsc::unbounded_channel();
        let config = CommitterConfig {
            max_rooms: config.max_rooms.max(1),
            max_ops: config.max_ops.max(1),
            in_flight: config.in_flight.max(1),
        };
        Arbiter::new().spawn(async move {
            run(rx, config).await;
            Arbiter::current().stop();
        });
        Committer { requests }
    }

    /// Commits one room's batch in the next shared transaction.
    pub(super) async fn commit(
        &self,
        spec: &CommitSpec,
        base_seq: i64,
        ops: Vec<Op>,
    ) -> Result<Committed, CommitFailure> {
        let (reply, answer) = oneshot::channel();
        let spec = CommitSpec {
            committer: None,
            ..spec.clone()
        };
        let request = Request {
            spec,
            base_seq,
            ops,
            reply,
        };
        if self.requests.send(request).is_err() {
            return Err(CommitFailure::Unavailable("the committer stopped".into()));
        }
        // A dropped answer means the committer died part way: the outcome is not known.
        answer.await.unwrap_or(Err(CommitFailure::Unknown))
    }
}

/// Gathers requests into groups and commits each group, `in_flight` groups at a time.
async fn run(mut rx: mpsc::UnboundedReceiver<Request>, config: CommitterConfig) {
    let slots = Arc::new(Semaphore::new(config.in_flight));
    // Requests taken from the channel but left for a later group (their chat was already in
    // the group, or the group was full).
    let mut carry: VecDeque<Request> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.pop_front() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut ops = first.ops.len();
        let mut group = vec![first];
        let mut later = VecDeque::new();
        while group.len() < config.max_rooms {
            let next = match carry.pop_front() {
                Some(r) => r,
                None => match rx.try_recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            if ops + next.ops.len() > config.max_ops {
                later.push_back(next);
                break;
            }
            // A chat appears once per transaction (a stopping room and its successor may both
            // ask): the second waits for the next group, where the fence decides.
            if group.iter().any(|g| g.spec.chat_id == next.spec.chat_id) {
                later.push_back(next);
                continue;
            }
            ops += next.ops.len();
            group.push(next);
        }
        later.extend(carry.drain(..));
        carry = later;
        actix::spawn(async move {
            commit_group(group).await;
            drop(slot);
        });
    }
}

/// Commits a group in one transaction and answers each room.
async fn commit_group(mut group: Vec<Request>) {
    if group.len() == 1 {
        if let Some(r) = group.pop() {
            let result = commit::alone(&r.spec, r.base_seq, r.ops).await;
            let _ = r.reply.send(result);
        }
        return;
    }
    let spec = group[0].spec.clone();
    let rooms: Vec<RoomBatch<'_>> = group
        .iter()
        .map(|r| RoomBatch {
            chat_id: r.spec.chat_id,
            base_seq: r.base_seq,
            ops: &r.ops,
        })
        .collect();
    let result = attempt(&spec, &rooms).await;
    drop(rooms);
    match result {
        Ok(results) => {
            for (r, result) in group.into_iter().zip(results) {
                let _ = r.reply.send(match result {
                    RoomResult::Done(done) => Ok(done),
                    RoomResult::Fenced => Err(CommitFailure::Fenced),
                });
            }
        }
        Err(Attempt::Unknown) => {
            for r in group {
                let _ = r.reply.send(Err(CommitFailure::Unknown));
            }
        }
        Err(Attempt::Failed {
            error,
            unreachable: true,
        }) => {
            let message = error.to_string();
            for r in group {
                let _ = r
                    .reply
                    .send(Err(CommitFailure::Unavailable(message.clone())));
            }
        }
        Err(Attempt::Failed { error, .. }) => {
            tracing::warn!(error = %error, rooms = group.len(),
                "shared commit refused; committing its rooms one by one");
            retry_alone(group).await;
        }
        Err(Attempt::Fenced) => retry_alone(group).await,
    }
}

/// Each room of a refused group in its own transaction (concurrently), isolating its ops.
async fn retry_alone(group: Vec<Request>) {
    join_all(group.into_iter().map(|r| async move {
        let result = commit::alone(&r.spec, r.base_seq, r.ops).await;
        let _ = r.reply.send(result);
    }))
    .await;
}

/// Commits the batches of several rooms in one shared transaction, exactly as the committer
/// does with a group it gathered, and returns each room's result in order. Used by tests and
/// benches; the server commits through [`Committer`].
#[doc(hidden)]
pub async fn commit_together(
    batches: Vec<(CommitSpec, i64, Vec<Op>)>,
) -> Vec<Result<Committed, CommitFailure>> {
    let mut answers = Vec::with_capacity(batches.len());
    let mut group = Vec::with_capacity(batches.len());
    for (spec, base_seq, ops) in batches {
        let (reply, answer) = oneshot::channel();
        let spec = CommitSpec {
            committer: None,
            ..spec
        };
        group.push(Request {
            spec,
            base_seq,
            ops,
            reply,
        });
        answers.push(answer);
    }
    commit_group(group).await;
    let mut out = Vec::with_capacity(answers.len());
    for answer in answers {
        out.push(answer.await.unwrap_or(Err(CommitFailure::Unknown)));
    }
    out
}
