//! The message bus: publishing with confirmation and consuming with retries and a dead-letter
//! queue. [`Bus`] is small so that the RabbitMQ implementation ([`amqp::AmqpBus`]) and an
//! in-process one for local runs share every semantic the services rely on.

pub mod amqp;
pub mod consumer;
pub mod dlq;
pub mod postgres;
pub mod topology;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

pub use consumer::{EventHandler, IdempotentConsumer};

/// A message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// Logical exchange name (the bus adds its prefix).
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    /// The event id; brokers use it as the message id.
    pub message_id: String,
    /// Extra headers (correlation id, `traceparent`).
    pub headers: BTreeMap<String, String>,
}

/// What happened to a batch: the first `confirmed` messages were confirmed by the broker; when
/// `error` is set, the rest were not (some may still have arrived: delivery is at least once).
#[derive(Debug)]
pub struct PublishOutcome {
    pub confirmed: usize,
    pub error: Option<BusError>,
}

/// The confirmations of messages handed to a bus with [`Bus::send`]: resolves to what
/// [`Bus::publish`] would have returned for them.
pub type Confirmation = std::pin::Pin<Box<dyn std::future::Future<Output = PublishOutcome> + Send>>;

/// A confirmation that is already known.
pub fn confirmed(outcome: PublishOutcome) -> Confirmation {
    Box::pin(std::future::ready(outcome))
}

/// A bus failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message bus: {0}")]
pub struct BusError(pub String);

/// Why a handler did not process a message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HandlerError {
    /// Failed for a reason that may be the message's (a constraint its data violates, a panic):
    /// retried a few times with growing delay, then dead-lettered.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed (malformed message): straight to the dead-letter queue.
    #[error("permanent: {0}")]
    Permanent(String),
    /// The infrastructure failed, not the message (database or peer unreachable, pool timeout):
    /// the consumer pauses with capped back-off and the message is retried for as long as the
    /// outage lasts. It never counts toward `max_attempts` and is never dead-lettered.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            HandlerError::Unavailable(format!("database: {e}"))
        } else {
            HandlerError::Transient(format!("database: {e}"))
        }
    }
}

/// How a bus settles one handled message.
pub(crate) enum Settlement {
    Done,
    /// Retry number `attempt` after the message's retry delay.
    Retry {
        attempt: u32,
        error: String,
    },
    DeadLetter {
        attempt: u32,
        error: String,
    },
    /// Hand it back untouched and pause the consumer (a dependency is down).
    Defer {
        error: String,
    },
}

impl Settlement {
    /// `attempt` is 1-based: the delivery that just failed.
    pub(crate) fn of(outcome: Result<(), HandlerError>, attempt: u32, max_attempts: u32) -> Self {
        match outcome {
            Ok(()) => Settlement::Done,
            Err(HandlerError::Permanent(error)) => Settlement::DeadLetter { attempt, error },
            Err(HandlerError::Transient(error)) if attempt >= max_attempts => {
                Settlement::DeadLetter { attempt, error }
            }
            Err(HandlerError::Transient(error)) => Settlement::Retry { attempt, error },
            Err(HandlerError::Unavailable(error)) => Settlement::Defer { error },
        }
    }
}

/// The pause of a consumer while a dependency is down: from the subscription's retry delay,
/// doubling per consecutive failed batch, capped at [`Outage::MAX_PAUSE`].
#[derive(Debug, Default)]
pub(crate) struct Outage {
    streak: u32,
}

impl Outage {
    /// Short enough that a consumer paused by a burst of pool timeouts on a loaded machine is
    /// back within seconds; long enough not to hammer a database that is really down.
    pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(5);

    /// Records a batch that hit an outage and returns how long to pause.
    pub(crate) fn pause(&mut self, sub: &Subscription, error: &str) -> Duration {
        self.streak = self.streak.saturating_add(1);
        let factor = 1u32 << self.streak.saturating_sub(1).min(16);
        let pause =
            (sub.retry_base_delay.max(Duration::from_millis(50)) * factor).min(Self::MAX_PAUSE);
        metrics::counter!("helpdesk_events_deferred_total", "queue" => sub.queue.clone())
            .increment(1);
        tracing::warn!(queue = %sub.queue, %error, pause_ms = pause.as_millis() as u64,
            "a dependency is unavailable: consumer paused, the message will be retried (never dead-lettered)");
        pause
    }

