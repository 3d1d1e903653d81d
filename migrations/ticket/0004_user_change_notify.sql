-- Every change to what the read model says about a user (their row written or removed, their
-- tombstone) is announced on the channel `<schema>_users` with the user's id, so every replica's
-- caller cache forgets that user at once (see ticket-service's `callers` module).
CREATE FUNCTION notify_user_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed UUID;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD.id;
    ELSE
        changed := NEW.id;
    END IF;
    PERFORM pg_notify(TG_TABLE_SCHEMA || '_users', changed::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_user_change();
CREATE TRIGGER deleted_users_changed AFTER INSERT OR UPDATE OR DELETE ON deleted_users
    FOR EACH ROW EXECUTE FUNCTION notify_user_change();
