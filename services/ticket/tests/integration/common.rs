//! A test platform: ticket-service (and audit-service when asked) on random ports, with their own
//! schemas and broker prefix, users announced through real `user.*` events on RabbitMQ.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
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
use helpdesk_kit::events::{
    DomainEvent, Envelope, EventMetadata, UserCreated, UserDeleted, UserRoleChanged, UserSnapshot,
};
use helpdesk_kit::runtime;
use helpdesk_kit::testing::{self, TestKeys, amqp_url, database_url, eventually, unique};

pub const WAIT: Duration = Duration::from_secs(20);

/// Keys, broker prefix and a publisher shared by the services of one test.
pub struct Platform {
    pub keys: TestKeys,
    pub prefix: String,
    pub bus: Arc<AmqpBus>,
    pub schemas: Vec<String>,
    pub queues: Vec<String>,
}

/// A running service.
pub struct Running {
    pub url: String,
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub schema: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the service and waits until it has.
    pub async fn stop(self) -> PgPool {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.pool
    }
}

impl Platform {
    pub async fn new() -> Self {
        testing::require_postgres().await;
        testing::require_rabbitmq().await;
        let prefix = format!("{}.", unique("t"));
        let bus = Arc::new(AmqpBus::new(&amqp_url(), &prefix));
        assert!(bus.healthy().await, "declares the exchanges");
        Self {
            keys: TestKeys::generate(),
            prefix,
            bus,
            schemas: Vec::new(),
            queues: Vec::new(),
        }
    }

