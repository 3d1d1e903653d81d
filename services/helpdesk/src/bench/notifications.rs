//! `helpdesk bench notifications`: emails per second through the platform's mail transport (SMTP,
//! or the mail folder of `helpdesk up`), as the platform is configured.
//!
//! One account per client creates a ticket; then the clients change their ticket's status
//! (OPEN → IN_PROGRESS → DONE → OPEN ...) `--emails` times in all, each change sending the ticket's
//! creator a `ticket_status_changed` email through the public API's own path (event, consumer,
//! sender). The bench counts those emails in notification-service's `emails` table until every
//! one is SENT or FAILED, and checks that none was queued twice. The sender's own rate limit
//! (`NOTIFICATION_SEND_RATE_PER_SECOND`, default 20; 0 lifts it) bounds what this measures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use helpdesk_kit::contract::Service;

use super::Settings;
use super::api::{self, Target, send};
use super::db::{Database, ServiceDb, poll};
use super::load::{self, Plan, Summary};

/// notification-service's template for a status change (`templates::TICKET_STATUS_CHANGED`).
const TEMPLATE: &str = notification_service::templates::TICKET_STATUS_CHANGED;
const STATUSES: [&str; 3] = ["IN_PROGRESS", "DONE", "OPEN"];
/// How long the count may stand still before the bench gives up waiting: longer than the
/// sender's default lease (`NOTIFICATION_LEASE`, 2 min), after which an email claimed by a round
/// that could not record its outcome is sent again.
const STALL: Duration = Duration::from_secs(150);

/// The bench's emails in the `emails` table.
#[derive(Debug, Default, Clone, Copy, PartialEq, sqlx::FromRow)]
struct Counts {
    queued: i64,
    distinct_events: i64,
    sent: i64,
    failed: i64,
    retried: i64,
    /// First queued → last sent, by the database's clock (seconds).
    span: Option<f64>,
}

/// Runs the notifications scenario and prints its report.
pub async fn run(
    target: &Target,
    settings: &Settings,
    db: &Database,
    emails: u64,
) -> anyhow::Result<()> {
    let notifications = db.service(Service::Notification, &["emails"]).await?;
    println!(
        "helpdesk bench notifications: {emails} emails from {} clients' status changes, against {}",
        settings.clients, target.base
    );
    let accounts = target.accounts(&api::run_id(), settings.clients).await?;
    let mut tickets = Vec::new();
    for account in &accounts {
        let id = target.create_ticket(&account.token, "Notify me").await?;
        tickets.push((account.token.clone(), target.url(&format!("/tickets/{id}"))));
    }
    let recipients: Vec<String> = accounts.iter().map(|a| a.email.clone()).collect();

    let started = Instant::now();
    let tickets = Arc::new(tickets);
    let http = target.http.clone();
    let changes = load::run(Plan::count(settings.clients, emails), |c| {
        let (http, tickets) = (http.clone(), tickets.clone());
        async move {
            let (token, url) = &tickets[c.index % tickets.len()];
            let mut next = 0;
            while c.next().is_some() {
                let req = http
                    .patch(url)
                    .bearer_auth(token)
                    .json(&json!({"status": STATUSES[next % STATUSES.len()]}));
                if c.time("PATCH /tickets/:id (status)", send(req, 200))
                    .await
                    .is_some()
                {
                    next += 1;
                }
            }
        }
    })
    .await;
    let triggered = changes.all().count() as i64;
    let counts = wait_for_emails(&notifications, &recipients, triggered).await;
    let elapsed = started.elapsed();
    notifications.pool.close().await;
    let counts = counts?;

    let mut summary = Summary::new();
    summary.report(&changes);
    summary.print();
    println!(
        "emails: {triggered} triggered, {} sent, {} failed in {:.1} s from the first change = {:.1} emails/s",
        counts.sent,
        counts.failed,
        elapsed.as_secs_f64(),
        counts.sent as f64 / elapsed.as_secs_f64()
    );
    if let Some(span) = counts.span.filter(|s| *s > 0.0) {
        println!(
            "  first queued → last sent: {span:.1} s = {:.1} emails/s (the database's clock)",
            counts.sent as f64 / span
        );
    }
    println!(
        "  {} queued for {} distinct events; {} sent after more than one attempt",
        counts.queued, counts.distinct_events, counts.retried
    );
    anyhow::ensure!(
        counts.queued == counts.distinct_events,
        "{} emails were queued twice for the same event",
        counts.queued - counts.distinct_events
    );
    Ok(())
}

/// Polls the `emails` table until `expected` of the bench's emails are sent or failed.
async fn wait_for_emails(
    notifications: &ServiceDb,
    recipients: &[String],
    expected: i64,
) -> anyhow::Result<Counts> {
    // Table names are configuration (see `db`); the values are bound.
    let sql = format!(
        "SELECT count(*) AS queued, count(DISTINCT source_event_id) AS distinct_events, \
                count(*) FILTER (WHERE status = 'SENT') AS sent, \
                count(*) FILTER (WHERE status = 'FAILED') AS failed, \
                count(*) FILTER (WHERE status = 'SENT' AND attempts > 1) AS retried, \
                extract(epoch FROM max(sent_at) - min(created_at))::float8 AS span \
         FROM {} WHERE recipient = ANY($1) AND template = $2",
        notifications.table("emails")
    );
    let read = async || {
        let counts: Counts = sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(recipients)
            .bind(TEMPLATE)
            .fetch_one(&notifications.pool)
            .await?;
        Ok(counts)
    };
    let every = Duration::from_millis(100);
    let (counts, done) = poll(every, STALL, read, |c| c.sent + c.failed >= expected).await?;
    anyhow::ensure!(
        done,
        "the emails stopped at {} sent, {} failed, {} queued of {expected} for {STALL:?}: \
         is the sender on (NOTIFICATION_SENDER_ENABLED), the mail transport reachable, and \
         NOTIFICATION_LEASE shorter than that?",
        counts.sent,
        counts.failed,
        counts.queued
    );
    Ok(counts)
}
