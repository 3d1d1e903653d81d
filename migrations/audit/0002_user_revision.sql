-- The revision of the user-service row a snapshot came from (0: provisional or from an event that
-- predates revisions). A snapshot is applied only when (revision, event time) is newer than what
-- the row holds, so a stale snapshot published late never overwrites a newer change.
ALTER TABLE users ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
