//! The in-process (PostgreSQL) bus: routing, idempotent consumption, retries and dead letters,
//! and the outbox relay on top of it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::stand_in::StandInBus;
use helpdesk_kit::bus::postgres::PgBus;
use helpdesk_kit::bus::topology;
use helpdesk_kit::bus::{
    Bus, EventHandler, HandlerError, IdempotentConsumer, MessageHandler, OutgoingMessage, Received,
    Subscription,
};
use helpdesk_kit::db::{self, DbConfig};
use helpdesk_kit::events::{Envelope, EventMetadata, USER_EVENTS, UserDeleted};
use helpdesk_kit::outbox::{self, EventContext, OutboxRelay};
use helpdesk_testkit::{self as testing, database_url, eventually, unique};

static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

pub(crate) async fn pool(schema: &str) -> PgPool {
    let cfg = DbConfig {
        url: database_url(),
        schema: schema.to_string(),
        max_connections: 5,
        application_name: "helpdesk-test",
    };
    let pool = db::connect(&cfg).await.expect("connect");
    db::migrate(&pool, &NO_MIGRATIONS)
        .await
        .expect("kit tables");
    pool
}

/// A service schema with the kit's tables and the `effects` table the test handler writes.
async fn app_pool(schema: &str) -> PgPool {
    let app = pool(schema).await;
    sqlx::raw_sql("CREATE TABLE effects (event_id UUID NOT NULL)")
        .execute(&app)
        .await
        .unwrap();
    app
}

/// How many times the test handler applied `id`.
async fn effects(app: &PgPool, id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM effects WHERE event_id = $1")
        .bind(id)
        .fetch_one(app)
        .await
        .unwrap()
}

struct Recorder {
    calls: AtomicUsize,
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let p: UserDeleted = event.payload()?;
        if p.email.starts_with("panic") {
            panic!("a handler bug");
        }
        if p.email.starts_with("fail") {
            return Err(HandlerError::Transient("simulated failure".into()));
        }
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn raw(body: Vec<u8>) -> OutgoingMessage {
    OutgoingMessage {
        exchange: USER_EVENTS.into(),
        routing_key: "user.deleted".into(),
        body,
        message_id: Uuid::new_v4().to_string(),
        headers: Default::default(),
    }
}

#[tokio::test]
async fn in_process_bus_has_the_same_delivery_semantics() {
    testing::require_postgres().await;
    let (bus_schema, app_schema) = (unique("t_bus_"), unique("t_app_"));
    let bus = Arc::new(PgBus::new(pool(&bus_schema).await).await.unwrap());
    let app = app_pool(&app_schema).await;

    let sub = Subscription {
        queue: "test.events".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 3,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let handler = Arc::new(IdempotentConsumer::new(
        "test",
        app.clone(),
        recorder.clone(),
    ));

    // Published through the outbox relay, before the consumer runs: kept for it.
    let id = Uuid::new_v4();
    let mut tx = app.begin().await.unwrap();
    let good = outbox::publish(
        &mut tx,
        &UserDeleted {
            id,
            email: "a@example.com".into(),
        },
        &EventContext::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let relay = OutboxRelay::new(app.clone(), bus.clone(), &app_schema);
    assert_eq!(relay.relay_once().await.unwrap(), 1);

    let failing = Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "fail@example.com".into(),
        },
        EventMetadata::default(),
    );
    let panicking = Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "panic@example.com".into(),
        },
        EventMetadata::default(),
    );
    let later = Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "b@example.com".into(),
        },
        EventMetadata::default(),
    );
    let unrouted = OutgoingMessage {
        routing_key: "nothing.here".into(),
        exchange: "other.events".into(),
        ..raw(b"{}".to_vec())
    };
    let out = bus
        .publish(&[
            raw(b"not json".to_vec()),
            raw(serde_json::to_vec(&failing).unwrap()),
            raw(serde_json::to_vec(&panicking).unwrap()),
            raw(serde_json::to_vec(&good).unwrap()), // a redelivery of the relayed event
            raw(serde_json::to_vec(&later).unwrap()),
            unrouted,
        ])
        .await;
    assert_eq!(out.confirmed, 6);
    assert!(out.error.is_none());

    let shutdown = CancellationToken::new();
    let (b, s) = (bus.clone(), shutdown.clone());
    let task = tokio::spawn(async move { b.consume(sub, handler, s).await });
    eventually(Duration::from_secs(10), "the later event", || async {
        (effects(&app, later.event_id).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        effects(&app, good.event_id).await,
        1,
        "redelivery applied once"
    );
    let dead = eventually(Duration::from_secs(10), "three dead letters", || async {
        let d = bus.dead_letters("test.events").await.unwrap();
        (d.len() == 3).then_some(d)
    })
    .await;
    assert_eq!(dead[0].0, b"not json");
    assert!(
        dead[1]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("simulated failure")
    );
    let panicked = dead[2].1.as_deref().unwrap_or("");
    assert!(
        panicked.contains("panicked"),
        "a panicking handler is a failed attempt: {panicked}"
    );
    // Failing and panicking: 3 deliveries each; a delivery that arrives in a batch is tried once
    // in the batch and once on its own after the batch is rolled back.
    let calls = recorder.calls.load(Ordering::SeqCst);
    assert!(
        (1 + 3 + 3 + 1..=2 * (1 + 3 + 3 + 1)).contains(&calls),
        "good once, failing and panicking 3 deliveries each, later once: {calls} calls"
    );
    shutdown.cancel();
    task.await.unwrap();
    testing::drop_schema(&bus_schema).await;
    testing::drop_schema(&app_schema).await;
}

fn user_deleted(email: &str) -> Envelope {
    Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: email.into(),
        },
        EventMetadata::default(),
    )
}

