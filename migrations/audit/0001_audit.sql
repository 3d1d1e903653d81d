-- audit-service schema: the append-only audit log and a read model of users for the `actor` object.

CREATE TABLE audit_events (
    id          UUID PRIMARY KEY,
    -- The domain event's id: one entry per event however often it is delivered.
    -- NULL for entries written through POST /audit/log.
    event_id    UUID UNIQUE,
    actor_id    UUID,
    action      TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    metadata    JSONB NOT NULL DEFAULT '{}',
    -- When the action happened (the event's timestamp).
    created_at  TIMESTAMPTZ NOT NULL,
    -- When the entry was written (audit lag = recorded_at - created_at).
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
-- Every listing is newest first with (created_at, id) as the keyset.
CREATE INDEX audit_events_by_entity ON audit_events (entity_type, entity_id, created_at DESC, id DESC);
CREATE INDEX audit_events_by_actor ON audit_events (actor_id, created_at DESC, id DESC);
CREATE INDEX audit_events_by_action ON audit_events (action, created_at DESC, id DESC);
-- Unfiltered search and the retention job.
CREATE INDEX audit_events_by_created ON audit_events (created_at DESC, id DESC);

CREATE TABLE users (
    id         UUID PRIMARY KEY,
    email      TEXT NOT NULL,
    first_name TEXT,
    last_name  TEXT,
    role       TEXT NOT NULL CHECK (role IN ('USER', 'AGENT', 'ADMIN')),
    synced_at  TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);

CREATE TABLE deleted_users (
    id         UUID PRIMARY KEY,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
