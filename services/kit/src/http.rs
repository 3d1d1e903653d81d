//! The HTTP stack every service shares: request ids, request logs, metrics, CORS, body limit, the
//! contract's error shape on every 4xx/5xx, and `/health`, `/ready`, `/metrics`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sqlx::PgPool;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tracing::Instrument;

use crate::bus::Bus;
use crate::config::{ConfigError, Env};
use crate::error::error_response;
use crate::trace::TraceParent;
use helpdesk_contract::{self as contract, var};

/// Request bodies up to this size are accepted unless `HTTP_BODY_LIMIT_BYTES` says otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// HTTP settings shared by every service.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind_addr: SocketAddr,
    pub body_limit: usize,
    pub cors_origins: Vec<String>,
    /// Take the client address from `X-Forwarded-For` (behind a trusted ingress).
    pub trust_forwarded_for: bool,
}

impl HttpConfig {
    /// `BIND_ADDR` (default `0.0.0.0:8080`), `HTTP_BODY_LIMIT_BYTES` (default 1 MiB),
    /// `CORS_ALLOWED_ORIGINS` (default `FRONTEND_BASE_URL`), `TRUST_FORWARDED_FOR`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut cors_origins = env.list(var::CORS_ALLOWED_ORIGINS);
        if cors_origins.is_empty() {
            cors_origins = env
                .raw(var::FRONTEND_BASE_URL)
                .map(|url| origin_of(&url).unwrap_or(url))
                .into_iter()
                .collect();
        }
        for origin in &cors_origins {
            if origin != "*" && HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::new(
                    var::CORS_ALLOWED_ORIGINS,
                    format!("has an invalid origin {origin:?}"),
                ));
            }
        }
        Ok(Self {
            bind_addr: env.socket_addr_or(var::BIND_ADDR, contract::http::DEFAULT_BIND_ADDR)?,
            body_limit: env.parse_or(var::HTTP_BODY_LIMIT_BYTES, DEFAULT_BODY_LIMIT)?,
            cors_origins,
            trust_forwarded_for: env.bool_or(var::TRUST_FORWARDED_FOR, false)?,
        })
    }
}

/// The origin (`scheme://host[:port]`) of a URL, as browsers send it in `Origin`: the frontend's
/// base URL `https://app.example.com/helpdesk/` has the origin `https://app.example.com`.
pub fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url.trim()).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The request id of the current request (taken from `X-Request-Id` or generated).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(uuid::Uuid::new_v4().to_string())))
    }
}

/// The client's address, for rate limits.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

#[derive(Debug, Clone, Copy)]
struct TrustForwarded(bool);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let trust = parts
            .extensions
            .get::<TrustForwarded>()
            .is_some_and(|t| t.0);
        // Behind one trusted proxy (the ingress, the gateway) the client is the last address it
        // appended; anything before it is what the client claimed.
        if trust
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok())
        {
            return Ok(ClientIp(ip.to_string()));
        }
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientIp(ip))
    }
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_graphic()))
        .then(|| s.to_string())
}

async fn observe(
    State((service, trust)): State<(&'static str, bool)>,
    mut req: Request,
    next: Next,
) -> Response {
    let (id, header) = ensure_request_id(&mut req);
    req.extensions_mut().insert(RequestId(id.clone()));
    req.extensions_mut().insert(TrustForwarded(trust));
    let incoming = req
        .headers()
        .get(TraceParent::HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!(
        "request",
        service,
        request_id = %id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
        method = %method,
        path = %path
    );
    let trace = crate::telemetry::join_trace(&span, incoming);
    span.record("trace_id", trace.trace_id_hex());
    span.record("span_id", trace.span_id_hex());
    let started = Instant::now();
    let mut res = trace.scope(next.run(req).instrument(span.clone())).await;
    let status = res.status().as_u16();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::error!(status, latency_ms = ms, "request finished");
        } else {
            tracing::info!(status, latency_ms = ms, "request finished");
        }
    });
    if let Some(v) = header {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    res
}

/// The request's `X-Request-Id` (the client's when valid, else a new one), set on the request so
/// whoever handles it next uses the same; with the header value to echo.
fn ensure_request_id(req: &mut Request) -> (String, Option<HeaderValue>) {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let header = HeaderValue::from_str(&id).ok();
    if let Some(v) = &header {
        req.headers_mut().insert(REQUEST_ID.clone(), v.clone());
    }
    (id, header)
}

