//! Synchronous calls to another service, used only where a user waits for an answer another
//! service owns. Each call has a timeout, idempotent calls retry with backoff, and a circuit
//! breaker answers at once while the peer keeps failing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer could not be reached, timed out, answered 5xx, or the breaker is open.
    #[error("{0} is unavailable")]
    Unavailable(String),
    /// The peer answered with a 4xx; its contract-shaped message is kept.
    #[error("{status}: {message}")]
    Rejected { status: u16, message: String },
}

impl From<PeerError> for ApiError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::Unavailable(peer) => ApiError::unavailable(format!(
                "{peer} is temporarily unavailable, please try again shortly"
            )),
            PeerError::Rejected { status, message } => ApiError::new(
                axum::http::StatusCode::from_u16(status)
                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                message,
            ),
        }
    }
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// A client for one peer service.
#[derive(Debug)]
pub struct PeerClient {
    name: String,
    base_url: String,
    token: Option<crate::secret::Secret>,
    http: reqwest::Client,
    retries: u32,
    failure_threshold: u32,
    cooldown: Duration,
    breaker: Mutex<Breaker>,
}

impl PeerClient {
    /// `timeout` bounds each attempt; idempotent calls are tried `1 + retries` times.
    pub fn new(
        name: &str,
        base_url: &str,
        token: Option<crate::secret::Secret>,
        timeout: Duration,
        retries: u32,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()
            .unwrap_or_default();
        Self {
            name: name.to_string(),
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
            http,
            retries,
            failure_threshold: 5,
            cooldown: Duration::from_secs(10),
            breaker: Mutex::new(Breaker {
                failures: 0,
                open_until: None,
            }),
        }
    }

    fn breaker_open(&self) -> bool {
        let b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        b.open_until.is_some_and(|t| Instant::now() < t)
    }

    fn record(&self, ok: bool) {
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures += 1;
            if b.failures >= self.failure_threshold {
                b.open_until = Some(Instant::now() + self.cooldown);
                metrics::counter!("helpdesk_peer_breaker_opened_total", "peer" => self.name.clone()).increment(1);
            }
        }
    }

    /// Calls `method path` with an optional JSON body and decodes the JSON answer.
    pub async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        request_id: Option<&str>,
        idempotent: bool,
    ) -> Result<T, PeerError> {
        self.call_with_headers(method, path, body, request_id, &[], idempotent)
            .await
    }

    /// [`PeerClient::call`] with extra request headers (e.g. the acting user for the audit trail).
    /// Only `idempotent` calls are retried: a write that timed out may have happened.
    pub async fn call_with_headers<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        request_id: Option<&str>,
        headers: &[(&str, String)],
        idempotent: bool,
    ) -> Result<T, PeerError> {
        if self.breaker_open() {
            return Err(PeerError::Unavailable(self.name.clone()));
        }
        let attempts = if idempotent { 1 + self.retries } else { 1 };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=attempts {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{}", self.base_url, path));
            if let Some(t) = &self.token {
                req = req.bearer_auth(t.expose());
            }
            if let Some(id) = request_id {
                req = req.header("x-request-id", id);
            }
            // This request's span is the parent of the call.
            if let Some(trace) = crate::trace::TraceParent::current() {
                req = req.header(crate::trace::TraceParent::HEADER, trace.to_string());
            }
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) if res.status().is_success() => {
                    self.record(true);
                    return res
                        .json::<T>()
                        .await
                        .map_err(|_| PeerError::Unavailable(self.name.clone()));
                }
                Ok(res) if res.status().is_client_error() => {
                    self.record(true);
                    let status = res.status().as_u16();
                    if status == 401 || status == 403 {
                        // Our own credential was refused: a deployment problem, not the user's.
                        tracing::error!(peer = %self.name, status, "the peer refused our service credential");
                        return Err(PeerError::Unavailable(self.name.clone()));
                    }
                    let message = res
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| {
                            v.get("message")
                                .and_then(|m| m.as_str())
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| format!("{} refused the request", self.name));
                    return Err(PeerError::Rejected { status, message });
                }
                Ok(res) => {
                    tracing::warn!(peer = %self.name, status = res.status().as_u16(), attempt, "peer call failed")
                }
                Err(e) => {
                    tracing::warn!(peer = %self.name, error = %e, attempt, "peer call failed")
                }
            }
            self.record(false);
            if attempt < attempts && !self.breaker_open() {
                tokio::time::sleep(delay).await;
                delay *= 2;
            } else {
                break;
            }
        }
        Err(PeerError::Unavailable(self.name.clone()))
    }
}
