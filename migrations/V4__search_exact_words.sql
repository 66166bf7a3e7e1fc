-- Search: the message's words as written (lower-cased, not stemmed), so the PostgreSQL engine
-- can rank exact matches first with a cheap tsvector test instead of a per-row regex
-- (measured: the regex cost ~2.7 µs per matching row, most of a common word's search time).
ALTER TABLE messages
    ADD COLUMN content_words tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED;
