//! A test platform: ticket-service (and audit-service when asked) on random ports, with their own
//! schemas and broker prefix, users announced through real `user.*` events on RabbitMQ.
#![allow(dead_code)]

use std::net::SocketAddr;
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
use helpdesk_kit::events::{
    DomainEvent, Envelope, EventMetadata, UserDeleted, UserRoleChanged, UserSnapshot,
};
use helpdesk_testkit::service::{self, service_env};
use helpdesk_testkit::{self as testing, TestKeys, amqp_url, eventually, http, unique};

pub const WAIT: Duration = Duration::from_secs(20);

/// Keys, broker prefix and a publisher shared by the services of one test.
pub struct Platform {
    pub keys: TestKeys,
    pub prefix: String,
    pub bus: Arc<AmqpBus>,
    pub schemas: Vec<String>,
    pub queues: Vec<Subscription>,
}

pub use helpdesk_testkit::service::Running;

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

    fn base_env(&self, schema_var: &str, schema: &str) -> Vec<(String, String)> {
        let mut env = service_env(&self.keys, &self.prefix, schema_var, schema);
        env.push(("EVENT_MAX_ATTEMPTS".into(), "3".into()));
        env.push(("EVENT_RETRY_BASE_DELAY".into(), "50ms".into()));
        env
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
        let mut vars = self.base_env("TICKET_DB_SCHEMA", &schema);
        vars.push((
            "SERVICE_TOKEN".into(),
            self.keys.service_token("ticket-service"),
        ));
        vars.push(("TICKET_OUTBOX_POLL_INTERVAL".into(), "200ms".into()));
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let config = ticket_service::Config::from_env(&Env::from_map(vars)).expect("ticket config");
        self.bind_queue(&ticket_service::users_subscription(&config))
            .await;
        if !self.schemas.contains(&schema) {
            self.schemas.push(schema.clone());
        }
        service::start::<ticket_service::TicketService>(config, CancellationToken::new()).await
    }

    /// Starts audit-service on `schema` (a new one when `None`).
    pub async fn start_audit(&mut self, schema: Option<&str>) -> Running {
        let schema = schema
            .map(str::to_string)
            .unwrap_or_else(|| unique("t_audit_"));
        let vars = self.base_env("AUDIT_DB_SCHEMA", &schema);
        let config = audit_service::Config::from_env(&Env::from_map(vars)).expect("audit config");
        self.bind_queue(&audit_service::events_subscription(&config))
            .await;
        if !self.schemas.contains(&schema) {
            self.schemas.push(schema.clone());
        }
        service::start::<audit_service::AuditService>(config, CancellationToken::new()).await
    }

    /// Declares and binds a consumer's queue before the service does, so that events published
    /// right after start-up are not lost to an exchange without bindings.
    pub async fn bind_queue(&mut self, sub: &Subscription) {
        service::prebind(&self.prefix, sub).await;
        if !self.queues.iter().any(|q| q.queue == sub.queue) {
            self.queues.push(sub.clone());
        }
    }

    /// Publishes an event as its producer's relay would.
    pub async fn publish(&self, envelope: &Envelope) {
        service::publish(&*self.bus, envelope).await;
    }

    pub async fn publish_raw(&self, message: OutgoingMessage) {
        service::publish_message(&*self.bus, message).await;
    }

    /// Announces a new user (`user.created`) and returns them with a token.
    pub async fn announce_user(&self, role: Role) -> TestUser {
        let user = service::new_user(role, "First", Some(format!("Last-{role}")));
        self.publish(&service::user_created(&user)).await;
        let (id, email) = (user.id, user.email);
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
        service::remove_broker_objects(&self.prefix, &self.queues).await;
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
        let ok = testing::queue_state(&ch, queue).await.is_some();
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

pub use helpdesk_testkit::http::Resp;

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
        http::call(
            &self.http,
            method,
            &format!("{}{path}", self.base),
            token,
            body,
        )
        .await
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
pub use helpdesk_testkit::Proxy;

/// The broker's address (for a proxy in front of it).
pub fn broker_addr() -> SocketAddr {
    "127.0.0.1:5672".parse().expect("addr")
}

/// `user.updated` for a password changed elsewhere: the token epoch moves on, so every token
/// `user` already holds is refused.
pub fn signed_out_everywhere(user: &TestUser) -> helpdesk_kit::events::Envelope {
    use helpdesk_kit::events::{Envelope, EventMetadata, UserSnapshot, UserUpdated};
    Envelope::wrap(
        &UserUpdated {
            user: UserSnapshot {
                id: user.id,
                email: user.email.clone(),
                first_name: Some("First".into()),
                last_name: None,
                role: user.role,
                created_at: chrono::Utc::now(),
                revision: user.revision + 1,
                token_epoch: 1,
                kept_session: None,
            },
            changes: vec!["password".into()],
        },
        EventMetadata::default(),
    )
}
