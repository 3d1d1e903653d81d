//! A platform's services in-process, as their binaries run them: each on its own schema, all on
//! one broker prefix; the queues a consumer will use bound before anything is published, and the
//! broker objects of the prefix removed afterwards.

use std::net::SocketAddr;
use std::sync::Arc;

use lapin::options::QueueDeleteOptions;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{TestKeys, amqp_url, database_url};
use helpdesk_kit::auth::Role;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::{Bus, OutgoingMessage, Subscription};
use helpdesk_kit::events::{Envelope, EventMetadata, UserCreated, UserSnapshot};
use helpdesk_kit::runtime::{self, ServiceDef};
use helpdesk_kit::service::ServiceConfig as _;

/// The settings every service of a test platform shares: the test database with `schema` in
/// `schema_var`, the test broker under `prefix`, a free loopback port, the platform's public key.
pub fn service_env(
    keys: &TestKeys,
    prefix: &str,
    schema_var: &str,
    schema: &str,
) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url()),
        (schema_var, schema.to_string()),
        ("AMQP_URL", amqp_url()),
        ("BUS_PREFIX", prefix.to_string()),
        ("BIND_ADDR", "127.0.0.1:0".to_string()),
        ("JWT_PUBLIC_KEY", keys.public_pem.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The services of one test: one key pair, one broker prefix, a schema per service. The schemas and
/// queues it hands out are removed by [`Platform::finish`].
pub struct Platform {
    pub keys: TestKeys,
    pub prefix: String,
    /// Stops every service started with [`Platform::start`].
    pub shutdown: CancellationToken,
    pub schemas: Vec<String>,
    pub queues: Vec<Subscription>,
}

impl Platform {
    /// Checks PostgreSQL and RabbitMQ (a clear failure when one is missing).
    pub async fn new() -> Self {
        super::require_postgres().await;
        super::require_rabbitmq().await;
        Self {
            keys: TestKeys::generate(),
            prefix: format!("{}.", super::unique("t")),
            shutdown: CancellationToken::new(),
            schemas: Vec::new(),
            queues: Vec::new(),
        }
    }

    /// [`service_env`] on a new schema (named `schema_prefix` + a unique suffix) in `schema_var`.
    pub fn env(&mut self, schema_var: &str, schema_prefix: &str) -> Vec<(String, String)> {
        let schema = super::unique(schema_prefix);
        self.schemas.push(schema.clone());
        service_env(&self.keys, &self.prefix, schema_var, &schema)
    }

    /// [`prebind`] under the platform's prefix; the queue is removed by [`Platform::finish`].
    pub async fn prebind(&mut self, sub: &Subscription) {
        prebind(&self.prefix, sub).await;
        self.queues.push(sub.clone());
    }

    /// [`start`], stopped by [`Platform::finish`].
    pub async fn start<D: ServiceDef>(&self, config: D::Config) -> Running {
        start::<D>(config, self.shutdown.clone()).await
    }

    /// Stops the services and removes the schemas and broker objects.
    pub async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        for schema in &self.schemas {
            super::drop_schema(schema).await;
        }
        remove_broker_objects(&self.prefix, &self.queues).await;
    }
}

/// A service started by [`start`].
pub struct Running {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub addr: SocketAddr,
    pub pool: PgPool,
    /// The schema it runs on.
    pub schema: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the service and waits until it has; returns its pool.
    pub async fn stop(self) -> PgPool {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.pool
    }
}

/// Starts service `D` with `config` as its binary would (connect, migrate, build, serve) on
/// RabbitMQ (`AMQP_URL` of the config, else the test broker), until `shutdown`.
pub async fn start<D: ServiceDef>(config: D::Config, shutdown: CancellationToken) -> Running {
    let common = config.common();
    let schema = common.db.schema.clone();
    let pool = helpdesk_kit::db::connect(&common.db)
        .await
        .unwrap_or_else(|e| panic!("{}: connect to the database: {e}", D::NAME));
    helpdesk_kit::db::migrate(&pool, D::MIGRATOR)
        .await
        .unwrap_or_else(|e| panic!("{}: migrate: {e}", D::NAME));
    let url = common.amqp_url.clone().unwrap_or_else(amqp_url);
    let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&url, &common.bus_prefix));
    let listener = runtime::bind(common.http.bind_addr)
        .await
        .unwrap_or_else(|e| panic!("{}: bind: {e}", D::NAME));
    let addr = listener.local_addr().expect("the listener's address");
    let service = D::build(config, pool.clone(), bus, shutdown.clone())
        .await
        .unwrap_or_else(|e| panic!("{}: build: {e:#}", D::NAME));
    let task = tokio::spawn(runtime::run(
        listener,
        service.router,
        service.workers,
        shutdown.clone(),
    ));
    Running {
        url: format!("http://{addr}"),
        addr,
        pool,
        schema,
        shutdown,
        task,
    }
}