    pub(crate) fn recovered(&mut self) {
        self.streak = 0;
    }
}

/// A received message as a handler sees it.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub body: &'a [u8],
    /// The W3C `traceparent` it was published with, if any.
    pub traceparent: Option<&'a str>,
}

/// Processes message bodies.
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, body: &[u8]) -> Result<(), HandlerError>;

    /// Processes the messages a bus received together, in order, with one outcome per message.
    /// The buses hand over whatever is already waiting (up to the prefetch), so a handler can
    /// commit a backlog in one transaction; the default handles them one by one.
    async fn handle_batch(&self, messages: &[Received<'_>]) -> Vec<Result<(), HandlerError>> {
        let mut outcomes = Vec::with_capacity(messages.len());
        for m in messages {
            outcomes.push(self.handle(m.body).await);
        }
        outcomes
    }
}

/// A consumer's queue and what it receives.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Logical queue name, e.g. `audit-service.events`.
    pub queue: String,
    /// (exchange, routing-key pattern) pairs, e.g. `("user.events", "user.*")`.
    pub bindings: Vec<(String, String)>,
    /// Delivery attempts before the message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled on each further attempt.
    pub retry_base_delay: Duration,
    /// The largest batch the consumer is handed at once. The RabbitMQ bus keeps a few such
    /// batches in flight (its prefetch window), the PostgreSQL bus claims at most this many
    /// messages at a time.
    pub prefetch: u16,
}

impl Subscription {
    /// The delay before retry number `attempt` (1-based), growing exponentially, capped at 5 min.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.retry_base_delay * factor).min(Duration::from_secs(300))
    }
}

/// Consumer retry settings from the environment: `EVENT_MAX_ATTEMPTS` (default 5) and
/// `EVENT_RETRY_BASE_DELAY` (default 1s).
pub fn retry_settings(
    env: &crate::config::Env,
) -> Result<(u32, Duration), crate::config::ConfigError> {
    use helpdesk_contract::var::{EVENT_MAX_ATTEMPTS, EVENT_RETRY_BASE_DELAY};
    let attempts: u32 = env.parse_or(EVENT_MAX_ATTEMPTS, 5)?;
    if attempts == 0 {
        return Err(crate::config::ConfigError::new(
            EVENT_MAX_ATTEMPTS,
            "must be at least 1",
        ));
    }
    Ok((
        attempts,
        env.duration_or(EVENT_RETRY_BASE_DELAY, Duration::from_secs(1))?,
    ))
}

/// A message bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes persistently, in order, and waits for the broker's confirmations.
    async fn publish(&self, messages: &[OutgoingMessage]) -> PublishOutcome;

    /// Hands `messages` to the broker, in order and after everything sent before, and returns
    /// without waiting for their confirmations. A caller can so go on sending while the broker
    /// confirms: RabbitMQ delivers a persistent message to its consumers when it arrives but
    /// confirms it only after its disk write, which a busy disk can hold up for seconds. The
    /// default publishes and waits.
    async fn send(&self, messages: Vec<OutgoingMessage>) -> Confirmation {
        confirmed(self.publish(&messages).await)
    }

    /// Creates the subscription's queue and bindings now, so events published before the consumer
    /// first runs are kept for it. Consumers also declare on start; this is for start-up order.
    async fn declare(&self, _subscription: &Subscription) -> Result<(), BusError> {
        Ok(())
    }

    /// Consumes `subscription` with `handler` until `shutdown`, reconnecting after failures.
    /// Failed messages are retried with growing delay, then dead-lettered; the queue keeps flowing.
    async fn consume(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    );

    /// Whether the broker is reachable now (readiness).
    async fn healthy(&self) -> bool;
}

/// Declares `subscription` at start-up, before any worker runs, so events published before its
/// consumer first connects are kept for it. A broker that is down only postpones this to the
/// consumer's own start (logged).
pub async fn declare_early(bus: &dyn Bus, subscription: &Subscription) {
    match tokio::time::timeout(Duration::from_secs(5), bus.declare(subscription)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(queue = %subscription.queue, error = %e, "cannot declare the queue yet")
        }
        Err(_) => tracing::warn!(queue = %subscription.queue, "timed out declaring the queue"),
    }
}