    fn base_env(&self, schema_var: &str, schema: &str, amqp: &str) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", database_url()),
            (schema_var, schema.to_string()),
            ("AMQP_URL", amqp.to_string()),
            ("BUS_PREFIX", self.prefix.clone()),
            ("BIND_ADDR", "127.0.0.1:0".to_string()),
            ("JWT_PUBLIC_KEY", self.keys.public_pem.clone()),
            ("EVENT_MAX_ATTEMPTS", "3".to_string()),
            ("EVENT_RETRY_BASE_DELAY", "50ms".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts ticket-service; `extra` overrides the defaults (e.g. `AUDIT_SERVICE_URL`, `AMQP_URL`).
    pub async fn start_ticket(
        &mut self,
        schema: Option<&str>,
        extra: &[(&str, String)],
    ) -> Running {
        let schema = schema
            .map(str::to_string)
            .unwrap_or_else(|| unique("t_ticket_"));
        let mut vars = self.base_env("TICKET_DB_SCHEMA", &schema, &amqp_url());
        vars.push((
            "SERVICE_TOKEN".into(),
            self.keys.service_token("ticket-service"),
        ));
        vars.push(("TICKET_OUTBOX_POLL_INTERVAL".into(), "200ms".into()));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = ticket_service::Config::from_env(&Env::from_map(vars)).expect("ticket config");
        self.bind_queue(&ticket_service::users_subscription(&config))
            .await;
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &ticket_service::MIGRATOR)
            .await
            .expect("migrate");
        let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(
            config.amqp_url.as_deref().unwrap_or_default(),
            &self.prefix,
        ));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let service = ticket_service::build(config, pool.clone(), bus, shutdown.clone())
            .await
            .expect("build");
        let task = tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            shutdown.clone(),
        ));
        if !self.schemas.contains(&schema) {
            self.schemas.push(schema.clone());
        }
        Running {
            url: format!("http://{addr}"),
            addr,
            pool,
            schema,
            shutdown,
            task,
        }
    }

    /// Starts audit-service on `schema` (a new one when `None`).
    pub async fn start_audit(&mut self, schema: Option<&str>) -> Running {
        let schema = schema
            .map(str::to_string)
            .unwrap_or_else(|| unique("t_audit_"));
        let vars = self.base_env("AUDIT_DB_SCHEMA", &schema, &amqp_url());
        let config = audit_service::Config::from_env(&Env::from_map(vars)).expect("audit config");
        self.bind_queue(&audit_service::events_subscription(&config))
            .await;
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &audit_service::MIGRATOR)
            .await
            .expect("migrate");
        let bus: Arc<dyn Bus> = Arc::new(AmqpBus::new(&amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let service = audit_service::build(config, pool.clone(), bus, shutdown.clone())
            .await
            .expect("build");
        let task = tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            shutdown.clone(),
        ));
        if !self.schemas.contains(&schema) {
            self.schemas.push(schema.clone());
        }
        Running {
            url: format!("http://{addr}"),
            addr,
            pool,
            schema,
            shutdown,
            task,
        }
    }

    /// Declares and binds a consumer's queue before the service does, so that events published
    /// right after start-up are not lost to an exchange without bindings.
    pub async fn bind_queue(&mut self, sub: &Subscription) {
        let bus = AmqpBus::new(&amqp_url(), &self.prefix);
        helpdesk_kit::bus::Bus::declare(&bus, sub)
            .await
            .expect("declare the consumer's queue");
        if !self.queues.contains(&sub.queue) {
            self.queues.push(sub.queue.clone());
        }
    }

    /// Publishes an event as its producer's relay would.
    pub async fn publish(&self, envelope: &Envelope) {
        let message = OutgoingMessage {
            exchange: envelope.exchange().to_string(),
            routing_key: envelope.event_type.clone(),
            body: serde_json::to_vec(envelope).expect("json"),
            message_id: envelope.event_id.to_string(),
            headers: Default::default(),
        };
        self.publish_raw(message).await;
    }

    pub async fn publish_raw(&self, message: OutgoingMessage) {
        let outcome = self.bus.publish(&[message]).await;
        assert!(
            outcome.error.is_none(),
            "publish failed: {:?}",
            outcome.error
        );
    }

    /// Announces a new user (`user.created`) and returns them with a token.
    pub async fn announce_user(&self, role: Role) -> TestUser {
        let id = Uuid::now_v7();
        let email = format!("{}@example.com", unique("u"));
        let snapshot = UserSnapshot {
            id,
            email: email.clone(),
            first_name: Some("First".into()),
            last_name: Some(format!("Last-{role}")),
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
        let token = self
            .keys
            .keys
            .issue_user_token(id, &email, role)
            .expect("token");
        TestUser {
            id,
            email,
            role,
            token,
            revision: 1,
        }
    }

    /// Announces a role change.
    pub async fn change_role(&self, user: &TestUser, role: Role) -> TestUser {
        let snapshot = UserSnapshot {
            id: user.id,
            email: user.email.clone(),
            first_name: Some("First".into()),
            last_name: Some(format!("Last-{}", user.role)),
            role,
            created_at: chrono::Utc::now(),
            revision: user.revision + 1,
            token_epoch: 0,
            kept_session: None,
        };
        let event = UserRoleChanged {
            user: snapshot,
            old_role: user.role,
            new_role: role,
        };
        self.publish(&Envelope::wrap(&event, EventMetadata::default()))
            .await;
        TestUser {
            role,
            revision: user.revision + 1,
            ..user.clone()
        }
    }

    /// Announces a deletion and returns the event.
    pub async fn delete_user(&self, user: &TestUser, by: Option<Uuid>) -> Envelope {
        let envelope = Envelope::wrap(
            &UserDeleted {
                id: user.id,
                email: user.email.clone(),
            },
            EventMetadata {
                user_id: by,
                ..Default::default()
            },
        );
        self.publish(&envelope).await;
        envelope
    }

    /// Drops every schema and consumer queue the test created.
    pub async fn cleanup(self) {
        for schema in &self.schemas {
            testing::drop_schema(schema).await;
        }
        if let Ok(conn) = lapin::Connection::connect(&amqp_url(), Default::default()).await {
            for queue in &self.queues {
                let q = format!("{}{}", self.prefix, queue);
                for name in [
                    q.clone(),
                    format!("{q}.dlq"),
                    format!("{q}.retry.50ms"),
                    format!("{q}.retry.100ms"),
                ] {
                    // A failed delete closes the channel: one channel per queue.
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
            }
            for exchange in helpdesk_kit::events::ALL_EXCHANGES {
                if let Ok(ch) = conn.create_channel().await {
                    let name = format!("{}{}", self.prefix, exchange);
                    let _ = ch
                        .exchange_delete(name.as_str().into(), Default::default())
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

/// Waits until `pool`'s read model has `user` with their current role.
pub async fn wait_user(pool: &PgPool, user: &TestUser) {
    let what = format!("user {} as {} in the read model", user.id, user.role);
    eventually(WAIT, &what, || async {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM users WHERE id = $1 AND synced_at > '-infinity'")
                .bind(user.id)
                .fetch_optional(pool)
                .await
                .ok()
                .flatten();
        (role.as_deref() == Some(user.role.as_str())).then_some(())
    })
    .await;
}

/// Waits until a broker queue exists (a consumer has declared and bound it).
pub async fn wait_queue(queue: &str) {
    eventually(WAIT, &format!("queue {queue}"), || async {
        let conn = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .ok()?;
        let ch = conn.create_channel().await.ok()?;
        let ok = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .is_ok();
        let _ = conn.close(200, "bye".into()).await;
        ok.then_some(())
    })
    .await;
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub token: String,
    /// The revision of the last snapshot announced for this user.
    pub revision: i64,
}

/// A response: status, headers and JSON body (`Null` when empty).
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
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A small HTTP client for one service.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.expect("body");
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
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }
    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }
    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Creates a ticket and returns its id.
    pub async fn create_ticket(&self, user: &TestUser, title: &str) -> Uuid {
        let r = self
            .post(
                "/tickets",
                &user.token,
                serde_json::json!({"title": title, "description": "Something is broken"}),
            )
            .await;
        assert_eq!(r.status, 201, "create ticket: {:?}", r.body);
        r.body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("ticket id")
    }

    pub async fn assign(&self, admin: &TestUser, ticket: Uuid, to: Option<Uuid>) -> Resp {
        self.patch(
            &format!("/tickets/{ticket}/assign"),
            &admin.token,
            serde_json::json!({"assignedToUserId": to}),
        )
        .await
    }
}

/// Publishes `E`'s type name, to keep imports used in every test file.
pub fn event_type<E: DomainEvent>() -> &'static str {
    E::EVENT_TYPE
}

#[allow(unused_imports)]
pub use helpdesk_kit::testing::Proxy;

/// The broker's address (for a proxy in front of it).
pub fn broker_addr() -> SocketAddr {
    "127.0.0.1:5672".parse().expect("addr")
}
