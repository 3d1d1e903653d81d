use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use helpdesk_operator::{crd, render, validate::Capabilities};

/// Kubernetes operator for the Helpdesk platform.
#[derive(Parser)]
#[command(name = "helpdesk-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the HelpdeskPlatform CRD as YAML.
    Crd,
    /// Print every object the operator would create for a resource, without a cluster.
    Render {
        /// File with one or more HelpdeskPlatform documents (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Pretend the OpenShift Route API exists (Routes instead of an Ingress, random UIDs).
        #[arg(long)]
        openshift: bool,
        /// Pretend CloudNativePG's Cluster API exists.
        #[arg(long)]
        cloud_native_pg: bool,
        /// Pretend the RabbitMQ Cluster Operator's API exists.
        #[arg(long)]
        rabbitmq_operator: bool,
        /// Pretend the Prometheus operator's ServiceMonitor API exists.
        #[arg(long)]
        service_monitor: bool,
        /// Also run the cross-object consistency checks (selectors, keys, ports); fail on problems.
        #[arg(long)]
        check: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => print!("{}", crd::crd_yaml()),
        Command::Render {
            file,
            openshift,
            cloud_native_pg,
            rabbitmq_operator,
            service_monitor,
            check,
        } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let caps = Capabilities {
                routes: openshift,
                cloud_native_pg,
                rabbitmq_operator,
                service_monitor,
            };
            print!("{}", render::render_yaml(&text, &caps, check)?);
        }
    }
    Ok(())
}
