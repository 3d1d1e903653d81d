//! RabbitMQ implementation of [`Bus`] with lapin: durable topic exchanges, persistent messages,
//! publisher confirms, manual acks, per-delay retry queues and a dead-letter queue per consumer.
//!
//! Retry topology for a consumer queue `Q`: `Q.retry.<ms>ms` queues hold a failed message for their
//! TTL and then dead-letter it back to `Q` through the default exchange; `Q.dlq` keeps messages
//! that failed `max_attempts` times, with the last error in the `x-last-error` header.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusError, HandlerError, MessageHandler, Outage, OutgoingMessage, PublishOutcome, Received,
    Settlement, Subscription,
};
use crate::events::ALL_EXCHANGES;
use crate::trace::TraceParent;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ATTEMPT_HEADER: &str = "x-attempt";
const ERROR_HEADER: &str = "x-last-error";

/// A RabbitMQ bus. Exchange and queue names get `prefix` so several platforms (or tests) can share
/// one broker; the virtual host comes from the URL.
pub struct AmqpBus {
    url: String,
    prefix: String,
    publisher: Mutex<Option<(Connection, Channel)>>,
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

impl AmqpBus {
    /// A bus for `url`; nothing connects until first use, so a service starts while the broker is down.
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_string(),
            prefix: prefix.to_string(),
            publisher: Mutex::new(None),
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
        format!("{}{}", self.prefix, logical)
    }