#[tokio::test]
async fn a_backlog_is_handled_in_one_transaction_with_an_outcome_per_message() {
    testing::require_postgres().await;
    let schema = unique("t_batch_");
    let app = app_pool(&schema).await;
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let consumer = IdempotentConsumer::new("test", app.clone(), recorder.clone());
    let body = |e: &Envelope| serde_json::to_vec(e).unwrap();

    let earlier = user_deleted("earlier@example.com");
    consumer.handle(&body(&earlier)).await.unwrap();
    let (one, two) = (
        user_deleted("one@example.com"),
        user_deleted("two@example.com"),
    );
    let bodies = [
        body(&one),
        b"not json".to_vec(),
        body(&one), // the same event twice in one batch
        body(&two),
        body(&earlier), // handled before
    ];
    let refs: Vec<Received<'_>> = bodies
        .iter()
        .map(|b| Received {
            body: b.as_slice(),
            traceparent: None,
        })
        .collect();
    let outcomes = consumer.handle_batch(&refs).await;
    assert_eq!(outcomes.len(), 5);
    assert!(
        outcomes[0].is_ok() && outcomes[2].is_ok() && outcomes[3].is_ok() && outcomes[4].is_ok()
    );
    assert!(matches!(outcomes[1], Err(HandlerError::Permanent(_))));
    assert_eq!(
        (
            effects(&app, one.event_id).await,
            effects(&app, two.event_id).await,
            effects(&app, earlier.event_id).await
        ),
        (1, 1, 1),
        "each event applied exactly once"
    );
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 3);

    // One failure rolls the batch back; the others still commit, each with its own outcome.
    let (three, failing, four) = (
        user_deleted("three@example.com"),
        user_deleted("fail@example.com"),
        user_deleted("four@example.com"),
    );
    let bodies = [body(&three), body(&failing), body(&four)];
    let refs: Vec<Received<'_>> = bodies
        .iter()
        .map(|b| Received {
            body: b.as_slice(),
            traceparent: None,
        })
        .collect();
    let outcomes = consumer.handle_batch(&refs).await;
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok());
    assert!(matches!(outcomes[1], Err(HandlerError::Transient(_))));
    assert_eq!(
        (
            effects(&app, three.event_id).await,
            effects(&app, four.event_id).await
        ),
        (1, 1)
    );
    // The failed event was not recorded as handled: its redelivery is applied.
    let processed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = $1")
            .bind(failing.event_id)
            .fetch_one(&app)
            .await
            .unwrap();
    assert_eq!(processed, 0);
    testing::drop_schema(&schema).await;
}

