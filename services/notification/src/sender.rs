//! The sender: claims due `PENDING` emails, sends them through the [`Mailer`], records the outcome.
//!
//! Several replicas may run it. A claim is one statement (`FOR UPDATE SKIP LOCKED`) that counts
//! the attempt, moves `next_attempt_at` to the end of a lease and stamps a `claim_id`; another
//! replica skips the row until the lease ends, and only the claimant may record the outcome. A
//! replica that dies mid-send leaves the row to be retried when its lease runs out. Failures retry
//! with exponential backoff up to the configured attempts, then the email is `FAILED` with the
//! server's last answer. A rate limit caps sends per second per replica.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::var;
use helpdesk_kit::events::{EmailFailed, EmailSent};
use helpdesk_kit::outbox::{self, EventContext};

use crate::emails;
use crate::mailer::{MailError, Mailer, OutgoingMail};

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Run the background sender (tests drive [`Sender::send_due`] themselves).
    pub enabled: bool,
    pub from: String,
    pub max_attempts: i32,
    pub retry_base_delay: Duration,
    pub retry_max_delay: Duration,
    /// Sends per second per replica; 0 = unlimited.
    pub rate_per_second: u32,
    /// Emails sent at once per replica.
    pub concurrency: usize,
    pub batch_size: i64,
    /// How long a claim protects a row; longer than one SMTP exchange.
    pub lease: Duration,
    /// Polling fallback (retries become due without a notification).
    pub poll_interval: Duration,
}

impl SenderConfig {
    /// `MAIL_FROM`, `NOTIFICATION_MAX_ATTEMPTS` (5), `NOTIFICATION_RETRY_BASE_DELAY` (30s),
    /// `NOTIFICATION_RETRY_MAX_DELAY` (1h), `NOTIFICATION_SEND_RATE_PER_SECOND` (20),
    /// `NOTIFICATION_SEND_CONCURRENCY` (4), `NOTIFICATION_BATCH_SIZE` (50),
    /// `NOTIFICATION_LEASE` (2m), `NOTIFICATION_POLL_INTERVAL` (1s), `NOTIFICATION_SENDER_ENABLED`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let from = env.string_or(var::MAIL_FROM, "Helpdesk <no-reply@helpdesk.local>");
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::new(
                var::MAIL_FROM,
                format!("is not a valid address: {from:?}"),
            ));
        }
        let max_attempts: i32 = env.parse_or("NOTIFICATION_MAX_ATTEMPTS", 5)?;
        if max_attempts < 1 {
            return Err(ConfigError::new(
                "NOTIFICATION_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        let concurrency: usize = env.parse_or("NOTIFICATION_SEND_CONCURRENCY", 4)?;
        let batch_size: i64 = env.parse_or("NOTIFICATION_BATCH_SIZE", 50)?;
        if concurrency == 0 || batch_size < 1 {
            return Err(ConfigError::new(
                "NOTIFICATION_SEND_CONCURRENCY",
                "and NOTIFICATION_BATCH_SIZE must be at least 1",
            ));
        }
        Ok(Self {
            enabled: env.bool_or("NOTIFICATION_SENDER_ENABLED", true)?,
            from,
            max_attempts,
            retry_base_delay: env
                .duration_or("NOTIFICATION_RETRY_BASE_DELAY", Duration::from_secs(30))?,
            retry_max_delay: env
                .duration_or("NOTIFICATION_RETRY_MAX_DELAY", Duration::from_secs(3600))?,
            rate_per_second: env.parse_or("NOTIFICATION_SEND_RATE_PER_SECOND", 20)?,
            concurrency,
            batch_size,
            lease: env.duration_or("NOTIFICATION_LEASE", Duration::from_secs(120))?,
            poll_interval: env.duration_or("NOTIFICATION_POLL_INTERVAL", Duration::from_secs(1))?,
        })
    }

    /// The wait before the next try after `attempts` failed ones: base · 2^(attempts−1), capped.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let factor = 1u32 << attempts.saturating_sub(1).clamp(0, 20);
        self.retry_base_delay
            .saturating_mul(factor)
            .min(self.retry_max_delay)
    }
}

/// What one [`Sender::send_due`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    pub claimed: usize,
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
}

struct Claimed {
    id: Uuid,
    recipient: String,
    subject: String,
    body: String,
    attempts: i32,
}

enum Outcome {
    Sent,
    /// Tried again after this delay.
    Retrying(Duration),
    Failed,
}

