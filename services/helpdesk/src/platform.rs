//! The whole platform in one process: every service built with the same configuration names
//! the operator sets, behind one port with the ingress's path routing.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use helpdesk_kit::bus::Bus;
use helpdesk_kit::config::Env;
use helpdesk_kit::contract::{self, INTERNAL_ROUTES, PUBLIC_ROUTES, Route};
use helpdesk_kit::error::error_response;
use helpdesk_kit::runtime::{self, Service, ServiceDef, Worker};
use helpdesk_kit::service::ServiceConfig;

/// Whether the public entry point must not serve `path` (an internal route below a public
/// prefix).
pub use helpdesk_kit::contract::is_internal_path;

/// A started platform.
pub struct Platform {
    pub public: Router,
    pub internal: Router,
    pub workers: Vec<Worker>,
    pub services: Vec<&'static str>,
}

/// Builds one service: configuration, pool, migrations, router and workers.
pub async fn start_service<D: ServiceDef>(
    env: &Env,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<Service> {
    let config = D::load(env).map_err(|e| anyhow::anyhow!("{}: {e}", D::NAME))?;
    let pool = helpdesk_kit::db::connect(&config.common().db)
        .await
        .map_err(|e| anyhow::anyhow!("{}: cannot connect to DATABASE_URL: {e}", D::NAME))?;
    helpdesk_kit::db::migrate(&pool, D::MIGRATOR).await?;
    D::build(config, pool, bus, shutdown).await
}

/// Runs every service's migrations, reading only the database settings (as each service's
/// `migrate` does).
pub async fn migrate_all(env: &Env) -> anyhow::Result<()> {
    migrate::<user_service::UserService>(env).await?;
    migrate::<ticket_service::TicketService>(env).await?;
    migrate::<audit_service::AuditService>(env).await?;
    migrate::<notification_service::NotificationService>(env).await?;
    migrate::<admin_service::AdminService>(env).await?;
    Ok(())
}

async fn migrate<D: ServiceDef>(env: &Env) -> anyhow::Result<()> {
    let db = D::load_db(env).map_err(|e| anyhow::anyhow!("{}: {e}", D::NAME))?;
    runtime::migrate::<D>(&db)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e:#}", D::NAME))
}

/// Starts all services on `bus`.
pub async fn start(
    env: &Env,
    bus: Arc<dyn Bus>,
    shutdown: CancellationToken,
) -> anyhow::Result<Platform> {
    let services = vec![
        start_service::<user_service::UserService>(env, bus.clone(), shutdown.clone()).await?,
        start_service::<ticket_service::TicketService>(env, bus.clone(), shutdown.clone()).await?,
        start_service::<audit_service::AuditService>(env, bus.clone(), shutdown.clone()).await?,
        start_service::<notification_service::NotificationService>(
            env,
            bus.clone(),
            shutdown.clone(),
        )
        .await?,
        start_service::<admin_service::AdminService>(env, bus.clone(), shutdown.clone()).await?,
    ];
    assemble(services).await
}

async fn assemble(services: Vec<Service>) -> anyhow::Result<Platform> {
    let mut workers = Vec::new();
    let mut routers = Vec::new();
    let mut names = Vec::new();
    for s in services {
        workers.extend(s.workers);
        names.push(s.name);
        routers.push((s.name, s.router));
    }
    let docs = merged_openapi(&routers).await;
    // The ingress's table (the contract's), to the routers of the services that answer it.
    let table = |internal: bool| -> Vec<(Route, Router)> {
        let entries = PUBLIC_ROUTES
            .iter()
            .chain(if internal { INTERNAL_ROUTES } else { &[] });
        entries
            .filter_map(|route| {
                routers
                    .iter()
                    .find(|(n, _)| *n == route.service.binary())
                    .map(|(_, r)| (*route, r.clone()))
            })
            .collect()
    };
    let edge = axum::middleware::from_fn(helpdesk_kit::http::request_id_at_the_edge);
    let public = operational(names.clone(), routers.clone())
        .merge(helpdesk_kit::http::docs_routes(docs))
        .fallback_service(Dispatch {
            routes: Arc::new(table(false)),
            public: true,
        })
        .layer(edge.clone());
    let internal = operational(names.clone(), routers.clone())
        .fallback_service(Dispatch {
            routes: Arc::new(table(true)),
            public: false,
        })
        .layer(edge);
    Ok(Platform {
        public,
        internal,
        workers,
        services: names,
    })
}

/// Forwards a request, path unchanged, to the service its route names (with the service's own
/// middleware stack), as the ingress does; anything else is a contract-shaped 404. The public
/// entry point does not serve internal routes.
#[derive(Clone)]
struct Dispatch {
    routes: Arc<Vec<(Route, Router)>>,
    public: bool,
}

impl tower::Service<Request> for Dispatch {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        let hidden = self.public && is_internal_path(path);
        // The longest matching route, as an Ingress picks.
        let target = self
            .routes
            .iter()
            .filter(|(route, _)| !hidden && route.matches(path))
            .max_by_key(|(route, _)| route.path.len())
            .map(|(_, r)| r.clone());
        Box::pin(async move {
            match target {
                Some(router) => router.oneshot(req).await,
                None => Ok(error_response(StatusCode::NOT_FOUND, "Not found")),
            }
        })
    }
}

async fn call(router: &Router, path: &str) -> Option<(StatusCode, Vec<u8>)> {
    let req = Request::get(path).body(axum::body::Body::empty()).ok()?;
    let res = router.clone().oneshot(req).await.ok()?;
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 16 * 1024 * 1024)
        .await
        .ok()?;
    Some((status, bytes.to_vec()))
}

