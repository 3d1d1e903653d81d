//! Test platform: a real SMTP server (`helpdesk_testkit::smtp`), notification-service and
//! user-service in-process on random ports, each on its own schema and broker prefix.
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};

use sqlx::PgPool;

use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::topology::{NOTIFICATION_TRIGGERS, NOTIFICATION_USERS};
use helpdesk_kit::config::Env;
use helpdesk_kit::events::Envelope;
use helpdesk_testkit::{self as testing, service};

/// The SMTP server the tests send to (in-process, see `helpdesk_testkit::smtp`).
pub use helpdesk_testkit::smtp::{SinkTls, SmtpSink};

pub use helpdesk_testkit::free_port;
pub use helpdesk_testkit::http::client as http;

// ---------------------------------------------------------------- services

/// The kit's platform with notification-service and user-service.
pub struct Platform(service::Platform);

impl Deref for Platform {
    type Target = service::Platform;
    fn deref(&self) -> &service::Platform {
        &self.0
    }
}

impl DerefMut for Platform {
    fn deref_mut(&mut self) -> &mut service::Platform {
        &mut self.0
    }
}

impl Platform {
    pub async fn new() -> Self {
        Self(service::Platform::new().await)
    }

    /// The shared settings on a new schema in `schema_var`.
    fn base_env(&mut self, schema_var: &str, schema_prefix: &str) -> Vec<(String, String)> {
        let mut env = self.0.env(schema_var, schema_prefix);
        env.push(("FRONTEND_BASE_URL".into(), "http://helpdesk.test".into()));
        env.push(("EVENT_RETRY_BASE_DELAY".into(), "100ms".into()));
        env
    }

    /// notification-service's configuration with `extra` settings.
    pub fn notification_config(&mut self, extra: &[(&str, &str)]) -> notification_service::Config {
        let mut env = self.base_env("NOTIFICATION_DB_SCHEMA", "t_notif_");
        env.push(("NOTIFICATION_POLL_INTERVAL".into(), "100ms".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        notification_service::Config::from_env(&Env::from_map(env)).expect("notification config")
    }

    /// Starts notification-service; returns its base URL and its pool.
    pub async fn start_notification(
        &mut self,
        config: notification_service::Config,
    ) -> (String, PgPool) {
        self.prebind(&config.common.subscription(&NOTIFICATION_TRIGGERS))
            .await;
        self.prebind(&config.common.subscription(&NOTIFICATION_USERS))
            .await;
        let running = self
            .start::<notification_service::NotificationService>(config)
            .await;
        (running.url, running.pool)
    }

    /// Starts user-service with a bootstrap admin; returns its base URL.
    pub async fn start_user_service(&mut self, admin: (&str, &str)) -> String {
        let mut env = self.base_env("USER_DB_SCHEMA", "t_user_");
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
        self.start::<user_service::UserService>(config).await.url
    }

    /// Publishes an event as its producer would.
    pub async fn publish(&self, event: &Envelope) {
        service::publish(&AmqpBus::new(&testing::amqp_url(), &self.prefix), event).await;
    }

    /// Stops the services and removes the schemas and broker objects (on success).
    pub async fn finish(self) {
        self.0.finish().await;
    }
}
