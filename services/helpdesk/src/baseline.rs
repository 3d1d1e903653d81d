//! `helpdesk bench --baseline`: each hot route's throughput as a fraction of what the database
//! itself can do with the same SQL, measured in one run on the same database.
//!
//! 1. Raw limits: in a scratch schema holding copies of ticket-service's tables (`LIKE ...
//!    INCLUDING ALL`: same columns, defaults, checks and indexes), `clients` connections run
//!    closed-loop (a) the list query ticket-service runs for `GET /tickets` over 50 rows, and
//!    (b) the write transaction `POST /tickets` commits (ticket row, outbox row, NOTIFY).
//! 2. The platform: `clients` closed-loop HTTP clients as one signed-in AGENT with 50 tickets,
//!    `GET /tickets`, then `POST /tickets` while a sampler measures the event lag (ticket created
//!    → in its audit trail, so the consumers must keep up).
//! 3. The ratios, against the targets; with `--pid`, the platform process's peak RSS.
//!
//! Every phase warms up first and counts only what completes within its measured window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use helpdesk_kit::db::DbConfig;
use helpdesk_kit::events::{TicketCreated, TicketSnapshot, TicketStatus, UserRef};
use helpdesk_kit::outbox::{self, EventContext};

use crate::bench::{login, pct, sample_event_lag};

/// What the ratio bench needs.
pub struct BaselineOptions {
    pub base_url: String,
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub admin_email: String,
    pub admin_password: String,
    /// The platform's database (the raw limits are measured on it).
    pub database_url: String,
    /// ticket-service's schema there (its tables are copied).
    pub ticket_schema: String,
    /// The platform's process, for its peak RSS (`VmHWM`).
    pub pid: Option<u32>,
}

/// Tickets of the signed-in user the list returns (the whole first page is 50 rows).
const TICKETS: usize = 50;

/// ticket-service's list statement for `GET /tickets` (`listing::page`, scope: created by the
/// caller, no filter, first page of 50 plus one to see whether another page follows).
fn list_sql() -> String {
    format!(
        "{} WHERE TRUE AND t.user_id = $1 ORDER BY t.created_at DESC, t.id DESC LIMIT $2",
        ticket_service::tickets::VIEW
    )
}

/// One closed-loop phase's outcome.
#[derive(Default)]
struct Phase {
    latencies: Vec<Duration>,
    errors: u64,
    window: Duration,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }
    fn p95(&self) -> f64 {
        pct(&self.latencies, 0.95)
    }
}

