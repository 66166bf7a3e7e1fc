-- A backlog: :n new messages and their search outbox rows, as sends write them.
-- psql -v off=<unique offset> -v n=<rows> -f backlog.sql
WITH ins AS (
INSERT INTO messages (chat_id, seq, sender_id, content, created_at)
SELECT 1 + (i % 1000), 100000 + i / 1000 + 1 + :off, 1 + (i % 100),
       rpad('9:' || (i % 10000) || ':' || (i/10000) || ':' || (1864633600000000000 + i::bigint * 1000003 + :off)::text,
            100, ' benchmark load message'),
       now()
FROM generate_series(1 + :off*0, :n) i RETURNING id)
INSERT INTO search_outbox (message_id, op) SELECT id, 'upsert' FROM ins;
