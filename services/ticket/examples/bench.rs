//! Benchmark of ticket-service and audit-service on the real PostgreSQL and RabbitMQ.
//!
//! `cargo run --release -p ticket-service --example bench`
//!
//! Measures, with `BENCH_CLIENTS` (default 32) concurrent clients over real HTTP:
//! - ticket create throughput and p50/p95/p99 (`BENCH_CREATES` per client, default 50);
//! - own-ticket list (first page) with 50 tickets per user, then with 5 000 per user;
//! - audit lag (ticket committed → audit entry written) p50/p99 under the create load;
//! - audit search p50/p95/p99 over `BENCH_AUDIT_ROWS` (default 1 000 000) entries.
//!
//! Everything runs in throw-away schemas and a private broker prefix, dropped at the end.

#[path = "../tests/integration/common.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use common::{Platform, TestUser, wait_user};
use helpdesk_kit::auth::Role;
use helpdesk_testkit::eventually;

fn env_or(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Builds the i-th request path of a query kind.
type PathFn = Arc<dyn Fn(usize) -> String + Send + Sync>;

struct Stats {
    name: String,
    count: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    fn print(&mut self) {
        self.latencies.sort();
        println!(
            "{:<44} {:>7} req {:>4} err {:>9.1} req/s   p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
            self.name,
            self.count,
            self.errors,
            self.count as f64 / self.elapsed.as_secs_f64(),
            self.pct(0.50),
            self.pct(0.95),
            self.pct(0.99),
        );
    }
}

/// Runs `per_client` requests (or until `deadline`) on each of `clients` tasks.
async fn load<F, Fut>(
    name: &str,
    clients: usize,
    per_client: usize,
    deadline: Option<Duration>,
    request: F,
) -> Stats
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            for i in 0..per_client {
                if deadline.is_some_and(|d| started.elapsed() >= d) {
                    break;
                }
                let t = Instant::now();
                if !request(c, i).await {
                    errors += 1;
                }
                lat.push(t.elapsed());
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("client task");
        latencies.extend(l);
        errors += e;
    }
    Stats {
        name: name.to_string(),
        count: latencies.len(),
        errors,
        elapsed: started.elapsed(),
        latencies,
    }
}

async fn list_phase(
    http: &reqwest::Client,
    url: &str,
    users: &Arc<Vec<TestUser>>,
    clients: usize,
    name: &str,
    expect: usize,
) -> Stats {
    let (http, url, users) = (http.clone(), url.to_string(), users.clone());
    load(
        name,
        clients,
        usize::MAX,
        Some(Duration::from_secs(10)),
        move |c, _| {
            let (http, url, user) = (http.clone(), url.clone(), users[c % users.len()].clone());
            async move {
                match http
                    .get(format!("{url}/tickets"))
                    .bearer_auth(&user.token)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => r
                        .json::<Vec<serde_json::Value>>()
                        .await
                        .is_ok_and(|v| v.len() == expect),
                    _ => false,
                }
            }
        },
    )
    .await
}