/// Runs `op` on `clients` concurrent loops: `warmup`, then `duration` measured.
async fn closed_loop<F, Fut>(clients: usize, warmup: Duration, duration: Duration, op: F) -> Phase
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now() + warmup;
    let end = start + duration;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (op, latencies, errors) = (op.clone(), latencies.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let began = Instant::now();
                if began >= end {
                    break;
                }
                let ok = op(i).await;
                let done = Instant::now();
                if began >= start && done <= end {
                    if ok {
                        mine.push(done - began);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies.lock().await.extend(mine);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().await);
    latencies.sort();
    Phase {
        latencies,
        errors: errors.load(Ordering::Relaxed),
        window: duration,
    }
}

/// The scratch copy of ticket-service's tables the raw limits are measured on.
struct Scratch {
    pool: PgPool,
    list_sql: String,
    schema: String,
    owner: Uuid,
}

impl Scratch {
    async fn create(opts: &BaselineOptions) -> anyhow::Result<Self> {
        let schema = format!("bench_baseline_{}", Uuid::new_v4().simple());
        let pool = helpdesk_kit::db::connect(&DbConfig {
            url: opts.database_url.clone(),
            schema: schema.clone(),
            max_connections: opts.clients as u32,
        })
        .await
        .context("cannot connect to the platform's database for the raw limits")?;
        let source = &opts.ticket_schema;
        anyhow::ensure!(
            source
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "unexpected ticket schema name {source:?}"
        );
        for table in ["users", "tickets", "outbox"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (LIKE \"{source}\".{table} INCLUDING ALL)"
            )))
            .execute(&pool)
            .await
            .with_context(|| {
                format!("cannot copy {source}.{table} (has `helpdesk up` migrated this database?)")
            })?;
        }
        let owner = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO users (id, email, role) VALUES ($1, 'baseline@bench.test', 'AGENT')",
        )
        .bind(owner)
        .execute(&pool)
        .await?;
        for i in 0..TICKETS {
            sqlx::query(
                "INSERT INTO tickets (id, user_id, title, description) VALUES ($1, $2, $3, $4)",
            )
            .bind(Uuid::now_v7())
            .bind(owner)
            .bind(format!("Ticket {i}"))
            .bind("A ticket of the baseline's 50-row list")
            .execute(&pool)
            .await?;
        }
        sqlx::query("ANALYZE tickets").execute(&pool).await?;
        Ok(Self {
            pool,
            list_sql: list_sql(),
            schema,
            owner,
        })
    }

    async fn list(&self) -> bool {
        sqlx::query(sqlx::AssertSqlSafe(self.list_sql.as_str()))
            .bind(self.owner)
            .bind(TICKETS as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .is_ok_and(|rows| rows.len() == TICKETS)
    }

    /// What `POST /tickets` commits: the ticket (returned), its `ticket.created` outbox row and
    /// the relay's wake-up.
    async fn write(&self) -> bool {
        let attempt = async {
            let mut tx = self.pool.begin().await?;
            let id = Uuid::now_v7();
            let row: (Uuid, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
                "INSERT INTO tickets (id, user_id, title, description) VALUES ($1, $2, $3, $4) \
                 RETURNING id, created_at",
            )
            .bind(id)
            .bind(self.owner)
            .bind("Printer on fire")
            .bind("The printer on the second floor is on fire again.")
            .fetch_one(&mut *tx)
            .await?;
            let ticket = TicketSnapshot {
                id: row.0,
                user_id: self.owner,
                title: "Printer on fire".into(),
                status: TicketStatus::Open,
                assigned_to_user_id: None,
                created_at: row.1,
                updated_at: row.1,
            };
            let creator = UserRef {
                id: self.owner,
                email: "baseline@bench.test".into(),
                first_name: None,
                last_name: None,
            };
            let ctx = EventContext::request(Uuid::new_v4().to_string(), Some(self.owner));
            outbox::publish(&mut tx, &TicketCreated { ticket, creator }, &ctx).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        };
        attempt.await.is_ok()
    }

    /// Drops the scratch schema and closes its pool.
    async fn remove(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await;
        self.pool.close().await;
    }
}

