//! Idempotent event consumption: the handled `eventId` is recorded in the same transaction as the
//! handler's effect, so a redelivered event is acknowledged without repeating the effect.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::FutureExt;
use serde::Deserialize;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

use super::{HandlerError, MessageHandler, Received};
use crate::events::Envelope;
use crate::trace::TraceParent;

/// A service's reaction to events, applied inside the transaction that records the event.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event`. Events the handler does not care about return `Ok(())`.
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError>;

    /// Whether [`EventHandler::handle_all`] applies a backlog in fewer statements than one
    /// event at a time. When it does, the consumer hands it each batch of fresh events at once.
    fn batches(&self) -> bool {
        false
    }

    /// Applies `events`, in order, as [`EventHandler::handle`] would one after another (only
    /// called when [`EventHandler::batches`] says so).
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        for event in events {
            self.handle(tx, event).await?;
        }
        Ok(())
    }
}

/// Wraps an [`EventHandler`] as a [`MessageHandler`]: parses the envelope and checks it against
/// its event's JSON Schema (a malformed one is a permanent failure), skips events already handled
/// by this consumer, and commits the effect together with the record of the event.
///
/// The record of a handled event is kept for [`DEDUP_RETENTION`] (redeliveries come within
/// minutes: a relay retry, a broker reconnect, a consumer restart), then pruned in the background
/// at most once an hour, so the table does not grow with every event ever handled.
pub struct IdempotentConsumer<H> {
    name: String,
    pool: PgPool,
    handler: Arc<H>,
    last_prune: Mutex<Option<Instant>>,
}

/// How long a handled event's id is remembered by default.
pub const DEDUP_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PRUNE_BATCH: i64 = 10_000;

/// Forgets the events `consumer` handled more than `older_than` ago; returns how many.
pub async fn prune_processed_events(
    pool: &PgPool,
    consumer: &str,
    older_than: Duration,
) -> Result<u64, sqlx::Error> {
    let mut removed = 0;
    loop {
        // In small batches, so a large backlog never holds long locks.
        let n = sqlx::query!(
            "DELETE FROM processed_events WHERE consumer = $1 AND event_id IN ( \
               SELECT event_id FROM processed_events WHERE consumer = $1 \
               AND processed_at < now() - make_interval(secs => $2) LIMIT $3)",
            consumer,
            older_than.as_secs_f64(),
            PRUNE_BATCH,
        )
        .execute(pool)
        .await?
        .rows_affected();
        removed += n;
        if n < PRUNE_BATCH as u64 {
            return Ok(removed);
        }
    }
}

impl<H: EventHandler> IdempotentConsumer<H> {
    pub fn new(name: impl Into<String>, pool: PgPool, handler: Arc<H>) -> Self {
        Self {
            name: name.into(),
            pool,
            handler,
            last_prune: Mutex::new(None),
        }
    }

