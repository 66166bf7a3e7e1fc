-- One indexer batch (the statements of src/store/search/table.rs and outbox.rs), its INSERT
-- under EXPLAIN (ANALYZE, BUFFERS), with work_mem :wm; then both GIN pending lists' sizes.
BEGIN; SET LOCAL work_mem = :wm;
SELECT array_agg(message_id ORDER BY message_id)::text AS ids FROM (SELECT message_id FROM search_outbox ORDER BY id LIMIT 500) s \gset
EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) INSERT INTO message_search (message_id, chat_id, sender_id, created_at, content)
     SELECT id, chat_id, sender_id, created_at, content FROM messages
     WHERE id = ANY(:'ids'::bigint[]) AND deleted_at IS NULL
     ON CONFLICT (message_id) DO UPDATE SET chat_id = EXCLUDED.chat_id,
       sender_id = EXCLUDED.sender_id, created_at = EXCLUDED.created_at, content = EXCLUDED.content
     WHERE (message_search.content, message_search.created_at, message_search.chat_id)
           IS DISTINCT FROM (EXCLUDED.content, EXCLUDED.created_at, EXCLUDED.chat_id);
DELETE FROM search_outbox WHERE id IN (SELECT id FROM search_outbox ORDER BY id LIMIT 500);
COMMIT;
SELECT 'pending', (SELECT pending_tuples FROM pgstatginindex('message_search_trgm_idx')) trgm, (SELECT pending_tuples FROM pgstatginindex('message_search_tsv_idx')) tsv;
