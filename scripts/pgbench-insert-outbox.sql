-- As pgbench-insert.sql, plus each message's search outbox row in the same transaction: what
-- a send writes since search left the commit path (V7). Variables: :base, :sender (-D).
\set chat :base + (:client_id % 8)
WITH ins AS (
    INSERT INTO messages (chat_id, seq, sender_id, content, idempotency_key)
    SELECT :chat, s, :sender,
           'bench message ' || s || ' lorem ipsum dolor sit amet consectetur adipiscing elit sed do',
           'pgb-' || s
    FROM (SELECT nextval('pgbench_msg_seq') AS s FROM generate_series(1, 50)) g
    RETURNING id
)
INSERT INTO search_outbox (message_id, op) SELECT id, 'upsert' FROM ins;
