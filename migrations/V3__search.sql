-- Search: PostgreSQL full-text (the embedded engine) and the outbox feeding Meilisearch.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

ALTER TABLE messages
    ADD COLUMN content_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED;
CREATE INDEX messages_tsv_idx ON messages USING GIN (content_tsv);
-- Fallback for text the stemmer cannot split (CJK) and for prefixes/substrings.
CREATE INDEX messages_content_trgm_idx ON messages USING GIN (content gin_trgm_ops);

-- Written in the same transaction as each message write when an external index is configured;
-- the SearchIndexer drains it in batches (so a crash between commit and indexing loses nothing).
CREATE TABLE search_outbox (
    id         BIGSERIAL PRIMARY KEY,
    message_id BIGINT      NOT NULL,
    op         TEXT        NOT NULL CHECK (op IN ('upsert', 'delete')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