#[tokio::test]
async fn handled_events_are_forgotten_after_the_retention() {
    testing::require_postgres().await;
    let schema = unique("t_prune_");
    let app = app_pool(&schema).await;
    let (old, recent, others) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO processed_events (consumer, event_id, processed_at) VALUES \
         ('test', $1, now() - interval '8 days'), ('test', $2, now() - interval '1 day'), \
         ('other', $3, now() - interval '8 days')",
    )
    .bind(old)
    .bind(recent)
    .bind(others)
    .execute(&app)
    .await
    .unwrap();
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let consumer = IdempotentConsumer::new("test", app.clone(), recorder);
    let event = user_deleted("new@example.com");
    consumer
        .handle(&serde_json::to_vec(&event).unwrap())
        .await
        .unwrap();
    // Handling starts the first prune in the background.
    let remembered = eventually(Duration::from_secs(10), "the old record pruned", || async {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT event_id FROM processed_events WHERE consumer = 'test' ORDER BY processed_at",
        )
        .fetch_all(&app)
        .await
        .unwrap();
        (!ids.contains(&old)).then_some(ids)
    })
    .await;
    assert_eq!(remembered, vec![recent, event.event_id]);
    let other: i64 =
        sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE consumer = 'other'")
            .fetch_one(&app)
            .await
            .unwrap();
    assert_eq!(other, 1, "another consumer's records are its own business");
    testing::drop_schema(&schema).await;
}

#[tokio::test]
async fn declaring_removes_the_bindings_earlier_versions_made() {
    testing::require_postgres().await;
    let schema = unique("t_bus_");
    let pool = pool(&schema).await;
    let bus = PgBus::new(pool.clone()).await.unwrap();
    topology::declare_all(&bus).await.unwrap();
    // What the version before made: every ticket event to the dashboard.
    sqlx::query(
        "INSERT INTO bus_bindings (queue, exchange, pattern) \
         VALUES ('admin-service.tickets', 'ticket.events', 'ticket.*')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let ticket_event = |key: &str| OutgoingMessage {
        exchange: "ticket.events".into(),
        routing_key: key.into(),
        body: b"{}".to_vec(),
        message_id: Uuid::new_v4().to_string(),
        headers: Default::default(),
    };
    let waiting = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM bus_messages WHERE queue = 'admin-service.tickets'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    // A fresh bus has no cached bindings yet: this publish sees the old one.
    bus.publish(&[ticket_event("ticket.comment_added")]).await;
    assert_eq!(waiting().await, 1, "the old binding routes comments");

    topology::declare_all(&bus).await.unwrap();
    bus.publish(&[ticket_event("ticket.comment_added")]).await;
    assert_eq!(waiting().await, 1, "no longer routed after the upgrade");
    bus.publish(&[ticket_event("ticket.created")]).await;
    assert_eq!(waiting().await, 2, "what the dashboard wants still arrives");
    testing::drop_schema(&schema).await;
}