#[tokio::main]
async fn main() {
    let clients = env_or("BENCH_CLIENTS", 32);
    let creates = env_or("BENCH_CREATES", 50);
    let audit_rows = env_or("BENCH_AUDIT_ROWS", 1_000_000);
    println!("benchmark: {clients} clients, {creates} creates each, {audit_rows} audit rows");

    let mut p = Platform::new().await;
    let audit = p.start_audit(None).await;
    let ticket = p
        .start_ticket(
            None,
            &[
                ("AUDIT_SERVICE_URL", audit.url.clone()),
                ("TICKET_DB_MAX_CONNECTIONS", "20".into()),
            ],
        )
        .await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");

    let mut users = Vec::new();
    for _ in 0..clients {
        users.push(p.announce_user(Role::Agent).await);
    }
    for u in &users {
        wait_user(&ticket.pool, u).await;
    }
    let users = Arc::new(users);

    // Creates: each client creates tickets for its own user.
    let mut create = {
        let (http, url, users) = (http.clone(), ticket.url.clone(), users.clone());
        load("POST /tickets", clients, creates, None, move |c, i| {
            let (http, url, user) = (http.clone(), url.clone(), users[c].clone());
            async move {
                let body = json!({"title": format!("Ticket {i} of client {c}"), "description": "The printer is on fire again."});
                matches!(http.post(format!("{url}/tickets")).bearer_auth(&user.token).json(&body).send().await, Ok(r) if r.status().as_u16() == 201)
            }
        })
        .await
    };
    create.print();

    // Audit lag of those creates: event timestamp (written in the ticket's transaction) → entry written.
    let expected = (create.count - create.errors) as i64;
    eventually(Duration::from_secs(120), "audit catch-up", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE action = 'ticket.created'")
                .fetch_one(&audit.pool)
                .await
                .ok()?;
        (n >= expected).then_some(())
    })
    .await;
    let (p50, p99, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms) \
         FROM (SELECT (extract(epoch FROM recorded_at - created_at) * 1000)::float8 AS ms FROM audit_events WHERE action = 'ticket.created') x",
    )
    .fetch_one(&audit.pool)
    .await
    .expect("lag");
    println!(
        "{:<44} p50 {p50:>7.2} ms  p99 {p99:>7.2} ms  max {max:>7.2} ms",
        "audit lag under create load"
    );

    list_phase(
        &http,
        &ticket.url,
        &users,
        clients,
        &format!("GET /tickets ({creates} own tickets)"),
        creates.min(100),
    )
    .await
    .print();

    // 5 000 tickets per user, inserted in bulk.
    let ids: Vec<Uuid> = users.iter().map(|u| u.id).collect();
    let extra = 5_000 - creates.min(5_000) as i64;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO tickets (id, user_id, title, description, status, created_at, updated_at) \
         SELECT gen_random_uuid(), u, 'Bulk ticket ' || g, 'Bulk description', 'OPEN', now() - g * interval '1 second', now() \
         FROM unnest($1::uuid[]) AS u, generate_series(1, $2::bigint) AS g",
    )
    .bind(&ids)
    .bind(extra)
    .execute(&ticket.pool)
    .await
    .expect("bulk tickets");
    sqlx::query("ANALYZE tickets")
        .execute(&ticket.pool)
        .await
        .expect("analyze");
    println!(
        "(inserted {} tickets in {:.1} s)",
        extra * ids.len() as i64,
        started.elapsed().as_secs_f64()
    );
    list_phase(
        &http,
        &ticket.url,
        &users,
        clients,
        "GET /tickets (5000 own tickets, first page)",
        100,
    )
    .await
    .print();

    // Audit search over a large log.
    let started = Instant::now();
    let actors: Vec<Uuid> = (0..1000).map(|_| Uuid::now_v7()).collect();
    let per_batch = 100_000;
    let mut inserted = 0;
    while inserted < audit_rows {
        let n = per_batch.min(audit_rows - inserted);
        sqlx::query(
            "INSERT INTO audit_events (id, event_id, actor_id, action, entity_type, entity_id, metadata, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), ($1::uuid[])[1 + (g % 1000)], \
               (ARRAY['ticket.created','ticket.updated','ticket.status_changed','ticket.assigned','ticket.unassigned','ticket.comment_added','ticket.deleted'])[1 + (g % 7)], \
               'ticket', 'bench-' || (g % 100000), '{\"bench\": true}', now() - (g % 300) * interval '1 day' - (g % 86400) * interval '1 second' \
             FROM generate_series($2::bigint, $3::bigint) AS g",
        )
        .bind(&actors)
        .bind(inserted as i64)
        .bind((inserted + n - 1) as i64)
        .execute(&audit.pool)
        .await
        .expect("bulk audit");
        inserted += n;
    }
    sqlx::query("ANALYZE audit_events")
        .execute(&audit.pool)
        .await
        .expect("analyze");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
        .fetch_one(&audit.pool)
        .await
        .expect("count");
    println!(
        "(audit log holds {total} entries; bulk insert took {:.1} s)",
        started.elapsed().as_secs_f64()
    );

    let admin = p.announce_user(Role::Admin).await;
    wait_user(&audit.pool, &admin).await;
    let admin = Arc::new(admin);
    let actors = Arc::new(actors);
    let queries: Vec<(&str, PathFn)> = vec![
        (
            "search by entity",
            Arc::new(|i| {
                format!(
                    "/audit/search?entityType=ticket&entityId=bench-{}",
                    (i * 7919) % 100_000
                )
            }),
        ),
        (
            "search by actor",
            Arc::new({
                let actors = actors.clone();
                move |i| {
                    format!(
                        "/audit/search?actorId={}&limit=100",
                        actors[(i * 31) % actors.len()]
                    )
                }
            }),
        ),
        (
            "search by action",
            Arc::new(|_| "/audit/search?action=ticket.assigned&limit=100".to_string()),
        ),
        (
            "search by time window",
            Arc::new(|i| {
                let to = chrono::Utc::now() - chrono::Duration::days((i % 250) as i64);
                let from = to - chrono::Duration::days(1);
                format!(
                    "/audit/search?from={}&to={}&limit=100",
                    from.format("%Y-%m-%dT%H:%M:%SZ"),
                    to.format("%Y-%m-%dT%H:%M:%SZ")
                )
            }),
        ),
        (
            "search unfiltered",
            Arc::new(|_| "/audit/search?limit=100".to_string()),
        ),
        (
            "GET /audit/entity/ticket/:id",
            Arc::new(|i| format!("/audit/entity/ticket/bench-{}", (i * 104_729) % 100_000)),
        ),
    ];
    let mut all = Vec::new();
    for (name, path) in queries {
        let (http, url, admin) = (http.clone(), audit.url.clone(), admin.clone());
        let mut s = load(&format!("audit {name}"), 8, 50, None, move |c, i| {
            let (http, url, admin, path) = (http.clone(), url.clone(), admin.clone(), path(c * 1000 + i));
            async move { matches!(http.get(format!("{url}{path}")).bearer_auth(&admin.token).send().await, Ok(r) if r.status().is_success()) }
        })
        .await;
        all.extend(s.latencies.iter().copied());
        s.print();
    }
    let mut overall = Stats {
        name: "audit search, all kinds".into(),
        count: all.len(),
        errors: 0,
        elapsed: Duration::from_secs(1),
        latencies: all,
    };
    overall.latencies.sort();
    println!(
        "{:<44} p50 {:>7.2} ms  p95 {:>7.2} ms  p99 {:>7.2} ms",
        overall.name,
        overall.pct(0.5),
        overall.pct(0.95),
        overall.pct(0.99)
    );

    ticket.stop().await;
    audit.stop().await;
    p.cleanup().await;
}
