//! Running a service: the `serve` / `migrate` commands, graceful shutdown, background workers.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Env};
use crate::db::DbConfig;
use crate::service::ServiceConfig;
use helpdesk_contract::var;

/// A background task (outbox relay, consumer, ...) that ends when the shutdown token is cancelled.
pub type Worker = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A built service: its full router and its background workers.
pub struct Service {
    pub name: &'static str,
    pub router: Router,
    pub workers: Vec<Worker>,
}

/// What the binary was asked to do: `serve` (the default) or `migrate`.
pub use helpdesk_contract::Command;

const USAGE: &str = "usage: <service> [serve|migrate|pre-stop]";

/// `<service> pre-stop`: the pod's preStop hook (the images have no shell and no `sleep`).
/// Returns how long to wait when that is the command.
pub fn pre_stop_from_args<I: IntoIterator<Item = String>>(args: I) -> Option<Duration> {
    let mut args = args.into_iter().skip(1);
    (args.next().as_deref() == Some(helpdesk_contract::lifecycle::PRE_STOP))
        .then(|| Duration::from_secs(helpdesk_contract::lifecycle::PRE_STOP_DELAY_SECS))
}

/// Parses the first argument: none or `serve`, or `migrate`.
pub fn command_from_args() -> Result<Command, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => Ok(Command::Serve),
        Some("-h" | "--help") => Err(USAGE.into()),
        Some(other) => {
            Command::parse(other).ok_or_else(|| format!("unknown command {other:?}; {USAGE}"))
        }
    }
}

/// Cancels the returned token on SIGINT or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        t.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

/// Binds the listen address with a clear error when it is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!(
                "cannot listen on {addr}: the port is already in use (set {} or --port)",
                var::BIND_ADDR
            )
        } else {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
    })
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

/// Runs workers and the HTTP server until `shutdown`; waits (bounded) for workers to finish
/// the message they are handling.
pub async fn run(
    listener: TcpListener,
    router: Router,
    workers: Vec<Worker>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handles: Vec<_> = workers.into_iter().map(tokio::spawn).collect();
    let served = serve(listener, router, shutdown.clone()).await;
    shutdown.cancel();
    let drain = futures_util::future::join_all(handles);
    let limit = helpdesk_contract::lifecycle::SHUTDOWN_DRAIN_SECS;
    if tokio::time::timeout(Duration::from_secs(limit), drain)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within {limit} s");
    }
    served.map_err(Into::into)
}

