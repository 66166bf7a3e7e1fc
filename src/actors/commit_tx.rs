//! One group-commit transaction for the batches of one or more chat rooms: chat rows locked
//! in chat-id order, one idempotency look-up, one multi-row INSERT, each edit/delete/reaction
//! one statement (a room's one after the other, rooms' pipelined), one event-log INSERT, one
//! outbox INSERT and one fenced `last_seq` advance for every room together, whatever the
//! number of rooms.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::{join, join_all};

use super::commit::{Attempt, CommitSpec, Committed, Effect};
use super::events::{
    EditLogged, Event, EventKind, MemberData, MessageData, MessageDeletedData, MessageView,
    ReactionData, ReactionLogged, ReactionView,
};
use super::room::{Op, OpOutcome};
use super::rooms::RoomError;
use crate::store::StoreError;
use crate::store::events::{self as ev_store, LoggedEvent};
use crate::store::messages::{self as msg_store, Change, MessageRow, NewMessage, ReactionSummary};
use crate::store::search::outbox::{self, OutboxOp};

/// How many times a transaction is retried when a concurrent send took one of its keys.
const KEY_RACE_ATTEMPTS: usize = 3;

/// One room's part of a shared transaction: its ops, after the seq it last knew.
pub struct RoomBatch<'a> {
    pub chat_id: i64,
    pub base_seq: i64,
    pub ops: &'a [Op],
}

/// A room's result in a committed transaction.
pub enum RoomResult {
    Done(Committed),
    /// Another writer moved the chat (single node: its base seq is stale; or the chat is gone):
    /// nothing of this room was written.
    Fenced,
}

