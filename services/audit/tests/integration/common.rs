//! audit-service on a random port with its own schema and broker prefix.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lapin::options::QueueDeleteOptions;
use reqwest::Method;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::{Bus, OutgoingMessage, Subscription};
use helpdesk_kit::config::Env;
use helpdesk_kit::db;
use helpdesk_kit::events::{Envelope, EventMetadata, UserCreated, UserSnapshot};
use helpdesk_kit::runtime;
use helpdesk_kit::testing::{self, TestKeys, amqp_url, database_url, eventually, unique};

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
}

/// Declares and binds the consumer's queue before the service starts, so that events published
/// right after start-up are not lost to an exchange without bindings.
pub async fn bind_queue(prefix: &str, sub: &Subscription) {
    let bus = AmqpBus::new(&amqp_url(), prefix);
    helpdesk_kit::bus::Bus::declare(&bus, sub)
        .await
        .expect("declare the consumer's queue");
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub token: String,
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

impl Audit {
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        testing::require_postgres().await;
        testing::require_rabbitmq().await;
        let keys = TestKeys::generate();
        let prefix = format!("{}.", unique("t"));
        let schema = unique("t_audit_");
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), database_url()),
            ("AUDIT_DB_SCHEMA".into(), schema.clone()),
            ("AMQP_URL".into(), amqp_url()),
            ("BUS_PREFIX".into(), prefix.clone()),
            ("BIND_ADDR".into(), "127.0.0.1:0".into()),
            ("JWT_PUBLIC_KEY".into(), keys.public_pem.clone()),
            ("EVENT_MAX_ATTEMPTS".into(), "3".into()),
            ("EVENT_RETRY_BASE_DELAY".into(), "50ms".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = audit_service::Config::from_env(&Env::from_map(vars)).expect("config");
        bind_queue(&prefix, &audit_service::events_subscription(&config)).await;
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &audit_service::MIGRATOR)
            .await
            .expect("migrate");
        let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
        assert!(bus.healthy().await);
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let service = audit_service::build(config, pool.clone(), bus.clone(), shutdown.clone())
            .await
            .expect("build");
        let task = tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            shutdown.clone(),
        ));
        Self {
            keys,
            prefix,
            bus,
            url,
            pool,
            schema,
            shutdown,
            task,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the service and removes its schema, queues and exchanges.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        testing::drop_schema(&self.schema).await;
        if let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await {
            let q = format!("{}{}", self.prefix, audit_service::EVENTS_QUEUE);
            for name in [
                q.clone(),
                format!("{q}.dlq"),
                format!("{q}.retry.50ms"),
                format!("{q}.retry.100ms"),
            ] {
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
                            format!("{}{exchange}", self.prefix).as_str().into(),
                            Default::default(),
                        )
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
    }

    pub async fn publish_raw(&self, exchange: &str, routing_key: &str, body: Vec<u8>) {
        let outcome = self
            .bus
            .publish(&[OutgoingMessage {
                exchange: exchange.into(),
                routing_key: routing_key.into(),
                body,
                message_id: Uuid::new_v4().to_string(),
                headers: Default::default(),
            }])
            .await;
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
    }

    pub async fn publish(&self, e: &Envelope) {
        self.publish_raw(
            e.exchange(),
            &e.event_type.clone(),
            serde_json::to_vec(e).unwrap(),
        )
        .await;
    }

    /// Announces a user and waits until the read model has them.
    pub async fn user(&self, role: Role) -> TestUser {
        let id = Uuid::now_v7();
        let email = format!("{}@example.com", unique("u"));
        let snapshot = UserSnapshot {
            id,
            email: email.clone(),
            first_name: Some("Ada".into()),
            last_name: None,
            role,
            created_at: chrono::Utc::now(),
            revision: 1,
            token_epoch: 0,
            kept_session: None,
        };
        self.publish(&Envelope::wrap(
            &UserCreated { user: snapshot },
            EventMetadata {
                user_id: Some(id),
                ..Default::default()
            },
        ))
        .await;
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
        let mut req = self.http.request(method, format!("{}{}", self.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }
}
