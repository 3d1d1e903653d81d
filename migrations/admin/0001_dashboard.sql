-- admin-service schema: a read model of tickets kept by ticket events, counters maintained in the
-- same transaction (so the dashboard is O(1)), and the roles of users whose role changed or who
-- were deleted (so a demoted or deleted admin loses access at once).

-- One row per ticket ever seen. `live` rows are counted; `removed` rows are deleted tickets kept
-- as tombstones so a late event cannot bring them back. `updated_at` is the snapshot's, so an
-- older snapshot never overwrites a newer one (NULL: a placeholder no snapshot has filled yet).
CREATE TABLE tickets (
    id          UUID PRIMARY KEY,
    user_id     UUID,
    status      TEXT NOT NULL CHECK (status IN ('OPEN', 'IN_PROGRESS', 'DONE')),
    assigned_to UUID,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ,
    live        BOOLEAN NOT NULL,
    removed     BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX tickets_live_user ON tickets (user_id) WHERE live;
CREATE INDEX tickets_live_assignee ON tickets (assigned_to) WHERE live;

-- The dashboard's figures: exactly one row.
CREATE TABLE ticket_counters (
    singleton   BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
    total       BIGINT NOT NULL DEFAULT 0,
    open        BIGINT NOT NULL DEFAULT 0,
    in_progress BIGINT NOT NULL DEFAULT 0,
    done        BIGINT NOT NULL DEFAULT 0,
    unassigned  BIGINT NOT NULL DEFAULT 0
);
INSERT INTO ticket_counters DEFAULT VALUES;

-- Live tickets by the minute they were created: the last 24 hours are a sum of at most 1440
-- rows, whatever the number of tickets (exact to the minute at the window's far edge).
CREATE TABLE created_per_minute (
    minute TIMESTAMPTZ PRIMARY KEY,
    count  BIGINT NOT NULL
);

-- Tickets not DONE (OPEN or IN_PROGRESS) per assignee; rows at zero are removed.
CREATE TABLE open_per_agent (
    agent_id UUID PRIMARY KEY,
    count    BIGINT NOT NULL
);

-- Current role of users whose role changed (or who were deleted) after sign-in; everyone else's
-- token role is current.
CREATE TABLE user_access (
    user_id    UUID PRIMARY KEY,
    role       TEXT CHECK (role IN ('USER', 'AGENT', 'ADMIN')),
    deleted    BOOLEAN NOT NULL DEFAULT false,
    changed_at TIMESTAMPTZ NOT NULL
);