/// Reliability item 1 on the in-process bus: the consumer's database is down for longer than
/// `max_attempts` retries would last. Nothing may be dead-lettered; once it is back, every event
/// is applied exactly once.
#[tokio::test]
async fn a_consumer_database_outage_never_dead_letters_and_nothing_is_lost() {
    testing::require_postgres().await;
    let (bus_schema, app_schema) = (unique("t_bus_"), unique("t_app_"));
    let bus = Arc::new(PgBus::new(pool(&bus_schema).await).await.unwrap());
    let direct = app_pool(&app_schema).await;
    // The handler reaches its database through a proxy the test cuts.
    let proxy = testing::Proxy::start(Some(testing::postgres_addr())).await;
    let app = db::connect(&DbConfig {
        url: testing::database_url_via(proxy.addr),
        schema: app_schema.clone(),
        max_connections: 2,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect through the proxy");
    let sub = Subscription {
        queue: "test.outage".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 2,
        retry_base_delay: Duration::from_millis(20),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let handler = Arc::new(IdempotentConsumer::new("test", app.clone(), recorder));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (bus, sub, shutdown) = (bus.clone(), sub.clone(), shutdown.clone());
        async move { bus.consume(sub, handler, shutdown).await }
    });

    proxy.set(None);
    let events: Vec<Envelope> = (0..3)
        .map(|i| {
            Envelope::wrap(
                &UserDeleted {
                    id: Uuid::new_v4(),
                    email: format!("u{i}@example.com"),
                },
                EventMetadata::default(),
            )
        })
        .collect();
    let outgoing: Vec<OutgoingMessage> = events
        .iter()
        .map(|e| raw(serde_json::to_vec(e).unwrap()))
        .collect();
    assert!(bus.publish(&outgoing).await.error.is_none());
    // Far more tries than max_attempts allows before a dead letter.
    eventually(
        Duration::from_secs(30),
        "the consumer to try during the outage",
        || async { (proxy.refused() >= 6).then_some(()) },
    )
    .await;
    let dead = bus.dead_letters(&sub.queue).await.unwrap();
    assert!(
        dead.is_empty(),
        "an outage is not the message's fault: {dead:?}"
    );
    proxy.set(Some(testing::postgres_addr()));
    for e in &events {
        eventually(
            Duration::from_secs(40),
            "the event applied after the outage",
            || async { (effects(&direct, e.event_id).await == 1).then_some(()) },
        )
        .await;
    }
    assert!(bus.dead_letters(&sub.queue).await.unwrap().is_empty());
    shutdown.cancel();
    task.await.unwrap();
    testing::drop_schema(&bus_schema).await;
    testing::drop_schema(&app_schema).await;
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
        sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// `helpdesk dlq` on the in-process bus: a dead letter is listed with its error, and a replay
/// hands it back so the consumer applies it once.
#[tokio::test]
async fn dead_letters_are_listed_and_replayed_once() {
    use helpdesk_kit::bus::dlq::DeadLetters;
    testing::require_postgres().await;
    let (bus_schema, app_schema) = (unique("t_bus_"), unique("t_app_"));
    let bus = Arc::new(PgBus::new(pool(&bus_schema).await).await.unwrap());
    let app = app_pool(&app_schema).await;
    let sub = Subscription {
        queue: "test.dlq".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 2,
        retry_base_delay: Duration::from_millis(20),
        prefetch: 8,
    };
    bus.declare(&sub).await.unwrap();
    let flaky = Arc::new(Flaky {
        failing: std::sync::atomic::AtomicBool::new(true),
    });
    let handler = Arc::new(IdempotentConsumer::new("test", app.clone(), flaky.clone()));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (bus, sub, shutdown) = (bus.clone(), sub.clone(), shutdown.clone());
        async move { bus.consume(sub, handler, shutdown).await }
    });
    let event = Envelope::wrap(
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "a@example.com".into(),
        },
        EventMetadata::default(),
    );
    let mut message = raw(serde_json::to_vec(&event).unwrap());
    message.message_id = event.event_id.to_string();
    assert!(bus.publish(&[message]).await.error.is_none());
    let dead = eventually(Duration::from_secs(20), "the dead letter", || async {
        let dead = bus.list(&sub.queue).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, event.event_id.to_string());
    assert_eq!(dead[0].routing_key, "user.deleted");
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].last_error.as_deref().unwrap().contains("not ready"));
    assert_eq!(bus.replay(&sub.queue, Some("another-id")).await.unwrap(), 0);

    flaky.failing.store(false, Ordering::SeqCst);
    assert_eq!(bus.replay(&sub.queue, None).await.unwrap(), 1);
    eventually(
        Duration::from_secs(20),
        "the replayed event applied",
        || async { (effects(&app, event.event_id).await == 1).then_some(()) },
    )
    .await;
    assert!(bus.list(&sub.queue).await.unwrap().is_empty());
    assert_eq!(bus.replay(&sub.queue, None).await.unwrap(), 0);
    shutdown.cancel();
    task.await.unwrap();
    testing::drop_schema(&bus_schema).await;
    testing::drop_schema(&app_schema).await;
}

