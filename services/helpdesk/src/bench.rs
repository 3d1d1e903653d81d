//! `helpdesk bench`: a realistic load against a running platform's base URL.
//!
//! Each client signs up its own account, then loops over a weighted mix (login, list, view,
//! create, comment, status change, dashboard; see [`Mix`]). A sampler measures the event lag: ticket created → its
//! `ticket.created` entry visible in the ticket's audit trail. Prints throughput, p50/p95/p99 per
//! route, errors, and the lag.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Bench settings.
pub struct BenchOptions {
    pub base_url: String,
    pub concurrency: usize,
    pub duration: Duration,
    pub admin_email: String,
    pub admin_password: String,
    pub mix: Mix,
}

/// The kinds of request a client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Login,
    List,
    View,
    Create,
    Comment,
    Status,
    Dashboard,
}

impl Op {
    const ALL: [(Op, &'static str); 7] = [
        (Op::Login, "login"),
        (Op::List, "list"),
        (Op::View, "view"),
        (Op::Create, "create"),
        (Op::Comment, "comment"),
        (Op::Status, "status"),
        (Op::Dashboard, "dashboard"),
    ];
}

/// Relative weights of each [`Op`], e.g. `login=2,list=30,view=20,create=10,comment=15,status=10,dashboard=13`
/// (the default: a read-mostly helpdesk where each signed-in session makes ~50 requests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix(Vec<(Op, u32)>);

impl Mix {
    pub const DEFAULT: &'static str =
        "login=2,list=30,view=20,create=10,comment=15,status=10,dashboard=13";

    fn pick(&self, roll: u32) -> Op {
        let mut left = roll;
        for (op, w) in &self.0 {
            if left < *w {
                return *op;
            }
            left -= w;
        }
        self.0.last().map(|(op, _)| *op).unwrap_or(Op::List)
    }

    fn total(&self) -> u32 {
        self.0.iter().map(|(_, w)| w).sum()
    }
}

impl std::str::FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected name=weight"))?;
            let op = Op::ALL
                .iter()
                .find(|(_, n)| *n == name.trim())
                .map(|(op, _)| *op)
                .ok_or_else(|| {
                    let names: Vec<_> = Op::ALL.iter().map(|(_, n)| *n).collect();
                    format!(
                        "unknown request kind `{name}` (one of {})",
                        names.join(", ")
                    )
                })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("`{part}`: the weight must be a whole number"))?;
            weights.push((op, weight));
        }
        let mix = Mix(weights);
        if mix.total() == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(mix)
    }
}

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<&'static str, Vec<Duration>>,
    errors: BTreeMap<&'static str, u64>,
    statuses: BTreeMap<String, u64>,
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    email: String,
    tickets: Vec<String>,
}

impl Client {
    async fn timed(
        &self,
        stats: &Mutex<Stats>,
        route: &'static str,
        req: reqwest::RequestBuilder,
        ok: u16,
    ) -> Option<Value> {
        let started = Instant::now();
        let res = req.send().await;
        let elapsed = started.elapsed();
        let mut s = stats.lock().await;
        match res {
            Ok(r) if r.status().as_u16() == ok => {
                s.latencies.entry(route).or_default().push(elapsed);
                drop(s);
                r.json::<Value>().await.ok()
            }
            Ok(r) => {
                *s.errors.entry(route).or_default() += 1;
                *s.statuses
                    .entry(format!("{route} → {}", r.status().as_u16()))
                    .or_default() += 1;
                None
            }
            Err(e) => {
                *s.errors.entry(route).or_default() += 1;
                *s.statuses
                    .entry(format!(
                        "{route} → {}",
                        if e.is_timeout() {
                            "timeout"
                        } else {
                            "connection error"
                        }
                    ))
                    .or_default() += 1;
                None
            }
        }
    }

