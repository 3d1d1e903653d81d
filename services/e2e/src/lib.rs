//! The end-to-end walk through the whole HTTP contract, run against any base URL: `helpdesk up`,
//! five service processes behind `helpdesk gateway`, or the simulated cluster's ingress
//! (`helpdesk-simcluster`). Mail is checked through a real SMTP server (the in-process
//! `helpdesk_testkit::smtp::SmtpSink`) when the platform sends to one.

use std::process::{Child, Command};
use std::time::Duration;

pub use helpdesk_testkit::smtp::{Received, SmtpSink};
use helpdesk_testkit::{eventually, http};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// What answers at the base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `helpdesk up` or `helpdesk gateway`: the platform's own front, which answers unrouted
    /// paths itself (contract error shape, `X-Request-Id`) and never routes internal routes.
    Platform,
    /// A cluster's Ingress (or Routes): unrouted paths get the ingress controller's default
    /// backend, and routing is by prefix, so `/auth/validate` and `/audit/log` are reachable but
    /// refuse a user's token (they require a service credential).
    ClusterIngress,
}

/// The HTTP client of the walk. `E2E_RESOLVE=host=ip:port` sends requests for `host` to that
/// address (a cluster's ingress behind a port-forward, as `curl --resolve` would).
pub fn client() -> Client {
    let mut b = Client::builder();
    if let Ok(spec) = std::env::var("E2E_RESOLVE")
        && let Some((host, addr)) = spec.split_once('=')
        && let Ok(addr) = addr.parse::<std::net::SocketAddr>()
    {
        b = b.resolve(host, addr);
    }
    b.build().unwrap_or_default()
}

/// The platform's first administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    pub email: String,
    pub password: String,
}

pub use helpdesk_testkit::free_port;

/// Kills its processes on drop.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// How long the walk waits for a mail.
const MAIL_WAIT: Duration = Duration::from_secs(30);

/// Waits for a mail to `to` whose subject or body contains `text` (case-insensitive).
pub async fn mail_about(sink: &SmtpSink, to: &str, text: &str) -> Received {
    let needle = text.to_lowercase();
    sink.wait_until(
        MAIL_WAIT,
        &format!("a mail to {to} about {text:?}"),
        |mails| {
            mails
                .iter()
                .find(|m| {
                    m.is_to(to)
                        && format!("{} {}", m.subject, m.body)
                            .to_lowercase()
                            .contains(&needle)
                })
                .cloned()
        },
    )
    .await
}

pub async fn wait_ready(base: &str) {
    let http = Client::new();
    let url = format!("{base}/ready");
    eventually(
        Duration::from_secs(90),
        &format!("{url} to answer 200"),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        },
    )
    .await;
}

pub struct Api {
    pub http: Client,
    pub base: String,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = http::call(
            &self.http,
            method,
            &format!("{}{path}", self.base),
            token,
            body,
        )
        .await;
        (
            StatusCode::from_u16(r.status).expect("an HTTP status"),
            r.body,
        )
    }

    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (status, v) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {v}");
        v
    }

    /// Asserts the contract's error shape.
    pub async fn fails(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> String {
        let (status, v) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {v}");
        http::assert_error_shape(&v, want);
        v["message"].as_str().unwrap_or_default().to_string()
    }

    pub async fn login(&self, email: &str, password: &str) -> (String, Value) {
        let v = self
            .ok(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
                200,
            )
            .await;
        (v["token"].as_str().unwrap().to_string(), v["user"].clone())
    }
}

pub fn reset_token(mail: &Received) -> String {
    let body = &mail.body;
    let start = body
        .find("token=")
        .expect("the reset mail carries the link")
        + 6;
    body[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '>')
        .next()
        .unwrap()
        .to_string()
}

mod walk;
pub use walk::walk;

/// A syntactically valid UUID that no row has.
pub const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000001";

/// Waits until `GET base+path` answers `status` (e.g. a route through an ingress that has no
/// `/ready` of its own).
pub async fn wait_ready_path(base: &str, path: &str, status: u16) {
    let http = Client::new();
    let url = format!("{base}{path}");
    eventually(
        Duration::from_secs(90),
        &format!("{url} to answer {status}"),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().as_u16() == status)
                    .map(|_| ())
            }
        },
    )
    .await;
}