/// Issue 14, item 12: `PgBus::new` took its advisory lock and released it with two separate pool
/// queries, which may run on two connections: the unlock then warned "you don't own a lock of
/// type ExclusiveLock" (the first line `helpdesk up` printed), and the lock either stayed with the
/// first connection (the next start on the same database, e.g. `helpdesk dlq` beside `helpdesk
/// up`, waited for it) or protected nothing. Lock and work must share one session whatever the
/// pool does; here a pool that closes every connection after one use makes that deterministic.
#[tokio::test]
async fn creating_the_bus_locks_and_unlocks_on_one_session() {
    use std::str::FromStr;
    testing::require_postgres().await;
    let logs = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let writer = {
        let logs = logs.clone();
        move || Capture(logs.clone())
    };
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(writer)
            .finish(),
    );
    let schema = unique("t_pgbus_");
    let app_name = unique("pgbus-lock-");
    let mut url = reqwest::Url::parse(&database_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("application_name", &app_name);
    // Creates the schema.
    db::connect(&DbConfig {
        url: url.to_string(),
        schema: schema.clone(),
        max_connections: 1,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect")
    .close()
    .await;
    let options = sqlx::postgres::PgConnectOptions::from_str(url.as_str())
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let one_use = sqlx::postgres::PgPoolOptions::new()
        .max_connections(5)
        .max_lifetime(Duration::ZERO)
        .connect_with(options)
        .await
        .unwrap();
    PgBus::new(one_use.clone()).await.expect("the bus");
    one_use.close().await;
    // And with an ordinary pool, no lock outlives the call.
    let pool = db::connect(&DbConfig {
        url: url.to_string(),
        schema: schema.clone(),
        max_connections: 5,
        application_name: "helpdesk-test",
    })
    .await
    .expect("connect");
    PgBus::new(pool.clone()).await.expect("the bus");
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND a.application_name = $1",
    )
    .bind(&app_name)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    testing::drop_schema(&schema).await;
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!logs.contains("own a lock"), "{logs}");
    assert_eq!(held, 0, "an advisory lock outlived PgBus::new");
}

