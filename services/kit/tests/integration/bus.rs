//! The outbox relay and the consumer runner against real PostgreSQL and RabbitMQ.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::{
    Bus, EventHandler, HandlerError, IdempotentConsumer, OutgoingMessage, Received, Subscription,
    topology,
};
use helpdesk_kit::config::Env;
use helpdesk_kit::db::{self, DbConfig};
use helpdesk_kit::events::{Envelope, EventMetadata, USER_EVENTS, UserDeleted};
use helpdesk_kit::http::HttpConfig;
use helpdesk_kit::outbox::{self, EventContext, OutboxRelay};
use helpdesk_kit::peer::PeerClient;
use helpdesk_kit::trace::TraceParent;
use helpdesk_testkit::{
    self as testing, EventTap, amqp_url, database_url, eventually, queue_len, serve, unique,
};

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

struct Fixture {
    pool: PgPool,
    schema: String,
    prefix: String,
}

async fn fixture() -> Fixture {
    testing::require_postgres().await;
    testing::require_rabbitmq().await;
    let schema = unique("t_kit_");
    let cfg = DbConfig {
        url: database_url(),
        schema: schema.clone(),
        max_connections: 5,
        application_name: "helpdesk-test",
    };
    let pool = db::connect(&cfg).await.expect("connect");
    db::migrate(&pool, &NO_MIGRATIONS)
        .await
        .expect("kit tables");
    sqlx::raw_sql("CREATE TABLE effects (event_id UUID NOT NULL, n INT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    Fixture {
        pool,
        schema,
        prefix: format!("{}.", unique("t")),
    }
}

impl Fixture {
    /// Drops the test's schema and what it left on the broker (`subs`' queues, the exchanges).
    async fn finish(self, subs: &[Subscription]) {
        testing::drop_schema(&self.schema).await;
        testing::service::remove_broker_objects(&self.prefix, subs).await;
    }
}

/// Exactly `n` events from `tap`, then nothing more for a moment.
async fn take(tap: &mut EventTap, n: usize) -> Vec<(String, Envelope)> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(tap.next().await);
    }
    tap.assert_quiet(Duration::from_millis(300)).await;
    got
}

/// Exactly `want` messages from a platform queue, then nothing more for a moment.
async fn drain(conn: &Connection, queue: &str, want: usize) -> Vec<(String, Envelope)> {
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "tap".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < want {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("expected message did not arrive")
            .unwrap()
            .unwrap();
        got.push((
            d.routing_key.to_string(),
            serde_json::from_slice(&d.data).unwrap(),
        ));
    }
    // Nothing more within a short grace period.
    if let Ok(Some(Ok(extra))) =
        tokio::time::timeout(Duration::from_millis(300), consumer.next()).await
    {
        panic!(
            "unexpected extra message {:?}",
            String::from_utf8_lossy(&extra.data)
        );
    }
    got
}

fn deleted(id: Uuid) -> UserDeleted {
    UserDeleted {
        id,
        email: format!("{id}@example.com"),
    }
}

