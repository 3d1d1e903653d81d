//! The platform's public API as the scenarios use it: reaching it, accounts, tickets, and the
//! event-lag probe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::contract::Service;

use super::db::{Database, ServiceDb};
use super::load::{Failure, Outcome, RouteStats, Turn};

/// The password of every account a bench signs up.
pub const PASSWORD: &str = "bench-password-1";

/// A running platform, reachable, with the admin signed in.
#[derive(Clone)]
pub struct Target {
    pub http: reqwest::Client,
    /// The base URL, without a trailing `/`.
    pub base: String,
    /// The admin's token.
    pub admin: String,
}

/// An account a bench signed up.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub token: String,
}

impl Account {
    /// The account a signup's answer (`{user, token}`) describes.
    pub fn signed_up(email: &str, answer: &Value) -> Option<Self> {
        Some(Self {
            id: answer["user"]["id"].as_str()?.parse().ok()?,
            email: email.to_string(),
            role: answer["user"]["role"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            token: answer["token"].as_str()?.to_string(),
        })
    }
}

impl Target {
    /// Checks that the platform answers `GET /ready` and signs the admin in.
    pub async fn connect(
        base_url: &str,
        clients: usize,
        admin_email: &str,
        admin_password: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(clients * 2)
            .timeout(Duration::from_secs(30))
            .build()?;
        let base = base_url.trim_end_matches('/').to_string();
        let ready = http
            .get(format!("{base}/ready"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| {
                format!("cannot reach the platform at {base}: is `helpdesk up` running there? (--base-url)")
            })?;
        anyhow::ensure!(
            ready.status().is_success(),
            "the platform at {base} is not ready: GET /ready answered {}",
            ready.status()
        );
        let admin = login(&http, &base, admin_email, admin_password)
            .await
            .context("admin login (pass --admin-email/--admin-password, or the --data-dir `helpdesk up` stored them in)")?;
        Ok(Self { http, base, admin })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn signup(&self, email: &str) -> anyhow::Result<Account> {
        let answer = send_json(self.signup_request(email), 201)
            .await
            .map_err(|Failure(f)| anyhow::anyhow!("signup of {email} failed: {f}"))?;
        Account::signed_up(email, &answer).context("signup's answer has no user id or token")
    }

    pub fn signup_request(&self, email: &str) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/auth/signup"))
            .json(&json!({"email": email, "password": PASSWORD}))
    }

    /// `n` new accounts, `bench-<run>-<i>@bench.test`.
    pub async fn accounts(&self, run: &str, n: usize) -> anyhow::Result<Vec<Account>> {
        let mut accounts = Vec::with_capacity(n);
        for i in 0..n {
            accounts.push(self.signup(&format!("bench-{run}-{i}@bench.test")).await?);
        }
        Ok(accounts)
    }

    /// Creates a ticket as the holder of `token`; its id.
    pub async fn create_ticket(&self, token: &str, title: &str) -> anyhow::Result<Uuid> {
        let v = send_json(
            self.http
                .post(self.url("/tickets"))
                .bearer_auth(token)
                .json(&json!({"title": title, "description": "Created by helpdesk bench."})),
            201,
        )
        .await
        .map_err(|Failure(f)| anyhow::anyhow!("creating a ticket failed: {f}"))?;
        v["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .context("the created ticket has no id")
    }

    /// Reads the dashboard's figures as the admin.
    pub async fn statistics(&self) -> anyhow::Result<Value> {
        send_json(
            self.http
                .get(self.url("/admin/dashboard/statistics"))
                .bearer_auth(&self.admin),
            200,
        )
        .await
        .map_err(|Failure(f)| anyhow::anyhow!("GET /admin/dashboard/statistics failed: {f}"))
    }
}

/// A short random id that keeps one run's accounts and rows apart from another's.
pub fn run_id() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// Sends `req`; a status other than `ok` is a failure labelled with that status.
pub async fn send(req: reqwest::RequestBuilder, ok: u16) -> Outcome<reqwest::Response> {
    let res = req.send().await?;
    if res.status().as_u16() == ok {
        Ok(res)
    } else {
        Err(Failure(res.status().as_u16().to_string()))
    }
}

/// A load's request for each turn: `make` builds it; a status other than `ok` is a failure.
pub fn each_turn<F>(make: F, ok: u16) -> impl Fn(Turn) -> BoxFuture<'static, Outcome> + Send + Sync
where
    F: Fn(Turn) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    move |turn| {
        let req = make(turn);
        Box::pin(async move { send(req, ok).await.map(drop) })
    }
}

/// A request per turn by each of `accounts` in turn: `make(target, account, seq)` builds it; a
/// status other than `ok` is a failure.
pub fn by_accounts<F>(
    target: &Target,
    accounts: &Arc<Vec<Account>>,
    ok: u16,
    make: F,
) -> impl Fn(Turn) -> BoxFuture<'static, Outcome> + Send + Sync + 'static
where
    F: Fn(&Target, &Account, u64) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let (target, accounts) = (target.clone(), accounts.clone());
    each_turn(
        move |turn| {
            let account = &accounts[turn.seq as usize % accounts.len()];
            make(&target, account, turn.seq)
        },
        ok,
    )
}

/// A list of `n` items where `expected` were due.
pub fn expect_len(n: usize, expected: usize) -> Outcome {
    if n == expected {
        Ok(())
    } else {
        Err(Failure(format!("{n} items instead of {expected}")))
    }
}

/// [`send`], then the JSON body.
pub async fn send_json(req: reqwest::RequestBuilder, ok: u16) -> Outcome<Value> {
    Ok(send(req, ok).await?.json().await?)
}

/// [`send`], then checks that the body is JSON without building it (the load generator shares
/// the machine with the platform: a `Value` of a 50-ticket page costs more than the platform's
/// own serialization of it).
pub async fn send_valid(req: reqwest::RequestBuilder, ok: u16) -> Outcome<()> {
    let body = send(req, ok).await?.bytes().await?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&body)
        .map(drop)
        .map_err(|_| Failure("unreadable body".into()))
}