    /// A new connection with one channel in publisher-confirm mode.
    async fn confirming_channel(&self) -> Result<(Connection, Channel), BusError> {
        let conn = self.connect().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| err("opening channel", e))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| err("enabling publisher confirms", e))?;
        Ok((conn, channel))
    }

    async fn connect(&self) -> Result<Connection, BusError> {
        let props = ConnectionProperties::default();
        tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, props))
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

    async fn drop_publisher(&self) {
        *self.publisher.lock().await = None;
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

    async fn publish_inner(&self, messages: &[OutgoingMessage]) -> PublishOutcome {
        let channel = match self.publisher_channel().await {
            Ok(c) => c,
            Err(e) => {
                return PublishOutcome {
                    confirmed: 0,
                    error: Some(e),
                };
            }
        };
        // Pipeline the batch, then collect confirmations in order.
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let exchange = self.name(&m.exchange);
            match channel
                .basic_publish(
                    exchange.into(),
                    m.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &m.body,
                    Self::properties(m),
                )
                .await
            {
                Ok(confirm) => pending.push(confirm),
                Err(e) => {
                    pending.clear();
                    self.drop_publisher().await;
                    return PublishOutcome {
                        confirmed: 0,
                        error: Some(err("publishing", e)),
                    };
                }
            }
        }
        let mut confirmed = 0;
        for confirm in pending {
            match confirm.await {
                Ok(c) if c.is_ack() => confirmed += 1,
                Ok(_) => {
                    return PublishOutcome {
                        confirmed,
                        error: Some(BusError("broker refused (nack) a message".into())),
                    };
                }
                Err(e) => {
                    self.drop_publisher().await;
                    return PublishOutcome {
                        confirmed,
                        error: Some(err("awaiting confirmation", e)),
                    };
                }
            }
        }
        PublishOutcome {
            confirmed,
            error: None,
        }
    }

    /// Declares a queue and its dead-letter queue, and binds it.
    async fn declare_queue(
        &self,
        channel: &Channel,
        sub: &Subscription,
    ) -> Result<String, BusError> {
        let queue = self.name(&sub.queue);
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), durable, FieldTable::default())
            .await
            .map_err(|e| err("declaring queue", e))?;
        channel
            .queue_declare(
                format!("{queue}.dlq").into(),
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("declaring dead-letter queue", e))?;
        for (exchange, pattern) in &sub.bindings {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.name(exchange).into(),
                    pattern.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("binding queue", e))?;
        }
        for (exchange, pattern) in super::topology::retired_bindings(&sub.queue) {
            // Removing a binding that does not exist is not an error.
            channel
                .queue_unbind(
                    queue.as_str().into(),
                    self.name(exchange).into(),
                    pattern.into(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| err("removing a retired binding", e))?;
        }
        Ok(queue)
    }

    /// Declares a consumer's queue, its retry queues and its dead-letter queue, and binds it.
    async fn declare_consumer_topology(
        &self,
        channel: &Channel,
        sub: &Subscription,
    ) -> Result<String, BusError> {
        self.declare_exchanges(channel).await?;
        let queue = self.declare_queue(channel, sub).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for attempt in 1..sub.max_attempts {
            let mut args = FieldTable::default();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(sub.retry_delay(attempt).as_millis() as i64),
            );
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(queue.as_str().into()),
            );
            channel
                .queue_declare(retry_queue(&queue, sub, attempt).into(), durable, args)
                .await
                .map_err(|e| err("declaring retry queue", e))?;
        }
        Ok(queue)
    }

    async fn consume_once(
        &self,
        sub: &Subscription,
        handler: &Arc<dyn MessageHandler>,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let (conn, channel) = self.confirming_channel().await?;
        let queue = self.declare_consumer_topology(&channel, sub).await?;
        channel
            .basic_qos(sub.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| err("setting prefetch", e))?;
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                format!("{queue}-{}", uuid::Uuid::new_v4()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("starting consumer", e))?;
        tracing::info!(queue = %queue, "consuming");
        let mut outage = Outage::default();
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            // What the broker has already pushed (up to the prefetch) is handled as one batch.
            let mut batch = vec![delivery_or_err(first)?];
            while batch.len() < usize::from(sub.prefetch.max(1)) {
                match deliveries.next().now_or_never() {
                    Some(next) => batch.push(delivery_or_err(next)?),
                    None => break,
                }
            }
            let received: Vec<Received<'_>> = batch
                .iter()
                .map(|d| Received {
                    body: d.data.as_slice(),
                    traceparent: header_str(&d.properties, TraceParent::HEADER),
                })
                .collect();
            let outcomes = handler.handle_batch(&received).await;
            if outcomes.len() != batch.len() {
                // Unacknowledged messages come back when we reconnect.
                return Err(BusError(
                    "handler returned the wrong number of outcomes".into(),
                ));
            }
            let mut unavailable = None;
            for (delivery, outcome) in batch.iter().zip(outcomes) {
                if let Some(error) = self
                    .settle(&channel, sub, &queue, delivery, outcome)
                    .await?
                {
                    unavailable = Some(error);
                }
            }
            // A dependency is down: the deferred messages are back in the queue; wait before
            // taking them again instead of spinning (and never count it against them).
            match unavailable {
                Some(error) => {
                    let pause = outage.pause(sub, &error);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
                None => outage.recovered(),
            }
        }
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = conn.close(200, "shutdown".into()).await;
        Ok(())
    }

    /// Acknowledges a handled delivery; a failed one is first moved to its retry queue or, after
    /// the last attempt, to the dead-letter queue. One that failed because a dependency is down
    /// goes back to the queue as it was; its error is returned so the consumer pauses.
    async fn settle(
        &self,
        channel: &Channel,
        sub: &Subscription,
        queue: &str,
        delivery: &Delivery,
        outcome: Result<(), HandlerError>,
    ) -> Result<Option<String>, BusError> {
        let attempt = header_u32(&delivery.properties, ATTEMPT_HEADER);
        let failure = match Settlement::of(outcome, attempt + 1, sub.max_attempts) {
            Settlement::Done => None,
            Settlement::DeadLetter { error, .. } => Some((error, true)),
            Settlement::Retry { error, .. } => Some((error, false)),
            Settlement::Defer { error } => {
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| err("handing back a deferred message", e))?;
                return Ok(Some(error));
            }
        };
        if let Some((error, give_up)) = failure {
            let target = if give_up {
                metrics::counter!("helpdesk_events_dead_lettered_total", "queue" => sub.queue.clone()).increment(1);
                tracing::warn!(queue = %queue, attempt = attempt + 1, %error, "message dead-lettered");
                format!("{queue}.dlq")
            } else {
                metrics::counter!("helpdesk_events_retried_total", "queue" => sub.queue.clone())
                    .increment(1);
                tracing::info!(queue = %queue, attempt = attempt + 1, %error, "message will be retried");
                retry_queue(queue, sub, attempt + 1)
            };
            let mut props = delivery.properties.clone();
            let mut headers = props.headers().clone().unwrap_or_default();
            headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongUInt(attempt + 1));
            headers.insert(
                ERROR_HEADER.into(),
                AMQPValue::LongString(truncate(&error, 1000).into()),
            );
            props = props.with_headers(headers).with_delivery_mode(2);
            let moved = match channel
                .basic_publish(
                    "".into(),
                    target.into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    props,
                )
                .await
            {
                Ok(confirm) => matches!(confirm.await, Ok(c) if c.is_ack()),
                Err(_) => false,
            };
            if !moved {
                // Keep the message: it comes back when we reconnect.
                let _ = delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
                return Err(BusError(
                    "could not move a failed message to its retry queue".into(),
                ));
            }
        } else {
            metrics::counter!("helpdesk_events_consumed_total", "queue" => sub.queue.clone())
                .increment(1);
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| err("acknowledging", e))?;
        Ok(None)
    }
}