#[tokio::test]
async fn committed_events_are_published_once_and_rolled_back_ones_never() {
    let f = fixture().await;
    let mut tap = EventTap::start(&f.prefix, USER_EVENTS).await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let relay = OutboxRelay::new(f.pool.clone(), bus, &f.schema);

    let rolled_back = Uuid::new_v4();
    let mut tx = f.pool.begin().await.unwrap();
    outbox::publish(&mut tx, &deleted(rolled_back), &EventContext::default())
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let committed = Uuid::new_v4();
    let ctx = EventContext {
        correlation_id: Some("req-1".into()),
        user_id: Some(committed),
        causation_id: None,
    };
    let mut tx = f.pool.begin().await.unwrap();
    let env = outbox::publish(&mut tx, &deleted(committed), &ctx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(relay.relay_once().await.unwrap(), 1);
    assert_eq!(
        relay.relay_once().await.unwrap(),
        0,
        "nothing left to publish"
    );
    let got = take(&mut tap, 1).await;
    assert_eq!(got[0].0, "user.deleted");
    assert_eq!(got[0].1, env);
    assert_eq!(got[0].1.aggregate_id, committed.to_string());
    assert_eq!(got[0].1.metadata.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(relay.backlog().await.unwrap(), 0);
    f.finish(&[]).await;
}

#[tokio::test]
async fn events_written_while_the_broker_is_down_are_published_when_it_is_back() {
    let f = fixture().await;
    let mut tap = EventTap::start(&f.prefix, USER_EVENTS).await;
    let down: Arc<dyn Bus> = Arc::new(AmqpBus::new(
        "amqp://guest:guest@127.0.0.1:1/%2f",
        &f.prefix,
    ));
    let relay_down = OutboxRelay::new(f.pool.clone(), down.clone(), &f.schema);
    assert!(!down.healthy().await);

    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        let mut tx = f.pool.begin().await.unwrap();
        outbox::publish(&mut tx, &deleted(*id), &EventContext::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert!(relay_down.relay_once().await.is_err());
    assert_eq!(
        relay_down.backlog().await.unwrap(),
        3,
        "nothing is lost while the broker is down"
    );

    // The broker is back: the running relay (woken by polling) publishes everything, in order.
    let up: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(f.pool.clone(), up, &f.schema)
        .with_poll_interval(Duration::from_millis(100));
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let got = take(&mut tap, 3).await;
    let order: Vec<String> = got.iter().map(|(_, e)| e.aggregate_id.clone()).collect();
    assert_eq!(order, ids.iter().map(|i| i.to_string()).collect::<Vec<_>>());
    shutdown.cancel();
    task.await.unwrap();
    f.finish(&[]).await;
}

#[tokio::test]
async fn relay_wakes_on_notify_without_waiting_for_the_poll() {
    let f = fixture().await;
    let mut tap = EventTap::start(&f.prefix, USER_EVENTS).await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let shutdown = CancellationToken::new();
    // A poll interval far longer than the test's wait: only NOTIFY can wake it in time.
    let relay = OutboxRelay::new(f.pool.clone(), bus, &f.schema)
        .with_poll_interval(Duration::from_secs(60));
    let task = tokio::spawn(relay.run(shutdown.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await; // let it start listening
    let mut tx = f.pool.begin().await.unwrap();
    outbox::publish(&mut tx, &deleted(Uuid::new_v4()), &EventContext::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = take(&mut tap, 1).await;
    assert_eq!(got.len(), 1);
    shutdown.cancel();
    task.await.unwrap();
    f.finish(&[]).await;
}

/// Records each event's effect; fails for events whose email starts with "fail".
struct Recorder {
    calls: AtomicUsize,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let p: UserDeleted = event.payload()?;
        if p.email.starts_with("fail") {
            return Err(HandlerError::Transient("simulated failure".into()));
        }
        sqlx::query("INSERT INTO effects (event_id, n) VALUES ($1, 1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Starts `bus` consuming `sub` with `handler` and waits until its queue exists and is bound.
async fn start_consuming(
    bus: &Arc<AmqpBus>,
    sub: &Subscription,
    handler: Arc<dyn helpdesk_kit::bus::MessageHandler>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let (b, s, consumed) = (bus.clone(), shutdown.clone(), sub.clone());
    let task = tokio::spawn(async move { b.consume(consumed, handler, s).await });
    consumer_started(bus, &sub.queue).await;
    (shutdown, task)
}

/// Waits until `queue` has its consumer. The consumer starts only after it has declared and
/// bound the queue, so a message published from then on reaches it; the queue alone existing
/// is not enough (a message published before its binding exists is not routed to it).
async fn consumer_started(bus: &AmqpBus, queue: &str) {
    let name = bus.name(queue);
    eventually(Duration::from_secs(10), "the queue's consumer", || async {
        let conn = Connection::connect(&amqp_url(), Default::default())
            .await
            .ok()?;
        let ch = conn.create_channel().await.ok()?;
        let queue = testing::queue_state(&ch, &name).await;
        let _ = conn.close(200, "bye".into()).await;
        (queue?.consumer_count() == 1).then_some(())
    })
    .await;
}

async fn publish_raw(prefix: &str, body: &[u8]) {
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        format!("{prefix}{USER_EVENTS}").into(),
        "user.deleted".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

async fn dlq_messages(queue: &str) -> Vec<Vec<u8>> {
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(format!("{queue}.dlq").into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push(m.delivery.data.clone());
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    out
}

#[tokio::test]
async fn consumer_is_idempotent_retries_and_dead_letters_without_blocking() {
    let f = fixture().await;
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    assert!(bus.healthy().await);
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let handler = Arc::new(IdempotentConsumer::new(
        "test",
        f.pool.clone(),
        recorder.clone(),
    ));
    let sub = Subscription {
        queue: "kit-test".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 3,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 8,
    };
    let (shutdown, task) = start_consuming(&bus, &sub, handler).await;
    let queue = bus.name("kit-test");

    let good = Envelope::wrap(&deleted(Uuid::new_v4()), EventMetadata::default());
    let failing = Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "fail@example.com".into(),
        },
        EventMetadata::default(),
    );
    let later = Envelope::wrap(&deleted(Uuid::new_v4()), EventMetadata::default());
    publish_raw(&f.prefix, b"this is not json").await;
    publish_raw(&f.prefix, &serde_json::to_vec(&failing).unwrap()).await;
    publish_raw(&f.prefix, &serde_json::to_vec(&good).unwrap()).await;
    publish_raw(&f.prefix, &serde_json::to_vec(&good).unwrap()).await; // redelivery of the same event
    publish_raw(&f.prefix, &serde_json::to_vec(&later).unwrap()).await;

    let count = |id: Uuid| {
        let pool = f.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM effects WHERE event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    eventually(
        Duration::from_secs(10),
        "later events flow past the failing one",
        || async { (count(later.event_id).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        count(good.event_id).await,
        1,
        "a redelivered event is applied once"
    );
    // The failing message is tried max_attempts times, then dead-lettered with the poison one.
    let dead = tokio::sync::Mutex::new(Vec::new());
    eventually(
        Duration::from_secs(10),
        "dead-lettered messages",
        || async {
            let mut dead = dead.lock().await;
            dead.extend(dlq_messages(&queue).await);
            (dead.len() >= 2).then_some(())
        },
    )
    .await;
    let dead = dead.into_inner();
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().any(|m| m == b"this is not json"));
    assert!(dead.iter().any(|m| {
        serde_json::from_slice::<Envelope>(m).is_ok_and(|e| e.event_id == failing.event_id)
    }));
    assert_eq!(count(failing.event_id).await, 0);
    shutdown.cancel();
    task.await.unwrap();
    f.finish(&[sub]).await;
}

#[tokio::test]
async fn a_platform_bus_keeps_events_for_consumers_that_have_not_started_yet() {
    let f = fixture().await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::for_platform(&amqp_url(), &f.prefix));
    let relay = OutboxRelay::new(f.pool.clone(), bus, &f.schema);
    let id = Uuid::new_v4();
    let mut tx = f.pool.begin().await.unwrap();
    let env = outbox::publish(&mut tx, &deleted(id), &EventContext::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(relay.relay_once().await.unwrap(), 1);

    // No consumer has ever run: the publisher declared every queue of the platform. Queues not
    // bound to user.deleted (notification-service's) get nothing (`drain` checks for extras).
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    for queue in topology::PLATFORM {
        let name = format!("{}{}", f.prefix, queue.name);
        let wants = queue.bindings.iter().any(|(e, p)| {
            *e == USER_EVENTS && (*p == "#" || *p == "user.*" || *p == "user.deleted")
        });
        let got = drain(&conn, &name, usize::from(wants)).await;
        if wants {
            assert_eq!(got[0].1, env, "{name}");
        }
        let ch = conn.create_channel().await.unwrap();
        for q in [name.clone(), format!("{name}.dlq")] {
            ch.queue_delete(q.as_str().into(), Default::default())
                .await
                .unwrap();
        }
    }
    f.finish(&[]).await;
}

#[tokio::test]
async fn declaring_a_queue_removes_the_bindings_earlier_versions_made() {
    testing::require_rabbitmq().await;
    let prefix = format!("{}.", unique("t"));
    let bus = AmqpBus::new(&amqp_url(), &prefix);
    let dashboard = topology::ADMIN_TICKETS.subscription(1, Duration::from_secs(1));
    bus.declare(&dashboard).await.unwrap();
    let queue = bus.name(dashboard.queue.as_str());
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // What the version before made: every ticket event to the dashboard.
    ch.queue_bind(
        queue.as_str().into(),
        bus.name("ticket.events").into(),
        "ticket.*".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let comment = |id: &str| OutgoingMessage {
        exchange: "ticket.events".into(),
        routing_key: "ticket.comment_added".into(),
        body: b"{}".to_vec(),
        message_id: id.into(),
        headers: Default::default(),
    };
    let waiting = || async { queue_len(&ch, &queue).await.expect("the dashboard queue") };
    // Publishing waits for the broker's confirmation, so routing is done when it returns.
    assert_eq!(bus.publish(&[comment("1")]).await.confirmed, 1);
    assert_eq!(waiting().await, 1, "the old binding routes comments");

    bus.declare(&dashboard).await.unwrap();
    assert_eq!(bus.publish(&[comment("2")]).await.confirmed, 1);
    assert_eq!(waiting().await, 1, "no longer routed after the upgrade");
    testing::service::remove_broker_objects(&prefix, &[dashboard]).await;
}

struct TraceRecorder {
    seen: std::sync::Mutex<Vec<Option<TraceParent>>>,
}

#[async_trait]
impl EventHandler for TraceRecorder {
    async fn handle(&self, _tx: &mut PgConnection, _event: &Envelope) -> Result<(), HandlerError> {
        self.seen.lock().unwrap().push(TraceParent::current());
        Ok(())
    }
}

#[tokio::test]
async fn a_request_trace_follows_its_calls_and_events_to_their_consumers() {
    let f = fixture().await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let cfg = HttpConfig::from_env(&Env::from_map([("BIND_ADDR", "127.0.0.1:0")])).unwrap();

    // A peer that answers with the traceparent it was called with.
    let peer = helpdesk_kit::http::finish(
        axum::Router::new().route(
            "/echo",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                axum::Json(serde_json::json!({
                    "traceparent": headers.get("traceparent").and_then(|v| v.to_str().ok()),
                }))
            }),
        ),
        "peer",
        &cfg,
    );
    let peer_addr = serve(peer).await;
    let client = Arc::new(PeerClient::new(
        "peer",
        &format!("http://{peer_addr}"),
        None,
        Duration::from_secs(5),
        0,
    ));

    // A route that calls the peer and records an event.
    let pool = f.pool.clone();
    let route = move || {
        let (pool, client) = (pool.clone(), client.clone());
        async move {
            let echoed: serde_json::Value = client
                .call::<(), _>(axum::http::Method::GET, "/echo", None, None, true)
                .await
                .unwrap();
            let mut tx = pool.begin().await.unwrap();
            outbox::publish(&mut tx, &deleted(Uuid::new_v4()), &EventContext::default())
                .await
                .unwrap();
            tx.commit().await.unwrap();
            axum::Json(echoed)
        }
    };
    let service = helpdesk_kit::http::finish(
        axum::Router::new().route("/act", axum::routing::post(route)),
        "service",
        &cfg,
    );
    let addr = serve(service).await;

    let incoming =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let echoed: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/act"))
        .header("traceparent", incoming.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let called_with = TraceParent::parse(echoed["traceparent"].as_str().unwrap_or(""))
        .expect("the peer was called with a traceparent");
    assert_eq!(called_with.trace_id, incoming.trace_id, "same trace");
    assert_ne!(
        called_with.parent_id, incoming.parent_id,
        "the service's own span is the parent of the call"
    );

    let recorder = Arc::new(TraceRecorder {
        seen: Default::default(),
    });
    let sub = Subscription {
        queue: "trace-test".into(),
        bindings: vec![(USER_EVENTS.into(), "#".into())],
        max_attempts: 1,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let relay = OutboxRelay::new(f.pool.clone(), bus.clone(), &f.schema);
    assert_eq!(relay.relay_once().await.unwrap(), 1);
    let handler = Arc::new(IdempotentConsumer::new(
        "trace-test",
        f.pool.clone(),
        recorder.clone(),
    ));
    let shutdown = CancellationToken::new();
    let (b, s) = (bus.clone(), shutdown.clone());
    let task = tokio::spawn(async move { b.consume(sub, handler, s).await });
    let seen = eventually(Duration::from_secs(10), "the event consumed", || async {
        let seen = recorder.seen.lock().unwrap().clone();
        (!seen.is_empty()).then_some(seen)
    })
    .await;
    let consumer_trace = seen[0].expect("the consumer runs inside a trace");
    assert_eq!(
        consumer_trace.trace_id, incoming.trace_id,
        "the event carried the request's trace to its consumer"
    );
    shutdown.cancel();
    task.await.unwrap();
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in ["trace-test", "trace-test.dlq"] {
        let _ = ch
            .queue_delete(
                format!("{}{q}", f.prefix).as_str().into(),
                Default::default(),
            )
            .await;
    }
    f.finish(&[]).await;
}

/// Reliability item 1 on RabbitMQ: the consumer's database is down for longer than
/// `max_attempts` retries would last. Nothing may reach the dead-letter queue; once the database
/// is back, every event is applied exactly once.
#[tokio::test]
async fn a_consumer_database_outage_never_dead_letters_and_nothing_is_lost() {
    let f = fixture().await;
    let proxy = testing::Proxy::start(Some(testing::postgres_addr())).await;
    let app = db::connect(&DbConfig {
        url: testing::database_url_via(proxy.addr),
        schema: f.schema.clone(),
        max_connections: 2,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect through the proxy");
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let handler = Arc::new(IdempotentConsumer::new("test", app.clone(), recorder));
    let sub = Subscription {
        queue: "kit-outage".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 2,
        retry_base_delay: Duration::from_millis(20),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let queue = bus.name("kit-outage");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (bus, sub, shutdown) = (bus.clone(), sub.clone(), shutdown.clone());
        async move { bus.consume(sub, handler, shutdown).await }
    });

    proxy.set(None);
    let events: Vec<Envelope> = (0..3)
        .map(|_| Envelope::wrap(&deleted(Uuid::new_v4()), EventMetadata::default()))
        .collect();
    for e in &events {
        publish_raw(&f.prefix, &serde_json::to_vec(e).unwrap()).await;
    }
    eventually(
        Duration::from_secs(30),
        "the consumer to try during the outage",
        || async { (proxy.refused() >= 6).then_some(()) },
    )
    .await;
    assert!(
        dlq_messages(&queue).await.is_empty(),
        "an outage is not the message's fault"
    );
    proxy.set(Some(testing::postgres_addr()));
    let count = |id: Uuid| {
        let pool = f.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM effects WHERE event_id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    for e in &events {
        eventually(
            Duration::from_secs(40),
            "the event applied after the outage",
            || async { (count(e.event_id).await == 1).then_some(()) },
        )
        .await;
    }
    assert!(dlq_messages(&queue).await.is_empty());
    shutdown.cancel();
    task.await.unwrap();
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [
        queue.clone(),
        format!("{queue}.dlq"),
        format!("{queue}.retry.20ms"),
    ] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    f.finish(&[]).await;
}

/// Fails while `failing` is set, then applies the effect.
struct Flaky {
    failing: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl EventHandler for Flaky {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(HandlerError::Transient("the data is not ready yet".into()));
        }
        sqlx::query("INSERT INTO effects (event_id, n) VALUES ($1, 1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// `helpdesk dlq` on RabbitMQ: a dead letter is listed (without being consumed) with its
/// attempts and error, and a replay hands it back so the consumer applies it once.
#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once() {
    use helpdesk_kit::bus::dlq::DeadLetters;
    let f = fixture().await;
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let flaky = Arc::new(Flaky {
        failing: std::sync::atomic::AtomicBool::new(true),
    });
    let handler = Arc::new(IdempotentConsumer::new(
        "test",
        f.pool.clone(),
        flaky.clone(),
    ));
    let sub = Subscription {
        queue: "kit-dlq".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 2,
        retry_base_delay: Duration::from_millis(20),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (bus, sub, shutdown) = (bus.clone(), sub.clone(), shutdown.clone());
        async move { bus.consume(sub, handler, shutdown).await }
    });
    let event = Envelope::wrap(&deleted(Uuid::new_v4()), EventMetadata::default());
    let outcome = bus
        .publish(&[OutgoingMessage {
            exchange: USER_EVENTS.into(),
            routing_key: "user.deleted".into(),
            body: serde_json::to_vec(&event).unwrap(),
            message_id: event.event_id.to_string(),
            headers: Default::default(),
        }])
        .await;
    assert!(outcome.error.is_none());
    let dead = eventually(Duration::from_secs(20), "the dead letter", || async {
        let dead = bus.list("kit-dlq").await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, event.event_id.to_string());
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].last_error.as_deref().unwrap().contains("not ready"));
    assert_eq!(
        bus.list("kit-dlq").await.unwrap().len(),
        1,
        "listing leaves it there"
    );
    assert_eq!(bus.replay("kit-dlq", Some("another-id")).await.unwrap(), 0);
    assert_eq!(bus.list("kit-dlq").await.unwrap().len(), 1);

    flaky.failing.store(false, Ordering::SeqCst);
    assert_eq!(bus.replay("kit-dlq", None).await.unwrap(), 1);
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM effects WHERE event_id = $1")
            .bind(event.event_id)
            .fetch_one(&f.pool)
            .await
            .unwrap()
    };
    eventually(
        Duration::from_secs(20),
        "the replayed event applied",
        || async { (count().await == 1).then_some(()) },
    )
    .await;
    assert!(bus.list("kit-dlq").await.unwrap().is_empty());
    shutdown.cancel();
    task.await.unwrap();
    let queue = bus.name("kit-dlq");
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in [
        queue.clone(),
        format!("{queue}.dlq"),
        format!("{queue}.retry.20ms"),
    ] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    f.finish(&[]).await;
}

/// Keeps the bodies it is handed.
struct Bodies(tokio::sync::Mutex<Vec<Vec<u8>>>);

#[async_trait]
impl helpdesk_kit::bus::MessageHandler for Bodies {
    async fn handle(&self, body: &[u8]) -> Result<(), HandlerError> {
        self.0.lock().await.push(body.to_vec());
        Ok(())
    }
}

/// The platform asks RabbitMQ for small frames (lapin buffers 32 frames per connection up
/// front); a message many frames long still goes out and comes back whole.
#[tokio::test]
async fn a_message_larger_than_a_frame_is_published_and_consumed_whole() {
    testing::require_rabbitmq().await;
    let prefix = format!("{}.", unique("t"));
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
    assert!(bus.healthy().await);
    let sub = Subscription {
        queue: "kit-large".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 3,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 8,
    };
    let bodies = Arc::new(Bodies(tokio::sync::Mutex::new(Vec::new())));
    let (shutdown, task) = start_consuming(&bus, &sub, bodies.clone()).await;

    // 300 KB: about twenty of the platform's frames.
    let large: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let outcome = bus
        .publish(&[OutgoingMessage {
            exchange: USER_EVENTS.into(),
            routing_key: "user.deleted".into(),
            body: large.clone(),
            message_id: Uuid::new_v4().to_string(),
            headers: Default::default(),
        }])
        .await;
    assert_eq!((outcome.confirmed, outcome.error.is_none()), (1, true));
    let got = eventually(Duration::from_secs(10), "the large message", || async {
        bodies.0.lock().await.first().cloned()
    })
    .await;
    assert!(got == large, "the body arrived whole ({} bytes)", got.len());
    shutdown.cancel();
    let _ = task.await;
    testing::service::remove_broker_objects(&prefix, &[sub]).await;
}

/// Records the size of every batch it is handed.
struct BatchSizes(std::sync::Mutex<Vec<usize>>);

#[async_trait]
impl helpdesk_kit::bus::MessageHandler for BatchSizes {
    async fn handle(&self, _body: &[u8]) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(1);
        Ok(())
    }

    async fn handle_batch(&self, messages: &[Received<'_>]) -> Vec<Result<(), HandlerError>> {
        self.0.lock().unwrap().push(messages.len());
        messages.iter().map(|_| Ok(())).collect()
    }
}

#[tokio::test]
async fn under_load_a_batch_waits_briefly_for_the_messages_right_behind_it() {
    let f = fixture().await;
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let sizes = Arc::new(BatchSizes(Default::default()));
    let sub = Subscription {
        queue: "linger-test".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 1,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 64,
    };
    bus.declare(&sub).await.unwrap();
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(Default::default()).await.unwrap();
    let publish = |n: usize| {
        let ch = ch.clone();
        let exchange = format!("{}{USER_EVENTS}", f.prefix);
        async move {
            let body = serde_json::to_vec(&Envelope::wrap(
                &deleted(Uuid::new_v4()),
                EventMetadata::default(),
            ))
            .unwrap();
            let mut confirms = Vec::with_capacity(n);
            for _ in 0..n {
                confirms.push(
                    ch.basic_publish(
                        exchange.as_str().into(),
                        "user.deleted".into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default(),
                    )
                    .await
                    .unwrap(),
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for confirm in confirms {
                confirm.await.unwrap();
            }
        }
    };
    let handled = |want: usize| {
        let sizes = sizes.clone();
        async move {
            eventually(Duration::from_secs(10), "all handled", || async {
                (sizes.0.lock().unwrap().iter().sum::<usize>() == want).then_some(())
            })
            .await
        }
    };

    // A backlog waiting when the consumer starts.
    publish(16).await;
    let (shutdown, task) = start_consuming(&bus, &sub, sizes.clone()).await;
    handled(16).await;
    let before = sizes.0.lock().unwrap().len();
    // Then messages a millisecond apart: after the first, each comes right behind a batch, so
    // they are taken together, not one transaction each.
    publish(6).await;
    handled(22).await;
    let later = sizes.0.lock().unwrap()[before..].to_vec();
    assert!(
        later.len() < 6,
        "six messages in quick succession came in {} batches: {later:?}",
        later.len()
    );
    shutdown.cancel();
    task.await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    f.finish(&[sub]).await;
}

/// A fresh prefix and a bus for it whose queue `queue` (batches of `prefetch`) is declared and holds the
/// messages `m0`, `m1`, ... `m{n-1}`, published in that order and confirmed, before any consumer
/// starts.
async fn backlog(queue: &str, prefetch: u16, n: usize) -> (String, Arc<AmqpBus>, Subscription) {
    testing::require_rabbitmq().await;
    let prefix = format!("{}.", unique("t"));
    let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
    let sub = Subscription {
        queue: queue.into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 1,
        retry_base_delay: Duration::from_millis(20),
        prefetch,
    };
    bus.declare(&sub).await.unwrap();
    for i in 0..n {
        publish_raw(&prefix, format!("m{i}").as_bytes()).await;
    }
    (prefix, bus, sub)
}

/// Holds the first batch it is handed until `release` is notified; records every batch.
struct HoldsFirstBatch {
    batches: std::sync::Mutex<Vec<usize>>,
    release: tokio::sync::Notify,
}

#[async_trait]
impl helpdesk_kit::bus::MessageHandler for HoldsFirstBatch {
    async fn handle(&self, _body: &[u8]) -> Result<(), HandlerError> {
        Ok(())
    }

    async fn handle_batch(&self, messages: &[Received<'_>]) -> Vec<Result<(), HandlerError>> {
        let first = {
            let mut batches = self.batches.lock().unwrap();
            batches.push(messages.len());
            batches.len() == 1
        };
        if first {
            self.release.notified().await;
        }
        messages.iter().map(|_| Ok(())).collect()
    }
}

/// While a consumer handles a batch, the broker already delivers the batches behind it (a
/// window of two batches), so a loaded consumer never waits for its window to refill; a batch
/// is still at most `prefetch` messages.
#[tokio::test]
async fn while_a_batch_is_handled_the_next_batches_are_already_delivered() {
    let (prefix, bus, sub) = backlog("kit-window", 8, 40).await;
    let handler = Arc::new(HoldsFirstBatch {
        batches: Default::default(),
        release: tokio::sync::Notify::new(),
    });
    let (shutdown, task) = start_consuming(&bus, &sub, handler.clone()).await;
    let queue = bus.name(&sub.queue);
    let conn = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    // The first batch (what had arrived when the first message came, at most 8) is held; the
    // broker hands out 16 in all, so 24 are left waiting.
    eventually(
        Duration::from_secs(10),
        "16 messages in flight while the first batch is held",
        || async { (queue_len(&ch, &queue).await == Some(24)).then_some(()) },
    )
    .await;
    let held = handler.batches.lock().unwrap().clone();
    assert!(held.len() == 1 && held[0] <= 8, "one batch held: {held:?}");
    handler.release.notify_one();
    eventually(Duration::from_secs(10), "all 40 handled", || async {
        (handler.batches.lock().unwrap().iter().sum::<usize>() == 40).then_some(())
    })
    .await;
    let batches = handler.batches.lock().unwrap().clone();
    assert!(
        batches.iter().all(|&n| n <= 8),
        "batches of at most 8: {batches:?}"
    );
    eventually(
        Duration::from_secs(10),
        "every message acknowledged",
        || async { (queue_len(&ch, &queue).await == Some(0)).then_some(()) },
    )
    .await;
    shutdown.cancel();
    task.await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
    testing::service::remove_broker_objects(&prefix, &[sub]).await;
}

/// Answers "unavailable" for the message `m0` the first `outage` times, records the order in
/// which messages were handled successfully.
struct DownForFirst {
    outage: AtomicUsize,
    handled: std::sync::Mutex<Vec<String>>,
}

#[async_trait]
impl helpdesk_kit::bus::MessageHandler for DownForFirst {
    async fn handle(&self, body: &[u8]) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(body).into_owned();
        if body == "m0"
            && self
                .outage
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Err(HandlerError::Unavailable("the database is down".into()));
        }
        self.handled.lock().unwrap().push(body);
        Ok(())
    }
}

/// A message deferred by an outage is handled again before the messages behind it, although the
/// broker has already delivered those (they wait in the consumer's window): per-aggregate order
/// survives an outage. It is never dead-lettered, and each message is handled once.
#[tokio::test]
async fn a_deferred_message_is_handled_again_before_the_messages_behind_it() {
    let (prefix, bus, sub) = backlog("kit-deferred-order", 1, 4).await;
    let handler = Arc::new(DownForFirst {
        outage: AtomicUsize::new(3),
        handled: Default::default(),
    });
    let (shutdown, task) = start_consuming(&bus, &sub, handler.clone()).await;
    eventually(Duration::from_secs(20), "all four handled", || async {
        (handler.handled.lock().unwrap().len() >= 4).then_some(())
    })
    .await;
    // Nothing more comes (a message handed back would be handled twice).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        *handler.handled.lock().unwrap(),
        vec!["m0", "m1", "m2", "m3"],
        "in order, each once"
    );
    assert_eq!(
        handler.outage.load(Ordering::SeqCst),
        0,
        "m0 was tried 4 times"
    );
    assert!(dlq_messages(&bus.name(&sub.queue)).await.is_empty());
    shutdown.cancel();
    task.await.unwrap();
    testing::service::remove_broker_objects(&prefix, &[sub]).await;
}

/// A relay round publishes its whole batch at once (the publishes are queued before any is
/// awaited): every event arrives once, in the order of the outbox, and the round counts them all
/// as confirmed.
#[tokio::test]
async fn a_relay_round_publishes_its_batch_in_outbox_order() {
    let f = fixture().await;
    let mut tap = EventTap::start(&f.prefix, USER_EVENTS).await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let relay = OutboxRelay::new(f.pool.clone(), bus, &f.schema);
    let mut written = Vec::new();
    let mut tx = f.pool.begin().await.unwrap();
    for _ in 0..150 {
        let id = Uuid::new_v4();
        outbox::publish(&mut tx, &deleted(id), &EventContext::default())
            .await
            .unwrap();
        written.push(id.to_string());
    }
    tx.commit().await.unwrap();

    assert_eq!(relay.relay_once().await.unwrap(), 150);
    let got: Vec<String> = take(&mut tap, 150)
        .await
        .into_iter()
        .map(|(_, e)| e.aggregate_id)
        .collect();
    assert_eq!(got, written);
    assert_eq!(relay.backlog().await.unwrap(), 0);
    f.finish(&[]).await;
}

/// Each relay round's wait for the bus (on RabbitMQ, the broker's confirmations) is on
/// `/metrics`, per outbox: the outbox backlog grows by what is written while a round waits.
#[tokio::test]
async fn a_relay_round_records_how_long_it_waited_for_the_bus() {
    let metrics = helpdesk_kit::telemetry::prometheus();
    let f = fixture().await;
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &f.prefix));
    let relay = OutboxRelay::new(f.pool.clone(), bus, &f.schema);
    let count = format!(
        "helpdesk_outbox_publish_seconds_count{{schema=\"{}\"}}",
        f.schema
    );
    for round in 1..=2 {
        let mut tx = f.pool.begin().await.unwrap();
        for _ in 0..3 {
            outbox::publish(&mut tx, &deleted(Uuid::new_v4()), &EventContext::default())
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        assert_eq!(relay.relay_once().await.unwrap(), 3);
        let text = metrics.render();
        assert!(
            text.lines().any(|l| l == format!("{count} {round}")),
            "round {round} not counted in:\n{text}"
        );
    }
    // A round that finds nothing to publish does not wait for the bus and is not counted.
    assert_eq!(relay.relay_once().await.unwrap(), 0);
    assert!(metrics.render().lines().any(|l| l == format!("{count} 2")));
    f.finish(&[]).await;
}

/// The TCP connections this process holds open to `port`: its socket descriptors matched by inode
/// against the kernel's table of established connections.
fn connections_to(port: u16) -> usize {
    let sockets: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let port = format!(":{port:04X}");
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|row| {
                    // sl local_address rem_address st ... inode (the 10th column)
                    let cols: Vec<&str> = row.split_whitespace().collect();
                    cols.len() > 9
                        && cols[2].ends_with(&port)
                        && cols[3] == "01"
                        && sockets.contains(cols[9])
                })
                .count()
        })
        .sum()
}

/// Consumers of several queues (all bound to the user events) on one bus, each recording what it
/// handled.
struct Consumers {
    prefix: String,
    bus: Arc<AmqpBus>,
    running: Vec<(
        Subscription,
        Arc<BatchSizes>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Consumers {
    async fn start(queues: &[&str]) -> Self {
        testing::require_rabbitmq().await;
        let prefix = format!("{}.", unique("t"));
        let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
        let mut running = Vec::new();
        for queue in queues {
            let sub = Subscription {
                queue: queue.to_string(),
                bindings: vec![(USER_EVENTS.into(), "user.*".into())],
                max_attempts: 1,
                retry_base_delay: Duration::from_millis(20),
                prefetch: 8,
            };
            let handled = Arc::new(BatchSizes(Default::default()));
            let (shutdown, task) = start_consuming(&bus, &sub, handled.clone()).await;
            running.push((sub, handled, shutdown, task));
        }
        Self {
            prefix,
            bus,
            running,
        }
    }

    /// Publishes `n` user events through the bus (its publisher connection).
    async fn publish(&self, n: usize) {
        for _ in 0..n {
            let message = OutgoingMessage {
                exchange: USER_EVENTS.into(),
                routing_key: "user.deleted".into(),
                message_id: Uuid::new_v4().to_string(),
                headers: Default::default(),
                body: b"{}".to_vec(),
            };
            assert_eq!(self.bus.publish(&[message]).await.confirmed, 1);
        }
    }

    /// Waits until every consumer has handled `n` messages.
    async fn handled(&self, n: usize) {
        eventually(
            Duration::from_secs(10),
            "every consumer handled them",
            || async {
                self.running
                    .iter()
                    .all(|(_, handled, _, _)| handled.0.lock().unwrap().iter().sum::<usize>() == n)
                    .then_some(())
            },
        )
        .await;
    }

    async fn stop(self) {
        let mut subs = Vec::new();
        for (sub, _, shutdown, task) in self.running {
            shutdown.cancel();
            task.await.unwrap();
            subs.push(sub);
        }
        testing::service::remove_broker_objects(&self.prefix, &subs).await;
    }
}

/// Waits until this process holds exactly two connections to the broker (the test's own
/// short-lived connections, for queue checks, close soon after use).
async fn two_connections_to_the_broker() {
    let broker: lapin::uri::AMQPUri = amqp_url().parse().unwrap();
    eventually(
        Duration::from_secs(10),
        "two connections to the broker",
        || async { (connections_to(broker.authority.port) == 2).then_some(()) },
    )
    .await;
}

/// A service's consumers share one connection to the broker, with a channel each, and the
/// publisher has one of its own: two connections (and two lapin I/O threads) however many queues
/// the service consumes, where there used to be one per consumer.
#[tokio::test]
async fn the_consumers_of_a_bus_share_one_connection_and_the_publisher_has_its_own() {
    let consumers = Consumers::start(&["shared-0", "shared-1", "shared-2", "shared-3"]).await;
    consumers.publish(1).await;
    consumers.handled(1).await;
    two_connections_to_the_broker().await;
    consumers.stop().await;
}

/// A consumer that loses its channel (here the broker cancels it: its queue was deleted) comes
/// back on a new channel of the shared connection; the other consumers on that connection go on
/// as if nothing happened, and the connection is not replaced.
#[tokio::test]
async fn a_consumer_that_loses_its_channel_comes_back_and_the_others_go_on() {
    let consumers = Consumers::start(&["channel-lost", "channel-kept"]).await;
    let lost = consumers.bus.name("channel-lost");
    let admin = Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = admin.create_channel().await.unwrap();
    ch.queue_delete(
        lost.as_str().into(),
        lapin::options::QueueDeleteOptions::default(),
    )
    .await
    .unwrap();
    // The cancelled consumer declares its queue again (with its bindings) and consumes.
    consumer_started(&consumers.bus, "channel-lost").await;
    consumers.publish(3).await;
    consumers.handled(3).await;
    let _ = admin.close(200, "bye".into()).await;
    two_connections_to_the_broker().await;
    consumers.stop().await;
}
