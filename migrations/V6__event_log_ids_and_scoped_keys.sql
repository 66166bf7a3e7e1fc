-- Idempotency keys are scoped to (sender, chat): the same key in another chat is another send.
ALTER TABLE messages DROP CONSTRAINT messages_sender_id_idempotency_key_key;
ALTER TABLE messages ADD CONSTRAINT messages_chat_sender_key_key
    UNIQUE (chat_id, sender_id, idempotency_key);

-- The event log stores what happened, never message text: an edit is logged as the message's
-- id, and replay renders the message from its current row (a deleted message is never
-- rendered). Reaction events keep who reacted with what; their summary is rendered at replay.
ALTER TABLE chat_events ADD COLUMN message_id BIGINT;
UPDATE chat_events SET message_id = (payload -> 'message' ->> 'id')::bigint,
                       payload = jsonb_build_object('message_id', (payload -> 'message' ->> 'id')::bigint)
 WHERE kind = 'message.updated';
UPDATE chat_events SET message_id = (payload ->> 'message_id')::bigint,
                       payload = payload - 'reactions'
 WHERE kind IN ('message.deleted', 'reaction.added', 'reaction.removed');
