//! `helpdesk gateway`: the ingress's path routing in front of separately running services, for
//! running the platform as five processes behind one port (as in the cluster).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use helpdesk_kit::config::Env;
use helpdesk_kit::contract::{self, PUBLIC_ROUTES, Service, var};
use helpdesk_kit::error::error_response;
use helpdesk_kit::runtime;

struct Upstreams {
    http: reqwest::Client,
    /// Base URL of each service the public routes name (from its `<SERVICE>_SERVICE_URL`).
    bases: Vec<(Service, String)>,
    body_limit: usize,
}

const HOP_BY_HOP: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
];

async fn forward(
    State(up): State<Arc<Upstreams>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_string();
    let Some((_, base)) = contract::public_route(&path)
        .and_then(|route| up.bases.iter().find(|(s, _)| *s == route.service))
    else {
        return error_response(StatusCode::NOT_FOUND, "Not found");
    };
    let target = format!(
        "{base}{}",
        req.uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, up.body_limit).await else {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large");
    };
    let mut out = up.http.request(parts.method, target).body(bytes);
    for (name, value) in parts.headers.iter() {
        // The gateway is the edge: the client address is the one it saw, never a claimed one.
        if !HOP_BY_HOP.contains(name) && name.as_str() != "x-forwarded-for" {
            out = out.header(name, value);
        }
    }
    out = out.header("x-forwarded-for", peer.ip().to_string());
    match out.send().await {
        Ok(res) => {
            let mut builder = Response::builder().status(res.status());
            for (name, value) in res.headers() {
                if !HOP_BY_HOP.contains(name) && name != header::CONTENT_LENGTH {
                    builder = builder.header(name, value);
                }
            }
            match res.bytes().await {
                Ok(b) => builder
                    .body(Body::from(b))
                    .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()),
                Err(_) => {
                    error_response(StatusCode::BAD_GATEWAY, "The service's answer was cut off")
                }
            }
        }
        Err(e) if e.is_timeout() => error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "The service did not answer in time",
        ),
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is unavailable",
        ),
    }
}

/// `/ready`: every upstream's own `/ready`, asked concurrently with a short timeout; 200 when all
/// are ready, else 503 naming those that are not (the same answer as `helpdesk up`'s).
async fn ready(State(up): State<Arc<Upstreams>>) -> Response {
    let checks = futures_util::future::join_all(up.bases.iter().map(|(service, base)| {
        let request = up
            .http
            .get(format!("{base}{}", contract::http::READY_PATH))
            .timeout(crate::platform::READY_TIMEOUT)
            .send();
        async move {
            let ok = request.await.is_ok_and(|r| r.status() == StatusCode::OK);
            (service.binary(), ok)
        }
    }))
    .await;
    crate::platform::readiness_answer(&checks)
}

/// Serves the gateway on `addr` until Ctrl-C.
pub async fn run(addr: SocketAddr, env: &Env) -> anyhow::Result<()> {
    let mut bases: Vec<(Service, String)> = Vec::new();
    for route in PUBLIC_ROUTES {
        if bases.iter().any(|(s, _)| *s == route.service) {
            continue;
        }
        let base = env.required(route.service.url_var())?;
        bases.push((route.service, base.trim_end_matches('/').to_string()));
    }
    let up = Arc::new(Upstreams {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?,
        bases,
        body_limit: env.parse_or(
            var::HTTP_BODY_LIMIT_BYTES,
            helpdesk_kit::http::DEFAULT_BODY_LIMIT,
        )? + 1,
    });
    let app = Router::new()
        .route(
            contract::http::HEALTH_PATH,
            axum::routing::get(|| async {
                axum::Json(serde_json::json!({"status": "ok", "service": "gateway"}))
            }),
        )
        .route(contract::http::READY_PATH, axum::routing::get(ready))
        .fallback(forward)
        .with_state(up)
        .layer(axum::middleware::from_fn(
            helpdesk_kit::http::request_id_at_the_edge,
        ));
    let listener = runtime::bind(addr).await?;
    println!("Helpdesk gateway on http://{}", listener.local_addr()?);
    runtime::serve(listener, app, runtime::shutdown_on_signals()).await?;
    Ok(())
}
