//! The chat room's unit of work: one batch of ops committed in one transaction (group commit),
//! each event at the next gap-free seq of the chat.
//!
//! Isolation: an op whose data the database refuses fails alone. When a batch fails for any
//! reason other than the database being unreachable, its ops are retried one transaction each,
//! so one member's bad request never fails the others' sends queued in the same batch.
//!
//! A lost COMMIT reply (the connection dropped after COMMIT was sent) is resolved, not guessed:
//! the seq advance returns the transaction id and the room asks PostgreSQL (`txid_status`)
//! whether it committed before answering anyone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::events::{
    EditLogged, Event, EventKind, MemberData, MessageData, MessageDeletedData, MessageView,
    ReactionData, ReactionLogged, ReactionView,
};
use super::room::{Op, OpOutcome};
use super::rooms::RoomError;
use crate::faults::Faults;
use crate::store::events::{self as ev_store, LoggedEvent};
use crate::store::messages::{self as msg_store, NewMessage};
use crate::store::search::outbox::{self, OutboxOp};
use crate::store::{Store, StoreError};

/// What an event does to the room besides being fanned out.
pub enum Effect {
    None,
    Sent { sender_id: i64 },
    Joined { user_id: i64, role: String },
    Left { user_id: i64 },
}

/// A committed batch.
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
}

/// How many times a batch is retried when a concurrent send took one of its idempotency keys.
const KEY_RACE_ATTEMPTS: usize = 3;

