//! The bytes of a chat event on the broker: who published it, the chat, its `seq` (none for
//! ephemeral events such as typing), its kind and the serialised `data` object, unchanged.
//!
//! Layout (big-endian): `b'F'`, version `1`, node-id length (u8) + node id, chat id (i64),
//! seq (i64, `0` = none), kind length (u8) + kind, then the data bytes to the end.

use bytes::{BufMut, Bytes, BytesMut};

const MAGIC: u8 = b'F';
const VERSION: u8 = 1;

/// One event as carried between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatEvent {
    /// The node that committed (or produced) it; a node ignores its own.
    pub node: String,
    pub chat_id: i64,
    /// The chat position of a persisted event; `None` for ephemeral ones (typing).
    pub seq: Option<i64>,
    /// The event's wire type (`message.created`, `typing.start`, ...).
    pub kind: String,
    /// The JSON of the event's `data` object, as serialised by the writing node.
    pub data: Bytes,
}

/// Why bytes are not a [`ChatEvent`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed broker message: {0}")]
pub struct Malformed(&'static str);

impl ChatEvent {
    pub fn encode(&self) -> Bytes {
        let node = truncate(self.node.as_bytes());
        let kind = truncate(self.kind.as_bytes());
        let mut b = BytesMut::with_capacity(20 + node.len() + kind.len() + self.data.len());
        b.put_u8(MAGIC);
        b.put_u8(VERSION);
        b.put_u8(node.len() as u8);
        b.put_slice(node);
        b.put_i64(self.chat_id);
        b.put_i64(self.seq.unwrap_or(0));
        b.put_u8(kind.len() as u8);
        b.put_slice(kind);
        b.put_slice(&self.data);
        b.freeze()
    }

    pub fn decode(bytes: &[u8]) -> Result<ChatEvent, Malformed> {
        let mut r = Reader(bytes);
        if r.u8()? != MAGIC {
            return Err(Malformed("bad magic"));
        }
        if r.u8()? != VERSION {
            return Err(Malformed("unknown version"));
        }
        let node = r.str()?;
        let chat_id = r.i64()?;
        let seq = r.i64()?;
        let kind = r.str()?;
        if seq < 0 {
            return Err(Malformed("negative seq"));
        }
        Ok(ChatEvent {
            node,
            chat_id,
            seq: (seq > 0).then_some(seq),
            kind,
            data: Bytes::copy_from_slice(r.0),
        })
    }
}

fn truncate(s: &[u8]) -> &[u8] {
    &s[..s.len().min(u8::MAX as usize)]
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn str(&mut self) -> Result<String, Malformed> {
        let n = self.u8()? as usize;
        let b = self.take(n)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| Malformed("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: Option<i64>) -> ChatEvent {
        ChatEvent {
            node: "node-a".into(),
            chat_id: 42,
            seq,
            kind: "message.created".into(),
            data: Bytes::from_static(br#"{"message":{"id":1}}"#),
        }
    }

    #[test]
    fn round_trips_persisted_and_ephemeral_events() {
        for e in [event(Some(7)), event(None)] {
            assert_eq!(ChatEvent::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn refuses_foreign_and_truncated_bytes() {
        let bytes = event(Some(1)).encode();
        assert!(ChatEvent::decode(b"hello").is_err());
        assert!(ChatEvent::decode(&bytes[..12]).is_err());
        assert!(ChatEvent::decode(&[]).is_err());
        let mut v = bytes.to_vec();
        v[1] = 9;
        assert_eq!(ChatEvent::decode(&v), Err(Malformed("unknown version")));
    }
}
