//! A PostgreSQL pool per service, on the service's own schema.
//!
//! The connection's `search_path` is the schema, so a service's SQL never names it, and moving a
//! service to its own database is a change of `DATABASE_URL` only.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::{ConfigError, Env};
use helpdesk_contract::{Service, var};

/// Database settings of one service (`Debug` hides the URL's password).
#[derive(Clone)]
pub struct DbConfig {
    pub url: String,
    pub schema: String,
    pub max_connections: u32,
    /// What the connections call themselves in `pg_stat_activity` and the server's log (the
    /// service's binary name), unless the URL sets `application_name`.
    pub application_name: &'static str,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &crate::secret::redact_url(&self.url))
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl DbConfig {
    /// The service's database settings: its own `<PREFIX>_DATABASE_URL` or `DATABASE_URL`,
    /// `<PREFIX>_DB_SCHEMA` (default: the service's schema) and `<PREFIX>_DB_MAX_CONNECTIONS`.
    /// This is all `migrate` reads.
    pub fn for_service(env: &Env, service: Service) -> Result<Self, ConfigError> {
        let (var, url) = match env.raw(service.database_url_var()) {
            Some(url) => (service.database_url_var(), url),
            None => (var::DATABASE_URL, env.required(var::DATABASE_URL)?),
        };
        PgConnectOptions::from_str(&url)
            .map_err(|e| ConfigError::new(var, format!("is not a valid PostgreSQL URL: {e}")))?;
        let prefix = service.env_prefix();
        let schema_var = format!("{prefix}_DB_SCHEMA");
        let schema = env.string_or(&schema_var, service.schema());
        if schema.is_empty()
            || schema.len() > 48
            || !schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::new(
                schema_var,
                "must be lowercase letters, digits and _",
            ));
        }
        Ok(Self {
            url,
            schema,
            max_connections: Self::pool_size(env, service)?,
            application_name: service.binary(),
        })
    }

    /// The service's pool size: `<PREFIX>_DB_MAX_CONNECTIONS`, 10 by default.
    pub fn pool_size(env: &Env, service: Service) -> Result<u32, ConfigError> {
        env.parse_or(&format!("{}_DB_MAX_CONNECTIONS", service.env_prefix()), 10)
    }
}

/// Creates the schema when missing and opens a pool whose `search_path` is that schema.
pub async fn connect(cfg: &DbConfig) -> Result<PgPool, sqlx::Error> {
    let base = PgConnectOptions::from_str(&cfg.url)?;
    {
        let mut conn = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect_with(&base),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
        // Serialise concurrent first starts (several replicas, parallel tests) with a
        // transaction-scoped lock: released by the commit or rollback, never left behind.
        let mut tx = conn.begin().await?;
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtext('helpdesk-schema'))")
            .execute(&mut *tx)
            .await?;
        // A name cannot be a bind parameter; `DbConfig::for_service` admits only [a-z0-9_].
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            cfg.schema
        )))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        conn.close().await?;
    }
    let mut opts = base.options([("search_path", cfg.schema.as_str())]);
    if opts.get_application_name().is_none() {
        opts = opts.application_name(cfg.application_name);
    }
    PgPoolOptions::new()
        .max_connections(cfg.max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // sqlx's own check pings every connection it hands out: a round trip to the server
        // before each request's first statement. Only a connection that sat idle is checked.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(opts)
        .await
}

/// A `LISTEN` connection for `pool`'s database and schema, outside `pool`'s budget: a listener
/// holds its connection for as long as it runs, so one taken from `pool` (sqlx's
/// `PgListener::connect_with`) would leave one fewer for requests and consumers for good: the
/// outbox relay, the caller cache's invalidation and the email sender each held one of a
/// service's `*_DB_MAX_CONNECTIONS`. The listener reconnects through its own one-connection pool.
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    PgListener::connect_with(&own).await
}