/// A log sink for one test.
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many rows the bus ever added to `bus_messages` (its id sequence).
async fn rows_ever_added(bus: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM bus_messages_id_seq",
    )
    .fetch_one(bus)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_running_consumer_is_handed_messages_without_a_row_and_what_it_does_not_take_waits() {
    testing::require_postgres().await;
    let (bus_schema, app_schema) = (unique("t_bus_"), unique("t_app_"));
    let bus_pool = pool(&bus_schema).await;
    let bus = Arc::new(PgBus::new(bus_pool.clone()).await.unwrap());
    let app = app_pool(&app_schema).await;
    let sub = Subscription {
        queue: "test.direct".into(),
        bindings: vec![(USER_EVENTS.into(), "user.*".into())],
        max_attempts: 2,
        retry_base_delay: Duration::from_millis(50),
        prefetch: 8,
    };
    let recorder = Arc::new(Recorder {
        calls: AtomicUsize::new(0),
    });
    let handler = Arc::new(IdempotentConsumer::new(
        "test",
        app.clone(),
        recorder.clone(),
    ));
    let shutdown = CancellationToken::new();
    let (b, s) = (bus.clone(), shutdown.clone());
    let task = tokio::spawn(async move { b.consume(sub, handler, s).await });
    let body = |e: &Envelope| raw(serde_json::to_vec(e).unwrap());

    // Once the consumer has looked at its (empty) queue, a publish hands the message over: it is
    // applied by the time `publish` returns, and no row was written for it.
    eventually(
        Duration::from_secs(10),
        "a message handed over directly",
        || async {
            let before = rows_ever_added(&bus_pool).await;
            let e = user_deleted("first@example.com");
            assert_eq!(bus.publish(&[body(&e)]).await.confirmed, 1);
            let applied = effects(&app, e.event_id).await == 1;
            (applied && rows_ever_added(&bus_pool).await == before).then_some(())
        },
    )
    .await;

    // A batch: the good ones are applied before `publish` returns, without rows; the failing one
    // is kept as a row and retried, then dead-lettered with its error.
    let before = rows_ever_added(&bus_pool).await;
    let (one, failing, two) = (
        user_deleted("one@example.com"),
        user_deleted("fail@example.com"),
        user_deleted("two@example.com"),
    );
    let out = bus.publish(&[body(&one), body(&failing), body(&two)]).await;
    assert_eq!(out.confirmed, 3);
    assert_eq!(
        (
            effects(&app, one.event_id).await,
            effects(&app, two.event_id).await
        ),
        (1, 1),
        "handed over and applied before publish returned"
    );
    assert_eq!(
        rows_ever_added(&bus_pool).await,
        before + 1,
        "only the failed message became a row"
    );
    let dead = eventually(
        Duration::from_secs(10),
        "the failing message dead-lettered",
        || async {
            let d = bus.dead_letters("test.direct").await.unwrap();
            (d.len() == 1).then_some(d)
        },
    )
    .await;
    assert!(
        dead[0]
            .1
            .as_deref()
            .unwrap_or("")
            .contains("simulated failure")
    );
    let listed = helpdesk_kit::bus::dlq::DeadLetters::list(&*bus, "test.direct")
        .await
        .unwrap();
    assert_eq!(listed[0].attempts, 2, "both attempts counted");
    assert!(listed[0].body.contains("fail@example.com"));

    // The queue has caught up again: later messages are handed over directly once more, and
    // every good message was applied exactly once.
    let later = user_deleted("later@example.com");
    eventually(
        Duration::from_secs(10),
        "direct hand-over again",
        || async {
            let before = rows_ever_added(&bus_pool).await;
            let e = user_deleted("again@example.com");
            bus.publish(&[body(&e)]).await;
            (rows_ever_added(&bus_pool).await == before).then_some(())
        },
    )
    .await;
    bus.publish(&[body(&later), body(&later)]).await;
    for e in [&one, &two, &later] {
        assert_eq!(effects(&app, e.event_id).await, 1, "applied exactly once");
    }
    shutdown.cancel();
    task.await.unwrap();

    // With no consumer running, messages wait as rows for the next one.
    let before = rows_ever_added(&bus_pool).await;
    let kept = user_deleted("kept@example.com");
    bus.publish(&[body(&kept)]).await;
    assert_eq!(rows_ever_added(&bus_pool).await, before + 1);
    assert_eq!(effects(&app, kept.event_id).await, 0);
    testing::drop_schema(&bus_schema).await;
    testing::drop_schema(&app_schema).await;
}

/// Whether a relay says it is awake, by the clock the outbox write's own check uses.
async fn relay_awake(db: &mut PgConnection) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())",
    )
    .fetch_one(db)
    .await
    .unwrap()
}

/// Writes an event to `app`'s outbox; with whether a relay was awake just before and just after
/// the write (`None` when that changed in between, so what the write saw is unknown).
async fn write_event(app: &PgPool) -> (Uuid, Option<bool>) {
    let mut tx = app.begin().await.unwrap();
    let before = relay_awake(&mut tx).await;
    let event = outbox::publish(
        &mut tx,
        &UserDeleted {
            id: Uuid::new_v4(),
            email: "awake@example.com".into(),
        },
        &EventContext::default(),
    )
    .await
    .unwrap();
    let after = relay_awake(&mut tx).await;
    tx.commit().await.unwrap();
    (event.event_id, (before == after).then_some(before))
}

