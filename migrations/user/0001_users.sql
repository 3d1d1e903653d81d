-- user-service schema: accounts and password reset tokens.
CREATE TABLE users (
    id            UUID PRIMARY KEY,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    role          TEXT NOT NULL CHECK (role IN ('USER', 'AGENT', 'ADMIN')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Emails are unique case-insensitively; look-ups go through this index.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_created_at ON users (created_at DESC, id DESC);
CREATE INDEX users_admins ON users (id) WHERE role = 'ADMIN';

-- Reset tokens are stored only as SHA-256 hashes; look-up is by hash (unique index).
CREATE TABLE password_reset_tokens (
    id         UUID PRIMARY KEY,
    user_id    UUID NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA NOT NULL UNIQUE,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX password_reset_tokens_outstanding ON password_reset_tokens (user_id) WHERE used_at IS NULL;