/// [`send`], then the length of the JSON array it answered, without building its elements.
pub async fn send_array_len(req: reqwest::RequestBuilder, ok: u16) -> Outcome<usize> {
    let body = send(req, ok).await?.bytes().await?;
    serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(&body)
        .map(|items| items.len())
        .map_err(|_| Failure("unreadable body".into()))
}

pub async fn login(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let res = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    anyhow::ensure!(
        res.status() == 200,
        "login of {email} failed: {}",
        res.status()
    );
    let v: Value = res.json().await?;
    Ok(v["token"].as_str().context("token")?.to_string())
}

/// Until `stop`, every 500 ms: creates a ticket as the admin and polls its audit trail until
/// `ticket.created` shows (ticket created → visible in its audit trail).
pub async fn sample_event_lag(
    target: &Target,
    consumers: Option<&Consumers>,
    stop: CancellationToken,
) -> RouteStats {
    let mut lags = Vec::new();
    while !stop.is_cancelled() {
        if let Some(lag) = probe_event_lag(target, consumers).await {
            lags.push(lag);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    RouteStats::from_latencies(lags)
}

/// The other consumers of `ticket.created`, read from their tables: admin-service's dashboard
/// read model and notification-service's record of the events it handled.
pub struct Consumers {
    audit: ServiceDb,
    admin: ServiceDb,
    notification: ServiceDb,
}

impl Consumers {
    pub async fn open(db: &Database) -> anyhow::Result<Self> {
        Ok(Self {
            audit: db.service(Service::Audit, &["audit_events"]).await?,
            admin: db.service(Service::Admin, &["tickets"]).await?,
            notification: db
                .service(Service::Notification, &["processed_events"])
                .await?,
        })
    }

    /// Whether both have handled the creation of `ticket` (audit has: its trail shows it).
    async fn have(&self, ticket: &str) -> anyhow::Result<bool> {
        let in_dashboard: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1::uuid AND live)",
            self.admin.table("tickets")
        )))
        .bind(ticket)
        .fetch_one(&self.admin.pool)
        .await?;
        if !in_dashboard {
            return Ok(false);
        }
        let event: Option<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT event_id FROM {} WHERE entity_type = 'ticket' AND entity_id = $1 \
             AND action = 'ticket.created'",
            self.audit.table("audit_events")
        )))
        .bind(ticket)
        .fetch_optional(&self.audit.pool)
        .await?
        .flatten();
        let Some(event) = event else {
            return Ok(false);
        };
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE consumer = $1 AND event_id = $2)",
            self.notification.table("processed_events")
        )))
        .bind(notification_service::SERVICE)
        .bind(event)
        .fetch_one(&self.notification.pool)
        .await?)
    }
}

async fn probe_event_lag(target: &Target, consumers: Option<&Consumers>) -> Option<Duration> {
    let body = json!({"title": "lag probe", "description": "measures event lag"});
    let req = target
        .http
        .post(target.url("/tickets"))
        .bearer_auth(&target.admin)
        .json(&body);
    let created = send_json(req, 201).await.ok()?;
    let at = Instant::now();
    let id = created["id"].as_str()?;
    let mut audited = false;
    while at.elapsed() < Duration::from_secs(30) {
        if !audited {
            let req = target
                .http
                .get(target.url(&format!("/tickets/{id}/audit")))
                .bearer_auth(&target.admin);
            audited = send_json(req, 200).await.is_ok_and(|trail| {
                trail
                    .as_array()
                    .is_some_and(|a| a.iter().any(|e| e["action"] == "ticket.created"))
            });
        }
        if audited {
            match consumers {
                None => return Some(at.elapsed()),
                Some(c) if c.have(id).await.unwrap_or(false) => return Some(at.elapsed()),
                Some(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The event lag's line of a report.
pub fn print_event_lag(during: &str, lags: &RouteStats, every_consumer: bool) {
    let seen = if every_consumer {
        "in its audit trail, the dashboard's read model and notification-service's record"
    } else {
        "in its audit trail"
    };
    println!(
        "event lag {during} (ticket created → {seen}): n={} p50 {:.1} ms p99 {:.1} ms",
        lags.count(),
        lags.ms(0.5),
        lags.ms(0.99)
    );
}
