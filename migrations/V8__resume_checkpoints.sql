-- Resume checkpoints: a connection that follows many chats stores its positions here now and
-- then, so its event ids carry a checkpoint id plus the chats that moved since, not a position
-- for every chat it follows (see README "Resuming"). Rows are immutable; old ones are pruned
-- after FECHATTER_CHECKPOINT_RETENTION_HOURS.
CREATE TABLE resume_checkpoints (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    chat_ids   BIGINT[] NOT NULL,
    seqs       BIGINT[] NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX resume_checkpoints_created_at ON resume_checkpoints (created_at);