/// For routers in front of services (`helpdesk up`, the gateway): gives every request an
/// `X-Request-Id` (the client's when valid), which the service behind then uses, and echoes it on
/// every response, including the ones answered in front (`/health`, 404 of unknown paths, 502...).
pub async fn request_id_at_the_edge(mut req: Request, next: Next) -> Response {
    let (_, value) = ensure_request_id(&mut req);
    let mut res = next.run(req).await;
    if let Some(v) = value
        && !res.headers().contains_key(&REQUEST_ID)
    {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    res
}

async fn record_metrics(State(service): State<&'static str>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    metrics::counter!("helpdesk_http_requests_total", "service" => service, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("helpdesk_http_request_duration_seconds", "service" => service, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    res
}

/// Gives every error response without a JSON body (404 of unknown routes, 405, 413 from the body
/// limit, ...) the contract's error shape.
async fn error_shape(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return res;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::METHOD_NOT_ALLOWED => "Method not allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "Unsupported media type",
        StatusCode::REQUEST_TIMEOUT => "Request timed out",
        _ => status.canonical_reason().unwrap_or("Error"),
    };
    let mut shaped = error_response(status, message);
    if let Some(allow) = res.headers().get(header::ALLOW) {
        shaped.headers_mut().insert(header::ALLOW, allow.clone());
    }
    shaped
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            REQUEST_ID.clone(),
            HeaderName::from_static(TraceParent::HEADER),
        ])
        .expose_headers([REQUEST_ID.clone(), HeaderName::from_static("x-next-cursor")])
        .max_age(Duration::from_secs(600))
}

/// Wraps a service's routes in the shared stack. Call after every route is added.
pub fn finish(router: Router, service: &'static str, cfg: &HttpConfig) -> Router {
    router
        .route_layer(middleware::from_fn_with_state(service, record_metrics))
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "Not found") })
        .layer(DefaultBodyLimit::max(cfg.body_limit))
        .layer(RequestBodyLimitLayer::new(cfg.body_limit))
        .layer(middleware::from_fn(error_shape))
        .layer(cors(&cfg.cors_origins))
        .layer(middleware::from_fn_with_state(
            (service, cfg.trust_forwarded_for),
            observe,
        ))
}

/// What `/ready` checks.
#[derive(Clone)]
pub struct Readiness {
    pub service: &'static str,
    pub pool: PgPool,
    pub bus: Option<Arc<dyn Bus>>,
}

/// How long `/ready` waits for each of its checks; they run concurrently, so a dependency that
/// is down makes `/ready` answer 503 within about this long (a pool that cannot connect gives
/// up after [`crate::db::ACQUIRE_TIMEOUT`] anyway).
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

async fn check_database(pool: &PgPool) -> bool {
    matches!(
        tokio::time::timeout(
            READY_CHECK_TIMEOUT,
            sqlx::query_scalar!("SELECT 1 AS ready").fetch_one(pool)
        )
        .await,
        Ok(Ok(_))
    )
}

async fn check_broker(bus: Option<&Arc<dyn Bus>>) -> bool {
    match bus {
        None => true,
        Some(bus) => tokio::time::timeout(READY_CHECK_TIMEOUT, bus.healthy())
            .await
            .unwrap_or(false),
    }
}

async fn ready(State(r): State<Readiness>) -> Response {
    let (db, broker) = tokio::join!(check_database(&r.pool), check_broker(r.bus.as_ref()));
    let checks = serde_json::json!({
        "database": if db { "ok" } else { "unavailable" },
        "broker": if broker { "ok" } else { "unavailable" },
    });
    if db && broker {
        return axum::Json(
            serde_json::json!({"status": "ready", "service": r.service, "checks": checks}),
        )
        .into_response();
    }
    let down: Vec<&str> = [(!db).then_some("database"), (!broker).then_some("broker")]
        .into_iter()
        .flatten()
        .collect();
    let body = serde_json::json!({
        "statusCode": 503,
        "message": format!("Not ready: {} unavailable", down.join(" and ")),
        "error": "Service Unavailable",
        "checks": checks,
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

/// `/health`, `/ready` and `/metrics`.
pub fn operational_routes(readiness: Readiness) -> Router {
    // Install the recorder now, so what happens before the first scrape is counted.
    crate::telemetry::prometheus();
    let service = readiness.service;
    Router::new()
        .route(
            contract::http::HEALTH_PATH,
            get(move || async move {
                axum::Json(serde_json::json!({"status": "ok", "service": service}))
            }),
        )
        .route(contract::http::READY_PATH, get(ready))
        .route(
            contract::http::METRICS_PATH,
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    crate::telemetry::prometheus().render(),
                )
            }),
        )
        .with_state(readiness)
}

mod docs;
pub use docs::{
    BearerAuth, ContractErrors, EMAIL_PATTERN, ERROR_SCHEMA, NO_NUL_PATTERN, UUID_PATTERN,
    docs_routes, trimmed_text_pattern,
};
#[cfg(test)]
mod tests;