/// One OpenAPI document with every service's public paths (internal ones left out).
async fn merged_openapi(routers: &[(&'static str, Router)]) -> utoipa::openapi::OpenApi {
    let mut merged = serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": "Helpdesk API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Every public route of the platform, behind one base URL."},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    });
    for (_, router) in routers {
        let Some((StatusCode::OK, body)) = call(router, contract::http::OPENAPI_PATH).await else {
            continue;
        };
        let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&body) else {
            continue;
        };
        if let Some(paths) = doc["paths"].as_object() {
            for (path, item) in paths {
                if contract::public_route(path).is_some() {
                    merged["paths"][path] = item.clone();
                }
            }
        }
        for section in ["schemas", "securitySchemes"] {
            if let Some(items) = doc["components"][section].as_object() {
                for (k, v) in items {
                    merged["components"][section][k] = v.clone();
                }
            }
        }
    }
    serde_json::from_value(merged)
        .unwrap_or_else(|_| utoipa::openapi::OpenApiBuilder::new().build())
}

/// `/health`, `/ready` (every service ready) and `/metrics` for the whole process.
fn operational(names: Vec<&'static str>, routers: Vec<(&'static str, Router)>) -> Router {
    let routers = Arc::new(routers);
    Router::new()
        .route(
            contract::http::HEALTH_PATH,
            get(move || async move {
                axum::Json(serde_json::json!({"status": "ok", "services": names}))
            }),
        )
        .route(
            contract::http::READY_PATH,
            get(move || {
                let routers = routers.clone();
                async move { ready(&routers).await }
            }),
        )
        .route(
            contract::http::METRICS_PATH,
            get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    helpdesk_kit::telemetry::prometheus().render(),
                )
            }),
        )
}

/// How long `/ready` waits for each service's own `/ready` (whose checks give up after
/// [`helpdesk_kit::http::READY_CHECK_TIMEOUT`]); the services are asked concurrently, so the
/// answer comes within this long even with the database down.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

async fn ready(routers: &[(&'static str, Router)]) -> Response {
    let checks = futures_util::future::join_all(routers.iter().map(|(name, router)| async move {
        let answer = tokio::time::timeout(READY_TIMEOUT, call(router, contract::http::READY_PATH));
        (*name, matches!(answer.await, Ok(Some((StatusCode::OK, _)))))
    }))
    .await;
    readiness_answer(&checks)
}

/// The answer of a `/ready` made of other services' readiness (`helpdesk up`, the gateway):
/// 200 `{"status": "ready", "services": {...}}` when all are ready, else 503 in the contract's
/// error shape naming those that are not.
pub fn readiness_answer(checks: &[(&str, bool)]) -> Response {
    let services: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, ok)| {
            let state = if *ok { "ready" } else { "not ready" };
            (name.to_string(), state.into())
        })
        .collect();
    let down: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| *name)
        .collect();
    if down.is_empty() {
        return axum::Json(serde_json::json!({"status": "ready", "services": services}))
            .into_response();
    }
    let body = serde_json::json!({
        "statusCode": 503,
        "message": format!("Not ready: {}", down.join(", ")),
        "error": "Service Unavailable",
        "services": services,
    });
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use helpdesk_kit::config::Env;
    use helpdesk_kit::contract::var;
    use helpdesk_kit::runtime::ServiceDef;
    use helpdesk_testkit::TestKeys;

    /// Every service's configuration may be logged with `{:?}`: no credential shows.
    #[test]
    fn configurations_debug_without_their_credentials() {
        let keys = TestKeys::generate();
        let token = keys.service_token("test-service");
        let env = Env::from_map([
            (
                var::DATABASE_URL,
                "postgres://app:db-pass-7f3a@db:5432/helpdesk",
            ),
            (var::AMQP_URL, "amqp://guest:guest@127.0.0.1:5672/%2f"),
            (var::JWT_PUBLIC_KEY, keys.public_pem.as_str()),
            (var::JWT_PRIVATE_KEY, keys.private_pem.as_str()),
            (var::SERVICE_TOKEN, token.as_str()),
            (var::BOOTSTRAP_ADMIN_EMAIL, "admin@example.com"),
            (var::BOOTSTRAP_ADMIN_PASSWORD, "admin-pass-9c1e"),
            (var::SMTP_URL, "smtp://mailer:smtp-pass-2b8d@mail:587"),
            ("USER_SERVICE_URL", "http://user:8080"),
            ("AUDIT_SERVICE_URL", "http://audit:8080"),
        ]);
        let shown = [
            format!("{:?}", user_service::UserService::load(&env).expect("user")),
            format!(
                "{:?}",
                ticket_service::TicketService::load(&env).expect("ticket")
            ),
            format!(
                "{:?}",
                audit_service::AuditService::load(&env).expect("audit")
            ),
            format!(
                "{:?}",
                notification_service::NotificationService::load(&env).expect("notification")
            ),
            format!(
                "{:?}",
                admin_service::AdminService::load(&env).expect("admin")
            ),
        ];
        for debug in &shown {
            for secret in [
                "db-pass-7f3a",
                "admin-pass-9c1e",
                "smtp-pass-2b8d",
                token.as_str(),
                keys.private_pem.as_str(),
            ] {
                assert!(!debug.contains(secret), "a credential shows in {debug}");
            }
        }
        assert!(shown[1].contains("audit:8080"), "{}", shown[1]);
    }
}
