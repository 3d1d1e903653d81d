//! JSON logs, OpenTelemetry traces over OTLP, and the Prometheus recorder.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{ConfigError, Env};
use crate::trace::TraceParent;
use helpdesk_contract::var;

const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn";

/// Crates whose own spans and logs would only be noise in traces (and the exporter's HTTP client
/// must not trace itself).
const TRACES_FILTER: &str = "info,sqlx=off,lapin=off,hyper=off,hyper_util=off,reqwest=off,h2=off,\
                             tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

fn json_logs<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
}

fn log_filter() -> EnvFilter {
    EnvFilter::try_from_env(var::RUST_LOG).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// JSON logs to stdout, filtered by `RUST_LOG` (default `info`). Span fields (service, request id,
/// trace id, event id) appear on every line logged inside the span. Safe to call more than once.
pub fn init_logging() {
    let _ = tracing_subscriber::registry()
        .with(json_logs().with_filter(log_filter()))
        .try_init();
}

/// JSON logs for command-line tools, on stderr: their results go to stdout (e.g.
/// `helpdesk dlq list --json`).
pub fn init_tool_logging() {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_target(false)
                .with_writer(std::io::stderr)
                .with_filter(log_filter()),
        )
        .try_init();
}

/// Whether spans are exported (an OTLP endpoint is configured).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Flushes and stops the trace exporter; call once at the end of `main`, while the async runtime
/// still runs.
#[must_use = "call shutdown() at the end of main, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            eprintln!("could not flush the last traces: {e}");
        }
    }
}

/// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given, or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces` (the OpenTelemetry rule); `None` when neither is set.
pub fn otlp_traces_url(env: &Env) -> Result<Option<String>, ConfigError> {
    let (key, url) = match (
        env.raw(var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
        env.raw(var::OTEL_EXPORTER_OTLP_ENDPOINT),
    ) {
        (Some(url), _) if !url.is_empty() => (var::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, url),
        (_, Some(base)) if !base.is_empty() => (
            var::OTEL_EXPORTER_OTLP_ENDPOINT,
            format!("{}/v1/traces", base.trim_end_matches('/')),
        ),
        _ => return Ok(None),
    };
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Some(url)),
        _ => Err(ConfigError::new(key, "must be an http(s) URL")),
    }
}

/// JSON logs as [`init_logging`], and, when an OTLP endpoint is configured, every request and
/// event span exported over OTLP/HTTP (protobuf) as `service`, joined to the caller's trace.
/// Exports run on `runtime` (so the exporter's HTTP client has a reactor) from the SDK's batch
/// thread.
pub fn init(
    service: &str,
    env: &Env,
    runtime: &tokio::runtime::Handle,
) -> Result<Telemetry, ConfigError> {
    let Some(url) = otlp_traces_url(env)? else {
        init_logging();
        return Ok(Telemetry { provider: None });
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpClient {
            http: reqwest::Client::new(),
            runtime: runtime.clone(),
        })
        .with_endpoint(url.clone())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ConfigError::new(var::OTEL_EXPORTER_OTLP_ENDPOINT, e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_string())
                .build(),
        )
        .build();
    let tracer = provider.tracer("helpdesk");
    let installed = tracing_subscriber::registry()
        .with(json_logs().with_filter(log_filter()))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new(TRACES_FILTER)),
        )
        .try_init()
        .is_ok();
    EXPORTING.store(installed, Ordering::SeqCst);
    tracing::info!(%url, service, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Joins `span` to the trace `incoming` (the caller's `traceparent`) and returns the trace context
/// this span passes on. When exporting, the ids are the exported span's own, so the trace a
/// collector shows and the ids in logs and downstream headers are the same.
pub fn join_trace(span: &tracing::Span, incoming: Option<TraceParent>) -> TraceParent {
    if EXPORTING.load(Ordering::Relaxed) {
        if let Some(parent) = incoming {
            let remote = SpanContext::new(
                TraceId::from(parent.trace_id),
                SpanId::from(parent.parent_id),
                TraceFlags::new(parent.flags),
                true,
                TraceState::default(),
            );
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let cx = span.context();
        let own = cx.span().span_context().clone();
        if own.is_valid() {
            return TraceParent {
                trace_id: u128::from_be_bytes(own.trace_id().to_bytes()),
                parent_id: u64::from_be_bytes(own.span_id().to_bytes()),
                flags: own.trace_flags().to_u8(),
            };
        }
    }
    TraceParent::continue_or_start(incoming)
}

/// The exporter's HTTP client: our reqwest client, driven on the service's runtime (the SDK calls
/// it from its own thread, which has no reactor).
#[derive(Debug)]
struct OtlpClient {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let http = self.http.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let res = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let (status, headers) = (res.status(), res.headers().clone());
            Ok::<_, reqwest::Error>((status, headers, res.bytes().await?))
        });
        let (status, headers, body) = sent.await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed: render an empty, private registry.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_url_follows_the_opentelemetry_rules() {
        let url = |vars: &[(&str, &str)]| otlp_traces_url(&Env::from_map(vars.iter().copied()));
        assert_eq!(url(&[]).unwrap(), None);
        assert_eq!(
            url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap(),
            Some("http://collector:4318/v1/traces".into())
        );
        assert_eq!(
            url(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "https://traces.example/ingest"
                ),
            ])
            .unwrap(),
            Some("https://traces.example/ingest".into())
        );
        let err = url(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]).unwrap_err();
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{err}"
        );
    }
}