/// A signed-in AGENT of the platform with its 50 tickets.
async fn platform_agent(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let email = format!("baseline-{}@bench.test", Uuid::new_v4().simple());
    let res = http
        .post(format!("{base}/auth/signup"))
        .json(&json!({"email": email, "password": "bench-password-1"}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "signup failed: {}", res.status());
    let v: Value = res.json().await?;
    let token = v["token"].as_str().context("token")?.to_string();
    anyhow::ensure!(
        v["user"]["role"] == "AGENT",
        "the bench needs signups to be AGENTs (SIGNUP_DEFAULT_ROLE), got {}",
        v["user"]["role"]
    );
    for i in 0..TICKETS {
        let res = http
            .post(format!("{base}/tickets"))
            .bearer_auth(&token)
            .json(&json!({"title": format!("Ticket {i}"), "description": "A ticket of the baseline's 50-row list"}))
            .send()
            .await?;
        anyhow::ensure!(
            res.status() == 201,
            "creating a ticket failed: {}",
            res.status()
        );
    }
    Ok(token)
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Runs the ratio bench and prints its report.
pub async fn run(opts: BaselineOptions) -> anyhow::Result<()> {
    let base = opts.base_url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.clients * 2)
        .timeout(Duration::from_secs(30))
        .build()?;
    let admin = login(&http, &base, &opts.admin_email, &opts.admin_password)
        .await
        .context("admin login (pass --admin-email/--admin-password or --data-dir)")?;
    println!(
        "helpdesk bench --baseline: {} clients, {:?} warm-up + {:?} per phase, against {base}",
        opts.clients, opts.warmup, opts.duration
    );
    let (clients, warmup, duration) = (opts.clients, opts.warmup, opts.duration);

    let scratch = Arc::new(Scratch::create(&opts).await?);
    let raw_list = {
        let s = scratch.clone();
        closed_loop(clients, warmup, duration, move |_| {
            let s = s.clone();
            async move { s.list().await }
        })
        .await
    };
    let raw_write = {
        let s = scratch.clone();
        closed_loop(clients, warmup, duration, move |_| {
            let s = s.clone();
            async move { s.write().await }
        })
        .await
    };
    if let Ok(s) = Arc::try_unwrap(scratch) {
        s.remove().await;
    }

    let token = Arc::new(platform_agent(&http, &base).await?);
    let list = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        closed_loop(clients, warmup, duration, move |_| {
            let req = http.get(format!("{base}/tickets")).bearer_auth(&*token);
            async move {
                match req.send().await {
                    Ok(r) if r.status() == 200 => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v.as_array().is_some_and(|a| a.len() == TICKETS)),
                    _ => false,
                }
            }
        })
        .await
    };
    let lag_deadline = Instant::now() + warmup + duration;
    let lag = tokio::spawn(sample_event_lag(
        http.clone(),
        base.clone(),
        admin.clone(),
        lag_deadline,
    ));
    let create = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        closed_loop(clients, warmup, duration, move |i| {
            let req = http
                .post(format!("{base}/tickets"))
                .bearer_auth(&*token)
                .json(&json!({"title": format!("Load {i}"), "description": "Created by the baseline bench"}));
            async move { req.send().await.is_ok_and(|r| r.status() == 201) }
        })
        .await
    };
    let mut lags = lag.await.unwrap_or_default();
    lags.sort();

    let list_ratio = list.rate() / raw_list.rate();
    let write_ratio = create.rate() / raw_write.rate();
    println!(
        "{:<28} {:>12} {:>9} {:>8}",
        "phase", "per second", "p95 ms", "errors"
    );
    for (name, p) in [
        ("raw list query (50 rows)", &raw_list),
        ("raw write transaction", &raw_write),
        ("GET /tickets (50 rows)", &list),
        ("POST /tickets", &create),
    ] {
        println!(
            "{name:<28} {:>12.1} {:>9.1} {:>8}",
            p.rate(),
            p.p95(),
            p.errors
        );
    }
    println!(
        "GET /tickets:  {:.1} % of the raw list limit, p95 {:.1} ms (target >= 40 %, p95 < 20 ms: {})",
        list_ratio * 100.0,
        list.p95(),
        verdict(list_ratio >= 0.40 && list.p95() < 20.0)
    );
    println!(
        "POST /tickets: {:.1} % of the raw write limit, p95 {:.1} ms (target >= 50 %, p95 < 50 ms: {})",
        write_ratio * 100.0,
        create.p95(),
        verdict(write_ratio >= 0.50 && create.p95() < 50.0)
    );
    let p99 = pct(&lags, 0.99);
    println!(
        "event lag during POST load (created -> in its audit trail): n={} p50 {:.1} ms p99 {:.1} ms (target p99 < 1000 ms: {})",
        lags.len(),
        pct(&lags, 0.5),
        p99,
        verdict(!lags.is_empty() && p99 < 1000.0)
    );
    if let Some(pid) = opts.pid {
        match peak_rss_mib(pid) {
            Some(mib) => println!(
                "peak RSS of pid {pid} so far: {mib:.1} MiB (target <= 128 MiB: {})",
                verdict(mib <= 128.0)
            ),
            None => println!("peak RSS of pid {pid}: unavailable (no /proc/{pid}/status)"),
        }
    }
    Ok(())
}