/// Whether the next notification on the outbox channel after `marker` was sent is the marker
/// itself, i.e. nothing notified between the previous marker and this one.
async fn next_is_marker(
    app: &PgPool,
    listener: &mut sqlx::postgres::PgListener,
    channel: &str,
    marker: &str,
) -> bool {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(marker)
        .execute(app)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification within 10 s")
        .unwrap();
    let was_marker = first.payload() == marker;
    // Drain up to the marker, so the next check starts clean.
    let mut seen = was_marker;
    while !seen {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the marker within 10 s")
            .unwrap();
        seen = n.payload() == marker;
    }
    was_marker
}

/// A NOTIFY serializes the commits of every notifying transaction through their WAL flush, so an
/// outbox write leaves it out while a relay says it is polling: the relay still publishes the
/// write at once (its fallback poll here is an hour), and once the relay has gone idle writes
/// NOTIFY again.
#[tokio::test]
async fn while_the_relay_polls_outbox_writes_leave_out_their_notify_and_are_still_relayed() {
    let schema = unique("outbox_awake_");
    let app = pool(&schema).await;
    let channel = outbox::channel(&schema);
    let mut listener = sqlx::postgres::PgListener::connect_with(&app)
        .await
        .unwrap();
    listener.listen(&channel).await.unwrap();

    // No relay yet: a write notifies.
    let (first, awake) = write_event(&app).await;
    assert_eq!(awake, Some(false));
    assert!(
        !next_is_marker(&app, &mut listener, &channel, "m0").await,
        "a write with no relay awake must NOTIFY"
    );

    let bus = Arc::new(StandInBus::confirming());
    let shutdown = CancellationToken::new();
    let relay = OutboxRelay::new(app.clone(), bus.clone(), &schema)
        .with_poll_interval(Duration::from_secs(3600));
    let running = tokio::spawn(relay.run(shutdown.clone()));
    eventually(Duration::from_secs(10), "the first event published", || {
        let bus = bus.clone();
        async move { bus.contains(first).then_some(()) }
    })
    .await;

    // A write while the relay is awake: no NOTIFY, published by the relay's own polling. (On a
    // slow machine the relay may have gone idle before the write began; then the write notified
    // and woke it, and the next round tries again.)
    let mut quiet_writes = 0;
    for round in 0..20 {
        let (id, awake) = write_event(&app).await;
        let notified =
            !next_is_marker(&app, &mut listener, &channel, &format!("m{}", round + 1)).await;
        if let Some(awake) = awake {
            assert_eq!(
                notified, !awake,
                "a write NOTIFYs exactly when no relay is awake"
            );
        }
        eventually(Duration::from_secs(10), "the write published", || {
            let bus = bus.clone();
            async move { bus.contains(id).then_some(()) }
        })
        .await;
        if awake == Some(true) {
            quiet_writes += 1;
            break;
        }
    }
    assert_eq!(
        quiet_writes, 1,
        "the relay never said it was awake after publishing"
    );

    // Without writes the relay goes idle, and writes NOTIFY again (and are published).
    eventually(Duration::from_secs(10), "the relay idle", || {
        let app = app.clone();
        async move {
            let mut db = app.acquire().await.unwrap();
            (!relay_awake(&mut db).await).then_some(())
        }
    })
    .await;
    let (last, awake) = write_event(&app).await;
    assert_eq!(awake, Some(false));
    assert!(!next_is_marker(&app, &mut listener, &channel, "end").await);
    eventually(Duration::from_secs(10), "the last write published", || {
        let bus = bus.clone();
        async move { bus.contains(last).then_some(()) }
    })
    .await;
    shutdown.cancel();
    running.await.unwrap();
}
