//! RabbitMQ implementation of [`Bus`] with lapin: durable topic exchanges, persistent messages,
//! publisher confirms, manual acks, per-delay retry queues and a dead-letter queue per consumer.
//!
//! Retry topology for a consumer queue `Q`: `Q.retry.<ms>ms` queues hold a failed message for their
//! TTL and then dead-letter it back to `Q` through the default exchange; `Q.dlq` keeps messages
//! that failed `max_attempts` times, with the last error in the `x-last-error` header.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusError, Confirmation, HandlerError, MessageHandler, Outage, OutgoingMessage,
    PublishOutcome, Received, Settlement, Subscription, confirmed,
};
use crate::events::ALL_EXCHANGES;
use crate::trace::TraceParent;
use helpdesk_contract::var;

mod consume;
mod dead_letters;
use consume::*;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest AMQP frame the platform asks for, unless `AMQP_URL` sets `frame_max`. lapin keeps
/// a receive and a send buffer of 32 frames per connection, allocated up front: at RabbitMQ's
/// default of 128 KiB that is 8 MiB resident per connection (about 100 MiB for `helpdesk up`'s
/// ten). Events are a few KiB; a larger message is split into several frames.
const FRAME_MAX: u32 = 16 * 1024;
const ATTEMPT_HEADER: &str = "x-attempt";
const ERROR_HEADER: &str = "x-last-error";

/// A RabbitMQ bus. Exchange and queue names get `prefix` so several platforms (or tests) can share
/// one broker; the virtual host comes from the URL.
pub struct AmqpBus {
    url: String,
    prefix: String,
    publisher: Mutex<Option<(Connection, Channel)>>,
    /// The connection every consumer of this bus opens its channel on (see
    /// [`AmqpBus::consuming_channel`]).
    consuming: Mutex<Option<Arc<Connection>>>,
    /// Queues declared with the publisher's channel, before anything is published.
    queues: Vec<Subscription>,
}

impl std::fmt::Debug for AmqpBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBus")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn err(context: &str, e: impl std::fmt::Display) -> BusError {
    BusError(format!("{context}: {e}"))
}

/// The broker-side name of a logical exchange or queue under `prefix`.
fn prefixed(prefix: &str, logical: &str) -> String {
    format!("{prefix}{logical}")
}

/// A new channel on `conn` in publisher-confirm mode.
async fn confirming_channel_on(conn: &Connection) -> Result<Channel, BusError> {
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| err("opening channel", e))?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| err("enabling publisher confirms", e))?;
    Ok(channel)
}

impl AmqpBus {
    /// A bus for `url`; nothing connects until first use, so a service starts while the broker is down.
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            publisher: Mutex::new(None),
            consuming: Mutex::new(None),
            queues: Vec::new(),
        }
    }

    /// Declares `queues` (with their dead-letter queues and bindings) whenever the publisher
    /// connects, so nothing published is dropped for want of a consumer's queue. Services pass the
    /// platform's [`topology::PLATFORM`](super::topology::PLATFORM).
    pub fn with_queues(mut self, queues: impl IntoIterator<Item = Subscription>) -> Self {
        self.queues = queues.into_iter().collect();
        self
    }

    /// A bus that declares every queue of the platform before it publishes.
    pub fn for_platform(url: &str, prefix: &str) -> Self {
        Self::new(url, prefix).with_queues(super::topology::declarations())
    }

    /// The broker-side name of a logical exchange or queue.
    pub fn name(&self, logical: &str) -> String {
        prefixed(&self.prefix, logical)
    }

    /// A new connection with one channel in publisher-confirm mode.
    async fn confirming_channel(&self) -> Result<(Connection, Channel), BusError> {
        let conn = self.connect().await?;
        let channel = confirming_channel_on(&conn).await?;
        Ok((conn, channel))
    }

    /// A channel in publisher-confirm mode (consumers republish failed messages to their retry and
    /// dead-letter queues) on the connection all consumers of this bus share: one socket, one
    /// lapin I/O thread and one pair of frame buffers, where a connection per consumer gave
    /// `helpdesk up` ten of each. A lost connection is replaced by the first consumer that finds
    /// it gone; the others open their channels on the new one. Publishing keeps a connection of
    /// its own, so the broker's flow control of a publishing connection never holds up deliveries.
    async fn consuming_channel(&self) -> Result<Channel, BusError> {
        let conn = {
            let mut shared = self.consuming.lock().await;
            match shared.as_ref() {
                Some(conn) if conn.status().connected() => conn.clone(),
                _ => {
                    let conn = Arc::new(self.connect().await?);
                    *shared = Some(conn.clone());
                    conn
                }
            }
        };
        confirming_channel_on(&conn).await
    }

    async fn connect(&self) -> Result<Connection, BusError> {
        let props = ConnectionProperties::default();
        let mut uri: lapin::uri::AMQPUri = self
            .url
            .parse()
            .map_err(|_| BusError(format!("{} is not a valid AMQP URL", var::AMQP_URL)))?;
        uri.query.frame_max.get_or_insert(FRAME_MAX);
        tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props))
            .await
            .map_err(|_| BusError("timed out connecting to RabbitMQ".into()))?
            .map_err(|e| err("cannot connect to RabbitMQ", e))
    }

    async fn declare_exchanges(&self, channel: &Channel) -> Result<(), BusError> {
        for exchange in ALL_EXCHANGES {
            channel
                .exchange_declare(
                    self.name(exchange).into(),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("declaring exchange", e))?;
        }
        Ok(())
    }

    /// The publishing channel; a new one (on a new connection) when the last one failed.
    async fn publisher_channel(&self) -> Result<Channel, BusError> {
        let mut guard = self.publisher.lock().await;
        if let Some((conn, channel)) = guard.as_ref()
            && conn.status().connected()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *guard = None;
        let (conn, channel) = self.confirming_channel().await?;
        self.declare_exchanges(&channel).await?;
        for queue in &self.queues {
            self.declare_queue(&channel, queue).await?;
        }
        *guard = Some((conn, channel.clone()));
        Ok(channel)
    }

    fn properties(message: &OutgoingMessage) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (k, v) in &message.headers {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.message_id.as_str().into())
            .with_headers(headers);
        if let Some(c) = message.headers.get("correlation-id") {
            props = props.with_correlation_id(c.as_str().into());
        }
        props
    }
}

