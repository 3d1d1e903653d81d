use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use helpdesk_operator::{
    controller, crd, leader::LeaderElector, render, telemetry, validate::Capabilities,
};

/// Kubernetes operator for the Helpdesk platform.
#[derive(Parser)]
#[command(name = "helpdesk-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the HelpdeskPlatform CRD as YAML (or write it into directories).
    Crd {
        /// Write `helpdeskplatforms.helpdesk.dev.yaml` into each of these directories instead of printing.
        #[arg(long = "write-to")]
        write_to: Vec<PathBuf>,
    },
    /// Print every object the operator would create for a resource, without a cluster.
    ///
    /// The optional APIs the resource names (spec.postgres.cloudNativePG,
    /// spec.rabbitmq.rabbitmqClusterOperator, spec.ingress.kind: route,
    /// spec.monitoring.serviceMonitor: true) are assumed to exist, and the output's first line
    /// says so; the flags below force the others. Unknown fields and invalid values are errors
    /// with their paths.
    Render {
        /// File with one or more HelpdeskPlatform documents (`-` for stdin).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Assume the OpenShift Route API exists (Routes instead of an Ingress, random UIDs).
        #[arg(long)]
        openshift: bool,
        /// Assume CloudNativePG's Cluster API exists.
        #[arg(long)]
        cloud_native_pg: bool,
        /// Assume the RabbitMQ Cluster Operator's API exists.
        #[arg(long)]
        rabbitmq_operator: bool,
        /// Assume the Prometheus operator's ServiceMonitor API exists (then `serviceMonitor: auto` creates one).
        #[arg(long)]
        service_monitor: bool,
        /// Also run the cross-object consistency checks (selectors, keys, ports); fail on problems.
        #[arg(long)]
        check: bool,
    },
    /// Run the controller (leader election, /metrics and /health on METRICS_ADDR).
    Run {
        /// Comma-separated namespaces to watch; empty: all namespaces.
        #[arg(long, env = "WATCH_NAMESPACES", default_value = "")]
        watch_namespaces: String,
        /// Address of the /metrics and /health endpoint.
        #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
        metrics_addr: std::net::SocketAddr,
        /// Namespace of the leader-election Lease (defaults to the kubeconfig's namespace).
        #[arg(long, env = "LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        #[arg(long, env = "LEASE_NAME", default_value = "helpdesk-operator")]
        lease_name: String,
        /// Identity in the Lease; the pod name in a cluster.
        #[arg(long, env = "POD_NAME")]
        pod_name: Option<String>,
        /// Platforms reconciled at the same time.
        #[arg(long, env = "RECONCILE_CONCURRENCY", default_value_t = 4)]
        concurrency: u16,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            watch_namespaces,
            metrics_addr,
            lease_namespace,
            lease_name,
            pod_name,
            concurrency,
        } => {
            let namespaces = watch_namespaces
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(
                    namespaces,
                    metrics_addr,
                    lease_namespace,
                    lease_name,
                    pod_name,
                    concurrency,
                ))?;
        }
        Command::Crd { write_to } if write_to.is_empty() => print_out(&crd::crd_yaml())?,
        Command::Crd { write_to } => {
            for dir in write_to {
                let path = dir.join("helpdeskplatforms.helpdesk.dev.yaml");
                std::fs::write(&path, crd::crd_yaml())
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
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
            // Forced by flags; render adds the ones each resource names.
            let caps = Capabilities {
                routes: openshift,
                cloud_native_pg,
                rabbitmq_operator,
                service_monitor,
            };
            print_out(&render::render_yaml(&text, &caps, check)?)?;
        }
    }
    Ok(())
}

/// Writes to stdout; a reader that stops early (`render ... | head`) is not an error.
fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("writing to stdout"),
    }
}

async fn run(
    namespaces: Vec<String>,
    metrics_addr: std::net::SocketAddr,
    lease_namespace: Option<String>,
    lease_name: String,
    pod_name: Option<String>,
    concurrency: u16,
) -> anyhow::Result<()> {
    telemetry::init_logging();
    let handle = telemetry::init_metrics()?;
    tokio::spawn(async move {
        if let Err(e) = telemetry::serve(metrics_addr, handle).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let identity = pod_name.unwrap_or_else(|| format!("helpdesk-operator-{}", std::process::id()));
    let lease_ns = lease_namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let elector = LeaderElector::new(client.clone(), &lease_ns, &lease_name, &identity);
    elector.acquire().await;
    metrics::gauge!("helpdesk_operator_leader").set(1.0);
    tracing::info!(?namespaces, "starting controller");
    tokio::select! {
        _ = controller::run(client, namespaces, Some(identity), concurrency) => {
            // Shutdown (SIGTERM): hand the lease over instead of letting it expire.
            if let Err(e) = elector.release().await {
                tracing::warn!(error = %e, "cannot release the lease");
            }
            Ok(())
        }
        _ = elector.hold() => {
            metrics::gauge!("helpdesk_operator_leader").set(0.0);
            // Exit so the pod restarts as a follower instead of reconciling next to the new leader.
            anyhow::bail!("lost leadership")
        }
    }
}
