-- Announces a change to what a read model says about a user: a trigger made with
-- `EXECUTE FUNCTION notify_user_change('<id column>')` notifies `<schema>_users` with that user's
-- id on every insert, update and delete, so every replica's cache of callers
-- (helpdesk_kit::remembered) forgets that user at once. The services' migrations add the triggers
-- on their own read-model tables.
CREATE FUNCTION notify_user_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed TEXT;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := to_jsonb(OLD) ->> TG_ARGV[0];
    ELSE
        changed := to_jsonb(NEW) ->> TG_ARGV[0];
    END IF;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_users', changed);
    RETURN NULL;
END
$$;
