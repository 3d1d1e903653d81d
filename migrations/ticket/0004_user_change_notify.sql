-- Every change to the read model of users (a row written or removed, a tombstone) is announced on
-- `<schema>_users` (the kit's `notify_user_change`), so every replica's caller cache forgets that
-- user at once (ticket-service's `users::CallerCache`).
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_user_change('id');
CREATE TRIGGER deleted_users_changed AFTER INSERT OR UPDATE OR DELETE ON deleted_users
    FOR EACH ROW EXECUTE FUNCTION notify_user_change('id');
