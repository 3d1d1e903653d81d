//! Helpers for integration tests against the real PostgreSQL and RabbitMQ. Every test gets its
//! own schema and its own broker prefix, so tests run in parallel. A missing component fails the
//! test with a message saying what to start; nothing passes silently.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{JwtKeys, generate_key_pair};

/// `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A short unique lowercase name with the given prefix, e.g. `t3f9a1c2d`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Panics with a clear message when PostgreSQL is not reachable.
pub async fn require_postgres() {
    use sqlx::Connection;
    let url = database_url();
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
        }
        _ => panic!(
            "PostgreSQL is required for this test but is not reachable at {url} (start it, or set TEST_DATABASE_URL)"
        ),
    }
}

/// Panics with a clear message when RabbitMQ is not reachable.
pub async fn require_rabbitmq() {
    let url = amqp_url();
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(&url, Default::default()),
    )
    .await;
    match ok {
        Ok(Ok(c)) => {
            let _ = c.close(200, "bye".into()).await;
        }
        _ => panic!(
            "RabbitMQ is required for this test but is not reachable at {url} (start it, or set TEST_AMQP_URL)"
        ),
    }
}

/// Drops a test schema (best effort).
pub async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(&database_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

/// A fresh signing key pair for a test platform.
pub struct TestKeys {
    pub private_pem: String,
    pub public_pem: String,
    pub keys: Arc<JwtKeys>,
}

impl TestKeys {
    pub fn generate() -> Self {
        let (private_pem, public_pem) = generate_key_pair();
        let keys = JwtKeys::from_pem(
            &public_pem,
            Some(&private_pem),
            crate::auth::DEFAULT_ISSUER,
            Duration::from_secs(3600),
        )
        .expect("generated keys are valid");
        Self {
            private_pem,
            public_pem,
            keys: Arc::new(keys),
        }
    }

    /// A service credential for `service`.
    pub fn service_token(&self, service: &str) -> String {
        self.keys
            .issue_service_token(service, Duration::from_secs(3600))
            .expect("test keys can sign")
    }
}

/// Waits until `check` returns `Some`, polling every 20 ms, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
