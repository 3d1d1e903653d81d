//! admin-service: the dashboard and user administration.
//!
//! Modules: [`dashboard`] (ticket read model kept by ticket events, and the statistics route),
//! [`users`] (user listing, role change and deletion through user-service), [`user_service`] (the
//! client of user-service's internal routes), [`access`] (who may call, by current role).

pub mod access;
pub mod dashboard;
pub mod user_service;
pub mod users;

use helpdesk_kit::http::{BearerAuth, ContractErrors};
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

use crate::user_service::UserServiceClient;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Admin.binary();

/// The service's migrations (`migrations/admin`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/admin");

/// Everything admin-service reads from its environment.
#[derive(Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub db: DbConfig,
    pub amqp_url: Option<String>,
    pub bus_prefix: String,
    pub keys: Arc<JwtKeys>,
    pub user_service_url: String,
    pub service_token: String,
    /// Per-attempt timeout of user-service calls (`ADMIN_PEER_TIMEOUT`, default 2s).
    pub peer_timeout: Duration,
    /// Extra tries of user-service reads (`ADMIN_PEER_RETRIES`, default 2).
    pub peer_retries: u32,
    /// Event consumer retries: `EVENT_MAX_ATTEMPTS`, `EVENT_RETRY_BASE_DELAY`.
    pub event_retries: (u32, Duration),
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("http", &self.http)
            .field("db", &self.db.schema)
            .field("user_service_url", &self.user_service_url)
            .finish_non_exhaustive()
    }
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let user_service_var = contract::Service::User.url_var();
        let user_service_url = env.required(user_service_var)?;
        if reqwest::Url::parse(&user_service_url).is_err() {
            return Err(ConfigError::new(
                user_service_var,
                format!("is not a URL: {user_service_url:?}"),
            ));
        }
        let service_token = env
            .value_or_file(contract::Service::Admin.service_token_var())?
            .map(Some)
            .unwrap_or(env.value_or_file(var::SERVICE_TOKEN)?)
            .map(|t| t.trim().to_string())
            .ok_or_else(|| {
                ConfigError::new(
                    var::SERVICE_TOKEN,
                    format!("is required (or {})", var::SERVICE_TOKEN_FILE),
                )
            })?;
        Ok(Self {
            http: HttpConfig::from_env(env)?,
            db: DbConfig::for_service(env, contract::Service::Admin)?,
            amqp_url: env.raw(var::AMQP_URL),
            bus_prefix: env.string_or(var::BUS_PREFIX, ""),
            keys: Arc::new(JwtKeys::from_env(env, false)?),
            user_service_url,
            service_token,
            peer_timeout: env.duration_or("ADMIN_PEER_TIMEOUT", Duration::from_secs(2))?,
            peer_retries: env.parse_or("ADMIN_PEER_RETRIES", 2)?,
            event_retries: retry_settings(env)?,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
    pub users: UserServiceClient,
}

helpdesk_kit::app_state!(Inner);

#[derive(OpenApi)]
#[openapi(
    info(title = "Helpdesk admin-service", description = "Dashboard statistics and user administration"),
    paths(dashboard::statistics, users::list_users, users::list_agents, users::change_role, users::delete_user),
    modifiers(&BearerAuth, &ContractErrors)
)]
pub struct ApiDoc;

/// The service's API routes, without the shared stack.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .merge(users::routes())
        .with_state(state)
}

/// Builds the service: its router and its workers (outbox relay, ticket read model, access model).
pub async fn build(
    config: Config,
    pool: PgPool,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<Service> {
    let users = UserServiceClient::new(
        &config.user_service_url,
        config.service_token.clone(),
        config.peer_timeout,
        config.peer_retries,
    )?;
    let state = AppState(Arc::new(Inner {
        pool: pool.clone(),
        keys: config.keys.clone(),
        users,
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

    let (attempts, delay) = config.event_retries;
    let tickets = Arc::new(IdempotentConsumer::new(
        dashboard::QUEUE,
        pool.clone(),
        Arc::new(dashboard::TicketReadModel),
    ));
    let access = Arc::new(IdempotentConsumer::new(
        access::QUEUE,
        pool.clone(),
        Arc::new(access::AccessModel),
    ));
    for sub in [
        dashboard::subscription(attempts, delay),
        access::subscription(attempts, delay),
    ] {
        helpdesk_kit::bus::declare_early(bus.as_ref(), &sub).await;
    }
    let (b1, s1) = (bus.clone(), shutdown.clone());
    let (b2, s2) = (bus.clone(), shutdown.clone());
    let workers: Vec<Worker> = vec![
        // admin-service publishes nothing today; the relay keeps the kit's outbox contract.
        Box::pin(dashboard::run_pruning(pool.clone(), shutdown.clone())),
        Box::pin(OutboxRelay::new(pool, bus, &config.db.schema).run(shutdown)),
        Box::pin(async move {
            b1.consume(dashboard::subscription(attempts, delay), tickets, s1)
                .await
        }),
        Box::pin(async move {
            b2.consume(access::subscription(attempts, delay), access, s2)
                .await
        }),
    ];
    Ok(Service {
        name: SERVICE,
        router,
        workers,
    })
}

helpdesk_kit::service_def!(
    /// admin-service as a runnable service (binary, launcher).
    AdminService,
    contract::Service::Admin
);
