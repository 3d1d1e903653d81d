//! ticket-service: tickets, comments, assignment, and the ticket's audit trail.
//!
//! Modules: [`tickets`] (ticket routes and SQL), [`listing`] (lists, filters, pages), [`comments`] (comment routes and SQL),
//! [`assignment`] (assigning and unassigning), [`audit_trail`] (`GET /tickets/:id/audit`, a call to
//! audit-service), [`users`] (the read model of users and the [`users::Caller`] extractor),
//! [`user_events`] (`user.*` events, and the `user.deleted` cascade over the other modules) (pagination comes from the kit).

pub mod assignment;
pub mod audit_trail;
pub mod comments;
pub mod listing;
pub mod tickets;
pub mod user_events;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::bus::topology::TICKET_USERS;
use helpdesk_kit::bus::{Bus, Subscription};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::http::{BearerAuth, ContractErrors};
use helpdesk_kit::peer::PeerClient;
use helpdesk_kit::runtime::{Service, ServiceDef};
use helpdesk_kit::secret::Secret;
use helpdesk_kit::service::{CommonConfig, ServiceConfig, Wiring};

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Ticket.binary();

/// The queue of the users read model.
pub const USERS_QUEUE: &str = TICKET_USERS.name;

/// The service's migrations (`migrations/ticket`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/ticket");

/// How ticket-service calls audit-service.
#[derive(Debug, Clone)]
pub struct AuditPeerConfig {
    /// `AUDIT_SERVICE_URL`; without it the audit route answers 503.
    pub url: Option<String>,
    /// `SERVICE_TOKEN`: this service's credential for the internal call.
    pub service_token: Option<Secret>,
    /// `TICKET_AUDIT_TIMEOUT` per attempt (default 600 ms).
    pub timeout: Duration,
    /// `TICKET_AUDIT_RETRIES` (default 1): the call is an idempotent read.
    pub retries: u32,
    /// `TICKET_AUDIT_DEADLINE` for the whole call, retries included (default 1.5 s).
    pub deadline: Duration,
}

/// Everything ticket-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub audit: AuditPeerConfig,
    /// `TICKET_OUTBOX_POLL_INTERVAL` (default 2 s): the relay's fallback when NOTIFY is missed.
    pub outbox_poll_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let retries: u32 = env.parse_or("TICKET_AUDIT_RETRIES", 1)?;
        if retries > 3 {
            return Err(ConfigError::new(
                "TICKET_AUDIT_RETRIES",
                "must be at most 3",
            ));
        }
        Ok(Self {
            common: CommonConfig::from_env(env, contract::Service::Ticket)?,
            audit: AuditPeerConfig {
                url: env.raw(contract::Service::Audit.url_var()),
                service_token: env
                    .value_or_file(contract::Service::Ticket.service_token_var())?
                    .map(Some)
                    .unwrap_or(env.value_or_file(var::SERVICE_TOKEN)?)
                    .map(|t| Secret::new(t.trim())),
                timeout: env.duration_or("TICKET_AUDIT_TIMEOUT", Duration::from_millis(600))?,
                retries,
                deadline: env.duration_or("TICKET_AUDIT_DEADLINE", Duration::from_millis(1500))?,
            },
            outbox_poll_interval: env
                .duration_or("TICKET_OUTBOX_POLL_INTERVAL", Duration::from_secs(2))?,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    /// Callers remembered between requests (see [`users::CallerCache`]).
    pub callers: Arc<users::CallerCache>,
    /// audit-service, when configured.
    pub audit: Option<PeerClient>,
    pub config: Config,
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
    info(title = "Helpdesk ticket-service", description = "Tickets, comments and assignment"),
    paths(
        tickets::create_ticket, listing::list_tickets, listing::inbox, tickets::get_ticket,
        tickets::update_ticket, tickets::delete_ticket, assignment::assign_ticket,
        comments::list_comments, comments::add_comment, audit_trail::ticket_audit,
    ),
    modifiers(&BearerAuth, &ContractErrors)
)]
pub struct ApiDoc;

/// The service's API routes, without the shared stack.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .merge(tickets::routes())
        .merge(assignment::routes())
        .merge(comments::routes())
        .merge(audit_trail::routes())
        .with_state(state)
}

/// The subscription of the users read model.
pub fn users_subscription(config: &Config) -> Subscription {
    config.common.subscription(&TICKET_USERS)
}

/// ticket-service as a runnable service (binary, launcher).
pub struct TicketService;

impl ServiceDef for TicketService {
    const SERVICE: contract::Service = contract::Service::Ticket;
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    type Config = Config;
    fn load(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }
    /// Builds the service: its full router, its outbox relay and its users consumer.
    async fn build(
        config: Config,
        pool: PgPool,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        if config.audit.url.is_some() && config.audit.service_token.is_none() {
            tracing::warn!(
                "AUDIT_SERVICE_URL is set but SERVICE_TOKEN is not: audit-service will refuse the audit trail calls"
            );
        }
        let audit = config.audit.url.as_deref().map(|url| {
            PeerClient::new(
                "audit-service",
                url,
                config.audit.service_token.clone(),
                config.audit.timeout,
                config.audit.retries,
            )
        });
        let callers = Arc::new(users::CallerCache::default());
        let state = AppState::new(
            config.common.keys.clone(),
            Inner {
                pool: pool.clone(),
                callers: callers.clone(),
                audit,
                config: config.clone(),
            },
        );
        let mut wiring = Wiring::new(
            contract::Service::Ticket,
            &config.common,
            &pool,
            &bus,
            &shutdown,
        );
        wiring.relay(Some(config.outbox_poll_interval));
        wiring.consume(&TICKET_USERS, user_events::UserEvents).await;
        wiring.remembered(&callers);
        Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
    }
}
