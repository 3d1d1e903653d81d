//! The transactional outbox: a change and the event announcing it are written in one transaction;
//! [`OutboxRelay`] publishes committed events to the bus and deletes them once the broker confirms.
//!
//! The relay is woken by `LISTEN/NOTIFY` with a polling fallback. Under load it polls every
//! [`AWAKE_POLL`] instead, and says so in `outbox_relay.awake_until`; writers then leave out the
//! NOTIFY, whose database-wide lock would serialize their commits. Several replicas may run it: a
//! transaction-scoped advisory lock lets one relay at a time take a batch (the others wait for
//! the next round), which keeps events in commit order (so in order per aggregate) without
//! double publication in the normal case. Delivery is at least once: consumers are idempotent.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::bus::{Bus, BusError, Confirmation, OutgoingMessage};
use crate::events::{DomainEvent, Envelope, EventMetadata};

/// Who caused an event: the request's correlation id, the acting user, the causing event.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    pub correlation_id: Option<String>,
    pub user_id: Option<Uuid>,
    pub causation_id: Option<Uuid>,
}

impl EventContext {
    pub fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id,
            user_id: self.user_id,
        }
    }

    /// The context of events a request causes: its request id correlates them, `user_id` is the
    /// acting user (none for a service's own call).
    pub fn request(request_id: impl Into<String>, user_id: Option<Uuid>) -> Self {
        Self {
            correlation_id: Some(request_id.into()),
            user_id,
            causation_id: None,
        }
    }

    /// The context for events caused by handling `event`.
    pub fn caused_by(event: &Envelope) -> Self {
        Self {
            correlation_id: event.metadata.correlation_id.clone(),
            user_id: event.metadata.user_id,
            causation_id: Some(event.event_id),
        }
    }
}

/// The NOTIFY channel of a schema's outbox.
pub fn channel(schema: &str) -> String {
    format!("{schema}_outbox")
}

/// Records `payload` as an event in the caller's transaction; it is published after commit.
pub async fn publish<E: DomainEvent>(
    tx: &mut PgConnection,
    payload: &E,
    ctx: &EventContext,
) -> Result<Envelope, sqlx::Error> {
    let envelope = Envelope::wrap(payload, ctx.metadata());
    enqueue(tx, &envelope).await?;
    Ok(envelope)
}

/// The values of an envelope's outbox row, for a statement that writes it together with the
/// change it announces (see [`enqueue`] for the columns).
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub event_id: Uuid,
    pub exchange: &'static str,
    pub routing_key: String,
    pub aggregate_id: String,
    pub body: String,
    pub headers: serde_json::Value,
}

impl OutboxRow {
    /// The row of `payload`, wrapped in an envelope with `ctx` (as [`publish`] does), for a
    /// statement that writes it together with the change it announces.
    pub fn event<E: DomainEvent>(payload: &E, ctx: &EventContext) -> Result<Self, sqlx::Error> {
        Self::of(&Envelope::wrap(payload, ctx.metadata()))
    }

    pub fn of(envelope: &Envelope) -> Result<Self, sqlx::Error> {
        Ok(Self {
            event_id: envelope.event_id,
            exchange: envelope.exchange(),
            routing_key: envelope.event_type.clone(),
            aggregate_id: envelope.aggregate_id.clone(),
            body: serde_json::to_string(envelope).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            // The trace of the request or event handler that wrote the event travels with it.
            headers: serde_json::json!({
                "correlation-id": envelope.metadata.correlation_id,
                "traceparent": crate::trace::TraceParent::current().map(|t| t.to_string()),
            }),
        })
    }
}

/// Outbox rows as one array per column, for a statement that writes several of them together
/// with the change they announce: `unnest($n::uuid[], $n+1::text[], $n+2::text[], $n+3::text[],
/// $n+4::text[], $n+5::jsonb[]) WITH ORDINALITY`, inserted in the ordinality's order so the
/// events keep theirs (see [`enqueue`] for the columns).
#[derive(Debug, Default, Clone)]
pub struct OutboxColumns {
    pub event_ids: Vec<Uuid>,
    pub exchanges: Vec<&'static str>,
    pub routing_keys: Vec<String>,
    pub aggregate_ids: Vec<String>,
    pub bodies: Vec<String>,
    pub headers: Vec<serde_json::Value>,
}

impl OutboxColumns {
    pub fn push(&mut self, row: OutboxRow) {
        self.event_ids.push(row.event_id);
        self.exchanges.push(row.exchange);
        self.routing_keys.push(row.routing_key);
        self.aggregate_ids.push(row.aggregate_id);
        self.bodies.push(row.body);
        self.headers.push(row.headers);
    }

    /// Adds the row of `payload` (see [`OutboxRow::event`]).
    pub fn publish<E: DomainEvent>(
        &mut self,
        payload: &E,
        ctx: &EventContext,
    ) -> Result<(), sqlx::Error> {
        self.push(OutboxRow::event(payload, ctx)?);
        Ok(())
    }
}