/// One transaction for all `rooms`; retried when a concurrent send took one of its keys. A
/// lost COMMIT reply is resolved with `txid_status` (one id for the whole transaction).
pub async fn attempt(
    spec: &CommitSpec,
    rooms: &[RoomBatch<'_>],
) -> Result<Vec<RoomResult>, Attempt> {
    let mut client = spec.store.client().await?;
    for _ in 0..KEY_RACE_ATTEMPTS {
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let Some((done, xid)) = commit_in(&tx, spec.db_orders_writers, rooms).await? else {
            tx.rollback().await.map_err(StoreError::from)?;
            continue;
        };
        let result = tx.commit().await;
        let lost = result.is_ok() && spec.faults.lose_commit_reply();
        return match (result, xid) {
            (Ok(()), _) if !lost => Ok(done),
            // Nothing was written (no seq taken): the outcome does not matter.
            (_, None) => Ok(done),
            (_, Some(xid)) => match super::commit::resolve(spec, xid).await {
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

/// The events a room's batch produces, each at the next seq of its chat.
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

/// A room's work in progress inside the transaction.
struct Work<'a> {
    batch: &'a RoomBatch<'a>,
    base: i64,
    log: Log,
    outcomes: Vec<Option<Result<OpOutcome, RoomError>>>,
    outbox: Vec<(i64, OutboxOp)>,
    persisted: usize,
    /// Messages this batch soft-deleted (the chat's live count drops by as many).
    deleted: usize,
    /// (op index, index into the transaction's new messages).
    sends: Vec<(usize, usize)>,
}

/// The body of a shared commit: `None` asks for a retry (a concurrent send took a key). Returns
/// each room's result and the transaction id (when it took a seq).
async fn commit_in(
    tx: &deadpool_postgres::Transaction<'_>,
    db_orders_writers: bool,
    rooms: &[RoomBatch<'_>],
) -> Result<Option<(Vec<RoomResult>, Option<i64>)>, StoreError> {
    // 1. Lock the chat rows (in id order) and look up the sends' idempotency keys, pipelined.
    let mut ids: Vec<i64> = rooms.iter().map(|r| r.chat_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let (mut key_chats, mut key_senders, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for room in rooms {
        for op in room.ops {
            if let Op::Send {
                sender_id,
                idempotency_key: Some(k),
                ..
            } = op
            {
                key_chats.push(room.chat_id);
                key_senders.push(*sender_id);
                keys.push(k.as_str());
            }
        }
    }
    let (positions, existing) = futures_util::try_join!(
        ev_store::lock_chats(tx, &ids),
        msg_store::find_by_keys(tx, &key_chats, &key_senders, &keys)
    )?;
    let existing: HashMap<(i64, i64, &str), &MessageRow> = existing
        .iter()
        .filter_map(|m| {
            let k = m.idempotency_key.as_deref()?;
            Some(((m.chat_id, m.sender_id, k), m))
        })
        .collect();
    let replayed: Vec<i64> = existing.values().map(|m| m.id).collect();
    let replay_reactions = msg_store::reactions_in_tx(tx, &replayed).await?;

    // 2. Each room's base: the locked row's (cluster) or its own, checked against the row.
    let mut works: Vec<Option<Work<'_>>> = rooms
        .iter()
        .map(|batch| {
            let current = positions.get(&batch.chat_id).copied()?;
            let base = if db_orders_writers {
                current
            } else if current == batch.base_seq {
                batch.base_seq
            } else {
                return None;
            };
            Some(Work {
                batch,
                base,
                log: Log {
                    chat_id: batch.chat_id,
                    seq: base,
                    logged: Vec::new(),
                    events: Vec::new(),
                },
                outcomes: (0..batch.ops.len()).map(|_| None).collect(),
                outbox: Vec::new(),
                persisted: 0,
                deleted: 0,
                sends: Vec::new(),
            })
        })
        .collect();

    // 3. Sends take the first seqs of their room; replays of a stored key take none.
    let mut new: Vec<NewMessage<'_>> = Vec::new();
    for work in works.iter_mut().flatten() {
        let batch: &RoomBatch<'_> = work.batch;
        let chat_id = batch.chat_id;
        let mut by_key: HashMap<(i64, &str), usize> = HashMap::new();
        for (i, op) in batch.ops.iter().enumerate() {
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
                if let Some(m) = existing.get(&(chat_id, *sender_id, k)) {
                    let reactions = replay_reactions.get(&m.id).map_or(&[][..], |r| &r[..]);
                    work.outcomes[i] = Some(Ok(OpOutcome::Sent {
                        message: MessageView::new(m, reactions),
                        created: false,
                    }));
                    continue;
                }
                if let Some(&slot) = by_key.get(&(*sender_id, k)) {
                    work.sends.push((i, slot));
                    continue;
                }
            }
            work.log.seq += 1;
            new.push(NewMessage {
                chat_id,
                seq: work.log.seq,
                sender_id: *sender_id,
                content,
                idempotency_key: key,
            });
            if let Some(k) = key {
                by_key.insert((*sender_id, k), new.len() - 1);
            }
            work.sends.push((i, new.len() - 1));
        }
    }

    // 4. The INSERT and every room's other ops, pipelined (each room's in its own order).
    let insert = async {
        if new.is_empty() {
            Ok(Vec::new())
        } else {
            msg_store::insert_batch(tx, &new).await
        }
    };
    let others = join_all(works.iter_mut().flatten().map(|w| other_ops(tx, w)));
    let (rows, others) = join(insert, others).await;
    let rows = rows?;
    others.into_iter().collect::<Result<Vec<()>, _>>()?;
    if rows.len() != new.len() {
        return Ok(None);
    }
    // Rows come back in (chat, seq) order, as `new` was built.
    let mut views: HashMap<(i64, i64), (MessageView, bool)> = rows
        .iter()
        .map(|r| ((r.chat_id, r.seq), (MessageView::new(r, &[]), true)))
        .collect();
    for work in works.iter_mut().flatten() {
        for &(i, slot) in &work.sends {
            let m = &new[slot];
            let Some((view, first)) = views.get_mut(&(m.chat_id, m.seq)) else {
                return Ok(None);
            };
            let created = std::mem::replace(first, false);
            work.outcomes[i] = Some(Ok(OpOutcome::Sent {
                message: view.clone(),
                created,
            }));
        }
    }
    for row in &rows {
        let Some(work) = works
            .iter_mut()
            .flatten()
            .find(|w| w.batch.chat_id == row.chat_id)
        else {
            continue;
        };
        let Some((view, _)) = views.get(&(row.chat_id, row.seq)) else {
            continue;
        };
        work.persisted += 1;
        work.outbox.push((row.id, OutboxOp::Upsert));
        let event = Event::new(
            EventKind::MessageCreated,
            Some(row.chat_id),
            Some(row.seq),
            &MessageData { message: view },
        );
        work.log.events.push((
            event,
            Effect::Sent {
                sender_id: row.sender_id,
            },
        ));
    }
    drop(views);

    // 5. The event log, the search outbox and the chats' positions, pipelined.
    let logged: Vec<LoggedEvent<'_>> = works
        .iter()
        .flatten()
        .flat_map(|w| {
            w.log
                .logged
                .iter()
                .map(|(seq, kind, message_id, payload)| LoggedEvent {
                    chat_id: w.batch.chat_id,
                    seq: *seq,
                    kind,
                    message_id: *message_id,
                    payload,
                })
        })
        .collect();
    let outbox_ops: Vec<(i64, OutboxOp)> = works
        .iter()
        .flatten()
        .flat_map(|w| w.outbox.iter().copied())
        .collect();
    let moves: Vec<ev_store::SeqMove> = works
        .iter()
        .flatten()
        .filter(|w| w.log.seq != w.base)
        .map(|w| ev_store::SeqMove {
            chat_id: w.batch.chat_id,
            from: w.base,
            to: w.log.seq,
            live_delta: w.persisted as i64 - w.deleted as i64,
        })
        .collect();
    let (_, _, (moved, xid)) = futures_util::try_join!(
        ev_store::insert_events(tx, &logged),
        outbox::record(tx, &outbox_ops),
        ev_store::advance_seqs(tx, &moves)
    )?;
    if moved.len() != moves.len() {
        // Under the rows' locks nobody else can move them: treat it as the fence it is.
        return Err(StoreError::Conflict(ev_store::FENCED.into()));
    }
    drop(logged);

    let results = works
        .into_iter()
        .map(|w| match w {
            None => RoomResult::Fenced,
            Some(w) => {
                let mut events = w.log.events;
                events.sort_by_key(|(e, _)| e.seq);
                RoomResult::Done(Committed {
                    last_seq: w.log.seq,
                    outcomes: w
                        .outcomes
                        .into_iter()
                        .map(|o| {
                            o.unwrap_or_else(|| Err(RoomError::Unavailable("not processed".into())))
                        })
                        .collect(),
                    events,
                    persisted: w.persisted,
                    outbox: !w.outbox.is_empty(),
                    reload: false,
                })
            }
        })
        .collect();
    Ok(Some((results, xid)))
}

/// A change's statement result, by kind.
enum Changed {
    Edit(Change<(MessageRow, Vec<ReactionSummary>)>),
    Delete(Change<()>),
    React(Change<(bool, Vec<ReactionSummary>)>),
}

/// One edit, delete or reaction: one statement.
async fn change(
    tx: &deadpool_postgres::Transaction<'_>,
    chat_id: i64,
    op: &Op,
) -> Result<Option<Changed>, StoreError> {
    Ok(Some(match op {
        Op::Edit {
            user_id,
            message_id,
            content,
        } => Changed::Edit(
            msg_store::edit_message(tx, chat_id, *message_id, *user_id, content).await?,
        ),
        Op::Delete {
            user_id,
            message_id,
            moderator,
        } => Changed::Delete(
            msg_store::delete_message(tx, chat_id, *message_id, *user_id, *moderator).await?,
        ),
        Op::React {
            user_id,
            message_id,
            emoji,
            add,
        } => {
            Changed::React(msg_store::react(tx, chat_id, *message_id, *user_id, emoji, *add).await?)
        }
        _ => return Ok(None),
    }))
}

/// A room's ops other than sends, in order, each taking the next seq when it changes
/// something, each statement awaited before the next (so each sees the one before; a
/// membership change's row records the seq it joined at). Rooms run theirs concurrently on
/// the shared transaction's connection (`join_all` in the caller), so their statements are
/// pipelined with each other's.
async fn other_ops(
    tx: &deadpool_postgres::Transaction<'_>,
    work: &mut Work<'_>,
) -> Result<(), StoreError> {
    let ops = work.batch.ops;
    let chat_id = work.batch.chat_id;
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Send { .. } => i += 1,
            Op::Join { user_id, role } => {
                let joined =
                    ev_store::add_member(tx, chat_id, *user_id, role, work.log.seq).await?;
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
                    work.log
                        .record(EventKind::MemberJoined, &data, None, &data, effect);
                }
                work.outcomes[i] = Some(Ok(OpOutcome::Joined(joined)));
                i += 1;
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
                    work.log
                        .record(EventKind::MemberLeft, &data, None, &data, effect);
                }
                work.outcomes[i] = Some(Ok(OpOutcome::Left(left)));
                i += 1;
            }
            Op::Edit { .. } | Op::Delete { .. } | Op::React { .. } => {
                let end = ops[i..]
                    .iter()
                    .position(|op| matches!(op, Op::Join { .. } | Op::Leave { .. }))
                    .map_or(ops.len(), |n| i + n);
                // One after the other: a statement not yet prepared on this connection takes
                // a round trip first, so pipelined changes could run out of op order (a
                // reaction before the delete queued ahead of it).
                let mut results = Vec::with_capacity(end - i);
                for op in &ops[i..end] {
                    results.push(change(tx, chat_id, op).await?);
                }
                for (k, result) in (i..end).zip(results) {
                    if let Some(result) = result {
                        work.outcomes[k] = Some(apply_change(work, &ops[k], result));
                    }
                }
                i = end;
            }
        }
    }
    Ok(())
}

/// Turns a change's statement result into the op's outcome, logging its event.
fn apply_change(work: &mut Work<'_>, op: &Op, result: Changed) -> Result<OpOutcome, RoomError> {
    let chat_id = work.batch.chat_id;
    match (op, result) {
        (_, Changed::Edit(Change::NotFound))
        | (_, Changed::Delete(Change::NotFound))
        | (_, Changed::React(Change::NotFound)) => Err(RoomError::NotFound("message")),
        (_, Changed::Edit(Change::Forbidden)) => Err(RoomError::Forbidden(
            "Only the sender can edit a message".into(),
        )),
        (_, Changed::Delete(Change::Forbidden)) | (_, Changed::React(Change::Forbidden)) => {
            Err(RoomError::Forbidden(
                "Only the sender or a chat owner/admin can delete a message".into(),
            ))
        }
        (_, Changed::Edit(Change::Done((m, reactions)))) => {
            let view = MessageView::new(&m, &reactions);
            let data = MessageData { message: &view };
            let stored = EditLogged { message_id: m.id };
            work.log.record(
                EventKind::MessageUpdated,
                &data,
                Some(m.id),
                &stored,
                Effect::None,
            );
            work.outbox.push((m.id, OutboxOp::Upsert));
            Ok(OpOutcome::Edited(view))
        }
        (
            Op::Delete {
                user_id,
                message_id,
                ..
            },
            Changed::Delete(Change::Done(())),
        ) => {
            let data = MessageDeletedData {
                message_id: *message_id,
                chat_id,
                deleted_by: *user_id,
            };
            work.log.record(
                EventKind::MessageDeleted,
                &data,
                Some(*message_id),
                &data,
                Effect::None,
            );
            work.outbox.push((*message_id, OutboxOp::Delete));
            work.deleted += 1;
            Ok(OpOutcome::Deleted)
        }
        (
            Op::React {
                user_id,
                message_id,
                emoji,
                add,
            },
            Changed::React(Change::Done((changed, summary))),
        ) => {
            let reactions: Vec<ReactionView> = summary.iter().map(ReactionView::from).collect();
            if changed {
                let kind = if *add {
                    EventKind::ReactionAdded
                } else {
                    EventKind::ReactionRemoved
                };
                let data = ReactionData {
                    message_id: *message_id,
                    chat_id,
                    user_id: *user_id,
                    emoji: emoji.clone(),
                    reactions: reactions.clone(),
                };
                let stored = ReactionLogged {
                    message_id: *message_id,
                    chat_id,
                    user_id: *user_id,
                    emoji: emoji.clone(),
                };
                work.log
                    .record(kind, &data, Some(*message_id), &stored, Effect::None);
            }
            Ok(OpOutcome::Reacted { reactions, changed })
        }
        _ => Err(RoomError::Unavailable("not processed".into())),
    }
}
