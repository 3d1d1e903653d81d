//! Test platform: admin-service and the real user-service in-process on random ports, each on its
//! own schema, sharing a broker prefix.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Channel, Connection};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use helpdesk_kit::bus::Subscription;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::config::Env;
use helpdesk_kit::db;
use helpdesk_kit::events::Envelope;
use helpdesk_kit::runtime;
use helpdesk_kit::testing::{self, TestKeys, unique};

pub struct Platform {
    pub keys: TestKeys,
    pub prefix: String,
    pub shutdown: CancellationToken,
    pub schemas: Vec<String>,
    pub queues: Vec<Subscription>,
}

impl Platform {
    pub async fn new() -> Self {
        testing::require_postgres().await;
        testing::require_rabbitmq().await;
        Self {
            keys: TestKeys::generate(),
            prefix: format!("{}.", unique("t")),
            shutdown: CancellationToken::new(),
            schemas: Vec::new(),
            queues: Vec::new(),
        }
    }

    fn base_env(&self, schema_var: &str, schema: &str) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", testing::database_url()),
            (schema_var, schema.to_string()),
            ("AMQP_URL", testing::amqp_url()),
            ("BUS_PREFIX", self.prefix.clone()),
            ("BIND_ADDR", "127.0.0.1:0".to_string()),
            ("JWT_PUBLIC_KEY", self.keys.public_pem.clone()),
            ("EVENT_RETRY_BASE_DELAY", "100ms".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts admin-service calling user-service at `user_service_url`; returns its URL and pool.
    pub async fn start_admin(
        &mut self,
        user_service_url: &str,
        extra: &[(&str, &str)],
    ) -> (String, PgPool) {
        let schema = unique("t_admin_");
        self.schemas.push(schema.clone());
        let mut env = self.base_env("ADMIN_DB_SCHEMA", &schema);
        env.push(("USER_SERVICE_URL".into(), user_service_url.into()));
        env.push((
            "SERVICE_TOKEN".into(),
            self.keys.service_token("admin-service"),
        ));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = admin_service::Config::from_env(&Env::from_map(env)).expect("admin config");
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &admin_service::MIGRATOR)
            .await
            .expect("migrate");
        let (attempts, delay) = config.event_retries;
        self.prebind(&admin_service::dashboard::subscription(attempts, delay))
            .await;
        self.prebind(&admin_service::access::subscription(attempts, delay))
            .await;
        let bus = Arc::new(AmqpBus::new(&testing::amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = admin_service::build(config, pool.clone(), bus, self.shutdown.clone())
            .await
            .expect("build");
        tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            self.shutdown.clone(),
        ));
        (format!("http://{addr}"), pool)
    }

    /// Starts user-service with a bootstrap admin; returns its base URL.
    pub async fn start_user_service(&mut self, admin: (&str, &str)) -> String {
        let schema = unique("t_user_");
        self.schemas.push(schema.clone());
        let mut env = self.base_env("USER_DB_SCHEMA", &schema);
        env.extend(
            [
                ("JWT_PRIVATE_KEY", self.keys.private_pem.as_str()),
                ("USER_ARGON2_MEMORY_KIB", "1024"),
                ("USER_ARGON2_ITERATIONS", "1"),
                ("BOOTSTRAP_ADMIN_EMAIL", admin.0),
                ("BOOTSTRAP_ADMIN_PASSWORD", admin.1),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = user_service::Config::from_env(&Env::from_map(env)).expect("user config");
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &user_service::MIGRATOR)
            .await
            .expect("migrate");
        let bus = Arc::new(AmqpBus::new(&testing::amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = user_service::build(config, pool, bus, self.shutdown.clone())
            .await
            .expect("build");
        tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            self.shutdown.clone(),
        ));
        format!("http://{addr}")
    }

    /// Starts ticket-service (without audit-service); returns its base URL. Start it before
    /// user-service so its users queue exists when the first `user.created` is published.
    pub async fn start_ticket_service(&mut self) -> String {
        let schema = unique("t_ticket_");
        self.schemas.push(schema.clone());
        let mut env = self.base_env("TICKET_DB_SCHEMA", &schema);
        env.push(("TICKET_OUTBOX_POLL_INTERVAL".into(), "200ms".into()));
        let config = ticket_service::Config::from_env(&Env::from_map(env)).expect("ticket config");
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &ticket_service::MIGRATOR)
            .await
            .expect("migrate");
        self.prebind(&ticket_service::users_subscription(&config))
            .await;
        let bus = Arc::new(AmqpBus::new(&testing::amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = ticket_service::build(config, pool, bus, self.shutdown.clone())
            .await
            .expect("build");
        tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            self.shutdown.clone(),
        ));
        format!("http://{addr}")
    }

    /// Declares and binds a consumer's queue before anything is published.
    pub async fn prebind(&mut self, sub: &Subscription) {
        let bus = AmqpBus::new(&testing::amqp_url(), &self.prefix);
        helpdesk_kit::bus::Bus::declare(&bus, sub)
            .await
            .expect("declare the consumer's queue");
        self.queues.push(sub.clone());
    }

    /// A publishing channel with confirms.
    pub async fn publisher(&self) -> (Connection, Channel) {
        let conn = Connection::connect(&testing::amqp_url(), Default::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirms");
        (conn, ch)
    }

    /// Publishes events in order and waits for the broker's confirmations.
    pub async fn publish_all(&self, ch: &Channel, events: &[Envelope]) {
        let mut confirms = Vec::with_capacity(events.len());
        for event in events {
            let confirm = ch
                .basic_publish(
                    format!("{}{}", self.prefix, event.exchange()).into(),
                    event.event_type.as_str().into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(event).expect("json"),
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
        }
        for c in confirms {
            assert!(c.await.expect("confirm").is_ack());
        }
    }

    /// Stops the services and removes the schemas and broker objects (on success).
    pub async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for schema in &self.schemas {
            testing::drop_schema(schema).await;
        }
        if let Ok(conn) = Connection::connect(&testing::amqp_url(), Default::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                for sub in &self.queues {
                    let q = format!("{}{}", self.prefix, sub.queue);
                    let mut names = vec![q.clone(), format!("{q}.dlq")];
                    names.extend(
                        (1..sub.max_attempts)
                            .map(|a| format!("{q}.retry.{}ms", sub.retry_delay(a).as_millis())),
                    );
                    for name in names {
                        let _ = ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for exchange in helpdesk_kit::events::ALL_EXCHANGES {
                    let _ = ch
                        .exchange_delete(
                            format!("{}{exchange}", self.prefix).into(),
                            Default::default(),
                        )
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}
