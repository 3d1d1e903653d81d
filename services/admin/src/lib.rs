//! admin-service: the dashboard and user administration.
//!
//! Modules: [`dashboard`] (ticket read model kept by ticket events, and the statistics route),
//! [`users`] (user listing, role change and deletion through user-service), [`user_service`] (the
//! client of user-service's internal routes), [`access`] (who may call, by current role).

pub mod access;
pub mod dashboard;
pub mod user_service;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::bus::Bus;
use helpdesk_kit::bus::topology::{ADMIN_TICKETS, ADMIN_USERS};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::http::{BearerAuth, ContractErrors};
use helpdesk_kit::runtime::{Service, ServiceDef};
use helpdesk_kit::secret::Secret;
use helpdesk_kit::service::{CommonConfig, ServiceConfig, Wiring};

use crate::user_service::UserServiceClient;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::Admin.binary();

/// The service's migrations (`migrations/admin`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/admin");

/// Everything admin-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub user_service_url: String,
    pub service_token: Secret,
    /// Per-attempt timeout of user-service calls (`ADMIN_PEER_TIMEOUT`, default 2s).
    pub peer_timeout: Duration,
    /// Extra tries of user-service reads (`ADMIN_PEER_RETRIES`, default 2).
    pub peer_retries: u32,
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
            .map(|t| Secret::new(t.trim()))
            .ok_or_else(|| {
                ConfigError::new(
                    var::SERVICE_TOKEN,
                    format!("is required (or {})", var::SERVICE_TOKEN_FILE),
                )
            })?;
        Ok(Self {
            common: CommonConfig::from_env(env, contract::Service::Admin)?,
            user_service_url,
            service_token,
            peer_timeout: env.duration_or("ADMIN_PEER_TIMEOUT", Duration::from_secs(2))?,
            peer_retries: env.parse_or("ADMIN_PEER_RETRIES", 2)?,
        })
    }
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    /// Callers' `user_access` remembered between requests ([`helpdesk_kit::access`]).
    pub access: Arc<helpdesk_kit::access::AccessCache>,
    pub users: UserServiceClient,
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

/// admin-service as a runnable service (binary, launcher).
pub struct AdminService;

impl ServiceDef for AdminService {
    const SERVICE: contract::Service = contract::Service::Admin;
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    type Config = Config;
    fn load(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }
    /// Builds the service: its router and its workers (outbox relay, ticket read model, access model).
    async fn build(
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
        let access = Arc::new(helpdesk_kit::access::AccessCache::default());
        let state = AppState::new(
            config.common.keys.clone(),
            Inner {
                pool: pool.clone(),
                access: access.clone(),
                users,
            },
        );
        let mut wiring = Wiring::new(
            contract::Service::Admin,
            &config.common,
            &pool,
            &bus,
            &shutdown,
        );
        // admin-service publishes nothing today; the relay keeps the kit's outbox contract.
        wiring.relay(None);
        wiring
            .consume(&ADMIN_TICKETS, dashboard::TicketReadModel)
            .await;
        wiring.consume(&ADMIN_USERS, access::AccessModel).await;
        wiring.remembered(&access);
        wiring.worker(dashboard::run_pruning(pool, shutdown));
        Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
    }
}
