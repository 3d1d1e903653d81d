//! Test platform: admin-service and the real user-service in-process on random ports, each on its
//! own schema, sharing a broker prefix (started with `helpdesk_testkit::service`).
#![allow(dead_code)]

use std::ops::{Deref, DerefMut};

use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel, Connection};
use sqlx::PgPool;

use helpdesk_kit::bus::topology::{ADMIN_TICKETS, ADMIN_USERS};
use helpdesk_kit::config::Env;
use helpdesk_kit::events::Envelope;
use helpdesk_testkit::{self as testing, service};

pub use helpdesk_testkit::http::client as http;

/// The kit's platform with admin-service, user-service and ticket-service.
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

    /// The shared settings on a new schema in `schema_var`, with `extra` added.
    fn env(&mut self, schema_var: &str, schema_prefix: &str, extra: &[(&str, &str)]) -> Env {
        let mut env = self.0.env(schema_var, schema_prefix);
        env.push(("EVENT_RETRY_BASE_DELAY".into(), "100ms".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Env::from_map(env)
    }

    /// Starts admin-service calling user-service at `user_service_url`; returns its URL and pool.
    pub async fn start_admin(
        &mut self,
        user_service_url: &str,
        extra: &[(&str, &str)],
    ) -> (String, PgPool) {
        let token = self.keys.service_token("admin-service");
        let mut vars = vec![
            ("USER_SERVICE_URL", user_service_url),
            ("SERVICE_TOKEN", token.as_str()),
        ];
        vars.extend_from_slice(extra);
        let env = self.env("ADMIN_DB_SCHEMA", "t_admin_", &vars);
        let config = admin_service::Config::from_env(&env).expect("admin config");
        self.prebind(&config.common.subscription(&ADMIN_TICKETS))
            .await;
        self.prebind(&config.common.subscription(&ADMIN_USERS))
            .await;
        let running = self.start::<admin_service::AdminService>(config).await;
        (running.url, running.pool)
    }

    /// Starts user-service with a bootstrap admin; returns its base URL.
    pub async fn start_user_service(&mut self, admin: (&str, &str)) -> String {
        let private_pem = self.keys.private_pem.clone();
        let env = self.env(
            "USER_DB_SCHEMA",
            "t_user_",
            &[
                ("JWT_PRIVATE_KEY", private_pem.as_str()),
                ("USER_ARGON2_MEMORY_KIB", "1024"),
                ("USER_ARGON2_ITERATIONS", "1"),
                ("BOOTSTRAP_ADMIN_EMAIL", admin.0),
                ("BOOTSTRAP_ADMIN_PASSWORD", admin.1),
            ],
        );
        let config = user_service::Config::from_env(&env).expect("user config");
        self.start::<user_service::UserService>(config).await.url
    }

    /// Starts ticket-service (without audit-service); returns its base URL. Start it before
    /// user-service so its users queue exists when the first `user.created` is published.
    pub async fn start_ticket_service(&mut self) -> String {
        let env = self.env(
            "TICKET_DB_SCHEMA",
            "t_ticket_",
            &[("TICKET_OUTBOX_POLL_INTERVAL", "200ms")],
        );
        let config = ticket_service::Config::from_env(&env).expect("ticket config");
        self.prebind(&ticket_service::users_subscription(&config))
            .await;
        self.start::<ticket_service::TicketService>(config)
            .await
            .url
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
        self.0.finish().await;
    }
}
