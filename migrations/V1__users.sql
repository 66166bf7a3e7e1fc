-- Accounts. Email is stored as typed and, normalised (trimmed, lower-cased), as the unique login key.
CREATE TABLE users (
    id                    BIGSERIAL PRIMARY KEY,
    email                 TEXT        NOT NULL,
    email_normalized      TEXT        NOT NULL UNIQUE,
    username              TEXT        NOT NULL,
    password_hash         TEXT        NOT NULL,
    avatar_url            TEXT,
    theme                 TEXT        NOT NULL DEFAULT 'system',
    language              TEXT        NOT NULL DEFAULT 'en',
    notifications_enabled BOOLEAN     NOT NULL DEFAULT TRUE,
    -- Bumped by a password change: tokens carry the version they were issued under.
    token_version         INTEGER     NOT NULL DEFAULT 0,
    last_seen_at          TIMESTAMPTZ,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);
