-- ticket-service schema: tickets, comments, and the read model of users fed by user.* events.

-- Users as last announced by user-service. `provisional` rows come from a valid token whose
-- user.created event has not arrived yet; the event overwrites them. `synced_at` is the timestamp
-- of the event the row reflects, so a late redelivery never overwrites newer data.
CREATE TABLE users (
    id          UUID PRIMARY KEY,
    email       TEXT NOT NULL,
    first_name  TEXT,
    last_name   TEXT,
    role        TEXT NOT NULL CHECK (role IN ('USER', 'AGENT', 'ADMIN')),
    provisional BOOLEAN NOT NULL DEFAULT false,
    synced_at   TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

-- Tombstones of deleted users: their tokens stay refused even though the user row is gone.
CREATE TABLE deleted_users (
    id         UUID PRIMARY KEY,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE tickets (
    id                  UUID PRIMARY KEY,
    user_id             UUID NOT NULL,
    title               TEXT NOT NULL,
    description         TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'OPEN' CHECK (status IN ('OPEN', 'IN_PROGRESS', 'DONE')),
    assigned_to_user_id UUID,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Keyset pagination (created_at DESC, id DESC) over: own tickets, the inbox, everything (ADMIN).
CREATE INDEX tickets_by_owner ON tickets (user_id, created_at DESC, id DESC);
CREATE INDEX tickets_by_assignee ON tickets (assigned_to_user_id, created_at DESC, id DESC)
    WHERE assigned_to_user_id IS NOT NULL;
CREATE INDEX tickets_by_created ON tickets (created_at DESC, id DESC);

CREATE TABLE comments (
    id          UUID PRIMARY KEY,
    ticket_id   UUID NOT NULL REFERENCES tickets (id) ON DELETE CASCADE,
    author_id   UUID NOT NULL,
    body        TEXT NOT NULL,
    is_internal BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX comments_by_ticket ON comments (ticket_id, created_at, id);
CREATE INDEX comments_by_author ON comments (author_id);
