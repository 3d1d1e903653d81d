//! Benchmark (ignored by default): dashboard statistics latency with 100 000 tickets.
//!
//! `cargo test --release -p admin-service --test integration bench:: -- --ignored --nocapture`
//! (`BENCH_TICKETS`, `BENCH_REQUESTS` change the sizes).

use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use crate::common::{Platform, http};
use admin_service::dashboard::{Statistics, rebuild_counters};
use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{
    Envelope, EventMetadata, TicketCreated, TicketSnapshot, TicketStatus, UserRef,
};
use helpdesk_testkit::eventually;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_dashboard_statistics_with_100k_tickets() {
    let tickets = env_or("BENCH_TICKETS", 100_000) as i64;
    let requests = env_or("BENCH_REQUESTS", 2_000);
    let mut p = Platform::new().await;
    let (admin, pool) = p.start_admin("http://127.0.0.1:9", &[]).await;
    let token = p
        .keys
        .keys
        .issue_user_token(Uuid::new_v4(), "root@example.com", Role::Admin)
        .unwrap();

    // Bulk-load the read model (as a replay would leave it), then the counters from it.
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO tickets (id, user_id, status, assigned_to, created_at, updated_at, live) \
         SELECT gen_random_uuid(), gen_random_uuid(), (ARRAY['OPEN','IN_PROGRESS','DONE'])[1 + i % 3], \
                CASE WHEN i % 4 = 0 THEN NULL ELSE ('00000000-0000-0000-0000-0000000000' || lpad((i % 20)::text, 2, '0'))::uuid END, \
                now() - (i % 2880) * interval '1 minute', now(), true \
         FROM generate_series(1, $1) AS i",
    )
    .bind(tickets)
    .execute(&pool)
    .await
    .unwrap();
    rebuild_counters(&pool).await.unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    println!("loaded {tickets} tickets in {:?}", started.elapsed());

    // The consumer keeps working on top of the loaded model.
    let creator = UserRef {
        id: Uuid::new_v4(),
        email: "c@example.com".into(),
        first_name: None,
        last_name: None,
    };
    let t = TicketSnapshot {
        id: Uuid::new_v4(),
        user_id: creator.id,
        title: "x".into(),
        status: TicketStatus::Open,
        assigned_to_user_id: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let (_conn, ch) = p.publisher().await;
    p.publish_all(
        &ch,
        &[Envelope::wrap(
            &TicketCreated { ticket: t, creator },
            EventMetadata::default(),
        )],
    )
    .await;

    let c = http();
    let url = format!("{admin}/admin/dashboard/statistics");
    let first: Statistics = eventually(Duration::from_secs(10), "the event to count", || async {
        let s: Statistics = c
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (s.total_tickets == tickets + 1).then_some(s)
    })
    .await;
    println!("figures: {first:?}");

    let mut latencies = Vec::with_capacity(requests);
    let started = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        let res = c.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = res.bytes().await.unwrap();
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    println!(
        "GET /admin/dashboard/statistics with {tickets} tickets, {requests} sequential requests over HTTP: \
         p50 {:?}, p95 {:?}, p99 {:?}, max {:?}, {:.0} req/s",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        requests as f64 / total.as_secs_f64()
    );
    p.finish().await;
}
