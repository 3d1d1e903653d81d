//! `helpdesk up`: the whole platform on one machine; `helpdesk migrate`: every schema migration.

mod bench;
mod dlq;
mod gateway;
mod platform;
mod postgres;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::Rng;

use helpdesk_kit::auth::{DEFAULT_ISSUER, JwtKeys, generate_key_pair};
use helpdesk_kit::bus::Bus;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::postgres::PgBus;
use helpdesk_kit::bus::topology;
use helpdesk_kit::config::Env;
use helpdesk_kit::contract::{Service, var};
use helpdesk_kit::db::DbConfig;
use helpdesk_kit::runtime;

#[derive(Parser)]
#[command(
    name = "helpdesk",
    version,
    about = "The Helpdesk platform on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run all five services in one process behind one HTTP port.
    Up {
        /// HTTP port of the API.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
        /// Where the private PostgreSQL, keys, admin credentials and mail live.
        #[arg(long, default_value = ".helpdesk")]
        data_dir: PathBuf,
    },
    /// Route one port to separately running services (USER_SERVICE_URL, TICKET_SERVICE_URL, ...)
    /// with the ingress's path table.
    Gateway {
        #[arg(long, default_value_t = 8080)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind: std::net::IpAddr,
    },
    /// Measure a running platform: a realistic mix of requests (the default), or one of the
    /// scenarios (baseline, auth, tickets, notifications, dashboard).
    Bench(bench::BenchArgs),
    /// Run every service's migrations against DATABASE_URL (or the private PostgreSQL) and exit.
    Migrate {
        #[arg(long, default_value = ".helpdesk")]
        data_dir: PathBuf,
    },
    /// The events consumers gave up on (dead letters): list them or hand them back to their
    /// queue. Uses RabbitMQ when AMQP_URL is set (with BUS_PREFIX), else the in-process bus in
    /// DATABASE_URL or the private PostgreSQL of --data-dir.
    Dlq {
        #[command(subcommand)]
        action: dlq::Action,
        #[arg(long, default_value = ".helpdesk", global = true)]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    if std::env::var_os(var::RUST_LOG).is_none() {
        // SAFETY: single-threaded at this point, before any runtime or thread starts.
        unsafe { std::env::set_var(var::RUST_LOG, "warn") };
    }
    let cli = Cli::parse();
    let priorities: Option<fn(i32) -> std::io::Result<()>> = match cli.command {
        // user-service runs in this process: every thread but its hashing threads runs
        // USER_HASHING_PRIORITY nice levels lower (kit::priority, 5 unless set). Before the
        // runtime, whose threads inherit it.
        Cmd::Up { .. } => Some(helpdesk_kit::priority::init),
        // The load generator stands in for clients on other machines: it runs at the priority of
        // the platform's request threads (below its hashing threads), as it did before the
        // platform lowered them, so it neither preempts them nor is preempted by them.
        Cmd::Bench(_) => Some(helpdesk_kit::priority::lower_current_thread),
        _ => None,
    };
    if let Some(apply) = priorities
        && let Err(e) = helpdesk_kit::priority::apply_from_env(
            &Env::process(),
            helpdesk_kit::priority::DEFAULT_GAP,
            apply,
        )
    {
        eprintln!("helpdesk: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("helpdesk: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The platform exports its traces when OTEL_EXPORTER_OTLP_ENDPOINT is set; tools only log.
    let serves = matches!(cli.command, Cmd::Up { .. } | Cmd::Gateway { .. });
    let telemetry = if serves {
        match helpdesk_kit::telemetry::init("helpdesk", &Env::process(), rt.handle()) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("helpdesk: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        helpdesk_kit::telemetry::init_tool_logging();
        None
    };
    let result = match cli.command {
        Cmd::Up {
            port,
            bind,
            data_dir,
        } => rt.block_on(up(SocketAddr::new(bind, port), &data_dir)),
        Cmd::Migrate { data_dir } => rt.block_on(migrate(&data_dir)),
        Cmd::Dlq { action, data_dir } => rt.block_on(dead_letters(action, &data_dir)),
        Cmd::Gateway { port, bind } => {
            rt.block_on(gateway::run(SocketAddr::new(bind, port), &Env::process()))
        }
        Cmd::Bench(args) => rt.block_on(bench::run(args)),
    };
    if let Some(t) = telemetry {
        t.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("helpdesk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data folder {}", dir.display()))?;
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("the data folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// Writes a file only its owner can read.
pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

/// Signing keys from the environment, or generated once and kept in the data folder.
fn signing_keys(env: &Env, dir: &Path) -> anyhow::Result<(String, String)> {
    if let (Some(private), Some(public)) = (
        env.value_or_file(var::JWT_PRIVATE_KEY)?,
        env.value_or_file(var::JWT_PUBLIC_KEY)?,
    ) {
        return Ok((private, public));
    }
    let (priv_path, pub_path) = (dir.join("jwt-private.pem"), dir.join("jwt-public.pem"));
    if let (Ok(private), Ok(public)) = (
        std::fs::read_to_string(&priv_path),
        std::fs::read_to_string(&pub_path),
    ) {
        return Ok((private, public));
    }
    let (private, public) = generate_key_pair();
    write_private(&priv_path, &private)?;
    write_private(&pub_path, &public)?;
    Ok((private, public))
}

/// The first admin's credentials: from the environment, or generated once and stored.
fn admin_credentials(env: &Env, dir: &Path) -> anyhow::Result<(String, String, Option<PathBuf>)> {
    if let (Some(email), Some(password)) = (
        env.raw(var::BOOTSTRAP_ADMIN_EMAIL),
        env.value_or_file(var::BOOTSTRAP_ADMIN_PASSWORD)?,
    ) {
        return Ok((email, password, None));
    }
    let path = dir.join("admin-credentials");
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Some((email, password)) = text.trim().split_once('\n')
    {
        return Ok((
            email.trim().to_string(),
            password.trim().to_string(),
            Some(path),
        ));
    }
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::thread_rng();
    let password: String = (0..20)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect();
    let email = "admin@helpdesk.local".to_string();
    write_private(&path, &format!("{email}\n{password}\n"))?;
    Ok((email, password, Some(path)))
}

async fn database(
    env: &Env,
    dir: &Path,
) -> anyhow::Result<(String, Option<postgres::EmbeddedPostgres>)> {
    if let Some(url) = env.raw(var::DATABASE_URL) {
        let cfg = DbConfig {
            url: url.clone(),
            schema: "public".into(),
            max_connections: 1,
            application_name: "helpdesk",
        };
        let pool = tokio::time::timeout(Duration::from_secs(10), helpdesk_kit::db::connect(&cfg))
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach DATABASE_URL: timed out"))?
            .map_err(|e| anyhow::anyhow!("cannot reach DATABASE_URL: {e}"))?;
        pool.close().await;
        return Ok((url, None));
    }
    let dir = dir.to_path_buf();
    let budget = connection_budget(env)?;
    let pg = tokio::task::spawn_blocking(move || postgres::EmbeddedPostgres::start(&dir, budget))
        .await??;
    Ok((pg.url(), Some(pg)))
}

/// Connections of the in-process bus's pool.
const BUS_POOL: u32 = 30;

/// How many clients the private PostgreSQL takes: every service's pool (`*_DB_MAX_CONNECTIONS`),
/// the in-process bus's, the LISTEN connections the services keep outside their pools, and room
/// for `migrate`, `dlq`, `bench baseline`'s 32 raw clients and a psql or two. Never fewer than
/// PostgreSQL's own default of 100. Without it, pools raised past that default fail under load
/// with "too many clients" instead of serving.
fn connection_budget(env: &Env) -> anyhow::Result<u32> {
    const LISTENERS: u32 = 10;
    const OTHERS: u32 = 40;
    let mut pools = 0u32;
    for service in Service::ALL {
        pools = pools.saturating_add(DbConfig::pool_size(env, service)?);
    }
    Ok(pools.saturating_add(BUS_POOL + LISTENERS + OTHERS).max(100))
}

/// Migrations need the database and nothing else (as each service's `migrate`).
async fn migrate(data_dir: &Path) -> anyhow::Result<()> {
    let dir = prepare_data_dir(data_dir)?;
    let mut env = Env::process();
    let (url, pg) = database(&env, &dir).await?;
    env.set(var::DATABASE_URL, url);
    let result = platform::migrate_all(&env).await;
    if let Some(pg) = pg {
        pg.release();
    }
    result?;
    println!("migrations applied");
    Ok(())
}

async fn dead_letters(action: dlq::Action, data_dir: &Path) -> anyhow::Result<()> {
    let env = Env::process();
    if let Some(amqp) = env.raw(var::AMQP_URL) {
        let bus = AmqpBus::new(&amqp, &env.string_or(var::BUS_PREFIX, ""));
        return dlq::run(&bus, action).await;
    }
    let dir = prepare_data_dir(data_dir)?;
    let (url, pg) = database(&env, &dir).await?;
    let result = async {
        let pool = helpdesk_kit::db::connect(&DbConfig {
            url,
            schema: "bus".into(),
            max_connections: 2,
            application_name: "helpdesk-dlq",
        })
        .await?;
        let bus = PgBus::new(pool).await?;
        dlq::run(&bus, action).await
    }
    .await;
    if let Some(pg) = pg {
        pg.release();
    }
    result
}

async fn up(addr: SocketAddr, data_dir: &Path) -> anyhow::Result<()> {
    let dir = prepare_data_dir(data_dir)?;
    let public_listener = runtime::bind(addr).await?;
    let internal_listener = runtime::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let internal_url = format!("http://{}", internal_listener.local_addr()?);

    let mut env = Env::process();
    let (url, pg) = database(&env, &dir).await?;
    let result = run_platform(
        &mut env,
        &dir,
        url,
        addr,
        public_listener,
        internal_listener,
        internal_url,
    )
    .await;
    if let Some(pg) = pg {
        pg.stop();
    }
    result
}

/// The origins of the usual local frontend dev servers (Create React App / Next.js, Vite).
const DEV_ORIGINS: [&str; 4] = [
    "http://localhost:3000",
    "http://localhost:5173",
    "http://127.0.0.1:3000",
    "http://127.0.0.1:5173",
];

/// Which browser origins may call the API: `CORS_ALLOWED_ORIGINS` as given; else the origin of
/// `FRONTEND_BASE_URL`; else the usual local dev-server origins. Never every origin by default.
fn cors_origins(env: &Env) -> anyhow::Result<Vec<String>> {
    let given = env.list(var::CORS_ALLOWED_ORIGINS);
    if !given.is_empty() {
        return Ok(given);
    }
    if let Some(url) = env.raw(var::FRONTEND_BASE_URL) {
        let origin = helpdesk_kit::http::origin_of(&url).with_context(|| {
            format!(
                "{} must be an http(s) URL like https://app.example.com, got {url:?}",
                var::FRONTEND_BASE_URL
            )
        })?;
        return Ok(vec![origin]);
    }
    Ok(DEV_ORIGINS.iter().map(|o| o.to_string()).collect())
}

async fn run_platform(
    env: &mut Env,
    dir: &Path,
    database_url: String,
    addr: SocketAddr,
    public_listener: tokio::net::TcpListener,
    internal_listener: tokio::net::TcpListener,
    internal_url: String,
) -> anyhow::Result<()> {
    let (private, public) = signing_keys(env, dir)?;
    let (admin_email, admin_password, stored) = admin_credentials(env, dir)?;
    let keys = JwtKeys::from_pem(
        &public,
        Some(&private),
        DEFAULT_ISSUER,
        Duration::from_secs(3600),
    )?;

    let mail_dir = dir.join("mail");
    let port = addr.port();
    env.set(var::DATABASE_URL, database_url)
        .set(var::JWT_PRIVATE_KEY, private)
        .set(var::JWT_PUBLIC_KEY, public)
        .set(var::BOOTSTRAP_ADMIN_EMAIL, admin_email.clone())
        .set(var::BOOTSTRAP_ADMIN_PASSWORD, admin_password.clone());
    // Each service calls its peers with its own credential (internal routes are scoped by caller);
    // they are minted at every start and never leave this process.
    for service in Service::ALL {
        let token =
            keys.issue_service_token(service.binary(), Duration::from_secs(365 * 86_400))?;
        env.set(service.service_token_var(), token);
    }
    // Every peer a service calls is served by this process's internal listener.
    for peer in Service::ALL.iter().flat_map(|s| s.peers()) {
        env.set(peer.url_var(), internal_url.clone());
    }
    let cors_origins = cors_origins(env)?;
    env.set(var::CORS_ALLOWED_ORIGINS, cors_origins.join(","));
    if env.raw(var::FRONTEND_BASE_URL).is_none() {
        env.set(var::FRONTEND_BASE_URL, DEV_ORIGINS[0]);
    }
    let smtp = env.raw(var::SMTP_URL).is_some() || env.raw(var::SMTP_HOST).is_some();
    if !smtp && env.raw(var::NOTIFICATION_MAIL_DIR).is_none() {
        env.set(
            var::NOTIFICATION_MAIL_DIR,
            mail_dir.to_string_lossy().to_string(),
        );
    }

    let (bus, bus_label): (Arc<dyn Bus>, String) = match env.raw(var::AMQP_URL) {
        Some(amqp) => {
            let bus = AmqpBus::for_platform(&amqp, &env.string_or(var::BUS_PREFIX, ""));
            if !bus.healthy().await {
                anyhow::bail!(
                    "cannot reach AMQP_URL (RabbitMQ): check the URL and that the broker runs"
                );
            }
            (Arc::new(bus), "RabbitMQ (AMQP_URL)".into())
        }
        None => {
            let cfg = DbConfig {
                url: env.required(var::DATABASE_URL)?,
                schema: "bus".into(),
                max_connections: BUS_POOL,
                application_name: "helpdesk-bus",
            };
            let pool = helpdesk_kit::db::connect(&cfg).await?;
            let bus = PgBus::new(pool).await?;
            topology::declare_all(&bus).await?;
            (
                Arc::new(bus),
                "in-process (kept in PostgreSQL, schema bus)".into(),
            )
        }
    };

    let shutdown = runtime::shutdown_on_signals();
    let platform = platform::start(env, bus, shutdown.clone()).await?;
    let handles: Vec<_> = platform.workers.into_iter().map(tokio::spawn).collect();
    let internal = tokio::spawn(runtime::serve(
        internal_listener,
        platform.internal,
        shutdown.clone(),
    ));

    let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    let base = format!("http://{host}:{port}");
    println!("Helpdesk is running ({})", platform.services.join(", "));
    println!("  API base URL: {base}   (point the frontend here)");
    println!("  API docs:     {base}/api/docs");
    match stored {
        Some(path) => println!(
            "  Admin:        {admin_email} / {admin_password}   (stored in {})",
            path.display()
        ),
        None => println!("  Admin:        {admin_email} (password from BOOTSTRAP_ADMIN_PASSWORD)"),
    }
    match env.raw(var::NOTIFICATION_MAIL_DIR) {
        Some(dir) => println!("  Mail:         written as .eml files to {dir}"),
        None => println!(
            "  Mail:         sent through SMTP ({} or {})",
            var::SMTP_URL,
            var::SMTP_HOST
        ),
    }
    println!("  CORS origins: {}", cors_origins.join(", "));
    println!("  Events:       {bus_label}");
    println!("  Data:         {}", dir.display());
    println!("Press Ctrl-C to stop.");

    let served = runtime::serve(public_listener, platform.public, shutdown.clone()).await;
    shutdown.cancel();
    let _ = internal.await;
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(handles),
    )
    .await;
    println!("Helpdesk stopped.");
    served.map_err(Into::into)
}