/// Records an already built envelope.
pub async fn enqueue(tx: &mut PgConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    let row = OutboxRow::of(envelope)?;
    // The row and the relay's wake-up (delivered on commit) in one round trip.
    sqlx::query!(
        "WITH ins AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING 1) \
         SELECT pg_notify(current_schema() || '_outbox', '') FROM ins \
         WHERE NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())",
        row.event_id,
        row.exchange,
        row.routing_key,
        row.aggregate_id,
        row.body,
        row.headers,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Errors of one relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// How long after a round that published something the relay tells writers (in
/// `outbox_relay.awake_until`) that it is polling, so they need not NOTIFY it. PostgreSQL
/// serializes the commits of notifying transactions through their WAL flush: on a 2-core machine
/// an insert with NOTIFY reached 2 314 commits/s against 5 920 without (pgbench, 32 clients).
pub const AWAKE: Duration = Duration::from_millis(500);
/// How long the relay goes on polling after the last `awake_until` it set, for writers that saw
/// it awake and commit later (a write transaction outlasting this waits for the polling
/// fallback instead).
pub const AWAKE_GRACE: Duration = Duration::from_secs(1);
/// The pause between rounds while awake: a round then carries what ~5 ms of writes produced. It
/// doubles with each round that finds nothing, up to [`AWAKE_POLL_MAX`], so a trickle of writes
/// does not keep the relay querying 200 times a second.
pub const AWAKE_POLL: Duration = Duration::from_millis(5);
/// The longest pause between rounds while awake (the most a write that left out its NOTIFY waits
/// for the relay).
pub const AWAKE_POLL_MAX: Duration = Duration::from_millis(40);

/// The most events a relay round has sent and not yet seen confirmed before it stops taking more
/// (ten batches).
pub const MAX_UNCONFIRMED: usize = 5_000;
/// How long a relay round goes on taking events while earlier ones await their confirmation;
/// it then waits for those and commits.
pub const MAX_ROUND: Duration = Duration::from_secs(2);

/// A batch handed to the bus, awaiting its confirmation.
struct Sent {
    /// Its outbox rows, in publication order.
    ids: Vec<i64>,
    confirmation: Confirmation,
    at: Instant,
}

/// Publishes the outbox of one service schema.
pub struct OutboxRelay {
    pool: PgPool,
    bus: Arc<dyn Bus>,
    schema: String,
    /// Events per round (500). A round's fixed costs (a few statements, waiting for the broker's
    /// confirmations) are paid once per batch: with 200, under ~2 000 writes/s on RabbitMQ the
    /// ticket outbox trailed the writes by 300 to 1 600 events, with 500 mostly by under 100.
    batch_size: i64,
    poll_interval: Duration,
    /// [`MAX_UNCONFIRMED`] and [`MAX_ROUND`] unless set.
    max_unconfirmed: usize,
    max_round: Duration,
}

impl OutboxRelay {
    pub fn new(pool: PgPool, bus: Arc<dyn Bus>, schema: &str) -> Self {
        Self {
            pool,
            bus,
            schema: schema.to_string(),
            batch_size: 500,
            poll_interval: Duration::from_secs(2),
            max_unconfirmed: MAX_UNCONFIRMED,
            max_round: MAX_ROUND,
        }
    }

    /// Sets how many events a round may have sent unconfirmed, and for how long it goes on taking
    /// events (defaults: [`MAX_UNCONFIRMED`], [`MAX_ROUND`]).
    pub fn with_round_limits(mut self, max_unconfirmed: usize, max_round: Duration) -> Self {
        self.max_unconfirmed = max_unconfirmed;
        self.max_round = max_round;
        self
    }

    /// Sets the polling fallback interval.
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// Publishes one round; returns how many events were confirmed (0 when another replica holds
    /// the relay lock or the outbox is empty).
    ///
    /// A round takes a batch, hands it to the bus and waits for its confirmations. Whenever that
    /// wait outlasts [`AWAKE_POLL`], it takes the events written meanwhile and sends them too,
    /// behind the first (at most [`MAX_UNCONFIRMED`] events waiting, for at most [`MAX_ROUND`]; see
    /// [`OutboxRelay::with_round_limits`]):
    /// RabbitMQ delivers a message as soon as it arrives but confirms it only after its disk
    /// write, and while a busy disk held that up for seconds, the events written meanwhile waited
    /// for the next round. The round's events are deleted as they are taken, so a later batch
    /// also finds a smaller id that committed late; if a batch fails, the round is undone but for
    /// what the broker had confirmed, and the failed event and all after it stay, in order.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let mut tx = self.pool.begin().await?;
        let locked = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '-outbox-relay')) AS "locked!""#
        )
        .fetch_one(&mut *tx)
        .await?;
        if !locked {
            return Ok(0);
        }
        let started = Instant::now();
        let mut in_flight: VecDeque<Sent> = VecDeque::new();
        let mut confirmed: Vec<i64> = Vec::new();
        let mut failed: Option<(i64, BusError)> = None;
        let mut take_at = started;
        loop {
            let unconfirmed: usize = in_flight.iter().map(|sent| sent.ids.len()).sum();
            let room = unconfirmed < self.max_unconfirmed && started.elapsed() < self.max_round;
            if room && Instant::now() >= take_at {
                in_flight.extend(self.take(&mut tx).await?);
                take_at = Instant::now() + AWAKE_POLL;
            }
            let Some(oldest) = in_flight.front_mut() else {
                break;
            };
            let outcome = if room {
                tokio::select! {
                    outcome = &mut oldest.confirmation => outcome,
                    _ = tokio::time::sleep_until(take_at.into()) => continue,
                }
            } else {
                (&mut oldest.confirmation).await
            };
            let sent = in_flight
                .pop_front()
                .expect("the batch whose confirmation came");
            // How long a batch waits for the bus (on RabbitMQ, for the broker's confirmations of
            // persistent messages, which follow its disk writes).
            metrics::histogram!("helpdesk_outbox_publish_seconds", "schema" => self.schema.clone())
                .record(sent.at.elapsed().as_secs_f64());
            let ok = outcome.confirmed.min(sent.ids.len());
            confirmed.extend_from_slice(&sent.ids[..ok]);
            if ok < sent.ids.len() {
                let error = outcome
                    .error
                    .unwrap_or_else(|| BusError("the bus left messages unconfirmed".into()));
                failed = Some((sent.ids[ok], error));
                break;
            }
        }
        let Some((failed_id, error)) = failed else {
            if !confirmed.is_empty() {
                // Writers in every replica skip their NOTIFY while this says a relay is polling
                // (see `run` and migrations/kit/0003).
                sqlx::query!(
                    "UPDATE outbox_relay SET awake_until = now() + make_interval(secs => $1)",
                    AWAKE.as_secs_f64(),
                )
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            return Ok(confirmed.len());
        };
        // Batches sent after the failed one are dropped unconfirmed: they stay in the outbox.
        drop(in_flight);
        tx.rollback().await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query!("DELETE FROM outbox WHERE id = ANY($1)", &confirmed[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query!(
            "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
            failed_id,
            error.to_string(),
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Err(error.into())
    }

    /// Takes (deletes, within the round's transaction) the oldest batch of events not yet taken
    /// and hands it to the bus.
    async fn take(&self, tx: &mut PgConnection) -> Result<Option<Sent>, sqlx::Error> {
        let mut rows = sqlx::query!(
            "DELETE FROM outbox WHERE id = ANY(ARRAY( \
                 SELECT id FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)) \
             RETURNING id, event_id, exchange, routing_key, body, headers",
            self.batch_size,
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        rows.sort_unstable_by_key(|row| row.id);
        let mut ids = Vec::with_capacity(rows.len());
        let mut messages = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(row.id);
            let headers = row
                .headers
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            messages.push(OutgoingMessage {
                exchange: row.exchange,
                routing_key: row.routing_key,
                body: row.body.into_bytes(),
                message_id: row.event_id.to_string(),
                headers,
            });
        }
        let at = Instant::now();
        let confirmation = self.bus.send(messages).await;
        Ok(Some(Sent {
            ids,
            confirmation,
            at,
        }))
    }

    /// Unpublished events.
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar!(r#"SELECT count(*) AS "count!" FROM outbox"#)
            .fetch_one(&self.pool)
            .await
    }

    /// Relays until `shutdown`: drains on every notification and every poll interval, backs off
    /// while the broker or the database is unavailable.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut listener = self.listen().await;
        let mut backoff = Duration::from_millis(100);
        // The backlog gauge costs a count: refresh it at most once a second, not on every round.
        let mut gauge_at: Option<Instant> = None;
        // Until when this relay polls on its own (writers skip their NOTIFY meanwhile).
        let mut polling_until: Option<Instant> = None;
        let mut pause = AWAKE_POLL;
        while !shutdown.is_cancelled() {
            let wait = match self.relay_once().await {
                Ok(n) if n as i64 >= self.batch_size => continue,
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    let now = Instant::now();
                    if n > 0 {
                        polling_until = Some(now + AWAKE + AWAKE_GRACE);
                        pause = AWAKE_POLL;
                    } else {
                        pause = (pause * 2).min(AWAKE_POLL_MAX);
                    }
                    polling_until.filter(|until| now < *until).map(|_| pause)
                }
                Err(e) => {
                    tracing::warn!(schema = %self.schema, error = %e, retry_in_ms = backoff.as_millis() as u64, "outbox relay failed");
                    let b = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    Some(b)
                }
            };
            if gauge_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                gauge_at = Some(Instant::now());
                if let Ok(n) = self.backlog().await {
                    metrics::gauge!("helpdesk_outbox_backlog", "schema" => self.schema.clone())
                        .set(n as f64);
                }
            }
            if let Some(delay) = wait {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            let notified = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await.map(|_| ()),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                r = notified => {
                    if r.is_err() {
                        // The listener reconnects on its next use; poll meanwhile.
                        tokio::time::sleep(self.poll_interval.min(Duration::from_millis(500))).await;
                    }
                }
                _ = tokio::time::sleep(self.poll_interval) => {
                    if listener.is_none() {
                        listener = self.listen().await;
                    }
                }
            }
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = crate::db::listener(&self.pool).await.ok()?;
        listener.listen(&channel(&self.schema)).await.ok()?;
        Some(listener)
    }
}
