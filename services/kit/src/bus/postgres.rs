//! An in-process bus for local runs (`helpdesk up` without `AMQP_URL`), kept in PostgreSQL so it
//! has RabbitMQ's semantics where the services rely on them: topic routing to durable queues
//! (fanned out at publish time, bindings persisted), at-least-once delivery that survives a crash,
//! retries with growing delay, and a dead-letter state after `max_attempts` with the last error.
//! Publisher and consumers live in one process: a publish wakes its queues' consumers in memory
//! (no `NOTIFY`, whose commit-time lock serialises writers and wakes every listening backend), with
//! a polling fallback for retries that become due.
//!
//! A queue whose consumer runs in this process and has nothing waiting gets its messages handed
//! over directly: `publish` runs the consumer's handler on them (each consumer commits its effect
//! with the record of the event) and keeps a row only for a message that is to be retried, is
//! dead-lettered or waits for an outage to end; from then on the queue's messages queue up behind
//! it until its consumer has caught up. `publish` returns once every message is handled or kept,
//! so the outbox relay deletes its rows only then: a crash in between re-publishes them, and the
//! consumers' idempotency skips what they had already handled. This spares every event a row
//! per queue written, locked and deleted (three of the four statements per queue and event).

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

/// A consumer running in this process, which `publish` may hand messages to directly.
struct Local {
    subscription: Subscription,
    handler: Arc<dyn MessageHandler>,
    waiting: std::sync::Mutex<Waiting>,
}

/// Whether rows of a queue may be waiting (then new messages wait behind them as rows too).
#[derive(Debug, Clone, Copy)]
struct Waiting {
    rows: bool,
    /// Bumped whenever rows are about to be added and when they were, so a consumer that found
    /// the queue empty clears `rows` only when nothing was added since it looked...
    epoch: u64,
    /// ... and no insert is under way.
    inserting: u32,
}

impl Local {
    fn state(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rows of this queue are about to be added; they are until the guard is dropped.
    fn queue(self: &Arc<Self>) -> Queueing {
        let mut s = self.state();
        s.rows = true;
        s.epoch += 1;
        s.inserting += 1;
        Queueing(self.clone())
    }
}

/// An insert of a queue's rows under way.
struct Queueing(Arc<Local>);

impl Drop for Queueing {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.epoch += 1;
        s.inserting -= 1;
    }
}

/// One row to add to `bus_messages`: a message for a queue, fresh or with the outcome of a
/// delivery that already happened.
struct Row<'a> {
    queue: &'a str,
    message: &'a OutgoingMessage,
    attempts: i32,
    /// Seconds until it may be taken.
    delay: f64,
    dead: bool,
    last_error: Option<String>,
}