/// Publishes `messages` on `channel` and collects their confirmations, in order. The first poll
/// queues every message's frames (see below), so what is sent on the channel next goes out after
/// them. Returns whether the channel failed, with the outcome.
async fn publish_and_confirm(
    channel: &Channel,
    prefix: &str,
    messages: &[OutgoingMessage],
) -> (PublishOutcome, bool) {
    // Pipeline the batch, then collect confirmations in order. A publish queues its frames (and
    // takes its confirmation number) when first polled, then waits until lapin's I/O thread has
    // written them: polling each once, in order, queues the whole batch before waiting for any
    // write. Awaiting each in turn cost a hand-over to the I/O thread and back per message, and
    // under load that made the relay trail the writes by a second.
    let mut sends = Vec::with_capacity(messages.len());
    for m in messages {
        let mut send = Box::pin(channel.basic_publish(
            prefixed(prefix, &m.exchange).into(),
            m.routing_key.as_str().into(),
            BasicPublishOptions::default(),
            &m.body,
            AmqpBus::properties(m),
        ));
        let first = futures_util::poll!(send.as_mut());
        sends.push((send, first));
    }
    let mut pending = Vec::with_capacity(sends.len());
    for (send, first) in sends {
        let sent = match first {
            std::task::Poll::Ready(sent) => sent,
            std::task::Poll::Pending => send.await,
        };
        match sent {
            Ok(confirm) => pending.push(confirm),
            Err(e) => {
                let outcome = PublishOutcome {
                    confirmed: 0,
                    error: Some(err("publishing", e)),
                };
                return (outcome, true);
            }
        }
    }
    let mut confirmed = 0;
    for confirm in pending {
        match confirm.await {
            Ok(c) if c.is_ack() => confirmed += 1,
            Ok(_) => {
                let error = BusError("broker refused (nack) a message".into());
                let outcome = PublishOutcome {
                    confirmed,
                    error: Some(error),
                };
                return (outcome, false);
            }
            Err(e) => {
                let outcome = PublishOutcome {
                    confirmed,
                    error: Some(err("awaiting confirmation", e)),
                };
                return (outcome, true);
            }
        }
    }
    let outcome = PublishOutcome {
        confirmed,
        error: None,
    };
    (outcome, false)
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, messages: &[OutgoingMessage]) -> PublishOutcome {
        self.send(messages.to_vec()).await.await
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) -> Confirmation {
        let channel = match self.publisher_channel().await {
            Ok(c) => c,
            Err(e) => {
                return confirmed(PublishOutcome {
                    confirmed: 0,
                    error: Some(e),
                });
            }
        };
        let prefix = self.prefix.clone();
        let mut confirmation: Confirmation = Box::pin(async move {
            let (outcome, failed) = publish_and_confirm(&channel, &prefix, &messages).await;
            if failed {
                // Closed (if it is not already), so the next send opens a new channel; one that
                // replaced it meanwhile is left alone.
                let _ = channel.close(200, "publishing failed".into()).await;
            }
            for m in &messages[..outcome.confirmed] {
                metrics::counter!("helpdesk_events_published_total", "exchange" => m.exchange.clone(), "event_type" => m.routing_key.clone())
                    .increment(1);
            }
            outcome
        });
        // The first poll queues the frames: what is sent next goes out after these.
        match futures_util::poll!(confirmation.as_mut()) {
            std::task::Poll::Ready(outcome) => confirmed(outcome),
            std::task::Poll::Pending => confirmation,
        }
    }

    async fn consume(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match self.consume_once(&subscription, &handler, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(queue = %subscription.queue, error = %e, retry_in_ms = backoff.as_millis() as u64, "consumer disconnected");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn declare(&self, subscription: &Subscription) -> Result<(), BusError> {
        let conn = self.connect().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| err("opening channel", e))?;
        let declared = self.declare_consumer_topology(&channel, subscription).await;
        let _ = conn.close(200, "declared".into()).await;
        declared.map(|_| ())
    }

    async fn healthy(&self) -> bool {
        self.publisher_channel().await.is_ok()
    }
}
