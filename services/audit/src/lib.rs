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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::bus::Bus;
use helpdesk_kit::bus::topology::AUDIT_EVENTS;
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract;
use helpdesk_kit::http::{BearerAuth, ContractErrors};
use helpdesk_kit::runtime::{Service, ServiceDef};
use helpdesk_kit::service::{CommonConfig, ServiceConfig, Wiring};

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Audit.binary();

/// The queue that receives every event.
pub const EVENTS_QUEUE: &str = AUDIT_EVENTS.name;

/// The service's migrations (`migrations/audit`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/audit");

/// Everything audit-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `AUDIT_RETENTION_DAYS` (default 365): entries older than this are removed.
    pub retention_days: u32,
    /// `AUDIT_RETENTION_INTERVAL` (default 1h): how often the retention job runs.
    pub retention_interval: Duration,
    /// `AUDIT_CONSUMERS` (default 1): parallel consumers of the events queue. Entries are
    /// ordered by the event's timestamp and deduplicated by its id, so handling order does not
    /// matter. One consumer takes what the broker has pushed as one batch (one transaction): under
    /// load its batches grow and it keeps up with less work than several consumers splitting the
    /// same stream into smaller batches (the `helpdesk bench` mix: 4–6 % more requests a second
    /// with one, the event lag the same). More consumers help only where one batch's
    /// transaction is slow.
    pub consumers: usize,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
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
        let consumers: usize = env.parse_or("AUDIT_CONSUMERS", 1)?;
        if !(1..=64).contains(&consumers) {
            return Err(ConfigError::new(
                "AUDIT_CONSUMERS",
                "must be between 1 and 64",
            ));
        }
        Ok(Self {
            common: CommonConfig::from_env(env, contract::Service::Audit)?,
            retention_days,
            retention_interval,
            consumers,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
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
pub fn events_subscription(config: &Config) -> helpdesk_kit::bus::Subscription {
    config.common.subscription(&AUDIT_EVENTS)
}

/// audit-service as a runnable service (binary, launcher).
pub struct AuditService;

impl ServiceDef for AuditService {
    const SERVICE: contract::Service = contract::Service::Audit;
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    type Config = Config;
    fn load(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }
    /// Builds the service: its full router, the event recorder and the retention job.
    async fn build(
        config: Config,
        pool: PgPool,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        let state = AppState::new(
            config.common.keys.clone(),
            Inner {
                pool: pool.clone(),
                config: config.clone(),
            },
        );
        let mut wiring = Wiring::new(
            contract::Service::Audit,
            &config.common,
            &pool,
            &bus,
            &shutdown,
        );
        wiring
            .consume_as(
                EVENTS_QUEUE,
                &AUDIT_EVENTS,
                recorder::Recorder,
                config.consumers,
            )
            .await;
        wiring.worker(retention::run(
            pool,
            config.retention_days,
            config.retention_interval,
            shutdown,
        ));
        Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
    }
}
