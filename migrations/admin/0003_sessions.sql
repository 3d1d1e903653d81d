-- Which of the user's tokens still count (from user.updated after a password change or reset;
-- see helpdesk_kit::auth::Sessions).
ALTER TABLE user_access ADD COLUMN token_epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE user_access ADD COLUMN kept_session UUID;
