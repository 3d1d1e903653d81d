//! Benchmark (ignored by default): emails per second to a local SMTP sink with two replicas, and
//! proof that nothing was sent twice.
//!
//! `cargo test --release -p notification-service --test integration bench:: -- --ignored --nocapture`
//! (`BENCH_EMAILS` changes the count, `BENCH_CONCURRENCY` the emails in flight per replica).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::common::{Platform, SmtpSink};
use helpdesk_testkit::eventually;
use notification_service::emails::{NewEmail, queue};
use notification_service::sender::Sender;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn bench_two_replicas_send_to_a_local_sink_without_duplicates() {
    let n: usize = std::env::var("BENCH_EMAILS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let smtp = format!("smtp://127.0.0.1:{}", sink.port());
    // Emails in flight per replica (and SMTP connections): `BENCH_CONCURRENCY`, default 4.
    let concurrency = std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "4".into());
    let env = [
        ("SMTP_URL", smtp.as_str()),
        ("NOTIFICATION_SENDER_ENABLED", "false"),
        ("NOTIFICATION_SEND_RATE_PER_SECOND", "0"),
        ("NOTIFICATION_SEND_CONCURRENCY", concurrency.as_str()),
        ("NOTIFICATION_BATCH_SIZE", "50"),
        ("SMTP_POOL_SIZE", concurrency.as_str()),
    ];
    let config = p.notification_config(&env);
    let (_base, pool) = p.start_notification(config.clone()).await;
    let schema = config.common.db.schema.clone();

    let to = format!("{}@example.com", Uuid::new_v4().simple());
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        let email = NewEmail {
            source_event_id: Some(Uuid::new_v4()),
            recipient: to.clone(),
            template: None,
            subject: format!("Bench {i}"),
            body: "A short benchmark body.\n".into(),
            sensitive: false,
        };
        queue(&mut tx, &email, &Default::default()).await.unwrap();
    }
    tx.commit().await.unwrap();

    // Two replicas: each its own pool, SMTP connection pool and sender loop.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut c = p.notification_config(&env);
        c.common.db.schema = schema.clone();
        let replica_pool = helpdesk_kit::db::connect(&c.common.db).await.unwrap();
        replicas.push(c.sender(replica_pool).unwrap());
    }
    let drain = |s: Sender| async move {
        let mut sent = 0usize;
        loop {
            let r = s.send_due().await.unwrap();
            if r.claimed == 0 {
                return sent;
            }
            sent += r.sent;
        }
    };
    let started = Instant::now();
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    let (ha, hb) = (tokio::spawn(drain(a)), tokio::spawn(drain(b)));
    let (sa, sb) = (ha.await.unwrap(), hb.await.unwrap());
    let elapsed = started.elapsed();
    let received = eventually(
        Duration::from_secs(30),
        "every email at the sink",
        || async {
            let got = sink.to(&to);
            (got.len() >= n).then_some(got)
        },
    )
    .await;
    let ids: HashSet<String> = received.iter().map(|m| m.message_id.clone()).collect();
    println!(
        "{n} emails, 2 replicas ({sa} + {sb}): {elapsed:?}, {:.0} emails/s; sink received {} messages, {} distinct",
        n as f64 / elapsed.as_secs_f64(),
        received.len(),
        ids.len()
    );
    assert_eq!(sa + sb, n);
    assert_eq!(received.len(), n, "no duplicates");
    assert_eq!(ids.len(), n);
    p.finish().await;
}
