//! An in-process bus for local runs (`helpdesk up` without `AMQP_URL`), kept in PostgreSQL so it
//! has RabbitMQ's semantics where the services rely on them: topic routing to durable queues
//! (fanned out at publish time, bindings persisted), at-least-once delivery that survives a crash,
//! retries with growing delay, and a dead-letter state after `max_attempts` with the last error.
//! Publisher and consumers live in one process: a publish wakes its queues' consumers in memory
//! (no `NOTIFY`, whose commit-time lock serialises writers and wakes every listening backend), with
//! a polling fallback for retries that become due.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    Bus, BusError, MessageHandler, Outage, OutgoingMessage, PublishOutcome, Received, Settlement,
    Subscription,
};

/// What one claimed batch came to.
struct Batch {
    claimed: usize,
    /// Set when a message was handed back because a dependency is down.
    unavailable: Option<String>,
}
use crate::trace::TraceParent;

/// The bus tables (`migrations/bus`), tracked in `_sqlx_bus_migrations`.
fn migrator() -> &'static sqlx::migrate::Migrator {
    static BUS: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
        let mut m = sqlx::migrate!("../../migrations/bus");
        m.dangerous_set_table_name("_sqlx_bus_migrations");
        m
    });
    &BUS
}

/// How long the publisher trusts its copy of the bindings (declarations by another process that
/// shares the database are seen after at most this long; this process's own at once).
const BINDINGS_TTL: Duration = Duration::from_secs(5);

type Bindings = Arc<Vec<(String, String, String)>>;

