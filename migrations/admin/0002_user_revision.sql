-- The revision of the user-service row the recorded role came from: a role change is applied only
-- when it is newer than the one recorded (events of one user may arrive out of order).
ALTER TABLE user_access ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
