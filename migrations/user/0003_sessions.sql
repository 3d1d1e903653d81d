-- Tokens carry the account's token epoch and a session id. A password change moves the epoch
-- on and keeps the changing session; a reset moves it on and keeps none: every other token is
-- refused from then on, here and (through user events) in every service's read model.
ALTER TABLE users ADD COLUMN token_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN kept_session UUID;