/// The PostgreSQL-backed bus. Give it a pool on its own schema (e.g. `bus`).
pub struct PgBus {
    pool: PgPool,
    bindings: tokio::sync::RwLock<Option<(std::time::Instant, Bindings)>>,
    /// One wake-up per queue for its consumers in this process.
    wakers: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl PgBus {
    /// Creates or upgrades the bus tables. sqlx's migrator takes its advisory lock, does the
    /// work and unlocks on one session, so concurrent first starts take turns.
    pub async fn new(pool: PgPool) -> Result<Self, sqlx::Error> {
        migrator()
            .run(&pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
        Ok(Self {
            pool,
            bindings: tokio::sync::RwLock::new(None),
            wakers: Default::default(),
        })
    }

    fn waker(&self, queue: &str) -> Arc<tokio::sync::Notify> {
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        wakers.entry(queue.to_string()).or_default().clone()
    }

    /// The (queue, exchange, pattern) bindings, cached for [`BINDINGS_TTL`].
    async fn bindings(&self) -> Result<Bindings, sqlx::Error> {
        if let Some((at, b)) = self.bindings.read().await.as_ref()
            && at.elapsed() < BINDINGS_TTL
        {
            return Ok(b.clone());
        }
        let rows = sqlx::query!("SELECT queue, exchange, pattern FROM bus_bindings")
            .fetch_all(&self.pool)
            .await?;
        let fresh: Bindings = Arc::new(
            rows.into_iter()
                .map(|r| (r.queue, r.exchange, r.pattern))
                .collect(),
        );
        *self.bindings.write().await = Some((std::time::Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    async fn consume_batch(
        &self,
        sub: &Subscription,
        handler: &Arc<dyn MessageHandler>,
    ) -> Result<Batch, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query!(
            "SELECT id, body, attempts, traceparent FROM bus_messages \
             WHERE queue = $1 AND dead_at IS NULL AND available_at <= now() \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            sub.queue,
            i64::from(sub.prefetch.max(1)),
        )
        .fetch_all(&mut *tx)
        .await?;
        let count = rows.len();
        let claimed: Vec<_> = rows
            .into_iter()
            .map(|r| (r.id, r.body, r.attempts.max(0) as u32 + 1, r.traceparent))
            .collect();
        let received: Vec<Received<'_>> = claimed
            .iter()
            .map(|(_, body, _, trace)| Received {
                body: body.as_slice(),
                traceparent: trace.as_deref(),
            })
            .collect();
        let outcomes = handler.handle_batch(&received).await;
        let mut done: Vec<i64> = Vec::with_capacity(count);
        let mut unavailable = None;
        for ((id, _, attempt, _), outcome) in claimed.iter().zip(outcomes) {
            let id = *id;
            match Settlement::of(outcome, *attempt, sub.max_attempts) {
                Settlement::Done => {
                    metrics::counter!("helpdesk_events_consumed_total", "queue" => sub.queue.clone()).increment(1);
                    done.push(id);
                }
                Settlement::DeadLetter { attempt, error } => {
                    metrics::counter!("helpdesk_events_dead_lettered_total", "queue" => sub.queue.clone()).increment(1);
                    tracing::warn!(queue = %sub.queue, attempt, %error, "message dead-lettered");
                    sqlx::query!(
                        "UPDATE bus_messages SET dead_at = now(), attempts = $2, last_error = $3 WHERE id = $1",
                        id,
                        attempt as i32,
                        error,
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                Settlement::Retry { attempt, error } => {
                    metrics::counter!("helpdesk_events_retried_total", "queue" => sub.queue.clone()).increment(1);
                    tracing::info!(queue = %sub.queue, attempt, %error, "message will be retried");
                    let delay = sub.retry_delay(attempt);
                    sqlx::query!(
                        "UPDATE bus_messages SET attempts = $2, last_error = $3, \
                         available_at = now() + make_interval(secs => $4) WHERE id = $1",
                        id,
                        attempt as i32,
                        error,
                        delay.as_secs_f64(),
                    )
                    .execute(&mut *tx)
                    .await?;
                }
                // Left as it was (attempts unchanged); the consumer pauses before taking it again.
                Settlement::Defer { error } => unavailable = Some(error),
            }
        }
        if !done.is_empty() {
            sqlx::query!("DELETE FROM bus_messages WHERE id = ANY($1)", &done)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Batch {
            claimed: count,
            unavailable,
        })
    }

    /// Messages of `queue` in the dead-letter state.
    pub async fn dead_letters(
        &self,
        queue: &str,
    ) -> Result<Vec<(Vec<u8>, Option<String>)>, sqlx::Error> {
        let rows = sqlx::query!(
            "SELECT body, last_error FROM bus_messages WHERE queue = $1 AND dead_at IS NOT NULL ORDER BY id",
            queue,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.body, r.last_error)).collect())
    }
}

/// Whether a topic `pattern` (`*` = one word, `#` = zero or more) matches `key`.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[async_trait]
impl Bus for PgBus {
    async fn publish(&self, messages: &[OutgoingMessage]) -> PublishOutcome {
        let result: Result<(), sqlx::Error> = async {
            let bindings = self.bindings().await?;
            // One row per (message, bound queue), in publish order.
            let (mut queues, mut keys, mut ids, mut bodies, mut traces) =
                (vec![], vec![], vec![], vec![], vec![]);
            for m in messages {
                let mut bound: Vec<&str> = bindings
                    .iter()
                    .filter(|(_, ex, pat)| *ex == m.exchange && topic_matches(pat, &m.routing_key))
                    .map(|(q, _, _)| q.as_str())
                    .collect();
                bound.sort_unstable();
                bound.dedup();
                for q in bound {
                    queues.push(q);
                    keys.push(m.routing_key.as_str());
                    ids.push(m.message_id.as_str());
                    bodies.push(m.body.as_slice());
                    traces.push(m.headers.get(TraceParent::HEADER).map(String::as_str));
                }
            }
            if !queues.is_empty() {
                // One statement, atomic on its own.
                sqlx::query!(
                    "INSERT INTO bus_messages (queue, routing_key, message_id, body, traceparent) \
                     SELECT q, k, i, b, t \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[]) \
                     WITH ORDINALITY AS m(q, k, i, b, t, n) ORDER BY n",
                    &queues as &[&str],
                    &keys as &[&str],
                    &ids as &[&str],
                    &bodies as &[&[u8]],
                    &traces as &[Option<&str>],
                )
                .execute(&self.pool)
                .await?;
                queues.sort_unstable();
                queues.dedup();
                for q in queues {
                    self.waker(q).notify_waiters();
                }
            }
            for m in messages {
                metrics::counter!("helpdesk_events_published_total", "exchange" => m.exchange.clone(), "event_type" => m.routing_key.clone())
                    .increment(1);
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => PublishOutcome {
                confirmed: messages.len(),
                error: None,
            },
            Err(e) => PublishOutcome {
                confirmed: 0,
                error: Some(BusError(format!("in-process bus: {e}"))),
            },
        }
    }

    async fn declare(&self, sub: &Subscription) -> Result<(), BusError> {
        let (exchanges, patterns): (Vec<&str>, Vec<&str>) = sub
            .bindings
            .iter()
            .map(|(e, p)| (e.as_str(), p.as_str()))
            .unzip();
        let (retired_exchanges, retired_patterns): (Vec<&str>, Vec<&str>) =
            super::topology::retired_bindings(&sub.queue).unzip();
        // The wanted bindings in, the retired ones out, in one round trip.
        sqlx::query!(
            "WITH gone AS (DELETE FROM bus_bindings WHERE queue = $1 \
               AND (exchange, pattern) IN (SELECT * FROM unnest($4::text[], $5::text[]))) \
             INSERT INTO bus_bindings (queue, exchange, pattern) \
             SELECT $1, e, p FROM unnest($2::text[], $3::text[]) AS b(e, p) \
             ON CONFLICT DO NOTHING",
            sub.queue,
            &exchanges as &[&str],
            &patterns as &[&str],
            &retired_exchanges as &[&str],
            &retired_patterns as &[&str],
        )
        .execute(&self.pool)
        .await
        .map_err(|e| BusError(format!("in-process bus: {e}")))?;
        *self.bindings.write().await = None;
        Ok(())
    }

    async fn consume(
        &self,
        subscription: Subscription,
        handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        while let Err(e) = self.declare(&subscription).await {
            tracing::warn!(error = %e, "cannot register the subscription; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let waker = self.waker(&subscription.queue);
        let mut outage = Outage::default();
        // Retries become due without a wake-up: poll at least this often.
        let poll = subscription
            .retry_base_delay
            .clamp(Duration::from_millis(50), Duration::from_secs(1));
        while !shutdown.is_cancelled() {
            // Registered before looking, so a publish in between is not missed.
            let woken = waker.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.consume_batch(&subscription, &handler).await {
                Ok(Batch {
                    unavailable: Some(error),
                    ..
                }) => {
                    let pause = outage.pause(&subscription, &error);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
                Ok(batch) if batch.claimed > 0 => {
                    outage.recovered();
                    continue;
                }
                Ok(_) => outage.recovered(),
                Err(e) => {
                    tracing::warn!(queue = %subscription.queue, error = %e, "in-process bus consumer failed")
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = woken => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn healthy(&self) -> bool {
        sqlx::query_scalar!("SELECT 1 AS alive")
            .fetch_one(&self.pool)
            .await
            .is_ok()
    }
}

#[async_trait]
impl super::dlq::DeadLetters for PgBus {
    async fn list(&self, queue: &str) -> Result<Vec<super::dlq::DeadLetter>, BusError> {
        let rows = sqlx::query!(
            "SELECT message_id, routing_key, attempts, last_error, body FROM bus_messages \
             WHERE queue = $1 AND dead_at IS NOT NULL ORDER BY id",
            queue,
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| BusError(format!("in-process bus: {e}")))?;
        Ok(rows
            .into_iter()
            .map(|r| super::dlq::DeadLetter {
                queue: queue.to_string(),
                message_id: r.message_id,
                routing_key: r.routing_key,
                attempts: r.attempts.max(0) as u32,
                last_error: r.last_error,
                body: super::dlq::DeadLetter::body_text(&r.body),
            })
            .collect())
    }

    async fn replay(&self, queue: &str, message_id: Option<&str>) -> Result<usize, BusError> {
        let n = sqlx::query!(
            "UPDATE bus_messages SET dead_at = NULL, attempts = 0, available_at = now() \
             WHERE queue = $1 AND dead_at IS NOT NULL AND ($2::text IS NULL OR message_id = $2)",
            queue,
            message_id,
        )
        .execute(&self.pool)
        .await
        .map_err(|e| BusError(format!("in-process bus: {e}")))?
        .rows_affected();
        self.waker(queue).notify_waiters();
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::topic_matches;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("user.*", "user.created"));
        assert!(!topic_matches("user.*", "user.password.reset"));
        assert!(topic_matches("#", "ticket.status_changed"));
        assert!(topic_matches("ticket.#", "ticket.created"));
        assert!(!topic_matches("ticket.created", "ticket.deleted"));
        assert!(topic_matches(
            "user.password_reset_requested",
            "user.password_reset_requested"
        ));
    }
}
