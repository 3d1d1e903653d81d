//! audit-service: one append-only audit entry per domain event, and the routes that read them.
//!
//! Modules: [`recorder`] (consumes every event on every exchange), [`entries`] (the audit table,
//! its routes and its queries), [`users`] (the read model of users for the `actor` object and for
//! authorization), [`retention`] (removes entries older than the configured number of days),
//! Pagination comes from `helpdesk_kit::pagination`.

pub mod entries;
pub mod recorder;
pub mod retention;
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
use helpdesk_kit::runtime::Service;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Audit.binary();

/// The queue that receives every event.
pub const EVENTS_QUEUE: &str = helpdesk_kit::bus::topology::AUDIT_EVENTS.name;

/// The service's migrations (`migrations/audit`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

/// Everything audit-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub db: DbConfig,
    pub amqp_url: Option<String>,
    pub bus_prefix: String,
    pub keys: Arc<JwtKeys>,
    /// `AUDIT_RETENTION_DAYS` (default 365): entries older than this are removed.
    pub retention_days: u32,
    /// `AUDIT_RETENTION_INTERVAL` (default 1h): how often the retention job runs.
    pub retention_interval: Duration,
    pub event_max_attempts: u32,
    pub event_retry_base_delay: Duration,
    /// `AUDIT_CONSUMERS` (default 4): parallel consumers of the events queue. Entries are
    /// ordered by the event's timestamp and deduplicated by its id, so handling order does not
    /// matter; parallelism keeps the audit lag low under load.
    pub consumers: usize,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let (event_max_attempts, event_retry_base_delay) = bus::retry_settings(env)?;
        let retention_days: u32 = env.parse_or("AUDIT_RETENTION_DAYS", 365)?;
        if retention_days == 0 {
            return Err(ConfigError::new(
                "AUDIT_RETENTION_DAYS",
                "must be at least 1",
            ));
        }
        let retention_interval =
            env.duration_or("AUDIT_RETENTION_INTERVAL", Duration::from_secs(3600))?;
        if retention_interval.is_zero() {
            return Err(ConfigError::new(
                "AUDIT_RETENTION_INTERVAL",
                "must be longer than zero",
            ));
        }
        let consumers: usize = env.parse_or("AUDIT_CONSUMERS", 4)?;
        if !(1..=64).contains(&consumers) {
            return Err(ConfigError::new(
                "AUDIT_CONSUMERS",
                "must be between 1 and 64",
            ));
        }
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            db: DbConfig::for_service(env, contract::Service::Audit)?,
            amqp_url: env.raw(var::AMQP_URL),
            bus_prefix: env.string_or(var::BUS_PREFIX, ""),
            keys: Arc::new(JwtKeys::from_env(env, false)?),
            retention_days,
            retention_interval,
            event_max_attempts,
            event_retry_base_delay,
            consumers,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
    pub config: Config,
}

helpdesk_kit::app_state!(Inner);

#[derive(OpenApi)]
#[openapi(
    info(title = "Helpdesk audit-service", description = "The append-only audit log of every domain event"),
    paths(entries::log_entry, entries::by_entity, entries::by_actor, entries::search),
    modifiers(&BearerAuth, &ContractErrors)
)]
pub struct ApiDoc;

/// The service's API routes, without the shared stack.
pub fn api_router(state: AppState) -> Router {
    Router::new().merge(entries::routes()).with_state(state)
}

/// The subscription to every event on every exchange.
pub fn events_subscription(config: &Config) -> Subscription {
    helpdesk_kit::bus::topology::AUDIT_EVENTS
        .subscription(config.event_max_attempts, config.event_retry_base_delay)
}

/// Builds the service: its full router, the event recorder and the retention job.
pub async fn build(
    config: Config,
    pool: PgPool,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<Service> {
    let state = AppState(Arc::new(Inner {
        pool: pool.clone(),
        keys: config.keys.clone(),
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
    let consumer = Arc::new(IdempotentConsumer::new(
        EVENTS_QUEUE,
        pool.clone(),
        Arc::new(recorder::Recorder),
    ));
    helpdesk_kit::bus::declare_early(bus.as_ref(), &events_subscription(&config)).await;
    let mut workers: Vec<helpdesk_kit::runtime::Worker> = Vec::new();
    for _ in 0..config.consumers {
        let (bus, consumer, shutdown) = (bus.clone(), consumer.clone(), shutdown.clone());
        let subscription = events_subscription(&config);
        workers.push(Box::pin(async move {
            bus.consume(subscription, consumer, shutdown).await
        }));
    }
    let retention = retention::run(
        pool,
        config.retention_days,
        config.retention_interval,
        shutdown,
    );
    Ok(Service {
        name: SERVICE,
        router,
        workers: {
            workers.push(Box::pin(retention));
            workers
        },
    })
}

helpdesk_kit::service_def!(
    /// audit-service as a runnable service (binary, launcher).
    AuditService,
    contract::Service::Audit
);
