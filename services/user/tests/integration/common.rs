//! A user-service per test: its own schema and broker prefix, real PostgreSQL and RabbitMQ,
//! real HTTP on a random loopback port.

#![allow(dead_code)]

use std::time::Duration;

use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use helpdesk_kit::config::Env;
use helpdesk_kit::events::{Envelope, USER_EVENTS};
use helpdesk_testkit::service;
use helpdesk_testkit::{self as testing, EventTap, TestKeys, amqp_url, database_url, unique};
use user_service::Config;

pub const ADMIN_EMAIL: &str = "root@example.com";
pub const ADMIN_PASSWORD: &str = "bootstrap-secret-1";

pub struct TestApp {
    pub base: String,
    pub http: Client,
    pub pool: PgPool,
    pub keys: TestKeys,
    pub schema: String,
    pub prefix: String,
    pub shutdown: CancellationToken,
    /// Every user event published, in order.
    events: EventTap,
}

pub async fn spawn() -> TestApp {
    spawn_with(&[]).await
}

pub async fn spawn_with(extra: &[(&str, &str)]) -> TestApp {
    testing::require_postgres().await;
    testing::require_rabbitmq().await;
    let keys = TestKeys::generate();
    let schema = unique("t_user_");
    let prefix = format!("{}.", unique("t"));
    let mut env = Env::from_map([
        ("DATABASE_URL", database_url()),
        ("USER_DB_SCHEMA", schema.clone()),
        ("USER_DB_MAX_CONNECTIONS", "5".into()),
        ("AMQP_URL", amqp_url()),
        ("BUS_PREFIX", prefix.clone()),
        ("JWT_PUBLIC_KEY", keys.public_pem.clone()),
        ("JWT_PRIVATE_KEY", keys.private_pem.clone()),
        ("FRONTEND_BASE_URL", "https://helpdesk.test".into()),
        ("BIND_ADDR", "127.0.0.1:0".into()),
        ("USER_ARGON2_MEMORY_KIB", "1024".into()),
        ("USER_ARGON2_ITERATIONS", "1".into()),
        ("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL.into()),
        ("BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ("HTTP_BODY_LIMIT_BYTES", "65536".into()),
    ]);
    for (k, v) in extra {
        env.set(*k, *v);
    }
    let config = Config::from_env(&env).expect("test configuration is valid");
    // Subscribed before the service starts publishing.
    let events = EventTap::start(&prefix, USER_EVENTS).await;
    let shutdown = CancellationToken::new();
    let running = service::start::<user_service::UserService>(config, shutdown.clone()).await;
    let (base, pool) = (running.url, running.pool);
    TestApp {
        base,
        http: Client::new(),
        pool,
        keys,
        schema,
        prefix,
        shutdown,
        events,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn post(&self, path: &str, body: Value, token: Option<&str>) -> Response {
        let mut req = self.http.post(self.url(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut req = self.http.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn signup(&self, email: &str, password: &str) -> (Value, String) {
        let res = self
            .post(
                "/auth/signup",
                json!({"email": email, "password": password, "firstName": "Ada", "lastName": "L"}),
                None,
            )
            .await;
        assert_eq!(res.status(), 201, "signup of {email}");
        let body: Value = res.json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_string();
        (body["user"].clone(), token)
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.post(
            "/auth/login",
            json!({"email": email, "password": password}),
            None,
        )
        .await
    }

    pub fn service_token(&self) -> String {
        self.keys.service_token("admin-service")
    }

    /// The next published user event; panics if none arrives within 10 s.
    pub async fn next_event(&mut self) -> (String, Envelope) {
        self.events.next().await
    }

    /// Events of `event_type` until one matches `pred` (others are skipped).
    pub async fn event_where(
        &mut self,
        event_type: &str,
        pred: impl Fn(&Envelope) -> bool,
    ) -> Envelope {
        self.events.next_where(event_type, pred).await
    }

    /// Asserts no further event arrives within a grace period.
    pub async fn assert_no_more_events(&mut self) {
        self.events.assert_quiet(Duration::from_millis(700)).await;
    }

    /// Stops the service and removes its schema and its exchanges on the broker.
    pub async fn stop(self) {
        self.shutdown.cancel();
        testing::drop_schema(&self.schema).await;
        testing::service::remove_broker_objects(&self.prefix, &[]).await;
    }
}

/// Asserts the contract's error shape and returns the message.
pub use helpdesk_testkit::http::error;
