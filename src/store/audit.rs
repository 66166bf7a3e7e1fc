//! Consistency audits of the event log, for the fault suite: whether every chat's positions
//! are exactly 1..=`last_seq`, each held by one message or one other event, and whether every
//! chat's kept count of live messages matches its rows.

use super::{Store, StoreResult};

/// A chat whose positions are not exactly 1..=`last_seq`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeqHole {
    pub chat_id: i64,
    pub last_seq: i64,
    /// Positions held by a message or an event (a position held twice counts twice).
    pub held: i64,
    pub distinct: i64,
    pub highest: i64,
}

/// A chat whose kept `live_messages` is not the number of its undeleted rows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CountDrift {
    pub chat_id: i64,
    pub kept: i64,
    pub rows: i64,
}

impl Store {
    /// Every chat whose kept live-message count differs from its undeleted rows.
    pub async fn live_count_drifts(&self) -> StoreResult<Vec<CountDrift>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT c.id, c.live_messages, count(m.id) FROM chats c \
                   LEFT JOIN messages m ON m.chat_id = c.id AND m.deleted_at IS NULL \
                  GROUP BY c.id, c.live_messages HAVING count(m.id) <> c.live_messages \
                  ORDER BY c.id",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| CountDrift {
                chat_id: r.get(0),
                kept: r.get(1),
                rows: r.get(2),
            })
            .collect())
    }

    /// Every chat whose positions have a gap, a repeat, or run past `last_seq`.
    pub async fn seq_holes(&self) -> StoreResult<Vec<SeqHole>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT c.id, c.last_seq, count(p.seq), count(DISTINCT p.seq), \
                        coalesce(max(p.seq), 0) \
                   FROM chats c \
                   LEFT JOIN (SELECT chat_id, seq FROM messages \
                              UNION ALL SELECT chat_id, seq FROM chat_events) p \
                     ON p.chat_id = c.id \
                  GROUP BY c.id, c.last_seq \
                 HAVING count(p.seq) <> c.last_seq OR count(DISTINCT p.seq) <> c.last_seq \
                     OR coalesce(max(p.seq), 0) <> c.last_seq OR coalesce(min(p.seq), 1) <> 1 \
                  ORDER BY c.id",
            )
            .await?;
        Ok(client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|r| SeqHole {
                chat_id: r.get(0),
                last_seq: r.get(1),
                held: r.get(2),
                distinct: r.get(3),
                highest: r.get(4),
            })
            .collect())
    }
}