    async fn step(&mut self, stats: &Mutex<Stats>, admin_token: &str, mix: &Mix) {
        let op = mix.pick(rand::thread_rng().gen_range(0..mix.total()));
        let b = &self.base;
        match op {
            Op::Login => {
                let body = json!({"email": self.email, "password": "bench-password-1"});
                if let Some(v) = self
                    .timed(
                        stats,
                        "POST /auth/login",
                        self.http.post(format!("{b}/auth/login")).json(&body),
                        200,
                    )
                    .await
                    && let Some(t) = v["token"].as_str()
                {
                    self.token = t.to_string();
                }
            }
            Op::List => {
                self.timed(
                    stats,
                    "GET /tickets",
                    self.http
                        .get(format!("{b}/tickets?limit=20"))
                        .bearer_auth(&self.token),
                    200,
                )
                .await;
            }
            Op::View => {
                let Some(id) = self.pick() else { return };
                self.timed(
                    stats,
                    "GET /tickets/:id",
                    self.http
                        .get(format!("{b}/tickets/{id}"))
                        .bearer_auth(&self.token),
                    200,
                )
                .await;
            }
            Op::Create => {
                let body = json!({"title": "Printer on fire", "description": "It is on fire again. Please help."});
                if let Some(v) = self
                    .timed(
                        stats,
                        "POST /tickets",
                        self.http
                            .post(format!("{b}/tickets"))
                            .bearer_auth(&self.token)
                            .json(&body),
                        201,
                    )
                    .await
                    && let Some(id) = v["id"].as_str()
                {
                    self.tickets.push(id.to_string());
                    if self.tickets.len() > 50 {
                        self.tickets.remove(0);
                    }
                }
            }
            Op::Comment => {
                let Some(id) = self.pick() else { return };
                let body = json!({"body": "Have you tried turning it off and on again?"});
                self.timed(
                    stats,
                    "POST /tickets/:id/comments",
                    self.http
                        .post(format!("{b}/tickets/{id}/comments"))
                        .bearer_auth(&self.token)
                        .json(&body),
                    201,
                )
                .await;
            }
            Op::Status => {
                let Some(id) = self.pick() else { return };
                let status = ["OPEN", "IN_PROGRESS", "DONE"][rand::thread_rng().gen_range(0..3)];
                self.timed(
                    stats,
                    "PATCH /tickets/:id",
                    self.http
                        .patch(format!("{b}/tickets/{id}"))
                        .bearer_auth(&self.token)
                        .json(&json!({"status": status})),
                    200,
                )
                .await;
            }
            Op::Dashboard => {
                self.timed(
                    stats,
                    "GET /admin/dashboard/statistics",
                    self.http
                        .get(format!("{b}/admin/dashboard/statistics"))
                        .bearer_auth(admin_token),
                    200,
                )
                .await;
            }
        }
    }

    fn pick(&self) -> Option<String> {
        if self.tickets.is_empty() {
            return None;
        }
        Some(self.tickets[rand::thread_rng().gen_range(0..self.tickets.len())].clone())
    }
}

pub(crate) fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0
}

