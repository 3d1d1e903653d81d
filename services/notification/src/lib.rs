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

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::access::AccessModel;
use helpdesk_kit::bus::Bus;
use helpdesk_kit::bus::topology::{NOTIFICATION_TRIGGERS, NOTIFICATION_USERS};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::http::{BearerAuth, ContractErrors};
use helpdesk_kit::runtime::{Service, ServiceDef};
use helpdesk_kit::service::{CommonConfig, ServiceConfig, Wiring};

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
    pub common: CommonConfig,
    pub transport: MailTransport,
    pub sender: SenderConfig,
    pub staff_notify_email: Option<String>,
    pub frontend_base_url: String,
    pub template_dir: Option<PathBuf>,
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
            common: CommonConfig::from_env(env, contract::Service::Notification)?,
            transport: MailTransport::from_env(env)?,
            sender: SenderConfig::from_env(env)?,
            staff_notify_email,
            frontend_base_url: env
                .string_or(var::FRONTEND_BASE_URL, "http://localhost:3000")
                .trim_end_matches('/')
                .to_string(),
            template_dir,
        })
    }

    /// A sender for this configuration (the service runs one; tests build their own to drive it).
    pub fn sender(&self, pool: PgPool) -> anyhow::Result<Sender> {
        Ok(Sender::new(
            pool,
            self.transport.mailer()?,
            self.sender.clone(),
            &self.common.db.schema,
        ))
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    /// Callers' `user_access` remembered between requests ([`helpdesk_kit::access`]).
    pub access: Arc<helpdesk_kit::access::AccessCache>,
    pub templates: Arc<Templates>,
}

/// Handler state (cheap to clone).
pub type AppState = helpdesk_kit::service::AppState<Inner>;

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

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

/// notification-service as a runnable service (binary, launcher).
pub struct NotificationService;

impl ServiceDef for NotificationService {
    const SERVICE: contract::Service = contract::Service::Notification;
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    type Config = Config;
    fn load(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }
    /// Builds the service: its router and its workers (outbox relay, event consumer, email sender).
    async fn build(
        config: Config,
        pool: PgPool,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        let templates = Arc::new(Templates::load(config.template_dir.as_deref())?);
        let access = Arc::new(helpdesk_kit::access::AccessCache::default());
        let state = AppState::new(
            config.common.keys.clone(),
            Inner {
                pool: pool.clone(),
                access: access.clone(),
                templates: templates.clone(),
            },
        );
        let triggers = triggers::Triggers {
            templates,
            staff_notify_email: config.staff_notify_email.clone(),
            frontend_base_url: config.frontend_base_url.clone(),
        };
        let mut wiring = Wiring::new(
            contract::Service::Notification,
            &config.common,
            &pool,
            &bus,
            &shutdown,
        );
        wiring.relay(None);
        // Handled trigger events have always been remembered under the service's name.
        wiring
            .consume_as(SERVICE, &NOTIFICATION_TRIGGERS, triggers, 1)
            .await;
        // Who may read an email's status now (role changes, password changes, deletions).
        wiring.consume(&NOTIFICATION_USERS, AccessModel).await;
        wiring.remembered(&access);
        if matches!(config.transport, MailTransport::Disabled) {
            tracing::warn!(
                "{}: emails are recorded and marked FAILED instead of sent; set {} (or {}) to send them",
                mailer::DELIVERY_NOT_CONFIGURED,
                var::SMTP_URL,
                var::SMTP_HOST
            );
        }
        if config.sender.enabled {
            wiring.worker(config.sender(pool)?.run(shutdown));
        }
        Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
    }
}
