//! JSON logs, Prometheus metrics and the `/health` + `/metrics` HTTP endpoint of the operator.

use std::net::SocketAddr;

use axum::{Router, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt};

pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .init();
}

/// Installs the global metrics recorder and describes the operator's metrics.
pub fn init_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder()?;
    metrics::describe_counter!("helpdesk_operator_reconciles_total", "Reconciles started");
    metrics::describe_counter!(
        "helpdesk_operator_reconcile_errors_total",
        "Failed reconciles by error kind"
    );
    metrics::describe_histogram!(
        "helpdesk_operator_reconcile_duration_seconds",
        "Reconcile duration"
    );
    metrics::describe_counter!(
        "helpdesk_operator_api_writes_total",
        "Creates, updates and deletes sent to the API server, by kind"
    );
    metrics::describe_gauge!(
        "helpdesk_operator_leader",
        "1 while this replica holds the lease"
    );
    Ok(handle)
}

pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(move || std::future::ready(handle.render())))
}

pub async fn serve(addr: SocketAddr, handle: PrometheusHandle) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(handle)).await?;
    Ok(())
}
