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

/// `/api/openapi.json` and Swagger UI at `/api/docs` (assets are vendored: works offline).
pub fn docs_routes(openapi: utoipa::openapi::OpenApi) -> Router {
    utoipa_swagger_ui::SwaggerUi::new(contract::http::DOCS_PATH)
        .url(contract::http::OPENAPI_PATH, openapi)
        .into()
}

/// Adds the `bearer` (JWT) security scheme to a service's OpenAPI document.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Documents the contract's error answers on every operation of a service's OpenAPI document,
/// so a client (or a fuzzer such as schemathesis) can rely on the document:
///
/// - the `ErrorBody` schema (`{statusCode, message, error}`) on every 4xx/5xx answer;
/// - `400` wherever a request has parameters or a body (a field that does not parse);
/// - `401` wherever a credential is required;
/// - `404` wherever the path names a resource;
/// - `413` and `415` wherever a JSON body is taken.
pub struct ContractErrors;

/// The name of the error schema in `components.schemas`.
pub const ERROR_SCHEMA: &str = "ErrorBody";

impl ContractErrors {
    fn error_response(description: &str) -> serde_json::Value {
        serde_json::json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}}},
        })
    }

    fn document(doc: &mut serde_json::Value) {
        doc["components"]["schemas"][ERROR_SCHEMA] = serde_json::json!({
            "type": "object",
            "description": "Every 4xx/5xx answer.",
            "required": ["statusCode", "message", "error"],
            "properties": {
                "statusCode": {"type": "integer", "description": "The HTTP status"},
                "message": {"type": "string", "description": "What went wrong, for people (names the field)"},
                "error": {"type": "string", "description": "The status's reason phrase"},
            },
        });
        let Some(paths) = doc["paths"].as_object_mut() else {
            return;
        };
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (_, op) in item.iter_mut() {
                let Some(op) = op.as_object_mut() else {
                    continue;
                };
                let secured = op
                    .get("security")
                    .and_then(|s| s.as_array())
                    .is_some_and(|s| {
                        s.iter()
                            .any(|r| r.as_object().is_some_and(|r| !r.is_empty()))
                    });
                let has_params = op
                    .get("parameters")
                    .and_then(|p| p.as_array())
                    .is_some_and(|p| !p.is_empty());
                let has_body = op.contains_key("requestBody");
                let names_resource = path.contains('{');
                let responses = op
                    .entry("responses")
                    .or_insert_with(|| serde_json::json!({}));
                let Some(responses) = responses.as_object_mut() else {
                    continue;
                };
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status)
                        .or_insert_with(|| Self::error_response(description));
                };
                if has_params || has_body {
                    add("400", "Invalid request: the message names the field");
                }
                if secured {
                    add("401", "Missing, invalid or expired credential");
                }
                if names_resource {
                    add("404", "Not found");
                }
                if has_body {
                    add("413", "Request body is too large");
                    add(
                        "415",
                        "Expected a JSON body with Content-Type: application/json",
                    );
                }
                for (status, response) in responses.iter_mut() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let description = response["description"]
                            .as_str()
                            .unwrap_or("Error")
                            .to_string();
                        if response.get("content").is_none() {
                            *response = Self::error_response(&description);
                        }
                    }
                }
            }
        }
    }
}

/// What the `uuid` format means here, spelled as a pattern: JSON Schema 2020-12 treats `format`
/// as an annotation, so without it a validator takes `""` for a UUID.
pub const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// What [`crate::error::is_valid_email`] takes once trimmed, spelled as a pattern for the
/// `email` format: a local part of 1–64 characters, a dotted domain without empty labels, no
/// blanks or controls (`\x00-\x20`, `\x7f-\x9f` and what `str::trim` takes), blanks around it.
pub const EMAIL_PATTERN: &str = concat!(
    r"^[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*",
    r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]{1,64}@",
    r"[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+",
    r"(\.[^@.\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+)+",
    r"[\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$",
);

/// Any text without a NUL character (which PostgreSQL cannot store: the API refuses it).
pub const NO_NUL_PATTERN: &str = r"^[^\x00]*$";

/// What Rust's `str::trim` removes (Unicode White_Space), as a regex character-class body.
const BLANK: &str = r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";

/// The pattern of a text whose limits hold once trimmed (the `trimmed` format): no NUL, at most
/// `max` characters between the first and last non-blank ones, at least one when `required`.
pub fn trimmed_text_pattern(required: bool, max: Option<u64>) -> String {
    let blanks = format!("[{BLANK}]*");
    let solid = format!("[^\\x00{BLANK}]");
    let inner = match max {
        None => "*".to_string(),
        Some(max) => format!("{{0,{}}}", max.saturating_sub(2)),
    };
    let core = if max == Some(1) {
        solid
    } else {
        format!("{solid}([^\\x00]{inner}{solid})?")
    };
    let core = if required { core } else { format!("({core})?") };
    format!("^{blanks}{core}{blanks}$")
}

