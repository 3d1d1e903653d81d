-- Every change to a user's state bumps `revision` in the same statement, and every event that
-- carries the user's state carries the revision of the committed row. Read models apply a snapshot
-- only when its revision is newer, so a stale snapshot can never overwrite a later change (e.g. a
-- password change that read the row before a demotion and published after it).
ALTER TABLE users ADD COLUMN revision BIGINT NOT NULL DEFAULT 1;
