//! Service addresses (kube-proxy) and the Ingress (the ingress controller).
//!
//! A Service gets its own address and, per port, a TCP listener that spreads connections round
//! robin over the ready endpoints (pods matching its selector); with none ready, connections are
//! closed at once, as a ClusterIP with no endpoints refuses them. The Ingress is an HTTP reverse
//! proxy with the rendered path table (Exact before Prefix, longest prefix wins) in front of the
//! Services, adding `X-Forwarded-For` like an ingress controller.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::net::{TcpListener, TcpStream};

/// The endpoints of one Service port, shared with its listener.
#[derive(Default, Clone)]
pub struct Endpoints(Arc<RwLock<Vec<SocketAddr>>>, Arc<AtomicUsize>);

impl Endpoints {
    pub fn set(&self, mut addrs: Vec<SocketAddr>) {
        addrs.sort();
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = addrs;
    }

    /// The next endpoint, round robin.
    fn pick(&self) -> Option<SocketAddr> {
        let all = self.0.read().unwrap_or_else(|e| e.into_inner());
        if all.is_empty() {
            return None;
        }
        let n = self.1.fetch_add(1, Ordering::Relaxed);
        Some(all[n % all.len()])
    }
}

/// Connections handed to each endpoint (for the scaling scenario).
#[derive(Default, Clone)]
pub struct Spread(Arc<RwLock<HashMap<SocketAddr, usize>>>);

impl Spread {
    pub fn snapshot(&self) -> HashMap<SocketAddr, usize> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Listens on `addr` and forwards each connection to one of `endpoints`.
pub async fn service_proxy(
    addr: SocketAddr,
    endpoints: Endpoints,
    spread: Spread,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Some(target) = endpoints.pick() else {
                drop(client);
                continue;
            };
            *spread
                .0
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(target)
                .or_default() += 1;
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    }))
}

/// One rule of the Ingress: a path to a Service address.
#[derive(Debug, Clone)]
pub struct Route {
    pub path: String,
    pub exact: bool,
    pub backend: SocketAddr,
}

/// The backend of `path`: an Exact match first, else the longest matching Prefix (whole path
/// segments, as Kubernetes defines Prefix).
pub fn route(routes: &[Route], path: &str) -> Option<SocketAddr> {
    if let Some(r) = routes.iter().find(|r| r.exact && r.path == path) {
        return Some(r.backend);
    }
    routes
        .iter()
        .filter(|r| !r.exact)
        .filter(|r| {
            let p = r.path.trim_end_matches('/');
            p.is_empty() || path == p || path.starts_with(&format!("{p}/"))
        })
        .max_by_key(|r| r.path.len())
        .map(|r| r.backend)
}

/// Serves the Ingress at `addr` until the task is aborted.
pub async fn ingress(
    addr: SocketAddr,
    routes: Arc<RwLock<Vec<Route>>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::body::Body;
    use axum::extract::{ConnectInfo, Request};
    use axum::response::Response;

    // A new upstream connection per request, so the Service spreads requests over its pods
    // (an ingress controller balances per request).
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .build()?;
    let handler = move |ConnectInfo(peer): ConnectInfo<SocketAddr>, req: Request| {
        let (client, routes) = (client.clone(), routes.clone());
        async move {
            let path = req.uri().path().to_string();
            let backend = route(&routes.read().unwrap_or_else(|e| e.into_inner()), &path);
            let Some(backend) = backend else {
                return Response::builder()
                    .status(404)
                    .body(Body::from("default backend - 404"))
                    .unwrap_or_default();
            };
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let url = format!("http://{backend}{path}{query}");
            let (parts, body) = req.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
                return Response::builder()
                    .status(413)
                    .body(Body::empty())
                    .unwrap_or_default();
            };
            let mut out = client
                .request(parts.method.clone(), url)
                .body(bytes.to_vec());
            for (name, value) in parts.headers.iter() {
                if !matches!(
                    name.as_str(),
                    "host" | "connection" | "content-length" | "transfer-encoding"
                ) {
                    out = out.header(name, value);
                }
            }
            out = out
                .header("x-forwarded-for", peer.ip().to_string())
                .header("x-forwarded-proto", "http");
            match out.send().await {
                Ok(res) => {
                    let mut builder = Response::builder().status(res.status().as_u16());
                    for (name, value) in res.headers().iter() {
                        if !matches!(
                            name.as_str(),
                            "connection" | "content-length" | "transfer-encoding"
                        ) {
                            builder = builder.header(name, value);
                        }
                    }
                    let body = res.bytes().await.unwrap_or_default();
                    builder.body(Body::from(body)).unwrap_or_default()
                }
                Err(_) => Response::builder()
                    .status(503)
                    .body(Body::from("503 Service Temporarily Unavailable"))
                    .unwrap_or_default(),
            }
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    }))
}

/// Addresses handed out in the cluster: pods 127.0.1.x, Services 127.0.2.x, harness
/// processes standing in for things outside the cluster 127.0.3.x.
#[derive(Default)]
pub struct Addresses {
    next: [u8; 3],
}

impl Addresses {
    fn take(&mut self, block: usize) -> Ipv4Addr {
        self.next[block] = self.next[block].wrapping_add(1).max(2);
        Ipv4Addr::new(127, 0, block as u8 + 1, self.next[block])
    }
    pub fn pod(&mut self) -> Ipv4Addr {
        self.take(0)
    }
    pub fn service(&mut self) -> Ipv4Addr {
        self.take(1)
    }
    pub fn external(&mut self) -> Ipv4Addr {
        self.take(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_first_then_longest_prefix_on_segments() {
        let a: SocketAddr = "127.0.2.2:8080".parse().unwrap();
        let b: SocketAddr = "127.0.2.3:8080".parse().unwrap();
        let routes = vec![
            Route {
                path: "/auth".into(),
                exact: false,
                backend: a,
            },
            Route {
                path: "/api/openapi.json".into(),
                exact: true,
                backend: a,
            },
            Route {
                path: "/notifications/status".into(),
                exact: false,
                backend: b,
            },
        ];
        assert_eq!(route(&routes, "/auth/login"), Some(a));
        assert_eq!(route(&routes, "/auth"), Some(a));
        assert_eq!(route(&routes, "/authx"), None);
        assert_eq!(route(&routes, "/api/openapi.json"), Some(a));
        assert_eq!(route(&routes, "/notifications/status/1"), Some(b));
        assert_eq!(route(&routes, "/notifications/email"), None);
    }
}
