//! ticket-service: tickets, comments, assignment, and the ticket's audit trail.
//!
//! Modules: [`tickets`] (ticket routes and SQL), [`listing`] (lists, filters, pages), [`comments`] (comment routes and SQL),
//! [`assignment`] (assigning and unassigning), [`audit_trail`] (`GET /tickets/:id/audit`, a call to
//! audit-service), [`users`] (the read model of users fed by `user.*` events, the [`users::Caller`]
//! extractor, and the `user.deleted` cascade) (pagination comes from the kit).

pub mod assignment;
pub mod audit_trail;
pub mod comments;
pub mod listing;
pub mod tickets;
pub mod users;

use helpdesk_kit::http::{BearerAuth, ContractErrors};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::auth::JwtKeys;
use helpdesk_kit::bus::{self, Bus, IdempotentConsumer, Subscription};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::db::DbConfig;
use helpdesk_kit::http::{self, HttpConfig, Readiness};
use helpdesk_kit::outbox::OutboxRelay;
use helpdesk_kit::peer::PeerClient;
use helpdesk_kit::runtime::Service;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Ticket.binary();

/// The queue of the users read model.
pub const USERS_QUEUE: &str = helpdesk_kit::bus::topology::TICKET_USERS.name;

/// The service's migrations (`migrations/ticket`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/ticket");

/// How ticket-service calls audit-service.
#[derive(Debug, Clone)]
pub struct AuditPeerConfig {
    /// `AUDIT_SERVICE_URL`; without it the audit route answers 503.
    pub url: Option<String>,
    /// `SERVICE_TOKEN`: this service's credential for the internal call.
    pub service_token: Option<String>,
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
    pub http: HttpConfig,
    pub db: DbConfig,
    pub amqp_url: Option<String>,
    pub bus_prefix: String,
    pub keys: Arc<JwtKeys>,
    pub audit: AuditPeerConfig,
    pub event_max_attempts: u32,
    pub event_retry_base_delay: Duration,
    /// `TICKET_OUTBOX_POLL_INTERVAL` (default 2 s): the relay's fallback when NOTIFY is missed.
    pub outbox_poll_interval: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let (event_max_attempts, event_retry_base_delay) = bus::retry_settings(env)?;
        let retries: u32 = env.parse_or("TICKET_AUDIT_RETRIES", 1)?;
        if retries > 3 {
            return Err(ConfigError::new(
                "TICKET_AUDIT_RETRIES",
                "must be at most 3",
            ));
        }
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            db: DbConfig::for_service(env, contract::Service::Ticket)?,
            amqp_url: env.raw(var::AMQP_URL),
            bus_prefix: env.string_or(var::BUS_PREFIX, ""),
            keys: Arc::new(JwtKeys::from_env(env, false)?),
            audit: AuditPeerConfig {
                url: env.raw(contract::Service::Audit.url_var()),
                service_token: env
                    .value_or_file(contract::Service::Ticket.service_token_var())?
                    .map(Some)
                    .unwrap_or(env.value_or_file(var::SERVICE_TOKEN)?)
                    .map(|t| t.trim().to_string()),
                timeout: env.duration_or("TICKET_AUDIT_TIMEOUT", Duration::from_millis(600))?,
                retries,
                deadline: env.duration_or("TICKET_AUDIT_DEADLINE", Duration::from_millis(1500))?,
            },
            event_max_attempts,
            event_retry_base_delay,
            outbox_poll_interval: env
                .duration_or("TICKET_OUTBOX_POLL_INTERVAL", Duration::from_secs(2))?,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
    /// audit-service, when configured.
    pub audit: Option<PeerClient>,
    pub config: Config,
}

helpdesk_kit::app_state!(Inner);

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
    helpdesk_kit::bus::topology::TICKET_USERS
        .subscription(config.event_max_attempts, config.event_retry_base_delay)
}

/// Builds the service: its full router, its outbox relay and its users consumer.
pub async fn build(
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
    let state = AppState(Arc::new(Inner {
        pool: pool.clone(),
        keys: config.keys.clone(),
        audit,
        config: config.clone(),
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
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &config.db.schema)
        .with_poll_interval(config.outbox_poll_interval);
    let consumer = Arc::new(IdempotentConsumer::new(
        USERS_QUEUE,
        pool,
        Arc::new(users::UserEvents),
    ));
    let subscription = users_subscription(&config);
    helpdesk_kit::bus::declare_early(bus.as_ref(), &subscription).await;
    let consume = {
        let shutdown = shutdown.clone();
        async move { bus.consume(subscription, consumer, shutdown).await }
    };
    Ok(Service {
        name: SERVICE,
        router,
        workers: vec![Box::pin(relay.run(shutdown)), Box::pin(consume)],
    })
}

helpdesk_kit::service_def!(
    /// ticket-service as a runnable service (binary, launcher).
    TicketService,
    contract::Service::Ticket
);
