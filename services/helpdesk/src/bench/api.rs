//! The platform's public API as the scenarios use it: reaching it, accounts, tickets, and the
//! event-lag probe.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

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
pub async fn sample_event_lag(target: &Target, stop: CancellationToken) -> RouteStats {
    let mut lags = Vec::new();
    while !stop.is_cancelled() {
        if let Some(lag) = probe_event_lag(target).await {
            lags.push(lag);
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    RouteStats::from_latencies(lags)
}

async fn probe_event_lag(target: &Target) -> Option<Duration> {
    let body = json!({"title": "lag probe", "description": "measures event lag"});
    let req = target
        .http
        .post(target.url("/tickets"))
        .bearer_auth(&target.admin)
        .json(&body);
    let created = send_json(req, 201).await.ok()?;
    let at = Instant::now();
    let id = created["id"].as_str()?;
    while at.elapsed() < Duration::from_secs(30) {
        let req = target
            .http
            .get(target.url(&format!("/tickets/{id}/audit")))
            .bearer_auth(&target.admin);
        if let Ok(trail) = send_json(req, 200).await
            && trail
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["action"] == "ticket.created"))
        {
            return Some(at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// The event lag's line of a report.
pub fn print_event_lag(during: &str, lags: &RouteStats) {
    println!(
        "event lag {during} (ticket created → in its audit trail): n={} p50 {:.1} ms p99 {:.1} ms",
        lags.count(),
        lags.ms(0.5),
        lags.ms(0.99)
    );
}
