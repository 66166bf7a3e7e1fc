-- One indexer batch of :lim rows under statement_timeout :tmo and work_mem :wm (no EXPLAIN).
BEGIN; SET LOCAL statement_timeout = :tmo; SET LOCAL work_mem = :wm;
SELECT array_agg(message_id ORDER BY message_id)::text AS ids FROM (SELECT message_id FROM search_outbox ORDER BY id LIMIT :lim) s \gset
INSERT INTO message_search (message_id, chat_id, sender_id, created_at, content)
     SELECT id, chat_id, sender_id, created_at, content FROM messages
     WHERE id = ANY(:'ids'::bigint[]) AND deleted_at IS NULL
     ON CONFLICT (message_id) DO UPDATE SET chat_id = EXCLUDED.chat_id,
       sender_id = EXCLUDED.sender_id, created_at = EXCLUDED.created_at, content = EXCLUDED.content
     WHERE (message_search.content, message_search.created_at, message_search.chat_id)
           IS DISTINCT FROM (EXCLUDED.content, EXCLUDED.created_at, EXCLUDED.chat_id);
DELETE FROM search_outbox WHERE id IN (SELECT id FROM search_outbox ORDER BY id LIMIT :lim);
COMMIT;
SELECT 'pending', (SELECT pending_tuples FROM pgstatginindex('message_search_trgm_idx')) trgm, (SELECT pending_tuples FROM pgstatginindex('message_search_tsv_idx')) tsv;