/// Sends due emails.
pub struct Sender {
    pool: PgPool,
    mailer: Arc<dyn Mailer>,
    config: SenderConfig,
    schema: String,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Sender {
    pub fn new(pool: PgPool, mailer: Arc<dyn Mailer>, config: SenderConfig, schema: &str) -> Self {
        let limiter = NonZeroU32::new(config.rate_per_second)
            .map(|n| RateLimiter::direct(Quota::per_second(n)));
        Self {
            pool,
            mailer,
            config,
            schema: schema.to_string(),
            limiter,
        }
    }

    /// How many emails one round claims: the batch size, but never more than the rate limit lets
    /// this replica send within half a lease (a claim must not expire while it waits its turn).
    fn claim_size(&self) -> i64 {
        match self.config.rate_per_second {
            0 => self.config.batch_size,
            rate => {
                let affordable =
                    (f64::from(rate) * self.config.lease.as_secs_f64() / 2.0).floor() as i64;
                self.config.batch_size.min(affordable.max(1))
            }
        }
    }

    /// Claims one batch of due emails, sends them, and records each outcome. Tests call this to
    /// drive the sender step by step.
    pub async fn send_due(&self) -> sqlx::Result<SendReport> {
        if let Some(reason) = self.mailer.undeliverable() {
            return self.fail_due(reason).await;
        }
        let claim_id = Uuid::new_v4();
        let claimed = sqlx::query_as!(
            Claimed,
            "WITH due AS ( \
                 SELECT id FROM emails WHERE status = 'PENDING' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE emails e SET attempts = e.attempts + 1, claim_id = $2, \
                 next_attempt_at = now() + make_interval(secs => $3) \
             FROM due WHERE e.id = due.id \
             RETURNING e.id, e.recipient, e.subject, e.body, e.attempts",
            self.claim_size(),
            claim_id,
            self.config.lease.as_secs_f64(),
        )
        .fetch_all(&self.pool)
        .await?;
        let mut report = SendReport {
            claimed: claimed.len(),
            ..Default::default()
        };
        let mut outcomes = futures_util::stream::iter(claimed)
            .map(|email| self.deliver(email, claim_id))
            .buffer_unordered(self.config.concurrency);
        // Finish every claimed email even when recording one outcome fails, so nothing sent is
        // left unrecorded because a sibling failed; the first error is returned afterwards.
        let mut first_error = None;
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Ok(Outcome::Sent) => report.sent += 1,
                Ok(Outcome::Retrying(_)) => report.retrying += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    async fn deliver(&self, email: Claimed, claim_id: Uuid) -> sqlx::Result<Outcome> {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let mail = OutgoingMail {
            id: email.id,
            from: self.config.from.clone(),
            to: email.recipient.clone(),
            subject: email.subject,
            body: email.body,
        };
        let result = self.mailer.send(&mail).await;
        // The email is out (or refused) now: its outcome must be recorded, or the claim runs out
        // and the email is sent again. A database that fails for a moment (a pool time-out, a
        // dropped connection) is retried for up to half a lease, while the claim still holds.
        let deadline = Instant::now() + self.config.lease / 2;
        let mut pause = Duration::from_millis(50);
        let outcome = loop {
            match self
                .record(
                    (email.id, &email.recipient, email.attempts),
                    claim_id,
                    &result,
                )
                .await
            {
                Ok(outcome) => break outcome,
                Err(e) if Instant::now() + pause < deadline => {
                    tracing::warn!(email_id = %email.id, error = %e, "cannot record the outcome of an email yet, retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => return Err(e),
            }
        };
        let error = result.as_ref().err().map_or("", |e| e.message.as_str());
        match outcome {
            Outcome::Sent => {
                metrics::counter!("helpdesk_emails_sent_total").increment(1);
                tracing::info!(email_id = %email.id, attempts = email.attempts, "email sent");
            }
            Outcome::Retrying(delay) => {
                metrics::counter!("helpdesk_emails_retried_total").increment(1);
                tracing::warn!(email_id = %email.id, attempts = email.attempts, retry_in_ms = delay.as_millis() as u64, %error, "email send failed, will retry");
            }
            Outcome::Failed => {
                metrics::counter!("helpdesk_emails_failed_total").increment(1);
                tracing::warn!(email_id = %email.id, attempts = email.attempts, %error, "email failed for good");
            }
        }
        Ok(outcome)
    }

    /// Records one send's outcome for the claim that made it, in one transaction (with its
    /// `email.sent` / `email.failed` event).
    async fn record(
        &self,
        (id, recipient, attempts): (Uuid, &str, i32),
        claim_id: Uuid,
        result: &Result<(), MailError>,
    ) -> sqlx::Result<Outcome> {
        let ctx = EventContext::default();
        let mut tx = self.pool.begin().await?;
        let outcome = match result {
            Ok(()) => {
                let done = sqlx::query!(
                    "UPDATE emails SET status = 'SENT', sent_at = now(), claim_id = NULL, \
                     body = CASE WHEN sensitive THEN '' ELSE body END \
                     WHERE id = $1 AND claim_id = $2 AND status = 'PENDING'",
                    id,
                    claim_id,
                )
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    let event = EmailSent {
                        email_id: id,
                        to: recipient.to_string(),
                        attempts,
                    };
                    outbox::publish(&mut tx, &event, &ctx).await?;
                }
                Outcome::Sent
            }
            Err(e) if e.retryable && attempts < self.config.max_attempts => {
                let delay = self.config.backoff(attempts);
                sqlx::query!(
                    "UPDATE emails SET last_error = $3, claim_id = NULL, next_attempt_at = now() + make_interval(secs => $4) \
                     WHERE id = $1 AND claim_id = $2 AND status = 'PENDING'",
                    id,
                    claim_id,
                    e.message,
                    delay.as_secs_f64(),
                )
                .execute(&mut *tx)
                .await?;
                Outcome::Retrying(delay)
            }
            Err(e) => {
                let done = sqlx::query!(
                    "UPDATE emails SET status = 'FAILED', last_error = $3, claim_id = NULL, \
                     body = CASE WHEN sensitive THEN '' ELSE body END \
                     WHERE id = $1 AND claim_id = $2 AND status = 'PENDING'",
                    id,
                    claim_id,
                    e.message,
                )
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    let event = EmailFailed {
                        email_id: id,
                        to: recipient.to_string(),
                        attempts,
                        error: e.message.clone(),
                    };
                    outbox::publish(&mut tx, &event, &ctx).await?;
                }
                Outcome::Failed
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Without a way to deliver: marks one batch of due emails `FAILED` with `reason`, without
    /// counting an attempt, and announces each (`email.failed`) in the same transaction.
    async fn fail_due(&self, reason: &str) -> sqlx::Result<SendReport> {
        let mut tx = self.pool.begin().await?;
        let failed = sqlx::query!(
            "WITH due AS ( \
                 SELECT id FROM emails WHERE status = 'PENDING' AND next_attempt_at <= now() \
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             UPDATE emails e SET status = 'FAILED', last_error = $2, claim_id = NULL, \
                 body = CASE WHEN e.sensitive THEN '' ELSE e.body END \
             FROM due WHERE e.id = due.id \
             RETURNING e.id, e.recipient, e.attempts",
            self.config.batch_size,
            reason,
        )
        .fetch_all(&mut *tx)
        .await?;
        let ctx = EventContext::default();
        for email in &failed {
            let event = EmailFailed {
                email_id: email.id,
                to: email.recipient.clone(),
                attempts: email.attempts,
                error: reason.to_string(),
            };
            outbox::publish(&mut tx, &event, &ctx).await?;
            tracing::info!(email_id = %email.id, error = reason, "email not sent");
        }
        tx.commit().await?;
        metrics::counter!("helpdesk_emails_failed_total").increment(failed.len() as u64);
        Ok(SendReport {
            claimed: failed.len(),
            failed: failed.len(),
            ..Default::default()
        })
    }

    /// Due pending emails (the backlog gauge).
    pub async fn backlog(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM emails WHERE status = 'PENDING'"#)
            .fetch_one(&self.pool)
            .await
    }

    /// Sends until `shutdown`: woken by new emails (`NOTIFY`) and by a polling interval for retries.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(mailer = %self.mailer.describe(), "email sender started");
        let mut listener = self.listen().await;
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.send_due().await {
                Ok(r) if r.claimed as i64 >= self.config.batch_size => continue,
                Ok(_) => backoff = Duration::from_millis(200),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "email sender failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if let Ok(n) = self.backlog().await {
                metrics::gauge!("helpdesk_emails_pending").set(n as f64);
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = notified => {
                    if r.is_err() {
                        listener = None;
                    }
                }
                _ = tokio::time::sleep(self.config.poll_interval) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = helpdesk_kit::db::listener(&self.pool).await.ok()?;
        listener.listen(&emails::channel(&self.schema)).await.ok()?;
        Some(listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut c =
            SenderConfig::from_env(&Env::from_map([("NOTIFICATION_RETRY_BASE_DELAY", "1s")]))
                .unwrap();
        c.retry_max_delay = Duration::from_secs(10);
        assert_eq!(c.backoff(1), Duration::from_secs(1));
        assert_eq!(c.backoff(2), Duration::from_secs(2));
        assert_eq!(c.backoff(3), Duration::from_secs(4));
        assert_eq!(c.backoff(9), Duration::from_secs(10));
        assert_eq!(c.backoff(1000), Duration::from_secs(10));
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(
            SenderConfig::from_env(&Env::from_map([(var::MAIL_FROM, "nope")]))
                .unwrap_err()
                .var,
            var::MAIL_FROM
        );
        assert!(
            SenderConfig::from_env(&Env::from_map([("NOTIFICATION_MAX_ATTEMPTS", "0")])).is_err()
        );
    }
}
