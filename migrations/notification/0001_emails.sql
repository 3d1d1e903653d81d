-- notification-service schema: every email queued, its state and delivery attempts.
CREATE TABLE emails (
    id              UUID PRIMARY KEY,
    -- The event that caused the email (NULL for POST /notifications/email).
    source_event_id UUID,
    recipient       TEXT NOT NULL,
    template        TEXT,
    subject         TEXT NOT NULL,
    body            TEXT NOT NULL,
    -- The body carries a secret (reset link): blanked once the email is SENT or FAILED.
    sensitive       BOOLEAN NOT NULL DEFAULT false,
    status          TEXT NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        INT NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- When the sender may (re)try; also the lease end while a sender holds the row.
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The sender attempt that holds the row; only it may record the outcome.
    claim_id        UUID,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    -- Exactly one email per (event, recipient), however often the event is delivered.
    CONSTRAINT emails_event_recipient_key UNIQUE (source_event_id, recipient)
);
-- The sender's work queue: due pending emails.
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'PENDING';
