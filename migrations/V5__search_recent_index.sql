-- Search: the newest matches of a common word come from walking this index backwards (and
-- stopping after enough), instead of visiting every matching message.
CREATE INDEX messages_created_at_idx ON messages (created_at, id);
