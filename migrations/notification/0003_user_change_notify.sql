-- Every change to `user_access` is announced on `<schema>_users` (the kit's `notify_user_change`),
-- so every replica's cache of callers' access (helpdesk_kit::access) forgets that user at once.
CREATE TRIGGER user_access_changed AFTER INSERT OR UPDATE OR DELETE ON user_access
    FOR EACH ROW EXECUTE FUNCTION notify_user_change('user_id');