/// One attempt's failure.
enum Attempt {
    /// The batch failed; `unreachable` when the database could not be reached at all.
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

/// Commits `ops` after `base_seq`, isolating ops whose data the database refuses.
pub async fn commit(
    spec: &CommitSpec,
    base_seq: i64,
    ops: Vec<Op>,
) -> Result<Committed, CommitFailure> {
    match attempt(spec, base_seq, &ops).await {
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
        match attempt(spec, all.last_seq, std::slice::from_ref(&op)).await {
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

/// One transaction for `ops`; retried when a concurrent send took one of its keys.
async fn attempt(spec: &CommitSpec, base_seq: i64, ops: &[Op]) -> Result<Committed, Attempt> {
    let mut client = spec.store.client().await?;
    for _ in 0..KEY_RACE_ATTEMPTS {
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let base = if spec.db_orders_writers {
            ev_store::lock_seq(&tx, spec.chat_id)
                .await?
                .ok_or(StoreError::Conflict(ev_store::FENCED.into()))?
        } else {
            base_seq
        };
        let Some((done, xid)) = commit_in(&tx, spec.chat_id, base, ops).await? else {
            tx.rollback().await.map_err(StoreError::from)?;
            continue;
        };
        let result = tx.commit().await;
        let lost = result.is_ok() && spec.faults.lose_commit_reply();
        return match (result, xid) {
            (Ok(()), _) if !lost => Ok(done),
            // Nothing was written (no seq taken): the outcome does not matter.
            (_, None) => Ok(done),
            (_, Some(xid)) => match resolve(spec, xid).await {
                Some(true) => Ok(done),
                Some(false) => Err(Attempt::Failed {
                    error: StoreError::Unavailable("the commit was rolled back".into()),
                    unreachable: true,
                }),
                None => Err(Attempt::Unknown),
            },
        };
    }
    Err(Attempt::Failed {
        error: StoreError::Other(anyhow::anyhow!(
            "idempotency keys kept colliding with concurrent sends"
        )),
        unreachable: true,
    })
}

/// Asks PostgreSQL whether transaction `xid` committed, for at most `spec.resolve_for`.
async fn resolve(spec: &CommitSpec, xid: i64) -> Option<bool> {
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
    };
    match commit(&spec, base_seq, ops).await {
        Ok(done) => Ok((done.last_seq, done.persisted)),
        Err(e) => Err(StoreError::Other(anyhow::anyhow!("commit failed: {e:?}"))),
    }
}

/// The events a batch produces, each at the next seq of the chat.
struct Log {
    chat_id: i64,
    /// The last seq taken so far.
    seq: i64,
    /// Events other than message creations, for `chat_events`: (seq, kind, message, payload).
    logged: Vec<(i64, &'static str, Option<i64>, serde_json::Value)>,
    /// Everything to fan out after the commit.
    events: Vec<(Arc<Event>, Effect)>,
}

impl Log {
    /// Takes the next seq for an event of `kind`: fanned out with `data`, logged as `stored`
    /// (which never holds message text).
    fn record(
        &mut self,
        kind: EventKind,
        data: &impl serde::Serialize,
        message_id: Option<i64>,
        stored: &impl serde::Serialize,
        effect: Effect,
    ) {
        self.seq += 1;
        let event = Event::new(kind, Some(self.chat_id), Some(self.seq), data);
        self.events.push((event, effect));
        let stored = serde_json::to_value(stored).unwrap_or_default();
        self.logged
            .push((self.seq, kind.as_str(), message_id, stored));
    }
}

/// The body of a commit: `None` asks for a retry (a concurrent send took a key). Returns the
/// batch and the transaction id (when it took a seq).
async fn commit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    chat_id: i64,
    base_seq: i64,
    ops: &[Op],
) -> Result<Option<(Committed, Option<i64>)>, StoreError> {
    let mut log = Log {
        chat_id,
        seq: base_seq,
        logged: Vec::new(),
        events: Vec::new(),
    };
    let mut outcomes: Vec<Option<Result<OpOutcome, RoomError>>> =
        (0..ops.len()).map(|_| None).collect();
    let mut outbox_ops: Vec<(i64, OutboxOp)> = Vec::new();

    // 1. Sends: idempotency first (keys are scoped to sender and chat), then one INSERT.
    let keyed: Vec<(i64, &str)> = ops
        .iter()
        .filter_map(|op| match op {
            Op::Send {
                sender_id,
                idempotency_key: Some(k),
                ..
            } => Some((*sender_id, k.as_str())),
            _ => None,
        })
        .collect();
    let existing = if keyed.is_empty() {
        Vec::new()
    } else {
        let senders: Vec<i64> = keyed.iter().map(|k| k.0).collect();
        let keys: Vec<&str> = keyed.iter().map(|k| k.1).collect();
        msg_store::find_by_keys(tx, chat_id, &senders, &keys).await?
    };
    let mut by_key: HashMap<(i64, &str), usize> = HashMap::new(); // → index into `new`
    let mut new: Vec<NewMessage<'_>> = Vec::new();
    let mut send_slot: Vec<(usize, usize)> = Vec::new(); // (op index, index into `new`)
    for (i, op) in ops.iter().enumerate() {
        let Op::Send {
            sender_id,
            content,
            idempotency_key,
        } = op
        else {
            continue;
        };
        let key = idempotency_key.as_deref();
        if let Some(k) = key {
            if let Some(m) = existing
                .iter()
                .find(|m| m.sender_id == *sender_id && m.idempotency_key.as_deref() == Some(k))
            {
                let reactions = msg_store::reactions_in_tx(tx, m.id).await?;
                outcomes[i] = Some(Ok(OpOutcome::Sent {
                    message: MessageView::new(m, &reactions),
                    created: false,
                }));
                continue;
            }
            if let Some(&slot) = by_key.get(&(*sender_id, k)) {
                send_slot.push((i, slot));
                continue;
            }
        }
        log.seq += 1;
        new.push(NewMessage {
            seq: log.seq,
            sender_id: *sender_id,
            content,
            idempotency_key: key,
        });
        if let Some(k) = key {
            by_key.insert((*sender_id, k), new.len() - 1);
        }
        send_slot.push((i, new.len() - 1));
    }
    let mut persisted = 0;
    if !new.is_empty() {
        let rows = msg_store::insert_batch(tx, chat_id, &new).await?;
        if rows.len() != new.len() {
            return Ok(None);
        }
        persisted = rows.len();
        let views: Vec<MessageView> = rows.iter().map(|r| MessageView::new(r, &[])).collect();
        let mut first_use = vec![true; views.len()];
        for (i, slot) in send_slot {
            let created = std::mem::replace(&mut first_use[slot], false);
            outcomes[i] = Some(Ok(OpOutcome::Sent {
                message: views[slot].clone(),
                created,
            }));
        }
        for (row, view) in rows.iter().zip(&views) {
            outbox_ops.push((row.id, OutboxOp::Upsert));
            let event = Event::new(
                EventKind::MessageCreated,
                Some(chat_id),
                Some(row.seq),
                &MessageData { message: view },
            );
            log.events.push((
                event,
                Effect::Sent {
                    sender_id: row.sender_id,
                },
            ));
        }
    }

    // 2. Everything else, one by one, each taking the next seq when it changes something.
    for (i, op) in ops.iter().enumerate() {
        let outcome = match op {
            Op::Send { .. } => continue,
            Op::Edit {
                user_id,
                message_id,
                content,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) if m.sender_id != *user_id => Err(RoomError::Forbidden(
                    "Only the sender can edit a message".into(),
                )),
                Some(mut m) => {
                    m.updated_at = msg_store::update_content(tx, m.id, content).await?;
                    m.content = content.clone();
                    let reactions = msg_store::reactions_in_tx(tx, m.id).await?;
                    let view = MessageView::new(&m, &reactions);
                    let data = MessageData { message: &view };
                    let stored = EditLogged { message_id: m.id };
                    log.record(
                        EventKind::MessageUpdated,
                        &data,
                        Some(m.id),
                        &stored,
                        Effect::None,
                    );
                    outbox_ops.push((m.id, OutboxOp::Upsert));
                    Ok(OpOutcome::Edited(view))
                }
            },
            Op::Delete {
                user_id,
                message_id,
                moderator,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) if m.sender_id != *user_id && !moderator => Err(RoomError::Forbidden(
                    "Only the sender or a chat owner/admin can delete a message".into(),
                )),
                Some(m) => {
                    msg_store::soft_delete(tx, m.id).await?;
                    let data = MessageDeletedData {
                        message_id: m.id,
                        chat_id,
                        deleted_by: *user_id,
                    };
                    log.record(
                        EventKind::MessageDeleted,
                        &data,
                        Some(m.id),
                        &data,
                        Effect::None,
                    );
                    outbox_ops.push((m.id, OutboxOp::Delete));
                    Ok(OpOutcome::Deleted)
                }
            },
            Op::React {
                user_id,
                message_id,
                emoji,
                add,
            } => match msg_store::lock_message(tx, chat_id, *message_id).await? {
                None => Err(RoomError::NotFound("message")),
                Some(m) => {
                    let changed = if *add {
                        msg_store::add_reaction(tx, m.id, *user_id, emoji).await?
                    } else {
                        msg_store::remove_reaction(tx, m.id, *user_id, emoji).await?
                    };
                    let reactions: Vec<ReactionView> = msg_store::reactions_in_tx(tx, m.id)
                        .await?
                        .iter()
                        .map(ReactionView::from)
                        .collect();
                    if changed {
                        let kind = if *add {
                            EventKind::ReactionAdded
                        } else {
                            EventKind::ReactionRemoved
                        };
                        let data = ReactionData {
                            message_id: m.id,
                            chat_id,
                            user_id: *user_id,
                            emoji: emoji.clone(),
                            reactions: reactions.clone(),
                        };
                        let stored = ReactionLogged {
                            message_id: m.id,
                            chat_id,
                            user_id: *user_id,
                            emoji: emoji.clone(),
                        };
                        log.record(kind, &data, Some(m.id), &stored, Effect::None);
                    }
                    Ok(OpOutcome::Reacted { reactions, changed })
                }
            },
            Op::Join { user_id, role } => {
                let joined = ev_store::add_member(tx, chat_id, *user_id, role, log.seq).await?;
                if joined {
                    let data = MemberData {
                        chat_id,
                        user_id: *user_id,
                        role: Some(role.clone()),
                    };
                    let effect = Effect::Joined {
                        user_id: *user_id,
                        role: role.clone(),
                    };
                    log.record(EventKind::MemberJoined, &data, None, &data, effect);
                }
                Ok(OpOutcome::Joined(joined))
            }
            Op::Leave { user_id } => {
                let left = ev_store::remove_member(tx, chat_id, *user_id).await?;
                if left {
                    let data = MemberData {
                        chat_id,
                        user_id: *user_id,
                        role: None,
                    };
                    let effect = Effect::Left { user_id: *user_id };
                    log.record(EventKind::MemberLeft, &data, None, &data, effect);
                }
                Ok(OpOutcome::Left(left))
            }
        };
        outcomes[i] = Some(outcome);
    }

    // 3. The log of non-creation events, the search outbox, and the chat's position.
    let Log {
        seq,
        logged,
        mut events,
        ..
    } = log;
    let rows: Vec<LoggedEvent<'_>> = logged
        .iter()
        .map(|(seq, kind, message_id, payload)| LoggedEvent {
            seq: *seq,
            kind,
            message_id: *message_id,
            payload,
        })
        .collect();
    ev_store::insert_events(tx, chat_id, &rows).await?;
    // Every message write records its outbox row: both search engines are fed from it.
    let outbox = !outbox_ops.is_empty();
    if outbox {
        outbox::record(tx, &outbox_ops).await?;
    }
    let xid = if seq != base_seq {
        Some(ev_store::advance_seq(tx, chat_id, base_seq, seq).await?)
    } else {
        None
    };
    events.sort_by_key(|(e, _)| e.seq);
    Ok(Some((
        Committed {
            last_seq: seq,
            outcomes: outcomes
                .into_iter()
                .map(|o| o.unwrap_or_else(|| Err(RoomError::Unavailable("not processed".into()))))
                .collect(),
            events,
            persisted,
            outbox,
            reload: false,
        },
        xid,
    )))
}