/// Spells out, as a `pattern`, what every string schema without one accepts: the `uuid` and
/// `email` formats as the API parses them, `trimmed` texts (whose length limits hold after
/// trimming, which `minLength`/`maxLength` cannot say), and no NUL character anywhere. At any
/// depth.
fn pin_string_patterns(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let is_string = match map.get("type") {
                Some(serde_json::Value::String(t)) => t == "string",
                Some(serde_json::Value::Array(types)) => types.iter().any(|t| t == "string"),
                _ => false,
            };
            if is_string && !map.contains_key("pattern") && !map.contains_key("enum") {
                let format = map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .map(str::to_owned);
                let pattern = match format.as_deref() {
                    None => Some(NO_NUL_PATTERN.to_string()),
                    Some("uuid") => Some(UUID_PATTERN.to_string()),
                    Some("trimmed") => {
                        let min = map.remove("minLength").and_then(|v| v.as_u64());
                        let max = map.remove("maxLength").and_then(|v| v.as_u64());
                        map.remove("format");
                        Some(trimmed_text_pattern(min.unwrap_or(0) > 0, max))
                    }
                    Some("email") => {
                        // The pattern says what the API takes; JSON Schema's `email` format
                        // (RFC 5321 with IDN rules) is another definition, so it goes.
                        map.remove("format");
                        Some(EMAIL_PATTERN.to_string())
                    }
                    // Another format (`date-time`, `cursor`) says what the value is.
                    Some(_) => None,
                };
                if let Some(pattern) = pattern {
                    map.insert("pattern".into(), pattern.into());
                }
            }
            map.values_mut().for_each(pin_string_patterns);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(pin_string_patterns),
        _ => {}
    }
}

impl utoipa::Modify for ContractErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Ok(mut doc) = serde_json::to_value(&*openapi) else {
            return;
        };
        Self::document(&mut doc);
        pin_string_patterns(&mut doc);
        if let Ok(documented) = serde_json::from_value(doc) {
            *openapi = documented;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review, item 13: every operation documents the contract's errors, and formats
    /// are spelled as patterns a validator enforces.
    #[test]
    fn the_contract_errors_and_patterns_are_documented() {
        let mut doc = serde_json::json!({
            "paths": {
                "/things/{id}": {"patch": {
                    "security": [{"bearer": []}],
                    "parameters": [{"name": "id", "in": "path", "required": true,
                                    "schema": {"type": "string", "format": "uuid"}}],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {"200": {"description": "ok"}, "403": {"description": "Not yours"}},
                }},
                "/open": {"post": {"requestBody": {}, "responses": {"200": {"description": "ok"}}}},
            },
            "components": {"schemas": {"Thing": {"type": "object", "properties": {
                "email": {"type": "string", "format": "email"},
                "name": {"type": ["string", "null"]},
                "role": {"type": "string", "enum": ["A", "B"]},
            }}}},
        });
        ContractErrors::document(&mut doc);
        pin_string_patterns(&mut doc);
        let op = &doc["paths"]["/things/{id}"]["patch"]["responses"];
        for status in ["400", "401", "403", "404", "413", "415"] {
            assert_eq!(
                op[status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{status}"
            );
        }
        assert_eq!(op["403"]["description"], "Not yours");
        let open = &doc["paths"]["/open"]["post"]["responses"];
        assert!(open.get("401").is_none() && open.get("404").is_none());
        assert!(doc["components"]["schemas"]["ErrorBody"]["required"].is_array());
        let param = &doc["paths"]["/things/{id}"]["patch"]["parameters"][0]["schema"];
        assert_eq!(param["pattern"], UUID_PATTERN);
        let props = &doc["components"]["schemas"]["Thing"]["properties"];
        assert_eq!(props["email"]["pattern"], EMAIL_PATTERN);
        assert!(props["email"].get("format").is_none());
        assert_eq!(props["name"]["pattern"], NO_NUL_PATTERN);
        assert!(props["role"].get("pattern").is_none());
    }

    #[test]
    fn trimmed_text_patterns_say_what_trim_then_check_length_takes() {
        let title = trimmed_text_pattern(true, Some(5));
        assert_eq!(
            title,
            format!("^[{BLANK}]*[^\\x00{BLANK}]([^\\x00]{{0,3}}[^\\x00{BLANK}])?[{BLANK}]*$")
        );
        let name = trimmed_text_pattern(false, Some(100));
        assert!(name.starts_with(&format!("^[{BLANK}]*([^")));
        assert!(trimmed_text_pattern(true, None).contains("[^\\x00]*"));
    }

    #[test]
    fn origins_of_urls() {
        assert_eq!(
            origin_of("https://app.example.com/helpdesk/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            origin_of("http://localhost:5173").as_deref(),
            Some("http://localhost:5173")
        );
        assert_eq!(
            origin_of("https://app.example.com:443/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(origin_of("not a url"), None);
    }

    #[test]
    fn the_default_cors_origin_is_the_frontends_origin() {
        let env = Env::from_map([(var::FRONTEND_BASE_URL, "https://app.example.com/helpdesk/")]);
        let cfg = HttpConfig::from_env(&env).unwrap();
        assert_eq!(
            cfg.cors_origins,
            vec!["https://app.example.com".to_string()]
        );
        let env = Env::from_map([
            (var::FRONTEND_BASE_URL, "https://app.example.com"),
            (
                var::CORS_ALLOWED_ORIGINS,
                "https://a.example, https://b.example",
            ),
        ]);
        let cfg = HttpConfig::from_env(&env).unwrap();
        assert_eq!(cfg.cors_origins, ["https://a.example", "https://b.example"]);
    }
}
