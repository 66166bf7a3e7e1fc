-- One pgbench transaction: a 50-row INSERT into messages, the row shape a chat room's group
-- commit writes (chat_id, seq, sender_id, content, idempotency_key), with the same content as
-- benches/group_commit.rs. Seqs come from a sequence (unique per chat); each client writes one
-- of 8 chats. Variables: :base (first chat id), :sender (user id), given with -D.
\set chat :base + (:client_id % 8)
INSERT INTO messages (chat_id, seq, sender_id, content, idempotency_key)
SELECT :chat, s, :sender,
       'bench message ' || s || ' lorem ipsum dolor sit amet consectetur adipiscing elit sed do',
       'pgb-' || s
FROM (SELECT nextval('pgbench_msg_seq') AS s FROM generate_series(1, 50)) g;
