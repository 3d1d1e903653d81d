-- Until when a relay of this schema is known to be polling the outbox (it found rows a moment
-- ago and keeps looking every few milliseconds). A write to the outbox wakes the relay with
-- NOTIFY only when no relay is awake: PostgreSQL serializes the commits of notifying transactions
-- (each holds a database-wide lock through its commit's WAL flush), which capped every write
-- route. One row; the relay moves `awake_until` forward on each pass that found rows.
CREATE TABLE outbox_relay (
    id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    awake_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
);
INSERT INTO outbox_relay DEFAULT VALUES;