    /// Starts a background prune when the last one is more than an hour old (or none ran yet).
    fn prune_when_due(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < PRUNE_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let (pool, name) = (self.pool.clone(), self.name.clone());
        tokio::spawn(async move {
            match prune_processed_events(&pool, &name, DEDUP_RETENTION).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(consumer = %name, removed = n, "forgot old handled events"),
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "pruning handled events failed; will retry")
                }
            }
        });
    }

    /// Handles one parsed event; returns `false` when it had already been handled.
    pub async fn handle_event(&self, event: &Envelope) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query!(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            self.name,
            event.event_id,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            tx.rollback().await?;
            return Ok(false);
        }
        self.handler.handle(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Handles `events` in one transaction; returns, per event, whether it was new. On any failure
    /// nothing of the batch is kept.
    async fn handle_events(
        &self,
        events: &[(&Envelope, Option<TraceParent>)],
    ) -> Result<Vec<bool>, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = events.iter().map(|(e, _)| e.event_id).collect();
        let fresh: HashSet<Uuid> = sqlx::query_scalar!(
            "INSERT INTO processed_events (consumer, event_id) SELECT $1, unnest($2::uuid[]) \
             ON CONFLICT DO NOTHING RETURNING event_id",
            self.name,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut handled = HashSet::with_capacity(fresh.len());
        let mut new = Vec::with_capacity(events.len());
        let batches = self.handler.batches();
        // For a handler that applies the batch at once: its fresh events, and a span for each in
        // the trace of whoever published it, open while the batch is applied and committed.
        let (mut todo, mut spans) = (Vec::new(), Vec::new());
        for (event, trace) in events {
            // The same event twice in one batch is handled once.
            let is_new = fresh.contains(&event.event_id) && handled.insert(event.event_id);
            if is_new && batches {
                todo.push(*event);
                spans.push(event_span(&self.name, event, *trace).0);
            } else if is_new {
                let (span, trace) = event_span(&self.name, event, *trace);
                guarded(trace.scope(self.handler.handle(&mut tx, event).instrument(span))).await?;
            }
            new.push(is_new);
        }
        if batches {
            let span = tracing::info_span!("events", consumer = %self.name, count = todo.len());
            guarded(self.handler.handle_all(&mut tx, &todo).instrument(span)).await?;
        }
        tx.commit().await?;
        drop(spans);
        Ok(new)
    }

    /// Handles one parsed event in its own transaction, a panic counting as a failed attempt.
    async fn handle_one(
        &self,
        event: &Envelope,
        incoming: Option<TraceParent>,
    ) -> Result<(), HandlerError> {
        let (span, trace) = event_span(&self.name, event, incoming);
        let outcome = guarded(trace.scope(self.handle_event(event).instrument(span))).await;
        match outcome {
            Ok(true) => {
                tracing::debug!("event handled");
                self.prune_when_due();
                Ok(())
            }
            Ok(false) => {
                self.count_duplicates(1);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn count_duplicates(&self, n: usize) {
        if n > 0 {
            tracing::debug!(consumer = %self.name, n, "duplicate events skipped");
            metrics::counter!("helpdesk_events_duplicates_total", "consumer" => self.name.clone())
                .increment(n as u64);
        }
    }
}

/// Runs a handler's work; a panic in it is a failed attempt (retried, finally dead-lettered like
/// any other failure) instead of the end of the consumer.
async fn guarded<T>(
    work: impl std::future::Future<Output = Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(HandlerError::Transient("the event handler panicked".into())))
}

/// The span of handling `event`, in the trace of whoever published it (`incoming`), and the trace
/// context the handler passes on.
fn event_span(
    consumer: &str,
    event: &Envelope,
    incoming: Option<TraceParent>,
) -> (tracing::Span, TraceParent) {
    let span = tracing::info_span!(
        "event",
        consumer = %consumer,
        event_id = %event.event_id,
        event_type = %event.event_type,
        correlation_id = event.metadata.correlation_id.as_deref().unwrap_or(""),
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    let trace = crate::telemetry::join_trace(&span, incoming);
    span.record("trace_id", trace.trace_id_hex());
    span.record("span_id", trace.span_id_hex());
    (span, trace)
}

/// The event in `body`, checked against its event type's JSON Schema (`event-schemas/`) before
/// any handler sees it: a body that is not an envelope, or an event that does not match its
/// schema, is a permanent failure (dead-lettered with the reason). Event types without a schema
/// pass; handlers ignore or refuse them.
fn parse(body: &[u8]) -> Result<Envelope, HandlerError> {
    let raw: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| HandlerError::Permanent(format!("not an event envelope: {e}")))?;
    let envelope = Envelope::deserialize(&raw)
        .map_err(|e| HandlerError::Permanent(format!("not an event envelope: {e}")))?;
    crate::events::schema::validate(&envelope.event_type, &raw).map_err(|problems| {
        HandlerError::Permanent(format!(
            "{} event {} does not match its schema: {problems}",
            envelope.event_type, envelope.event_id
        ))
    })?;
    Ok(envelope)
}

#[async_trait]
impl<H: EventHandler> MessageHandler for IdempotentConsumer<H> {
    async fn handle(&self, body: &[u8]) -> Result<(), HandlerError> {
        self.handle_one(&parse(body)?, None).await
    }

    /// A backlog is committed in one transaction (one round trip to record the events, one
    /// commit), which is what lets consumers keep up under load. If anything in it fails, the
    /// batch is rolled back and its events are handled one by one, so each gets its own outcome.
    async fn handle_batch(&self, messages: &[Received<'_>]) -> Vec<Result<(), HandlerError>> {
        // Each event continues the trace of whoever published it.
        let parsed: Vec<Result<(Envelope, Option<TraceParent>), HandlerError>> = messages
            .iter()
            .map(|m| Ok((parse(m.body)?, m.traceparent.and_then(TraceParent::parse))))
            .collect();
        let events: Vec<(&Envelope, Option<TraceParent>)> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok().map(|(e, t)| (e, *t)))
            .collect();
        if events.len() > 1 {
            match self.handle_events(&events).await {
                Ok(new) => {
                    self.count_duplicates(new.iter().filter(|n| !**n).count());
                    self.prune_when_due();
                    return parsed.into_iter().map(|p| p.map(|_| ())).collect();
                }
                // A dependency is down: every event of the batch waits for it, none is tried alone.
                Err(HandlerError::Unavailable(error)) => {
                    return parsed
                        .into_iter()
                        .map(|p| p.and(Err(HandlerError::Unavailable(error.clone()))))
                        .collect();
                }
                Err(error) => tracing::debug!(
                    consumer = %self.name, %error, "batch failed; handling its events one by one"
                ),
            }
        }
        let mut outcomes = Vec::with_capacity(parsed.len());
        for p in parsed {
            outcomes.push(match p {
                Ok((event, trace)) => self.handle_one(&event, trace).await,
                Err(e) => Err(e),
            });
        }
        outcomes
    }
}