/// A pooled connection idle for this long is checked with a round trip (sqlx's ping) before a
/// query gets it; one that fails the check is dropped and another taken or opened, so a database
/// that restarted or a network path that was cut costs no request an error once it is back.
/// A connection used more recently goes out unchecked: under load every connection is, so no
/// request waits for a check. Each check was a round trip and a wake-up of the server's backend;
/// leaving them out gave 2–6 % more requests per second in `helpdesk bench mix` without logins
/// (README). Connections that were in use when the database went away fail their statement and
/// are dropped (sqlx checks every connection it takes back).
pub const CHECK_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// How long a query waits for a pooled connection before it fails with `PoolTimedOut`, which
/// requests answer with 503 and `Retry-After` (consumers pause and retry).
///
/// One deadline covers both ways of waiting, because sqlx has only one: for a free connection of
/// a busy pool, and for a new connection to a database that refuses, is restarting or does not
/// answer (sqlx retries those connects until this deadline). Why 1 s serves both:
/// - Down: a request gets its 503 within ~1 s instead of hanging (it was 5 s, then a 500).
/// - Busy: under the saturating 64-client `helpdesk bench` (pools of 10, or 4), whole requests
///   take 20–100 ms at p95, so a wait for a connection is a fraction of that; 1 s is ten times a
///   whole request. A request that has waited that long has met an overload, not a busy moment,
///   and a 503 with `Retry-After` sheds load better than a queue that keeps growing.
///   `tests/integration/db.rs` holds 64 clients on a pool of 10 without a single timeout.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// The kit's own tables in every service schema (the outbox, the record of handled events):
/// `migrations/kit`, tracked in `_sqlx_kit_migrations` so the service's own migration history
/// stays its own.
pub fn kit_migrator() -> &'static sqlx::migrate::Migrator {
    static KIT: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
        let mut m = sqlx::migrate!("../../migrations/kit");
        m.dangerous_set_table_name("_sqlx_kit_migrations");
        m
    });
    &KIT
}

/// Runs the kit's migrations and then the service's, in the pool's schema. Each migrator holds
/// sqlx's database-wide advisory lock on one session while it works, so concurrent first starts
/// (several replicas, parallel tests) take turns.
pub async fn migrate(pool: &PgPool, migrator: &sqlx::migrate::Migrator) -> Result<(), sqlx::Error> {
    for m in [kit_migrator(), migrator] {
        m.run(pool)
            .await
            .map_err(|e| sqlx::Error::Migrate(Box::new(e)))?;
    }
    Ok(())
}

/// Whether `e` means the database cannot be used right now (unreachable, restarting, out of
/// connections, pool timeout), as opposed to a statement that failed on its data. Callers retry
/// the first kind for as long as it lasts (consumers) or answer 503 (requests).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        // Protocol: a connection cut mid-handshake or mid-reply (a server going away), never
        // something a statement's data causes.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|code| {
            // 08: connection exception; 53: insufficient resources; 57P01-03: shutting down or
            // starting up; 40001/40P01: serialization failure or deadlock (retry, not the data).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(&*code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_s_own_url_wins_and_errors_name_the_variable_used() {
        let shared = "postgres://u@shared/db";
        let env = Env::from_map([(var::DATABASE_URL, shared)]);
        let cfg = DbConfig::for_service(&env, Service::Ticket).unwrap();
        assert_eq!((cfg.url.as_str(), cfg.schema.as_str()), (shared, "tickets"));
        let own = Service::Audit.database_url_var();
        let env = Env::from_map([(var::DATABASE_URL, shared), (own, "postgres://u@own/db")]);
        let cfg = DbConfig::for_service(&env, Service::Audit).unwrap();
        assert_eq!(cfg.url, "postgres://u@own/db");
        let env = Env::from_map([(own, "not a URL")]);
        assert_eq!(
            DbConfig::for_service(&env, Service::Audit).unwrap_err().var,
            own
        );
        let none = Env::from_map([("X", "y")]);
        assert_eq!(
            DbConfig::for_service(&none, Service::User).unwrap_err().var,
            var::DATABASE_URL
        );
    }
}
