//! The client of user-service's internal routes: service credential, timeout, retries for reads
//! only, and a circuit breaker. Every call carries the request id and the acting admin's id
//! (`x-acting-user-id`, the audit trail's actor).
//!
//! The kit's `PeerClient` has the same behaviour but cannot send extra headers; this is its
//! equivalent with that one addition (to be folded back into the kit).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::peer::PeerError;

const PEER: &str = "user-service";

/// The contract's User object, as user-service returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `{message}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

#[derive(Debug)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

/// Who is calling and in which request.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub request_id: &'a str,
    pub acting_user: Uuid,
}

/// user-service's internal API.
#[derive(Debug)]
pub struct UserServiceClient {
    base_url: String,
    token: String,
    http: reqwest::Client,
    retries: u32,
    failure_threshold: u32,
    cooldown: Duration,
    breaker: Mutex<Breaker>,
}

impl UserServiceClient {
    pub fn new(
        base_url: &str,
        token: String,
        timeout: Duration,
        retries: u32,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()?;
        Ok(Self {
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
        })
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
            return;
        }
        b.failures += 1;
        if b.failures >= self.failure_threshold {
            b.open_until = Some(Instant::now() + self.cooldown);
            metrics::counter!("helpdesk_peer_breaker_opened_total", "peer" => PEER).increment(1);
        }
    }

    async fn call<B: Serialize + Sync, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        ctx: CallContext<'_>,
    ) -> Result<T, PeerError> {
        if self.breaker_open() {
            return Err(PeerError::Unavailable(PEER.into()));
        }
        // Only reads are retried: a write that timed out may have happened.
        let attempts = if method == Method::GET {
            1 + self.retries
        } else {
            1
        };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=attempts {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base_url))
                .bearer_auth(&self.token)
                .header("x-request-id", ctx.request_id)
                .header("x-acting-user-id", ctx.acting_user.to_string());
            if let Some(b) = body {
                req = req.json(b);
            }
            match req.send().await {
                Ok(res) if res.status().is_success() => {
                    self.record(true);
                    return res
                        .json::<T>()
                        .await
                        .map_err(|_| PeerError::Unavailable(PEER.into()));
                }
                Ok(res) if res.status().is_client_error() => {
                    // The peer answered: it is up, and its contract-shaped message is the answer.
                    self.record(true);
                    let status = res.status().as_u16();
                    if status == 401 || status == 403 {
                        tracing::error!(
                            peer = PEER,
                            status,
                            "user-service refused our service credential"
                        );
                        return Err(PeerError::Unavailable(PEER.into()));
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
                        .unwrap_or_else(|| format!("{PEER} refused the request"));
                    return Err(PeerError::Rejected { status, message });
                }
                Ok(res) => tracing::warn!(
                    peer = PEER,
                    status = res.status().as_u16(),
                    attempt,
                    "peer call failed"
                ),
                Err(e) => tracing::warn!(peer = PEER, error = %e, attempt, "peer call failed"),
            }
            self.record(false);
            if attempt < attempts && !self.breaker_open() {
                tokio::time::sleep(delay).await;
                delay *= 2;
            } else {
                break;
            }
        }
        Err(PeerError::Unavailable(PEER.into()))
    }

    /// Users with one of `roles` (all when empty), newest first.
    pub async fn list_users(
        &self,
        roles: &[Role],
        ctx: CallContext<'_>,
    ) -> Result<Vec<User>, PeerError> {
        let path = if roles.is_empty() {
            "/users".to_string()
        } else {
            format!(
                "/users?roles={}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        self.call::<(), _>(Method::GET, &path, None, ctx).await
    }

    pub async fn change_role(
        &self,
        id: Uuid,
        role: Role,
        ctx: CallContext<'_>,
    ) -> Result<User, PeerError> {
        self.call(
            Method::PATCH,
            &format!("/users/{id}/role"),
            Some(&serde_json::json!({ "role": role })),
            ctx,
        )
        .await
    }

    pub async fn delete_user(&self, id: Uuid, ctx: CallContext<'_>) -> Result<Message, PeerError> {
        self.call::<(), _>(Method::DELETE, &format!("/users/{id}"), None, ctx)
            .await
    }
}