/// What a service binary needs to know about its service; [`service_main`] does the rest.
pub trait ServiceDef {
    /// Which service this is in the platform's contract.
    const SERVICE: helpdesk_contract::Service;
    /// Name in logs and metrics, e.g. `user-service`.
    const NAME: &'static str = Self::SERVICE.binary();
    type Config: crate::service::ServiceConfig + Send + 'static;
    /// Reads the configuration (one-line error naming the variable on failure).
    fn load(env: &Env) -> Result<Self::Config, ConfigError>;
    /// Reads the database settings only: all that `migrate` needs.
    fn load_db(env: &Env) -> Result<DbConfig, ConfigError> {
        DbConfig::for_service(env, Self::SERVICE)
    }
    /// Whether the service hashes passwords: its other threads then run
    /// [`crate::priority::gap_from_env`] nice levels below its hashing threads
    /// ([`crate::priority::DEFAULT_GAP`] by default).
    const HASHES_PASSWORDS: bool = false;
    /// The service's migrations.
    const MIGRATOR: &'static sqlx::migrate::Migrator;
    fn build(
        config: Self::Config,
        pool: sqlx::PgPool,
        bus: std::sync::Arc<dyn crate::bus::Bus>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<Service>> + Send;
}

/// What one command reads from the environment.
pub enum Loaded<C> {
    /// The whole configuration, with a broker.
    Serve(C),
    /// The database settings, nothing else.
    Migrate(DbConfig),
}

/// Reads what `command` needs and nothing more, as the service's binary does: `migrate` only the
/// database settings; `serve` the whole configuration and `AMQP_URL` (the binary has no
/// in-process bus). What this requires is [`helpdesk_contract::Service::requires`]; the
/// services' tests hold the two together.
pub fn load<D: ServiceDef>(command: Command, env: &Env) -> Result<Loaded<D::Config>, ConfigError> {
    match command {
        Command::Migrate => D::load_db(env).map(Loaded::Migrate),
        Command::Serve => {
            let config = D::load(env)?;
            if config.common().amqp_url.is_none() {
                return Err(ConfigError::new(var::AMQP_URL, "is required but not set"));
            }
            Ok(Loaded::Serve(config))
        }
    }
}

/// Connects with `db` and runs the service's migrations: the whole of `migrate`.
pub async fn migrate<D: ServiceDef>(db: &DbConfig) -> anyhow::Result<()> {
    let pool = crate::db::connect(db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", var::DATABASE_URL))?;
    let migrated = crate::db::migrate(&pool, D::MIGRATOR).await;
    pool.close().await;
    migrated?;
    Ok(())
}

/// The whole `main` of a service binary: `serve` (default) or `migrate`, configuration errors on
/// one line with exit code 2, graceful shutdown on SIGTERM/SIGINT.
pub fn service_main<D: ServiceDef>() -> std::process::ExitCode {
    use std::process::ExitCode;
    // The preStop hook: wait while the endpoints drop this pod, before any configuration check.
    if let Some(delay) = pre_stop_from_args(std::env::args()) {
        std::thread::sleep(delay);
        return ExitCode::SUCCESS;
    }
    let command = match command_from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", D::NAME);
            return ExitCode::from(2);
        }
    };
    let env = Env::process();
    let loaded = match load::<D>(command, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", D::NAME);
            return ExitCode::from(2);
        }
    };
    if D::HASHES_PASSWORDS && matches!(loaded, Loaded::Serve(_)) {
        // Before the runtime: its threads start at the lowered priority.
        if let Err(e) = crate::priority::apply_from_env(
            &env,
            crate::priority::DEFAULT_GAP,
            crate::priority::init,
        ) {
            eprintln!("{}: {e}", D::NAME);
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", D::NAME);
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match crate::telemetry::init(D::NAME, &env, runtime.handle()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", D::NAME);
            return ExitCode::from(2);
        }
    };
    let outcome = runtime.block_on(run_def::<D>(loaded));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", D::NAME);
            ExitCode::FAILURE
        }
    }
}

async fn run_def<D: ServiceDef>(loaded: Loaded<D::Config>) -> anyhow::Result<()> {
    let config = match loaded {
        Loaded::Migrate(db) => {
            migrate::<D>(&db).await?;
            tracing::info!(service = D::NAME, "migrations applied");
            return Ok(());
        }
        Loaded::Serve(config) => config,
    };
    let common = config.common().clone();
    let pool = crate::db::connect(&common.db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", var::DATABASE_URL))?;
    crate::db::migrate(&pool, D::MIGRATOR).await?;
    let amqp = common.amqp_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!(
            "invalid configuration: {} is required but not set",
            var::AMQP_URL
        )
    })?;
    let bus = std::sync::Arc::new(crate::bus::amqp::AmqpBus::for_platform(
        amqp,
        &common.bus_prefix,
    ));
    let shutdown = shutdown_on_signals();
    let listener = bind(common.http.bind_addr).await?;
    let service = D::build(config, pool, bus, shutdown.clone()).await?;
    tracing::info!(service = D::NAME, addr = %listener.local_addr()?, "listening");
    run(listener, service.router, service.workers, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn pre_stop_waits_only_when_asked() {
        assert_eq!(
            pre_stop_from_args(args(&["/usr/local/bin/service", "pre-stop"])),
            Some(Duration::from_secs(
                helpdesk_contract::lifecycle::PRE_STOP_DELAY_SECS
            ))
        );
        assert_eq!(pre_stop_from_args(args(&["service"])), None);
        assert_eq!(pre_stop_from_args(args(&["service", "serve"])), None);
        assert_eq!(pre_stop_from_args(args(&["service", "migrate"])), None);
    }
}
