//! Dead letters on RabbitMQ: listing, replaying and purging a consumer's `.dlq` queue.

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::*;

#[async_trait]
impl crate::bus::dlq::DeadLetters for AmqpBus {
    async fn list(&self, queue: &str) -> Result<Vec<crate::bus::dlq::DeadLetter>, BusError> {
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

fn dead_letter(queue: &str, d: &Delivery) -> crate::bus::dlq::DeadLetter {
    crate::bus::dlq::DeadLetter {
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
        body: crate::bus::dlq::DeadLetter::body_text(&d.data),
    }
}
