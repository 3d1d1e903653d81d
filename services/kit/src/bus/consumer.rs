//! Idempotent event consumption: the handled `eventId` is recorded in the same transaction as the
//! handler's effect, so a redelivered event is acknowledged without repeating the effect.

use std::sync::Arc;

use async_trait::async_trait;
use futures_util::FutureExt;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use super::{HandlerError, MessageHandler};
use crate::events::Envelope;

/// A service's reaction to events, applied inside the transaction that records the event.
#[async_trait]
pub trait EventHandler: Send + Sync + 'static {
    /// Applies `event`. Events the handler does not care about return `Ok(())`.
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError>;
}

/// Wraps an [`EventHandler`] as a [`MessageHandler`]: parses the envelope (a malformed one is a
/// permanent failure), skips events already handled by this consumer, and commits the effect
/// together with the record of the event.
pub struct IdempotentConsumer<H> {
    name: String,
    pool: PgPool,
    handler: Arc<H>,
}

impl<H: EventHandler> IdempotentConsumer<H> {
    pub fn new(name: impl Into<String>, pool: PgPool, handler: Arc<H>) -> Self {
        Self {
            name: name.into(),
            pool,
            handler,
        }
    }

    /// Handles one parsed event; returns `false` when it had already been handled.
    pub async fn handle_event(&self, event: &Envelope) -> Result<bool, HandlerError> {
        let mut tx = self.pool.begin().await?;
        let fresh = sqlx::query(
            "INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.name)
        .bind(event.event_id)
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
}

#[async_trait]
impl<H: EventHandler> MessageHandler for IdempotentConsumer<H> {
    async fn handle(&self, body: &[u8]) -> Result<(), HandlerError> {
        let event: Envelope = serde_json::from_slice(body)
            .map_err(|e| HandlerError::Permanent(format!("not an event envelope: {e}")))?;
        let span = tracing::info_span!(
            "event",
            consumer = %self.name,
            event_id = %event.event_id,
            event_type = %event.event_type,
            correlation_id = event.metadata.correlation_id.as_deref().unwrap_or(""),
        );
        // A panicking handler must not kill the consumer: it counts as a failed attempt, so the
        // message is retried and finally dead-lettered like any other failure.
        let outcome = std::panic::AssertUnwindSafe(self.handle_event(&event).instrument(span))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(HandlerError::Transient("the event handler panicked".into())));
        match outcome {
            Ok(true) => {
                tracing::debug!("event handled");
                Ok(())
            }
            Ok(false) => {
                tracing::debug!("duplicate event skipped");
                metrics::counter!("helpdesk_events_duplicates_total", "consumer" => self.name.clone()).increment(1);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
