-- Workspaces, chats, messages and the per-chat event log.

CREATE TABLE workspaces (
    id                 BIGSERIAL PRIMARY KEY,
    name               TEXT        NOT NULL,
    description        TEXT,
    logo_url           TEXT,
    owner_id           BIGINT      NOT NULL REFERENCES users(id),
    allow_guest_access BOOLEAN     NOT NULL DEFAULT FALSE,
    require_2fa        BOOLEAN     NOT NULL DEFAULT FALSE,
    retention_days     INTEGER     NOT NULL DEFAULT 90,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE workspace_members (
    workspace_id BIGINT      NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    user_id      BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role         TEXT        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_idx ON workspace_members (user_id);

CREATE TABLE invites (
    id           BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT      NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    code         TEXT        NOT NULL UNIQUE,
    email        TEXT,               -- normalised; NULL = anyone holding the code
    role         TEXT        NOT NULL CHECK (role IN ('admin', 'member')),
    created_by   BIGINT      NOT NULL REFERENCES users(id),
    max_uses     INTEGER     NOT NULL DEFAULT 1,
    uses         INTEGER     NOT NULL DEFAULT 0,
    expires_at   TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE chats (
    id           BIGSERIAL PRIMARY KEY,
    workspace_id BIGINT      NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name         TEXT        NOT NULL,
    kind         TEXT        NOT NULL CHECK (kind IN ('channel', 'direct')),
    description  TEXT,
    is_private   BOOLEAN     NOT NULL DEFAULT FALSE,
    created_by   BIGINT      NOT NULL REFERENCES users(id),
    -- Direct messages: the sorted member ids ("1,5,9"), so the same member set maps to one chat.
    dm_key       TEXT,
    -- Last committed event position of this chat. Only the chat's room writes it (fenced update).
    last_seq     BIGINT      NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (workspace_id, dm_key)
);
CREATE INDEX chats_workspace_idx ON chats (workspace_id);

CREATE TABLE chat_members (
    chat_id       BIGINT      NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    user_id       BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role          TEXT        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Chat position when the user joined: replay for a chat joined while away starts here.
    joined_seq    BIGINT      NOT NULL DEFAULT 0,
    -- Read marker: messages with seq above it are unread.
    last_read_seq BIGINT      NOT NULL DEFAULT 0,
    PRIMARY KEY (chat_id, user_id)
);
CREATE INDEX chat_members_user_idx ON chat_members (user_id);

CREATE TABLE messages (
    id              BIGSERIAL PRIMARY KEY,
    chat_id         BIGINT      NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    -- Gap-free per-chat position, assigned by the chat's room (the single writer).
    seq             BIGINT      NOT NULL,
    sender_id       BIGINT      NOT NULL REFERENCES users(id),
    content         TEXT        NOT NULL,
    idempotency_key TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at      TIMESTAMPTZ,
    UNIQUE (chat_id, seq),
    UNIQUE (sender_id, idempotency_key)
);

-- Every event of a chat other than a message's creation (which is the message row itself):
-- edits, deletes, reactions, membership. Shares the chat's seq space with messages.seq.
CREATE TABLE chat_events (
    chat_id    BIGINT      NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    seq        BIGINT      NOT NULL,
    kind       TEXT        NOT NULL,
    payload    JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, seq)
);

CREATE TABLE reactions (
    message_id BIGINT      NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    BIGINT      NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    emoji      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, user_id, emoji)
);
