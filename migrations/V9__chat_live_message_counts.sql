-- Live (not deleted) messages per chat, kept by every commit in the statement that advances
-- the chat's last_seq (sends persisted add, deletes subtract): a workspace's message count is
-- a sum over its chats instead of a scan of all its messages (which took over 30 s on a
-- workspace with millions). store::audit checks the count against the rows.
ALTER TABLE chats ADD COLUMN live_messages BIGINT NOT NULL DEFAULT 0;

UPDATE chats c SET live_messages = m.n
FROM (SELECT chat_id, count(*) AS n FROM messages WHERE deleted_at IS NULL GROUP BY chat_id) m
WHERE c.id = m.chat_id;
