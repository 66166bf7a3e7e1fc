-- 4,000,000 load-tool-shaped messages (100 bytes: "run:sender:n:nanos" + filler) and their
-- message_search rows, GIN indexes built after the load (as V7 does). Run after the migrations
-- on an empty database, with 100 users, 1 workspace and 1000 chats inserted first (see run.sh).

-- load-tool shape: "run:sender:n:nanos" + " benchmark load message" filler to 100 bytes
INSERT INTO messages (chat_id, seq, sender_id, content, created_at)
SELECT 1 + (i % 1000), i / 1000 + 1, 1 + (i % 100),
       rpad((i/100000)::text || ':' || (i % 10000) || ':' || (i/10000) || ':' || (1764633600000000000 + i::bigint * 1000003)::text,
            100, ' benchmark load message'),
       now() - interval '1 ms' * (4000000 - i)
FROM generate_series(1, 4000000) i;
INSERT INTO message_search (message_id, chat_id, sender_id, created_at, content)
SELECT id, chat_id, sender_id, created_at, content FROM messages;
SET maintenance_work_mem = '512MB';
CREATE INDEX message_search_tsv_idx ON message_search USING GIN (content_tsv);
CREATE INDEX message_search_trgm_idx ON message_search USING GIN (content gin_trgm_ops);
VACUUM ANALYZE messages; VACUUM ANALYZE message_search;
SELECT pg_size_pretty(pg_relation_size('message_search_tsv_idx')) tsv, pg_size_pretty(pg_relation_size('message_search_trgm_idx')) trgm, pg_size_pretty(pg_relation_size('message_search')) tbl;