pub(crate) async fn login(
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

/// Runs the benchmark and prints the report.
pub async fn run(opts: BenchOptions) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = opts.base_url.trim_end_matches('/').to_string();
    let admin_token = login(&http, &base, &opts.admin_email, &opts.admin_password)
        .await
        .context("admin login (pass --admin-email/--admin-password or --data-dir)")?;
    let run_id = &uuid_like();
    println!(
        "helpdesk bench: {} clients for {:?} against {base}, mix {}",
        opts.concurrency,
        opts.duration,
        opts.mix
            .0
            .iter()
            .map(|(op, w)| format!(
                "{}={w}",
                Op::ALL
                    .iter()
                    .find(|(o, _)| o == op)
                    .map_or("?", |(_, n)| n)
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut clients = Vec::new();
    for i in 0..opts.concurrency {
        let email = format!("bench-{run_id}-{i}@bench.test");
        let res = http
            .post(format!("{base}/auth/signup"))
            .json(&json!({"email": email, "password": "bench-password-1"}))
            .send()
            .await?;
        anyhow::ensure!(res.status() == 201, "signup failed: {}", res.status());
        let v: Value = res.json().await?;
        let token = v["token"].as_str().context("token")?.to_string();
        clients.push(Client {
            http: http.clone(),
            base: base.clone(),
            token,
            email,
            tickets: Vec::new(),
        });
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    let deadline = Instant::now() + opts.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut c in clients {
        let (stats, admin_token, mix) = (stats.clone(), admin_token.clone(), opts.mix.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                c.step(&stats, &admin_token, &mix).await;
            }
        }));
    }
    let lag = tokio::spawn(sample_event_lag(
        http.clone(),
        base.clone(),
        admin_token.clone(),
        deadline,
    ));
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let mut lags = lag.await.unwrap_or_default();
    let mut stats = stats.lock().await;
    println!(
        "{:<34} {:>8} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "route", "count", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors"
    );
    let mut total = 0usize;
    let routes: Vec<&'static str> = stats
        .latencies
        .keys()
        .chain(stats.errors.keys())
        .copied()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for route in routes {
        let mut l = stats.latencies.remove(route).unwrap_or_default();
        l.sort();
        total += l.len();
        println!(
            "{route:<34} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>7}",
            l.len(),
            l.len() as f64 / elapsed.as_secs_f64(),
            pct(&l, 0.5),
            pct(&l, 0.95),
            pct(&l, 0.99),
            stats.errors.get(route).copied().unwrap_or(0)
        );
    }
    let errors: u64 = stats.errors.values().sum();
    println!(
        "total: {total} requests in {:.1} s = {:.1} req/s, {errors} errors",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    for (what, n) in &stats.statuses {
        println!("  error: {what} ×{n}");
    }
    lags.sort();
    println!(
        "event lag (ticket created → in its audit trail): n={} p50 {:.1} ms p99 {:.1} ms",
        lags.len(),
        pct(&lags, 0.5),
        pct(&lags, 0.99)
    );
    Ok(())
}

fn uuid_like() -> String {
    let mut rng = rand::thread_rng();
    (0..8)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.gen_range(0..36)]))
        .collect()
}

/// Every 500 ms: create a ticket as admin and poll its audit trail until `ticket.created` shows.
pub(crate) async fn sample_event_lag(
    http: reqwest::Client,
    base: String,
    token: String,
    deadline: Instant,
) -> Vec<Duration> {
    let mut lags = Vec::new();
    while Instant::now() < deadline {
        let body = json!({"title": "lag probe", "description": "measures event lag"});
        let Ok(res) = http
            .post(format!("{base}/tickets"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
        else {
            continue;
        };
        let created = Instant::now();
        let Ok(v) = res.json::<Value>().await else {
            continue;
        };
        let Some(id) = v["id"].as_str() else { continue };
        while created.elapsed() < Duration::from_secs(30) {
            if let Ok(r) = http
                .get(format!("{base}/tickets/{id}/audit"))
                .bearer_auth(&token)
                .send()
                .await
                && let Ok(items) = r.json::<Value>().await
                && items
                    .as_array()
                    .is_some_and(|a| a.iter().any(|e| e["action"] == "ticket.created"))
            {
                lags.push(created.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    lags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_pick_by_weight() {
        let mix: Mix = Mix::DEFAULT.parse().unwrap();
        assert_eq!(mix.total(), 100);
        assert_eq!(mix.pick(0), Op::Login);
        assert_eq!(mix.pick(1), Op::Login);
        assert_eq!(mix.pick(2), Op::List);
        assert_eq!(mix.pick(99), Op::Dashboard);
        let only: Mix = "status=3".parse().unwrap();
        assert!((0..3).all(|r| only.pick(r) == Op::Status));
        assert!("login=0".parse::<Mix>().is_err());
        assert!(
            "logon=1"
                .parse::<Mix>()
                .unwrap_err()
                .contains("unknown request kind")
        );
        assert!("list".parse::<Mix>().is_err());
        assert!("list=x".parse::<Mix>().is_err());
    }
}
