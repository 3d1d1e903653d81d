//! audit-service on a random port with its own schema and broker prefix.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::{Bus, OutgoingMessage, Subscription};
use helpdesk_kit::config::Env;
use helpdesk_kit::events::Envelope;
use helpdesk_testkit::service::{self, service_env};
use helpdesk_testkit::{self as testing, TestKeys, amqp_url, eventually, http, unique};

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Audit {
    pub keys: TestKeys,
    pub prefix: String,
    pub bus: Arc<AmqpBus>,
    pub url: String,
    pub pool: PgPool,
    pub schema: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
    /// The consumer's queue (removed by `stop`).
    subscription: Subscription,
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub token: String,
}

pub use helpdesk_testkit::http::Resp;

impl Audit {
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        testing::require_postgres().await;
        testing::require_rabbitmq().await;
        let keys = TestKeys::generate();
        let prefix = format!("{}.", unique("t"));
        let schema = unique("t_audit_");
        let mut vars = service_env(&keys, &prefix, "AUDIT_DB_SCHEMA", &schema);
        vars.push(("EVENT_MAX_ATTEMPTS".into(), "3".into()));
        vars.push(("EVENT_RETRY_BASE_DELAY".into(), "50ms".into()));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = audit_service::Config::from_env(&Env::from_map(vars)).expect("config");
        let subscription = audit_service::events_subscription(&config);
        service::prebind(&prefix, &subscription).await;
        let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
        assert!(bus.healthy().await);
        let shutdown = CancellationToken::new();
        let running = service::start::<audit_service::AuditService>(config, shutdown.clone()).await;
        Self {
            keys,
            prefix,
            bus,
            url: running.url,
            pool: running.pool,
            schema,
            shutdown,
            task: running.task,
            http: reqwest::Client::new(),
            subscription,
        }
    }

    /// Stops the service and removes its schema, queues and exchanges.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        testing::drop_schema(&self.schema).await;
        service::remove_broker_objects(&self.prefix, &[self.subscription]).await;
    }

    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: Vec<u8>) {
        let message = OutgoingMessage {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body,
            message_id: Uuid::new_v4().to_string(),
            headers: Default::default(),
        };
        service::publish_message(&*self.bus, message).await;
    }

    pub async fn publish(&self, e: &Envelope) {
        service::publish(&*self.bus, e).await;
    }

    /// Announces a user and waits until the read model has them.
    pub async fn user(&self, role: Role) -> TestUser {
        let user = service::new_user(role, "Ada", None);
        self.publish(&service::user_created(&user)).await;
        let (id, email) = (user.id, user.email);
        let pool = self.pool.clone();
        eventually(WAIT, "user in the audit read model", || async {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .ok()?;
            (n == 1).then_some(())
        })
        .await;
        let token = self.keys.keys.issue_user_token(id, &email, role).unwrap();
        TestUser {
            id,
            email,
            role,
            token,
        }
    }

    /// How many entries an event produced.
    pub async fn entries_for(&self, event_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_entry(&self, event_id: Uuid) {
        eventually(WAIT, "audit entry", || async {
            (self.entries_for(event_id).await >= 1).then_some(())
        })
        .await;
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        http::call(
            &self.http,
            method,
            &format!("{}{path}", self.url),
            token,
            body,
        )
        .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
}
