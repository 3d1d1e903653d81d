-- Who may read an email's status now (helpdesk_kit::access): the users whose role, password or
-- existence changed after they signed in, from user.role_changed / user.updated / user.deleted.
CREATE TABLE user_access (
    user_id      UUID PRIMARY KEY,
    role         TEXT CHECK (role IN ('USER', 'AGENT', 'ADMIN')),
    deleted      BOOLEAN NOT NULL DEFAULT false,
    changed_at   TIMESTAMPTZ NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 0,
    token_epoch  BIGINT NOT NULL DEFAULT 0,
    kept_session UUID
);
