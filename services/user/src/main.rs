use std::process::ExitCode;
use std::sync::Arc;

use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::config::Env;
use helpdesk_kit::runtime::{self, Command};
use user_service::{Config, MIGRATOR, SERVICE};

#[tokio::main]
async fn main() -> ExitCode {
    helpdesk_kit::telemetry::init_logging();
    let command = match runtime::command_from_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{SERVICE}: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::from_env(&Env::process()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{SERVICE}: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config, command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{SERVICE}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, command: Command) -> anyhow::Result<()> {
    let pool = helpdesk_kit::db::connect(&config.db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to DATABASE_URL: {e}"))?;
    helpdesk_kit::db::migrate(&pool, &MIGRATOR).await?;
    if command == Command::Migrate {
        tracing::info!("migrations applied");
        return Ok(());
    }
    let amqp = config
        .amqp_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("invalid configuration: AMQP_URL is required but not set"))?;
    let bus = Arc::new(AmqpBus::new(&amqp, &config.bus_prefix));
    let shutdown = runtime::shutdown_on_signals();
    let listener = runtime::bind(config.http.bind_addr).await?;
    let service = user_service::build(config, pool, bus, shutdown.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, "{SERVICE} listening");
    runtime::run(listener, service.router, service.workers, shutdown).await
}
