//! user-service load benchmark: `cargo bench -p user-service --bench auth_load`.
//!
//! Starts the real `user-service` binary (release) against the local PostgreSQL and RabbitMQ,
//! drives it over HTTP with 32 concurrent clients and prints: signup and login throughput with
//! p50/p95/p99; `/auth/me` latency while logins flood; reset-password latency with 10 and with
//! 10 000 outstanding reset tokens; the service's RSS idle and under load.
//! `BENCH_SECONDS` (default 10) sets each timed phase's length.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use helpdesk_testkit::{self as testing, TestKeys, amqp_url, database_url, unique};
use serde_json::{Value, json};
use sha2::Digest;
use tokio::sync::Mutex;

const CLIENTS: usize = 32;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(f64::NAN)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn report(name: &str, mut samples: Vec<Duration>, errors: u64, elapsed: Duration) {
    samples.sort();
    println!(
        "{name:<34} n={:<6} {:>8.1} req/s  p50 {:>7.1} ms  p95 {:>7.1} ms  p99 {:>7.1} ms  errors {errors}",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        percentile(&samples, 0.50),
        percentile(&samples, 0.95),
        percentile(&samples, 0.99),
    );
}

/// Runs `clients` loops of `op` until `stop` (or `count` ops in all), collecting latencies.
async fn drive<F, Fut>(
    clients: usize,
    count: Option<u64>,
    duration: Option<Duration>,
    op: F,
) -> (Vec<Duration>, u64, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (op, next, errors, samples) =
            (op.clone(), next.clone(), errors.clone(), samples.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if count.is_some_and(|c| i >= c) || duration.is_some_and(|d| started.elapsed() >= d)
                {
                    break;
                }
                let t = Instant::now();
                if op(i).await {
                    local.push(t.elapsed());
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            samples.lock().await.extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started.elapsed();
    let samples = std::mem::take(&mut *samples.lock().await);
    (samples, errors.load(Ordering::Relaxed), elapsed)
}

#[tokio::main]
async fn main() {
    testing::require_postgres().await;
    testing::require_rabbitmq().await;
    let secs: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let phase = Duration::from_secs(secs);
    let keys = TestKeys::generate();
    let schema = unique("bench_user_");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_user-service"))
        .env("DATABASE_URL", database_url())
        .env("USER_DB_SCHEMA", &schema)
        .env("USER_DB_MAX_CONNECTIONS", "20")
        .env("AMQP_URL", amqp_url())
        .env("BUS_PREFIX", format!("{}.", unique("bench")))
        .env("JWT_PUBLIC_KEY", &keys.public_pem)
        .env("JWT_PRIVATE_KEY", &keys.private_pem)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("USER_LOGIN_RATE_PER_IP", "0")
        .env("USER_LOGIN_RATE_PER_ACCOUNT", "0")
        .env("USER_RESET_RATE_PER_IP", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start user-service");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    testing::eventually(Duration::from_secs(30), "user-service ready", || {
        let http = http.clone();
        let url = format!("{}/ready", server.base);
        async move {
            http.get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        }
    })
    .await;
    println!(
        "user-service benchmark: {CLIENTS} clients, argon2id m=12288 KiB t=3 p=1 (the defaults), {} CPUs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("RSS idle: {:.1} MiB", server.rss_mib());

    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), server.child.id());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|k| k.parse::<u64>().ok())
                {
                    peak.fetch_max(kb, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }

    // Signups.
    let base = server.base.clone();
    let h = http.clone();
    let (s, e, t) = drive(CLIENTS, Some(640), None, move |i| {
        let (h, base) = (h.clone(), base.clone());
        async move {
            let body =
                json!({"email": format!("user{i}@bench.test"), "password": "bench-password"});
            h.post(format!("{base}/auth/signup"))
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 201)
        }
    })
    .await;
    report("POST /auth/signup", s, e, t);

    // Logins.
    let base = server.base.clone();
    let h = http.clone();
    let login = move |i: u64| {
        let (h, base) = (h.clone(), base.clone());
        async move {
            let body = json!({"email": format!("user{}@bench.test", i % 640), "password": "bench-password"});
            h.post(format!("{base}/auth/login"))
                .json(&body)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    };
    let (s, e, t) = drive(CLIENTS, None, Some(phase), login.clone()).await;
    report("POST /auth/login", s, e, t);

    // /auth/me while logins flood.
    let token: String = {
        let r: Value = http
            .post(format!("{}/auth/login", server.base))
            .json(&json!({"email": "user1@bench.test", "password": "bench-password"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        r["token"].as_str().unwrap().to_string()
    };
    let flood = tokio::spawn(drive(CLIENTS, None, Some(phase), login));
    let base = server.base.clone();
    let h = http.clone();
    let (s, e, t) = drive(8, None, Some(phase), move |_| {
        let (h, base, token) = (h.clone(), base.clone(), token.clone());
        async move {
            h.get(format!("{base}/auth/me"))
                .bearer_auth(token)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    report("GET /auth/me during login flood", s, e, t);
    let (s, e, t) = flood.await.unwrap();
    report("  (the flood: POST /auth/login)", s, e, t);
    sampling.store(false, Ordering::Relaxed);
    println!(
        "RSS peak under load: {:.1} MiB",
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );

    // Reset-password with few and with many outstanding tokens.
    let opts: sqlx::postgres::PgConnectOptions = database_url().parse().unwrap();
    let pool = sqlx::PgPool::connect_with(opts.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    for outstanding in [10u64, 10_000] {
        sqlx::query("DELETE FROM password_reset_tokens")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at) \
             SELECT gen_random_uuid(), (SELECT id FROM users ORDER BY random() LIMIT 1), sha256(g::text::bytea || 'filler'), now() + interval '1 hour' \
             FROM generate_series(1, $1) g",
        )
        .bind(outstanding as i64)
        .execute(&pool)
        .await
        .unwrap();
        // 64 real tokens for 64 distinct users.
        let mut tokens = Vec::new();
        let ids: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT id FROM users ORDER BY created_at LIMIT 64")
                .fetch_all(&pool)
                .await
                .unwrap();
        for (n, id) in ids.iter().enumerate() {
            let token = format!("bench-token-{outstanding}-{n}-{}", uuid::Uuid::new_v4());
            sqlx::query("INSERT INTO password_reset_tokens (id, user_id, token_hash, expires_at) VALUES (gen_random_uuid(), $1, $2, now() + interval '1 hour')")
                .bind(id)
                .bind(sha2::Sha256::digest(token.as_bytes()).to_vec())
                .execute(&pool)
                .await
                .unwrap();
            tokens.push(token);
        }
        let tokens = Arc::new(tokens);
        let base = server.base.clone();
        let h = http.clone();
        let (s, e, t) = drive(8, Some(64), None, move |i| {
            let (h, base, tokens) = (h.clone(), base.clone(), tokens.clone());
            async move {
                let body = json!({"token": tokens[i as usize], "newPassword": "bench-password"});
                h.post(format!("{base}/auth/reset-password"))
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        })
        .await;
        report(
            &format!("POST /auth/reset-password ({outstanding} outst.)"),
            s,
            e,
            t,
        );
    }
    pool.close().await;
    drop(server);
    testing::drop_schema(&schema).await;
}