/// The PostgreSQL-backed bus. Give it a pool on its own schema (e.g. `bus`).
pub struct PgBus {
    pool: PgPool,
    bindings: tokio::sync::RwLock<Option<(std::time::Instant, Bindings)>>,
    /// One wake-up per queue for its consumers in this process.
    wakers: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Notify>>>,
    /// The queues consumed in this process.
    locals: std::sync::RwLock<std::collections::HashMap<String, Arc<Local>>>,
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
            locals: Default::default(),
        })
    }

    fn local(&self, queue: &str) -> Option<Arc<Local>> {
        let locals = self.locals.read().unwrap_or_else(|e| e.into_inner());
        locals.get(queue).cloned()
    }

    /// Hands `messages` to `local`'s handler and returns the rows of those it did not take: a
    /// retry, a dead letter, or (during an outage) the message as it was.
    async fn deliver<'a>(
        &self,
        local: &'a Local,
        messages: &[&'a OutgoingMessage],
    ) -> Vec<Row<'a>> {
        let received: Vec<Received<'_>> = messages
            .iter()
            .map(|m| Received {
                body: m.body.as_slice(),
                traceparent: m.headers.get(TraceParent::HEADER).map(String::as_str),
            })
            .collect();
        let outcomes = local.handler.handle_batch(&received).await;
        let sub = &local.subscription;
        let queue = sub.queue.as_str();
        let mut rows = Vec::new();
        for (message, outcome) in messages.iter().zip(outcomes) {
            let row = |attempts: u32, delay: Duration, dead: bool, error: Option<String>| Row {
                queue,
                message,
                attempts: attempts as i32,
                delay: delay.as_secs_f64(),
                dead,
                last_error: error,
            };
            match Settlement::of(outcome, 1, sub.max_attempts) {
                Settlement::Done => {
                    metrics::counter!("helpdesk_events_consumed_total", "queue" => sub.queue.clone()).increment(1);
                }
                Settlement::DeadLetter { attempt, error } => {
                    metrics::counter!("helpdesk_events_dead_lettered_total", "queue" => sub.queue.clone()).increment(1);
                    tracing::warn!(queue = %sub.queue, attempt, %error, "message dead-lettered");
                    rows.push(row(attempt, Duration::ZERO, true, Some(error)));
                }
                Settlement::Retry { attempt, error } => {
                    metrics::counter!("helpdesk_events_retried_total", "queue" => sub.queue.clone()).increment(1);
                    tracing::info!(queue = %sub.queue, attempt, %error, "message will be retried");
                    rows.push(row(attempt, sub.retry_delay(attempt), false, Some(error)));
                }
                // Kept as it was; the consumer takes it (and pauses for the outage) from the table.
                Settlement::Defer { .. } => rows.push(row(0, Duration::ZERO, false, None)),
            }
        }
        rows
    }

    /// Adds `rows` to `bus_messages` in one statement (atomic on its own), in order.
    async fn insert(&self, rows: &[Row<'_>]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let queues: Vec<&str> = rows.iter().map(|r| r.queue).collect();
        let keys: Vec<&str> = rows
            .iter()
            .map(|r| r.message.routing_key.as_str())
            .collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.message.message_id.as_str()).collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|r| r.message.body.as_slice()).collect();
        let traces: Vec<Option<&str>> = rows
            .iter()
            .map(|r| {
                r.message
                    .headers
                    .get(TraceParent::HEADER)
                    .map(String::as_str)
            })
            .collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
        let delays: Vec<f64> = rows.iter().map(|r| r.delay).collect();
        let dead: Vec<bool> = rows.iter().map(|r| r.dead).collect();
        let errors: Vec<Option<&str>> = rows.iter().map(|r| r.last_error.as_deref()).collect();
        sqlx::query!(
            "INSERT INTO bus_messages \
               (queue, routing_key, message_id, body, traceparent, attempts, available_at, dead_at, last_error) \
             SELECT q, k, i, b, t, a, now() + make_interval(secs => d), CASE WHEN x THEN now() END, e \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::int[], \
                         $7::float8[], $8::bool[], $9::text[]) \
             WITH ORDINALITY AS m(q, k, i, b, t, a, d, x, e, n) ORDER BY n",
            &queues as &[&str],
            &keys as &[&str],
            &ids as &[&str],
            &bodies as &[&[u8]],
            &traces as &[Option<&str>],
            &attempts,
            &delays,
            &dead,
            &errors as &[Option<&str>],
        )
        .execute(&self.pool)
        .await?;
        let mut woken: Vec<&str> = rows.iter().map(|r| r.queue).collect();
        woken.sort_unstable();
        woken.dedup();
        for q in woken {
            self.waker(q).notify_waiters();
        }
        Ok(())
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
            // Per bound queue, its messages in publish order.
            let mut routed: std::collections::BTreeMap<&str, Vec<&OutgoingMessage>> =
                Default::default();
            for m in messages {
                let mut bound: Vec<&str> = bindings
                    .iter()
                    .filter(|(_, ex, pat)| *ex == m.exchange && topic_matches(pat, &m.routing_key))
                    .map(|(q, _, _)| q.as_str())
                    .collect();
                bound.sort_unstable();
                bound.dedup();
                for q in bound {
                    routed.entry(q).or_default().push(m);
                }
            }
            // Queues consumed here with nothing waiting take theirs now, side by side; the others
            // queue theirs as rows, and so does a consumer for what it did not take.
            let mut rows: Vec<Row<'_>> = Vec::new();
            let mut handover: Vec<(Arc<Local>, Vec<&OutgoingMessage>)> = Vec::new();
            let mut queueing: Vec<Queueing> = Vec::new();
            for (queue, ms) in routed {
                match self.local(queue) {
                    Some(local) if !local.state().rows => handover.push((local, ms)),
                    local => {
                        queueing.extend(local.map(|l| l.queue()));
                        rows.extend(ms.into_iter().map(|message| Row {
                            queue,
                            message,
                            attempts: 0,
                            delay: 0.0,
                            dead: false,
                            last_error: None,
                        }));
                    }
                }
            }
            let kept = futures_util::future::join_all(
                handover.iter().map(|(local, ms)| self.deliver(local, ms)),
            )
            .await;
            for ((local, _), kept) in handover.iter().zip(kept) {
                if !kept.is_empty() {
                    queueing.push(local.queue());
                    rows.extend(kept);
                }
            }
            self.insert(&rows).await?;
            drop(queueing);
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
        // Rows may be waiting from before (a restart): until this consumer has seen the queue
        // empty, new messages queue up behind them.
        let local = Arc::new(Local {
            subscription: subscription.clone(),
            handler: handler.clone(),
            waiting: std::sync::Mutex::new(Waiting {
                rows: true,
                epoch: 0,
                inserting: 0,
            }),
        });
        self.locals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subscription.queue.clone(), local.clone());
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
            let seen = local.state().epoch;
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
                Ok(_) => {
                    outage.recovered();
                    // Caught up: later messages may be handed over directly.
                    let mut state = local.state();
                    if state.epoch == seen && state.inserting == 0 {
                        state.rows = false;
                    }
                }
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
        // Messages published from now on wait for the next consumer as rows.
        let mut locals = self.locals.write().unwrap_or_else(|e| e.into_inner());
        if locals
            .get(&subscription.queue)
            .is_some_and(|l| Arc::ptr_eq(l, &local))
        {
            locals.remove(&subscription.queue);
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