fn delivery_or_err(next: Option<Result<Delivery, lapin::Error>>) -> Result<Delivery, BusError> {
    match next {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(err("receiving", e)),
        None => Err(BusError("consumer stream ended".into())),
    }
}

fn retry_queue(queue: &str, sub: &Subscription, attempt: u32) -> String {
    format!("{queue}.retry.{}ms", sub.retry_delay(attempt).as_millis())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

fn header_str<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

fn header_u32(props: &BasicProperties, key: &str) -> u32 {
    let Some(headers) = props.headers() else {
        return 0;
    };
    match headers.inner().get(key) {
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u32,
        Some(AMQPValue::LongLongInt(n)) => (*n).clamp(0, u32::MAX as i64) as u32,
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, messages: &[OutgoingMessage]) -> PublishOutcome {
        let outcome = self.publish_inner(messages).await;
        for m in &messages[..outcome.confirmed] {
            metrics::counter!("helpdesk_events_published_total", "exchange" => m.exchange.clone(), "event_type" => m.routing_key.clone())
                .increment(1);
        }
        outcome
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

#[async_trait]
impl super::dlq::DeadLetters for AmqpBus {
    async fn list(&self, queue: &str) -> Result<Vec<super::dlq::DeadLetter>, BusError> {
        let conn = self.connect().await?;
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| err("opening channel", e))?;
        let dlq = format!("{}.dlq", self.name(queue));
        // Taken without acknowledging: closing the channel puts every one back.
        let mut out = Vec::new();
        while let Some(m) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| err("reading the dead-letter queue", e))?
        {
            out.push(dead_letter(queue, &m.delivery));
        }
        let _ = channel.close(200, "listed".into()).await;
        let _ = conn.close(200, "listed".into()).await;
        Ok(out)
    }

    async fn replay(&self, queue: &str, message_id: Option<&str>) -> Result<usize, BusError> {
        let (conn, channel) = self.confirming_channel().await?;
        let (target, dlq) = (self.name(queue), format!("{}.dlq", self.name(queue)));
        // Only what is there now: a message that fails again meanwhile is not replayed twice.
        let waiting = channel
            .queue_declare(
                dlq.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| err("no such dead-letter queue", e))?
            .message_count();
        let mut replayed = 0;
        for _ in 0..waiting {
            let Some(m) = channel
                .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .map_err(|e| err("reading the dead-letter queue", e))?
            else {
                break;
            };
            let d = m.delivery;
            let wanted = message_id.is_none_or(|id| {
                d.properties.message_id().as_ref().map(|m| m.as_str()) == Some(id)
            });
            if !wanted {
                continue; // left unacknowledged: back in the queue when the channel closes
            }
            let mut headers = d.properties.headers().clone().unwrap_or_default();
            let mut fresh = FieldTable::default();
            for (k, v) in headers.inner().iter() {
                if k.as_str() != ATTEMPT_HEADER && k.as_str() != ERROR_HEADER {
                    fresh.insert(k.clone(), v.clone());
                }
            }
            headers = fresh;
            let props = d
                .properties
                .clone()
                .with_headers(headers)
                .with_delivery_mode(2);
            let confirmed = channel
                .basic_publish(
                    "".into(),
                    target.as_str().into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await
                .map_err(|e| err("replaying", e))?
                .await
                .map_err(|e| err("replaying", e))?;
            if !confirmed.is_ack() {
                return Err(BusError("the broker refused a replayed message".into()));
            }
            d.ack(BasicAckOptions::default())
                .await
                .map_err(|e| err("acknowledging a replayed message", e))?;
            replayed += 1;
        }
        let _ = channel.close(200, "replayed".into()).await;
        let _ = conn.close(200, "replayed".into()).await;
        Ok(replayed)
    }
}

fn dead_letter(queue: &str, d: &Delivery) -> super::dlq::DeadLetter {
    super::dlq::DeadLetter {
        queue: queue.to_string(),
        message_id: d
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
        routing_key: d.routing_key.to_string(),
        attempts: header_u32(&d.properties, ATTEMPT_HEADER),
        last_error: header_str(&d.properties, ERROR_HEADER).map(str::to_string),
        body: super::dlq::DeadLetter::body_text(&d.data),
    }
}
