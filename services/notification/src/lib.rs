//! notification-service: turns domain events into emails and sends them.
//!
//! Modules: [`triggers`] (which events send which emails; the event consumer), [`templates`]
//! (subject + text body, built-in defaults overridable from a folder), [`emails`] (the table),
//! [`sender`] (claims due emails and sends them, with retries, backoff and a rate limit),
//! [`mailer`] (SMTP through lettre, or `.eml` files), [`notifications`] (the HTTP routes).

pub mod emails;
pub mod mailer;
pub mod notifications;
pub mod sender;
pub mod templates;
pub mod triggers;

use helpdesk_kit::http::{BearerAuth, ContractErrors};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::auth::JwtKeys;
use helpdesk_kit::bus::{Bus, IdempotentConsumer, retry_settings};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::db::DbConfig;
use helpdesk_kit::http::{self, HttpConfig, Readiness};
use helpdesk_kit::outbox::OutboxRelay;
use helpdesk_kit::runtime::{Service, Worker};

use crate::mailer::MailTransport;
use crate::sender::{Sender, SenderConfig};
use crate::templates::Templates;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Notification.binary();

/// The service's migrations (`migrations/notification`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/notification");

/// Everything notification-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub db: DbConfig,
    pub amqp_url: Option<String>,
    pub bus_prefix: String,
    pub keys: Arc<JwtKeys>,
    pub transport: MailTransport,
    pub sender: SenderConfig,
    pub staff_notify_email: Option<String>,
    pub frontend_base_url: String,
    pub template_dir: Option<PathBuf>,
    /// Event consumer retries: `EVENT_MAX_ATTEMPTS`, `EVENT_RETRY_BASE_DELAY`.
    pub event_retries: (u32, Duration),
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let staff_notify_email = env
            .raw(var::STAFF_NOTIFY_EMAIL)
            .map(|s| s.trim().to_string());
        if let Some(s) = &staff_notify_email
            && !helpdesk_kit::error::is_valid_email(s)
        {
            return Err(ConfigError::new(
                var::STAFF_NOTIFY_EMAIL,
                "is not a valid email address",
            ));
        }
        let template_dir = env.raw("NOTIFICATION_TEMPLATE_DIR").map(PathBuf::from);
        // Fail at start-up, not on the first event, when a deployer's template is broken.
        Templates::load(template_dir.as_deref())
            .map_err(|e| ConfigError::new("NOTIFICATION_TEMPLATE_DIR", e.to_string()))?;
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            db: DbConfig::for_service(env, contract::Service::Notification)?,
            amqp_url: env.raw(var::AMQP_URL),
            bus_prefix: env.string_or(var::BUS_PREFIX, ""),
            keys: Arc::new(JwtKeys::from_env(env, false)?),
            transport: MailTransport::from_env(env)?,
            sender: SenderConfig::from_env(env)?,
            staff_notify_email,
            frontend_base_url: env
                .string_or(var::FRONTEND_BASE_URL, "http://localhost:3000")
                .trim_end_matches('/')
                .to_string(),
            template_dir,
            event_retries: retry_settings(env)?,
        })
    }

    /// A sender for this configuration (the service runs one; tests build their own to drive it).
    pub fn sender(&self, pool: PgPool) -> anyhow::Result<Sender> {
        Ok(Sender::new(
            pool,
            self.transport.mailer()?,
            self.sender.clone(),
            &self.db.schema,
        ))
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
    pub templates: Arc<Templates>,
}

helpdesk_kit::app_state!(Inner);

#[derive(OpenApi)]
#[openapi(
    info(title = "Helpdesk notification-service", description = "Emails triggered by events, and their delivery state"),
    paths(notifications::send_email, notifications::email_status),
    modifiers(&BearerAuth, &ContractErrors)
)]
pub struct ApiDoc;

/// The service's API routes, without the shared stack.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .merge(notifications::routes())
        .with_state(state)
}

/// Builds the service: its router and its workers (outbox relay, event consumer, email sender).
pub async fn build(
    config: Config,
    pool: PgPool,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<Service> {
    let templates = Arc::new(Templates::load(config.template_dir.as_deref())?);
    let state = AppState(Arc::new(Inner {
        pool: pool.clone(),
        keys: config.keys.clone(),
        templates: templates.clone(),
    }));
    let readiness = Readiness {
        service: SERVICE,
        pool: pool.clone(),
        bus: Some(bus.clone()),
    };
    let router = api_router(state)
        .merge(http::operational_routes(readiness))
        .merge(http::docs_routes(ApiDoc::openapi()));
    let router = http::finish(router, SERVICE, &config.http);

    let triggers = Arc::new(triggers::Triggers {
        templates,
        staff_notify_email: config.staff_notify_email.clone(),
        frontend_base_url: config.frontend_base_url.clone(),
    });
    let consumer = Arc::new(IdempotentConsumer::new(SERVICE, pool.clone(), triggers));
    let (attempts, delay) = config.event_retries;
    let subscription = triggers::subscription(attempts, delay);
    helpdesk_kit::bus::declare_early(bus.as_ref(), &subscription).await;
    let consume_bus = bus.clone();
    let consume_shutdown = shutdown.clone();
    // Who may read an email's status now (role changes, password changes, deletions).
    let access_subscription =
        helpdesk_kit::bus::topology::NOTIFICATION_USERS.subscription(attempts, delay);
    helpdesk_kit::bus::declare_early(bus.as_ref(), &access_subscription).await;
    let access = Arc::new(IdempotentConsumer::new(
        helpdesk_kit::bus::topology::NOTIFICATION_USERS.name,
        pool.clone(),
        Arc::new(helpdesk_kit::access::AccessModel),
    ));
    let (access_bus, access_shutdown) = (bus.clone(), shutdown.clone());
    let mut workers: Vec<Worker> = vec![
        Box::pin(OutboxRelay::new(pool.clone(), bus, &config.db.schema).run(shutdown.clone())),
        Box::pin(async move {
            consume_bus
                .consume(subscription, consumer, consume_shutdown)
                .await
        }),
        Box::pin(async move {
            access_bus
                .consume(access_subscription, access, access_shutdown)
                .await
        }),
    ];
    if matches!(config.transport, MailTransport::Disabled) {
        tracing::warn!(
            "{}: emails are recorded and marked FAILED instead of sent; set {} (or {}) to send them",
            mailer::DELIVERY_NOT_CONFIGURED,
            var::SMTP_URL,
            var::SMTP_HOST
        );
    }
    if config.sender.enabled {
        workers.push(Box::pin(config.sender(pool)?.run(shutdown)));
    }
    Ok(Service {
        name: SERVICE,
        router,
        workers,
    })
}

helpdesk_kit::service_def!(
    /// notification-service as a runnable service (binary, launcher).
    NotificationService,
    contract::Service::Notification
);
