-- The kit's tables in every service schema: the transactional outbox (helpdesk_kit::outbox) and
-- the record of handled events (helpdesk_kit::bus::consumer). Tracked in `_sqlx_kit_migrations`,
-- apart from the service's own migrations.
--
-- `IF NOT EXISTS`: schemas made before these tables were migrations already hold them (the
-- services created them at start-up); this first version adopts them as they are.
CREATE TABLE IF NOT EXISTS outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID NOT NULL UNIQUE,
    exchange     TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    aggregate_id TEXT NOT NULL,
    body         TEXT NOT NULL,
    headers      JSONB NOT NULL DEFAULT '{}',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts     INT NOT NULL DEFAULT 0,
    last_error   TEXT
);

CREATE TABLE IF NOT EXISTS processed_events (
    consumer     TEXT NOT NULL,
    event_id     UUID NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
-- Pruning by age.
CREATE INDEX IF NOT EXISTS processed_events_at ON processed_events (processed_at);
