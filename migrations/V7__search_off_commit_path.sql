-- Search off the commit path: PostgreSQL full-text search reads a derived table that the
-- SearchIndexer fills from the search outbox (as it feeds Meilisearch), so a send's
-- transaction maintains no GIN index and computes no tsvector. With Meilisearch as the engine
-- this table is never written after the backfill below (switching engines: `fechatter reindex`).

CREATE TABLE message_search (
    message_id    BIGINT      PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    chat_id       BIGINT      NOT NULL,
    sender_id     BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    -- The text as last indexed (an edit replaces it, a delete removes the row).
    content       TEXT        NOT NULL,
    content_tsv   tsvector    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    -- The words as written (lower-cased, not stemmed): exact matches rank first.
    content_words tsvector    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED
);

-- Existing deployments keep their search results.
INSERT INTO message_search (message_id, chat_id, sender_id, created_at, content)
SELECT id, chat_id, sender_id, created_at, content FROM messages WHERE deleted_at IS NULL;

CREATE INDEX message_search_tsv_idx ON message_search USING GIN (content_tsv);
-- Fallback for text the stemmer cannot split (CJK) and for prefixes/substrings.
CREATE INDEX message_search_trgm_idx ON message_search USING GIN (content gin_trgm_ops);
-- The newest matches of a common word come from walking this index backwards.
CREATE INDEX message_search_created_at_idx ON message_search (created_at, message_id);

DROP INDEX messages_tsv_idx;
DROP INDEX messages_content_trgm_idx;
DROP INDEX messages_created_at_idx;
ALTER TABLE messages DROP COLUMN content_tsv, DROP COLUMN content_words;