/// Declares and binds a consumer's queue under `prefix` before anything is published, so no
/// event published before the consumer connects is lost (the consumer declares the same queue).
pub async fn prebind(prefix: &str, sub: &Subscription) {
    AmqpBus::new(&amqp_url(), prefix)
        .declare(sub)
        .await
        .expect("declare the consumer's queue");
}

/// Publishes `envelope` on `bus` as its producer's relay would (confirmed by the broker).
pub async fn publish(bus: &dyn Bus, envelope: &Envelope) {
    publish_message(
        bus,
        OutgoingMessage {
            exchange: envelope.exchange().to_string(),
            routing_key: envelope.event_type.clone(),
            body: serde_json::to_vec(envelope).expect("an envelope is JSON"),
            message_id: envelope.event_id.to_string(),
            headers: Default::default(),
        },
    )
    .await;
}

/// Publishes one message on `bus`, whatever its body (confirmed by the broker).
pub async fn publish_message(bus: &dyn Bus, message: OutgoingMessage) {
    let outcome = bus.publish(&[message]).await;
    assert!(
        outcome.error.is_none(),
        "publish failed: {:?}",
        outcome.error
    );
}

/// Removes the queues of `subs` (with their retry and dead-letter queues) and every exchange
/// under `prefix` (best effort: the test's result does not depend on it).
pub async fn remove_broker_objects(prefix: &str, subs: &[Subscription]) {
    let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await else {
        return;
    };
    let mut queues = Vec::new();
    for sub in subs {
        let q = format!("{prefix}{}", sub.queue);
        queues.push(format!("{q}.dlq"));
        queues.extend(
            (1..sub.max_attempts)
                .map(|a| format!("{q}.retry.{}ms", sub.retry_delay(a).as_millis())),
        );
        queues.push(q);
    }
    for name in queues {
        // A failed delete closes its channel: one channel per delete.
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in helpdesk_kit::events::ALL_EXCHANGES {
        if let Ok(ch) = conn.create_channel().await {
            let _ = ch
                .exchange_delete(
                    format!("{prefix}{exchange}").as_str().into(),
                    Default::default(),
                )
                .await;
        }
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// Removes what a platform that ran with `prefix` (and these retry settings) declared on the
/// shared broker: every queue of the platform's topology, with its retry and dead-letter queues,
/// and the exchanges.
pub async fn remove_platform_from_broker(
    prefix: &str,
    max_attempts: u32,
    retry_base_delay: std::time::Duration,
) {
    let subs: Vec<Subscription> = helpdesk_kit::bus::topology::PLATFORM
        .iter()
        .map(|q| q.subscription(max_attempts, retry_base_delay))
        .collect();
    remove_broker_objects(prefix, &subs).await;
}

/// A new user as user-service would announce them: a fresh id and address, revision 1.
pub fn new_user(role: Role, first_name: &str, last_name: Option<String>) -> UserSnapshot {
    UserSnapshot {
        id: uuid::Uuid::now_v7(),
        email: format!("{}@example.com", super::unique("u")),
        first_name: Some(first_name.to_string()),
        last_name,
        role,
        created_at: chrono::Utc::now(),
        revision: 1,
        token_epoch: 0,
        kept_session: None,
    }
}

/// The `user.created` event for `user`, as user-service publishes it on signup.
pub fn user_created(user: &UserSnapshot) -> Envelope {
    Envelope::wrap(
        &UserCreated { user: user.clone() },
        EventMetadata {
            user_id: Some(user.id),
            ..Default::default()
        },
    )
}
