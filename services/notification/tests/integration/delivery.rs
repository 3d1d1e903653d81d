//! Delivery against a real SMTP server, driven step by step with `Sender::send_due`: retries while
//! the server is down, FAILED after N attempts with the server's answer for a rejected recipient,
//! two replicas sending without duplicates, STARTTLS and implicit TLS, AUTH, a server that stalls.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::common::{Platform, SinkTls, SmtpSink, free_port, http};
use helpdesk_testkit::{Proxy, database_url_via, eventually, postgres_addr, unique};
use notification_service::mailer::{MailError, Mailer, OutgoingMail};
use notification_service::sender::{SendReport, Sender};

/// Queues an email through the internal route; returns its id.
async fn queue(base: &str, token: &str, to: &str, subject: &str) -> String {
    let res = http()
        .post(format!("{base}/notifications/email"))
        .bearer_auth(token)
        .json(&json!({"to": to, "subject": subject, "body": format!("Body of {subject}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn status(base: &str, token: &str, id: &str) -> Value {
    http()
        .get(format!("{base}/notifications/status/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Runs the sender until `done` says so (each round is one deterministic step).
async fn send_until(sender: &Sender, what: &str, done: impl Fn(&SendReport) -> bool) -> SendReport {
    eventually(Duration::from_secs(20), what, || async {
        let r = sender.send_due().await.expect("send round");
        done(&r).then_some(r)
    })
    .await
}

fn driven(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("NOTIFICATION_SENDER_ENABLED", "false".to_string()),
        ("NOTIFICATION_RETRY_BASE_DELAY", "50ms".to_string()),
        ("NOTIFICATION_RETRY_MAX_DELAY", "200ms".to_string()),
        ("NOTIFICATION_SEND_RATE_PER_SECOND", "0".to_string()),
        ("SMTP_TIMEOUT", "5s".to_string()),
    ];
    env.extend_from_slice(extra);
    env
}

async fn start(p: &mut Platform, env: &[(&'static str, String)]) -> (String, PgPool, Sender) {
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = p.notification_config(&pairs);
    let (base, pool) = p.start_notification(config.clone()).await;
    let sender = config.sender(pool.clone()).expect("sender");
    (base, pool, sender)
}

#[tokio::test]
async fn smtp_down_means_retries_with_backoff_then_sent_when_it_is_back() {
    let port = free_port();
    let mut p = Platform::new().await;
    let env = driven(&[
        ("SMTP_URL", format!("smtp://127.0.0.1:{port}")),
        // Long enough to observe that the email is not due again before its backoff.
        ("NOTIFICATION_RETRY_BASE_DELAY", "1s".into()),
        ("NOTIFICATION_RETRY_MAX_DELAY", "2s".into()),
    ]);
    let (base, _pool, sender) = start(&mut p, &env).await;
    let token = p.keys.service_token("test");
    let to = format!("{}@example.com", Uuid::new_v4().simple());
    let id = queue(&base, &token, &to, "Patience").await;

    // Nobody listens: the attempt fails and the email waits for its backoff.
    let r = send_until(&sender, "a failed attempt", |r| r.retrying == 1).await;
    assert_eq!((r.sent, r.failed), (0, 0));
    let s = status(&base, &token, &id).await;
    assert_eq!(s["status"], "PENDING");
    assert_eq!(s["attempts"], 1);
    assert!(
        s["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{s}"
    );
    assert_eq!(
        sender.send_due().await.unwrap().claimed,
        0,
        "not due again before its backoff"
    );

    let r = send_until(&sender, "a second failed attempt", |r| r.retrying == 1).await;
    assert_eq!(r.sent, 0);
    assert_eq!(status(&base, &token, &id).await["attempts"], 2);

    // The server comes back on the same port: the next due attempt delivers.
    let sink = SmtpSink::builder().port(port).start();
    send_until(&sender, "delivery once the server is back", |r| r.sent == 1).await;
    let s = status(&base, &token, &id).await;
    assert_eq!(s["status"], "SENT");
    assert_eq!(s["attempts"], 3);
    assert!(s["sentAt"].is_string());
    let got = sink.wait_for(&to, 1).await;
    assert_eq!(got[0].subject, "Patience");
    p.finish().await;
}

#[tokio::test]
async fn a_permanently_rejected_recipient_is_failed_after_n_attempts_with_the_server_error() {
    let bad = format!("bounce-{}@example.com", Uuid::new_v4().simple());
    let good = format!("{}@example.com", Uuid::new_v4().simple());
    let sink = SmtpSink::builder().reject_recipient(&bad).start();
    let mut p = Platform::new().await;
    let env = driven(&[
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port())),
        ("NOTIFICATION_MAX_ATTEMPTS", "3".into()),
    ]);
    let (base, pool, sender) = start(&mut p, &env).await;
    let token = p.keys.service_token("test");
    let bad_id = queue(&base, &token, &bad, "Never arrives").await;
    let good_id = queue(&base, &token, &good, "Arrives").await;

    send_until(&sender, "the rejected email to fail", |r| r.failed == 1).await;
    let s = status(&base, &token, &bad_id).await;
    assert_eq!(s["status"], "FAILED");
    assert_eq!(s["attempts"], 3);
    let error = s["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("550") && error.contains("Mailbox unavailable"),
        "the server's answer is kept: {error}"
    );
    assert_eq!(
        sink.rejections(),
        3,
        "tried exactly NOTIFICATION_MAX_ATTEMPTS times"
    );
    assert_eq!(
        sender.send_due().await.unwrap().claimed,
        0,
        "a FAILED email is never tried again"
    );

    // The other email was not held up.
    assert_eq!(status(&base, &token, &good_id).await["status"], "SENT");
    assert_eq!(sink.to(&good).len(), 1);
    // email.failed is announced (through the outbox).
    let failed_events: i64 = eventually(Duration::from_secs(5), "email.failed relayed", || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .ok()?;
        (pending == 0).then_some(pending)
    })
    .await;
    assert_eq!(failed_events, 0);
    p.finish().await;
}

#[tokio::test]
async fn two_replicas_send_every_email_exactly_once() {
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let env = driven(&[
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port())),
        ("NOTIFICATION_BATCH_SIZE", "10".into()),
    ]);
    let (_base, pool, sender_a) = start(&mut p, &env).await;
    // A second replica: its own pool and transport on the same schema.
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut config_b = p.notification_config(&pairs);
    config_b.common.db.schema = p.schemas[0].clone();
    let pool_b = helpdesk_kit::db::connect(&config_b.common.db)
        .await
        .unwrap();
    let sender_b = config_b.sender(pool_b).unwrap();

    let to = format!("{}@example.com", Uuid::new_v4().simple());
    let n = 120;
    let mut tx = pool.begin().await.unwrap();
    for i in 0..n {
        let email = notification_service::emails::NewEmail {
            source_event_id: Some(Uuid::new_v4()),
            recipient: to.clone(),
            template: None,
            subject: format!("Mail {i}"),
            body: "x".into(),
            sensitive: false,
        };
        notification_service::emails::queue(&mut tx, &email, &Default::default())
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let drain = |s: Sender| async move {
        let mut sent = 0;
        loop {
            let r = s.send_due().await.unwrap();
            if r.claimed == 0 {
                return sent;
            }
            sent += r.sent;
        }
    };
    let (a, b) = tokio::join!(drain(sender_a), drain(sender_b));
    assert_eq!(a + b, n, "every email sent once across replicas");
    assert!(a > 0 && b > 0, "both replicas took part ({a} + {b})");
    let got = sink.wait_for(&to, n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = sink.to(&to);
    assert_eq!(got_after.len(), n, "no duplicate arrived");
    let ids: HashSet<&str> = got.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids.len(), got.len());
    let sent: i64 =
        sqlx::query_scalar("SELECT count(*) FROM emails WHERE status = 'SENT' AND attempts = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sent, n as i64);
    p.finish().await;
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_with_a_trusted_certificate() {
    let certs = std::env::temp_dir().join(unique("smtp-cert-"));
    for tls in [SinkTls::StartTls, SinkTls::Implicit] {
        let mode = tls.url_mode();
        let sink = SmtpSink::builder().tls(tls).start();
        let cert = sink.write_ca_file(&certs);
        let mut p = Platform::new().await;
        let env = driven(&[
            (
                "SMTP_URL",
                format!("smtp://127.0.0.1:{}?tls={mode}", sink.port()),
            ),
            ("SMTP_TLS_CA_FILE", cert.display().to_string()),
        ]);
        let (base, _pool, sender) = start(&mut p, &env).await;
        let token = p.keys.service_token("test");
        let to = format!("{}@example.com", Uuid::new_v4().simple());
        let id = queue(&base, &token, &to, &format!("Over {mode}")).await;
        let r = sender.send_due().await.unwrap();
        assert_eq!(r.sent, 1, "{mode}: {}", status(&base, &token, &id).await);
        assert_eq!(
            sink.wait_for(&to, 1).await[0].subject,
            format!("Over {mode}")
        );

        // Without trusting the certificate, the same server is refused (no silent downgrade).
        let env = driven(&[(
            "SMTP_URL",
            format!("smtp://127.0.0.1:{}?tls={mode}", sink.port()),
        )]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut untrusting = p.notification_config(&pairs);
        untrusting.common.db.schema = p.schemas[0].clone();
        let pool = helpdesk_kit::db::connect(&untrusting.common.db)
            .await
            .unwrap();
        let id = queue(&base, &token, &to, "Refused").await;
        let r = untrusting.sender(pool).unwrap().send_due().await.unwrap();
        assert_eq!((r.sent, r.retrying), (0, 1), "{mode}");
        let s = status(&base, &token, &id).await;
        assert!(
            s["lastError"].as_str().is_some_and(|e| !e.is_empty()),
            "{s}"
        );
        p.finish().await;
    }
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn sending_respects_the_rate_limit() {
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let env = driven(&[
        ("SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port())),
        ("NOTIFICATION_SEND_RATE_PER_SECOND", "20".into()),
    ]);
    let (base, _pool, sender) = start(&mut p, &env).await;
    let token = p.keys.service_token("test");
    let to = format!("{}@example.com", Uuid::new_v4().simple());
    for i in 0..30 {
        queue(&base, &token, &to, &format!("Rate {i}")).await;
    }
    let started = std::time::Instant::now();
    let r = sender.send_due().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.sent, 30);
    // A burst of 20, then one every 50 ms: the last 10 need at least 450 ms.
    assert!(
        elapsed >= Duration::from_millis(400),
        "30 emails at 20/s took only {elapsed:?}"
    );
    assert_eq!(sink.wait_for(&to, 30).await.len(), 30);
    p.finish().await;
}

#[tokio::test]
async fn smtp_auth_after_starttls_delivers_and_a_wrong_password_is_retried_without_leaking_it() {
    let certs = std::env::temp_dir().join(unique("smtp-cert-"));
    let password = "Sm7p-Pa55word";
    let sink = SmtpSink::builder()
        .starttls()
        .auth("mailer", password)
        .start();
    let cert = sink.write_ca_file(&certs);
    let url = |user_info: &str| format!("smtp://{user_info}127.0.0.1:{}?tls=starttls", sink.port());
    let mut p = Platform::new().await;
    let env = driven(&[
        ("SMTP_URL", url(&format!("mailer:{password}@"))),
        ("SMTP_TLS_CA_FILE", cert.display().to_string()),
    ]);
    let (base, _pool, sender) = start(&mut p, &env).await;
    let token = p.keys.service_token("test");
    let to = format!("{}@example.com", Uuid::new_v4().simple());
    let id = queue(&base, &token, &to, "Signed in").await;
    let r = sender.send_due().await.unwrap();
    assert_eq!(r.sent, 1, "{}", status(&base, &token, &id).await);
    assert_eq!(sink.wait_for(&to, 1).await[0].subject, "Signed in");

    // A wrong password and no credentials at all: refused by the server, kept for a retry, and
    // the error recorded never contains the password.
    for (case, user_info) in [
        ("wrong password", "mailer:not-the-password@".to_string()),
        ("no credentials", String::new()),
    ] {
        let env = driven(&[
            ("SMTP_URL", url(&user_info)),
            ("SMTP_TLS_CA_FILE", cert.display().to_string()),
        ]);
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut other = p.notification_config(&pairs);
        other.common.db.schema = p.schemas[0].clone();
        let pool = helpdesk_kit::db::connect(&other.common.db).await.unwrap();
        let id = queue(&base, &token, &to, case).await;
        let r = other.sender(pool).unwrap().send_due().await.unwrap();
        // (The earlier case's email may be due again in the same round.)
        assert!(r.sent == 0 && r.retrying >= 1, "{case}: {r:?}");
        let s = status(&base, &token, &id).await;
        let error = s["lastError"].as_str().unwrap_or("");
        assert!(!error.is_empty(), "{case}: {s}");
        assert!(
            !error.contains("not-the-password") && !error.contains(password),
            "{case}: {error}"
        );
    }
    let refused = sink.auth_failures();
    assert_eq!(refused.len(), 1, "one refused login: {refused:?}");
    assert_eq!(
        sink.messages().len(),
        1,
        "nothing delivered without signing in"
    );
    p.finish().await;
    let _ = std::fs::remove_dir_all(&certs);
}

#[tokio::test]
async fn a_server_that_stops_answering_mid_session_does_not_hold_the_sender() {
    // Greets and answers EHLO, then never answers again.
    let sink = SmtpSink::builder().stall_after(1).start();
    let mut p = Platform::new().await;
    let mut env = driven(&[("SMTP_URL", format!("smtp://127.0.0.1:{}", sink.port()))]);
    env.retain(|(k, _)| *k != "SMTP_TIMEOUT");
    env.push(("SMTP_TIMEOUT", "1s".to_string()));
    let (base, _pool, sender) = start(&mut p, &env).await;
    let token = p.keys.service_token("test");
    let id = queue(&base, &token, "stalled@example.com", "Stalled").await;
    let r = tokio::time::timeout(Duration::from_secs(20), sender.send_due())
        .await
        .expect("the send hung on a silent SMTP server")
        .unwrap();
    assert_eq!((r.sent, r.retrying), (0, 1));
    let s = status(&base, &token, &id).await;
    assert!(
        s["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("did not finish")),
        "{s}"
    );
    p.finish().await;
}

#[tokio::test]
async fn without_smtp_emails_are_recorded_and_marked_failed_saying_why() {
    let mut p = Platform::new().await;
    // No SMTP_URL, SMTP_HOST or NOTIFICATION_MAIL_DIR (a platform without spec.smtp); the
    // service's own sender runs.
    let config = p.notification_config(&[]);
    assert!(matches!(
        config.transport,
        notification_service::mailer::MailTransport::Disabled
    ));
    let (base, pool, _) = start(&mut p, &[]).await;
    let token = p.keys.service_token("test");
    let id = queue(&base, &token, "ann@example.com", "Nowhere to go").await;
    let s = eventually(Duration::from_secs(10), "the email to fail", || async {
        let s = status(&base, &token, &id).await;
        (s["status"] != "PENDING").then_some(s)
    })
    .await;
    assert_eq!(s["status"], "FAILED", "{s}");
    assert_eq!(
        s["lastError"],
        "mail delivery is not configured (no SMTP_URL or SMTP_HOST)"
    );
    assert_eq!(s["attempts"], 0, "nothing was attempted: {s}");
    assert!(s["sentAt"].is_null());
    // Announced like any failed email (email.failed through the outbox).
    eventually(Duration::from_secs(5), "email.failed relayed", || async {
        let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&pool)
            .await
            .ok()?;
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM emails WHERE status = 'FAILED'")
            .fetch_one(&pool)
            .await
            .ok()?;
        (pending == 0 && failed == 1).then_some(())
    })
    .await;
    p.finish().await;
}

/// Delivers, and cuts the sender's database while doing so (restored 700 ms later): the outcome
/// of the send cannot be recorded at first.
struct CutsTheDatabase {
    proxy: Arc<Proxy>,
    sent: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Mailer for CutsTheDatabase {
    async fn send(&self, _mail: &OutgoingMail) -> Result<(), MailError> {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.proxy.set(None);
        let proxy = self.proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            proxy.set(Some(postgres_addr()));
        });
        Ok(())
    }

    fn describe(&self) -> String {
        "a mailer that cuts the database".into()
    }
}

/// An email the server took while the database was briefly unusable is recorded SENT once the
/// database is back, not left claimed until its lease runs out and then sent a second time.
#[tokio::test]
async fn a_sent_email_is_recorded_when_the_database_comes_back_instead_of_sent_again() {
    let mut p = Platform::new().await;
    let env = driven(&[("SMTP_URL", format!("smtp://127.0.0.1:{}", free_port()))]);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = p.notification_config(&pairs);
    let (base, _pool) = p.start_notification(config.clone()).await;
    let token = p.keys.service_token("test");
    let id = queue(&base, &token, "once@example.com", "Only once").await;

    let proxy = Arc::new(Proxy::start(Some(postgres_addr())).await);
    let mut db = config.common.db.clone();
    db.url = database_url_via(proxy.addr);
    let pool = helpdesk_kit::db::connect(&db)
        .await
        .expect("pool via the proxy");
    let sent = Arc::new(AtomicUsize::new(0));
    let mailer = CutsTheDatabase {
        proxy: proxy.clone(),
        sent: sent.clone(),
    };
    let sender = Sender::new(
        pool,
        Arc::new(mailer),
        config.sender.clone(),
        &config.common.db.schema,
    );

    let r = sender
        .send_due()
        .await
        .expect("the outcome is recorded once the database is back");
    assert_eq!((r.claimed, r.sent), (1, 1));
    assert!(proxy.refused() > 0, "the database really was cut");
    assert_eq!(status(&base, &token, &id).await["status"], "SENT");
    assert_eq!(sender.send_due().await.expect("a round").claimed, 0);
    assert_eq!(sent.load(Ordering::SeqCst), 1, "sent exactly once");
    p.finish().await;
}
