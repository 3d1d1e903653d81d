//! The `emails` table: every email the service queued, its state (`PENDING` → `SENT` / `FAILED`),
//! attempts, last error and sent time. One row per (source event, recipient), so a redelivered
//! event never yields a second email.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use helpdesk_kit::events::EmailQueued;
use helpdesk_kit::outbox::{EventContext, OutboxRow};

/// An email's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
#[sqlx(type_name = "text", rename_all = "UPPERCASE")]
pub enum EmailStatus {
    Pending,
    Sent,
    Failed,
}

/// The contract's view of an email (`GET /notifications/status/:id`); never its body.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailView {
    pub id: Uuid,
    pub to: String,
    pub subject: String,
    pub status: EmailStatus,
    pub attempts: i32,
    pub last_error: Option<String>,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "helpdesk_kit::json::optional_timestamp")]
    pub sent_at: Option<DateTime<Utc>>,
}

/// An email to queue.
#[derive(Debug, Clone)]
pub struct NewEmail {
    /// The event that caused it (`None` for `POST /notifications/email`).
    pub source_event_id: Option<Uuid>,
    pub recipient: String,
    pub template: Option<String>,
    pub subject: String,
    pub body: String,
    /// The body carries a secret: blank it once the email is final.
    pub sensitive: bool,
}

/// The NOTIFY channel that wakes the sender.
pub fn channel(schema: &str) -> String {
    format!("{schema}_emails")
}

/// Queues `email` (unless its event already queued one to that recipient), records
/// `email.queued`, and wakes the sender and the outbox relay (unless a relay is polling anyway),
/// in the caller's transaction and in one statement; the new email's id, or `None` when this
/// (event, recipient) already has its email.
pub async fn queue(
    tx: &mut PgConnection,
    email: &NewEmail,
    ctx: &EventContext,
) -> sqlx::Result<Option<Uuid>> {
    let id = Uuid::now_v7();
    let event = EmailQueued {
        email_id: id,
        to: email.recipient.clone(),
        subject: email.subject.clone(),
        template: email.template.clone(),
    };
    let out = OutboxRow::event(&event, ctx)?;
    let queued = sqlx::query!(
        r#"WITH e AS (INSERT INTO emails (id, source_event_id, recipient, template, subject, body, sensitive)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (source_event_id, recipient) DO NOTHING RETURNING id),
           o AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers)
             SELECT $8, $9, $10, $11, $12, $13 FROM e RETURNING 1)
           SELECT e.id,
             pg_notify(current_schema() || '_emails', '')::text AS sender,
             CASE WHEN NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())
               THEN pg_notify(current_schema() || '_outbox', '')::text END AS relay
           FROM e"#,
        id,
        email.source_event_id,
        email.recipient,
        email.template,
        email.subject,
        email.body,
        email.sensitive,
        out.event_id,
        out.exchange,
        out.routing_key,
        out.aggregate_id,
        out.body,
        out.headers,
    )
    .fetch_optional(&mut *tx)
    .await?;
    Ok(queued.map(|r| r.id))
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<EmailView>> {
    sqlx::query_as!(
        EmailView,
        r#"SELECT id, recipient AS "to", subject, status AS "status: EmailStatus", attempts,
             last_error, created_at, sent_at
           FROM emails WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}
