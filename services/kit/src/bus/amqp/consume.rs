//! The consuming side of the RabbitMQ bus: queue topology (retry and dead-letter queues), the
//! consume loop and how each delivery is settled.

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use tokio_util::sync::CancellationToken;

use super::*;

impl AmqpBus {
    /// Declares a queue and its dead-letter queue, and binds it.
    pub(super) async fn declare_queue(
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
        for (exchange, pattern) in crate::bus::topology::retired_bindings(&sub.queue) {
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
    pub(super) async fn declare_consumer_topology(
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

    pub(super) async fn consume_once(
        &self,
        sub: &Subscription,
        handler: &Arc<dyn MessageHandler>,
        shutdown: &CancellationToken,
    ) -> Result<(), BusError> {
        let channel = self.consuming_channel().await?;
        let queue = self.declare_consumer_topology(&channel, sub).await?;
        channel
            .basic_qos(window(sub.prefetch), BasicQosOptions::default())
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
        // When the last batch was handled: a message that comes within `LINGER` of it means
        // messages are arriving back to back (load).
        let mut last_done: Option<tokio::time::Instant> = None;
        'consume: loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                next = deliveries.next() => next,
            };
            // What the broker has already pushed is handled as one batch of at most `prefetch`
            // messages (the broker keeps `WINDOW_BATCHES` batches in flight, so under load the
            // next batch is already here while this one is handled). Under load (this message
            // came right after the last batch) the batch also waits up to `LINGER` for more, so
            // it costs one transaction for more events; a message after a quiet spell is handled
            // at once.
            let limit = usize::from(sub.prefetch.max(1));
            let mut batch = vec![delivery_or_err(first)?];
            let now = tokio::time::Instant::now();
            let linger_until = last_done
                .is_some_and(|done| now.duration_since(done) < LINGER)
                .then(|| now + LINGER);
            while batch.len() < limit {
                match deliveries.next().now_or_never() {
                    Some(next) => batch.push(delivery_or_err(next)?),
                    None => match linger_until {
                        Some(until) => {
                            match tokio::time::timeout_at(until, deliveries.next()).await {
                                Ok(next) => batch.push(delivery_or_err(next)?),
                                Err(_) => break,
                            }
                        }
                        None => break,
                    },
                }
            }
            let mut outcomes = handle(handler.as_ref(), &batch).await?;
            last_done = Some(tokio::time::Instant::now());
            // All handled (the usual case): one acknowledgement for the whole batch. Deliveries
            // on this channel come in order and every one before this batch was settled, so
            // `multiple` acknowledges exactly this batch.
            if outcomes.iter().all(Result::is_ok)
                && let Some(last) = batch.last()
            {
                last.ack(BasicAckOptions { multiple: true })
                    .await
                    .map_err(|e| err("acknowledging", e))?;
                metrics::counter!("helpdesk_events_consumed_total", "queue" => sub.queue.clone())
                    .increment(batch.len() as u64);
                outage.recovered();
                continue;
            }
            // A dependency is down: the deferred messages stay with this consumer, unacknowledged
            // and in order, and are handled again after a pause (never counted against them).
            // Handing them back instead would let the messages behind them in the window pass
            // them; a consumer that stops or loses its channel meanwhile returns them to the
            // queue, in place.
            loop {
                let mut deferred = Vec::new();
                let mut unavailable = None;
                for (delivery, outcome) in batch.into_iter().zip(outcomes) {
                    match self
                        .settle(&channel, sub, &queue, &delivery, outcome)
                        .await?
                    {
                        None => {}
                        Some(error) => {
                            unavailable = Some(error);
                            deferred.push(delivery);
                        }
                    }
                }
                let Some(error) = unavailable else {
                    outage.recovered();
                    break;
                };
                let pause = outage.pause(sub, &error);
                tokio::select! {
                    _ = shutdown.cancelled() => break 'consume,
                    _ = tokio::time::sleep(pause) => {}
                }
                batch = deferred;
                outcomes = handle(handler.as_ref(), &batch).await?;
            }
        }
        // Unacknowledged deliveries go back to the queue with the channel; the shared connection
        // closes with the bus.
        let _ = channel.close(200, "shutdown".into()).await;
        Ok(())
    }

    /// Acknowledges a handled delivery; a failed one is first moved to its retry queue or, after
    /// the last attempt, to the dead-letter queue. One that failed because a dependency is down
    /// is left unacknowledged and its error returned, so the consumer pauses and handles it again.
    pub(super) async fn settle(
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
            // Kept unacknowledged by the caller, to be handled again.
            Settlement::Defer { error } => return Ok(Some(error)),
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

/// Batches in flight per consumer: the broker's prefetch window is this many times the
/// subscription's batch size (`Subscription::prefetch`). With a window of one batch, each batch
/// waited for the broker to refill the window after its acknowledgement (a round trip behind
/// every other task of a loaded process), and the consumers of `ticket.created` fell seconds
/// behind the writes; the deliveries waiting cost a few KiB each.
const WINDOW_BATCHES: u16 = 2;

fn window(batch: u16) -> u16 {
    batch.max(1).saturating_mul(WINDOW_BATCHES)
}

/// Hands `batch` to the handler: one outcome per delivery.
async fn handle(
    handler: &dyn MessageHandler,
    batch: &[Delivery],
) -> Result<Vec<Result<(), HandlerError>>, BusError> {
    let received: Vec<Received<'_>> = batch
        .iter()
        .map(|d| Received {
            body: d.data.as_slice(),
            traceparent: header_str(&d.properties, TraceParent::HEADER),
        })
        .collect();
    let outcomes = handler.handle_batch(&received).await;
    if outcomes.len() != batch.len() {
        // Unacknowledged messages come back when the consumer reconnects.
        return Err(BusError(
            "handler returned the wrong number of outcomes".into(),
        ));
    }
    Ok(outcomes)
}

/// How long a batch under load waits for more messages.
const LINGER: std::time::Duration = std::time::Duration::from_millis(25);

pub(super) fn delivery_or_err(
    next: Option<Result<Delivery, lapin::Error>>,
) -> Result<Delivery, BusError> {
    match next {
        Some(Ok(d)) => Ok(d),
        Some(Err(e)) => Err(err("receiving", e)),
        None => Err(BusError("consumer stream ended".into())),
    }
}

pub(super) fn retry_queue(queue: &str, sub: &Subscription, attempt: u32) -> String {
    format!("{queue}.retry.{}ms", sub.retry_delay(attempt).as_millis())
}

pub(super) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub(super) fn header_str<'a>(props: &'a BasicProperties, key: &str) -> Option<&'a str> {
    match props.headers().as_ref()?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

pub(super) fn header_u32(props: &BasicProperties, key: &str) -> u32 {
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
