//! user-service: accounts, sign-in, password reset, and the JWTs every other service verifies.
//!
//! Modules: [`auth`] (signup, login, me, change password, token validation, JWKS), [`reset`]
//! (forgot / reset password), [`internal`] (routes for admin-service), [`users`] (the table),
//! [`passwords`] (argon2id), [`bootstrap`] (the first administrator).

pub mod auth;
pub mod bootstrap;
pub mod internal;
pub mod passwords;
pub mod reset;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

use helpdesk_kit::auth::Role;
use helpdesk_kit::bus::Bus;
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::{self, var};
use helpdesk_kit::http::{BearerAuth, ContractErrors};
use helpdesk_kit::ratelimit::KeyedLimiter;
use helpdesk_kit::runtime::{Service, ServiceDef};
use helpdesk_kit::secret::Secret;
use helpdesk_kit::service::{CommonConfig, ServiceConfig, Wiring};

pub use passwords::HashingConfig;

/// The service's name in logs and metrics.
pub const SERVICE: &str = contract::Service::User.binary();

/// The service's migrations (`migrations/user`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/user");

/// Rate limits, per minute (0 disables one).
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub login_per_ip: u32,
    pub login_per_account: u32,
    pub forgot_per_ip: u32,
    pub forgot_per_account: u32,
    pub reset_per_ip: u32,
}

/// Everything user-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub frontend_base_url: String,
    pub signup_default_role: Role,
    pub password_min_length: usize,
    pub hashing: HashingConfig,
    pub bootstrap_admin: Option<(String, Secret)>,
    pub rate_limits: RateLimits,
    pub reset_token_ttl: Duration,
}

impl Config {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let bootstrap_admin = match (
            env.raw(var::BOOTSTRAP_ADMIN_EMAIL),
            env.value_or_file(var::BOOTSTRAP_ADMIN_PASSWORD)?,
        ) {
            (Some(email), Some(password)) => {
                if !helpdesk_kit::error::is_valid_email(email.trim()) {
                    return Err(ConfigError::new(
                        var::BOOTSTRAP_ADMIN_EMAIL,
                        "is not a valid email address",
                    ));
                }
                if password.chars().count() < 8 {
                    return Err(ConfigError::new(
                        var::BOOTSTRAP_ADMIN_PASSWORD,
                        "must be at least 8 characters",
                    ));
                }
                Some((email.trim().to_string(), Secret::new(password)))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    var::BOOTSTRAP_ADMIN_PASSWORD,
                    format!("is required when {} is set", var::BOOTSTRAP_ADMIN_EMAIL),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    var::BOOTSTRAP_ADMIN_EMAIL,
                    format!("is required when {} is set", var::BOOTSTRAP_ADMIN_PASSWORD),
                ));
            }
            (None, None) => None,
        };
        let signup_default_role = env
            .string_or(
                var::SIGNUP_DEFAULT_ROLE,
                contract::DEFAULT_SIGNUP_ROLE.as_str(),
            )
            .parse()
            .map_err(|e: String| ConfigError::new(var::SIGNUP_DEFAULT_ROLE, e))?;
        let password_min_length: usize = env.parse_or("USER_PASSWORD_MIN_LENGTH", 6)?;
        if !(1..=128).contains(&password_min_length) {
            return Err(ConfigError::new(
                "USER_PASSWORD_MIN_LENGTH",
                "must be between 1 and 128",
            ));
        }
        Ok(Self {
            common: CommonConfig::from_env(env, contract::Service::User)?,
            frontend_base_url: env
                .string_or(var::FRONTEND_BASE_URL, "http://localhost:3000")
                .trim_end_matches('/')
                .to_string(),
            signup_default_role,
            password_min_length,
            hashing: HashingConfig::from_env(env)?,
            bootstrap_admin,
            rate_limits: RateLimits {
                login_per_ip: env.parse_or("USER_LOGIN_RATE_PER_IP", 60)?,
                login_per_account: env.parse_or("USER_LOGIN_RATE_PER_ACCOUNT", 10)?,
                forgot_per_ip: env.parse_or("USER_FORGOT_RATE_PER_IP", 10)?,
                forgot_per_account: env.parse_or("USER_FORGOT_RATE_PER_ACCOUNT", 3)?,
                reset_per_ip: env.parse_or("USER_RESET_RATE_PER_IP", 10)?,
            },
            reset_token_ttl: env.duration_or("USER_RESET_TOKEN_TTL", Duration::from_secs(3600))?,
        })
    }
}

/// Rate limiters built from [`RateLimits`].
pub struct Limiters {
    pub login_ip: Option<KeyedLimiter>,
    pub login_account: Option<KeyedLimiter>,
    pub forgot_ip: Option<KeyedLimiter>,
    pub forgot_account: Option<KeyedLimiter>,
    pub reset_ip: Option<KeyedLimiter>,
}

/// Shared state of the handlers.
pub struct Inner {
    pub pool: PgPool,
    pub passwords: passwords::Passwords,
    pub limiters: Limiters,
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
    info(title = "Helpdesk user-service", description = "Accounts, sign-in and password reset"),
    paths(
        auth::signup, auth::login, auth::me, auth::change_password, auth::validate, auth::jwks,
        reset::forgot_password, reset::reset_password,
        internal::get_user, internal::list_users, internal::change_role, internal::delete_user,
    ),
    modifiers(&BearerAuth, &ContractErrors)
)]
pub struct ApiDoc;

/// The service's API routes, without the shared stack.
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .merge(auth::routes())
        .merge(reset::routes())
        .merge(internal::routes())
        .with_state(state)
}

/// user-service as a runnable service (binary, launcher).
pub struct UserService;

impl ServiceDef for UserService {
    const SERVICE: contract::Service = contract::Service::User;
    const HASHES_PASSWORDS: bool = true;
    const MIGRATOR: &'static sqlx::migrate::Migrator = &MIGRATOR;
    type Config = Config;
    fn load(env: &Env) -> Result<Config, ConfigError> {
        Config::from_env(env)
    }
    /// Connects, migrates and builds the service: its full router and its outbox relay.
    async fn build(
        config: Config,
        pool: PgPool,
        bus: Arc<dyn Bus>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        bootstrap::ensure_admin(&pool, &config).await?;
        let limit = |n: u32| KeyedLimiter::per_minute(n);
        let r = &config.rate_limits;
        let limiters = Limiters {
            login_ip: limit(r.login_per_ip),
            login_account: limit(r.login_per_account),
            forgot_ip: limit(r.forgot_per_ip),
            forgot_account: limit(r.forgot_per_account),
            reset_ip: limit(r.reset_per_ip),
        };
        let state = AppState::new(
            config.common.keys.clone(),
            Inner {
                pool: pool.clone(),
                passwords: passwords::Passwords::new(&config.hashing)?,
                limiters,
                config: config.clone(),
            },
        );
        let mut wiring = Wiring::new(
            contract::Service::User,
            &config.common,
            &pool,
            &bus,
            &shutdown,
        );
        wiring.relay(None);
        Ok(wiring.finish(api_router(state), ApiDoc::openapi()))
    }
}
