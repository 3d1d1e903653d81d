-- The in-process bus (helpdesk_kit::bus::postgres, `helpdesk up` without AMQP_URL), in its own
-- schema (`bus`). Tracked in `_sqlx_bus_migrations`.
--
-- `IF NOT EXISTS`: schemas made before these tables were migrations already hold them (the bus
-- created them at start-up); this first version adopts them as they are.

-- Which queues a topic exchange routes to (persisted, as RabbitMQ's bindings are).
CREATE TABLE IF NOT EXISTS bus_bindings (
    queue    TEXT NOT NULL,
    exchange TEXT NOT NULL,
    pattern  TEXT NOT NULL,
    PRIMARY KEY (queue, exchange, pattern)
);

-- One row per (message, bound queue); deleted once handled, kept with `dead_at` when dead-lettered.
CREATE TABLE IF NOT EXISTS bus_messages (
    id           BIGSERIAL PRIMARY KEY,
    queue        TEXT NOT NULL,
    routing_key  TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    body         BYTEA NOT NULL,
    attempts     INT NOT NULL DEFAULT 0,
    available_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dead_at      TIMESTAMPTZ,
    last_error   TEXT,
    traceparent  TEXT
);
-- Tables from before the trace column.
ALTER TABLE bus_messages ADD COLUMN IF NOT EXISTS traceparent TEXT;
CREATE INDEX IF NOT EXISTS bus_messages_ready ON bus_messages (queue, id) WHERE dead_at IS NULL;
