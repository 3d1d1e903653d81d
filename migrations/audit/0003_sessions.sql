-- Which of the user's tokens still count (from user events; see helpdesk_kit::auth::Sessions).
ALTER TABLE users ADD COLUMN token_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN kept_session UUID;
