//! Fault injection: the platform (`helpdesk up`, on both buses) under a bounded write workload
//! while a component it depends on fails. Each test breaks only servers it started itself (its
//! own PostgreSQL cluster, its own RabbitMQ node; `helpdesk_testkit::servers`) and checks
//! what a user would: every acknowledged write survives, every effect (audit entry, dashboard
//! figure, mail) happens exactly once, and the platform recovers by itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use helpdesk_testkit::servers::{OwnPostgres, OwnRabbit};
use helpdesk_testkit::service::remove_platform_from_broker;
use helpdesk_testkit::{amqp_url, eventually, free_port, unique};
use reqwest::Client;
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "admin@faults.test";
/// The platform's retry settings here (short, so a retried event does not outlast the test).
const MAX_ATTEMPTS: u32 = 3;
const RETRY_BASE_DELAY: Duration = Duration::from_millis(100);
const ADMIN_PASSWORD: &str = "faults-admin-password";

/// Starts `helpdesk up` on `dir` and `port` with exactly `env` (besides the machine's).
fn spawn_up(dir: &Path, port: u16, env: &[(String, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_helpdesk"))
        .args(["up", "--port", &port.to_string(), "--data-dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("SMTP_URL")
        .envs(crate::up::TEST_PLATFORM.iter().copied())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("helpdesk up")
}

/// `helpdesk up` in its own data folder; stopped (SIGTERM) on drop.
struct Up {
    child: Child,
    base: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    port: u16,
}

impl Up {
    async fn start(env: &[(&str, String)]) -> Up {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .chain([
                ("BOOTSTRAP_ADMIN_EMAIL".into(), ADMIN_EMAIL.into()),
                ("BOOTSTRAP_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
                ("STAFF_NOTIFY_EMAIL".into(), "staff@faults.test".into()),
                // Retries that would exhaust within a second: an outage must not.
                ("EVENT_MAX_ATTEMPTS".into(), MAX_ATTEMPTS.to_string()),
                (
                    "EVENT_RETRY_BASE_DELAY".into(),
                    format!("{}ms", RETRY_BASE_DELAY.as_millis()),
                ),
                // Emails a killed platform had claimed but not sent wait for their claim to run
                // out before they are sent: 2 minutes by default, longer than these tests wait
                // for a killed platform's mail.
                ("NOTIFICATION_LEASE".into(), "10s".into()),
                ("RUST_LOG".into(), "warn".into()),
            ])
            .collect();
        let dir = std::env::temp_dir().join(unique("faults-up-"));
        let port = free_port();
        let child = spawn_up(&dir, port, &env);
        let up = Up {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
            env,
            port,
        };
        up.wait_ready().await;
        up
    }

    async fn wait_ready(&self) {
        let http = Client::new();
        eventually(Duration::from_secs(90), "helpdesk up to be ready", || {
            let (http, url) = (http.clone(), format!("{}/ready", self.base));
            async move {
                let r = http.get(url).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        })
        .await;
    }

    /// Kills the process outright (SIGKILL: no clean shutdown) and starts it again on the same
    /// data folder and port; returns how long until it was ready again.
    async fn crash_and_restart(&mut self) -> Duration {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
        let started = Instant::now();
        self.child = spawn_up(&self.dir, self.port, &self.env);
        self.wait_ready().await;
        started.elapsed()
    }

    fn mail_dir(&self) -> PathBuf {
        self.dir.join("mail")
    }

    /// `helpdesk dlq list --json` with the platform's settings.
    fn dead_letters(&self) -> Vec<Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_helpdesk"))
            .args(["dlq", "list", "--json", "--data-dir"])
            .arg(&self.dir)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("helpdesk dlq");
        assert!(
            out.status.success(),
            "helpdesk dlq: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("dlq list --json is JSON")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn admin_token(base: &str) -> String {
    let v: Value = Client::new()
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// What a workload did: the tickets acknowledged (201) and the answers that were not.
#[derive(Default)]
struct Outcome {
    created: Vec<(String, String)>,
    failures: Vec<String>,
}

/// Creates tickets at about `per_second` until `until`, one at a time.
async fn write_tickets(base: &str, token: &str, per_second: u32, until: Instant) -> Outcome {
    let http = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut out = Outcome::default();
    let gap = Duration::from_secs(1) / per_second;
    while Instant::now() < until {
        let title = format!("fault-{}", unique(""));
        match http
            .post(format!("{base}/tickets"))
            .bearer_auth(token)
            .json(&json!({"title": title, "description": "under a fault"}))
            .send()
            .await
        {
            Ok(r) if r.status() == 201 => {
                let v: Value = r.json().await.unwrap();
                out.created
                    .push((v["id"].as_str().unwrap().to_string(), title));
            }
            Ok(r) => out.failures.push(format!("{}", r.status())),
            Err(e) => out.failures.push(e.to_string()),
        }
        tokio::time::sleep(gap).await;
    }
    out
}

fn mails_about(dir: &Path, title: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|m| m.contains(title)))
        .count()
}

/// Every acknowledged ticket has exactly one `ticket.created` in its audit trail, one "new
/// ticket" mail, and the dashboard counts each once.
async fn every_effect_exactly_once(
    up: &Up,
    token: &str,
    created: &[(String, String)],
    within: Duration,
) {
    let http = Client::new();
    for (id, title) in created {
        let trail = eventually(within, &format!("the audit trail of {id}"), || {
            let (http, url) = (http.clone(), format!("{}/tickets/{id}/audit", up.base));
            async move {
                let v: Value = http
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let n = v
                    .as_array()?
                    .iter()
                    .filter(|e| e["action"] == "ticket.created")
                    .count();
                (n > 0).then_some(n)
            }
        })
        .await;
        assert_eq!(trail, 1, "ticket {id}: one audit entry");
        let mails = eventually(within, &format!("the mail about {title}"), || async {
            let n = mails_about(&up.mail_dir(), title);
            (n > 0).then_some(n)
        })
        .await;
        assert_eq!(mails, 1, "ticket {id}: one mail");
    }
    let stats: Value = http
        .get(format!("{}/admin/dashboard/statistics", up.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["totalTickets"], created.len(), "{stats}");
}

/// Issue 15 item 1, on both buses: audit-service's own database is down for longer than its
/// retries last, during a burst of writes and then for a single write (the low-traffic case the
/// heavy run hid). Before: both dead-lettered for good. Now: nothing is dead-lettered and every
/// event is recorded once the database is back.
async fn audit_database_outage(bus: &[(&str, String)]) {
    let audit_db = OwnPostgres::start().await;
    let mut env = vec![("AUDIT_DATABASE_URL", audit_db.url())];
    env.extend(bus.iter().cloned());
    let up = Up::start(&env).await;
    let token = admin_token(&up.base).await;
    let before = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    audit_db.crash();
    let down = Instant::now();
    let during = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    // The low-traffic case: one write alone while the database stays down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alone = write_tickets(
        &up.base,
        &token,
        1,
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        up.dead_letters().is_empty(),
        "an outage is not the messages' fault: {:?}",
        up.dead_letters()
    );
    audit_db.resume().await;
    let outage = down.elapsed();
    let mut created = before.created;
    created.extend(during.created);
    created.extend(alone.created);
    let failures: Vec<String> = [before.failures, during.failures, alone.failures].concat();
    assert!(
        failures.is_empty(),
        "writes do not depend on audit-service: {failures:?}"
    );
    let recovered = Instant::now();
    every_effect_exactly_once(&up, &token, &created, Duration::from_secs(60)).await;
    assert!(up.dead_letters().is_empty());
    eprintln!(
        "audit database outage: {} writes acknowledged, outage {:.1} s, recovered in {:.1} s, lost 0, duplicated 0, 5xx 0",
        created.len(),
        outage.as_secs_f64(),
        recovered.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn an_audit_database_outage_loses_nothing_on_the_in_process_bus() {
    audit_database_outage(&[]).await;
}

#[tokio::test]
async fn an_audit_database_outage_loses_nothing_on_rabbitmq() {
    helpdesk_testkit::require_rabbitmq().await;
    let prefix = format!("{}.", unique("faults"));
    audit_database_outage(&[("AMQP_URL", amqp_url()), ("BUS_PREFIX", prefix.clone())]).await;
    remove_platform_from_broker(&prefix, MAX_ATTEMPTS, RETRY_BASE_DELAY).await;
}

/// The broker is killed (SIGKILL) under load and comes back: writes keep being acknowledged
/// (the outbox holds the events), and every effect happens exactly once afterwards.
#[tokio::test]
async fn a_broker_killed_under_load_loses_nothing() {
    let mut broker = OwnRabbit::start().await;
    let up = Up::start(&[
        ("AMQP_URL", broker.url()),
        ("BUS_PREFIX", format!("{}.", unique("faults"))),
    ])
    .await;
    let token = admin_token(&up.base).await;
    let before = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    broker.kill();
    let down = Instant::now();
    let during = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(3),
    )
    .await;
    broker.resume().await;
    let outage = down.elapsed();
    let after = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    let failures: Vec<String> = [before.failures, during.failures, after.failures].concat();
    assert!(
        failures.is_empty(),
        "writes go on without the broker: {failures:?}"
    );
    let mut created = before.created;
    created.extend(during.created);
    created.extend(after.created);
    let recovered = Instant::now();
    every_effect_exactly_once(&up, &token, &created, Duration::from_secs(90)).await;
    eprintln!(
        "broker killed: {} writes acknowledged, outage {:.1} s, recovered in {:.1} s, lost 0, duplicated 0, 5xx 0 (log: {})",
        created.len(),
        outage.as_secs_f64(),
        recovered.elapsed().as_secs_f64(),
        broker.log().display()
    );
}

/// The whole platform process is killed (SIGKILL) in the middle of a write burst and started
/// again: every acknowledged write survives and its effects happen exactly once (the outbox and
/// the consumers' idempotency records survive the crash; events in flight are redelivered).
async fn platform_killed_under_load(bus: &[(&str, String)]) {
    let mut up = Up::start(bus).await;
    let token = admin_token(&up.base).await;
    let before = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    assert!(before.failures.is_empty(), "{:?}", before.failures);
    let restart = up.crash_and_restart().await;
    let token = admin_token(&up.base).await;
    let after = write_tickets(
        &up.base,
        &token,
        10,
        Instant::now() + Duration::from_secs(1),
    )
    .await;
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    let mut created = before.created;
    created.extend(after.created);
    let recovered = Instant::now();
    every_effect_exactly_once(&up, &token, &created, Duration::from_secs(60)).await;
    assert!(up.dead_letters().is_empty());
    eprintln!(
        "platform killed: {} writes acknowledged, back in {:.1} s, effects complete {:.1} s later, lost 0, duplicated 0",
        created.len(),
        restart.as_secs_f64(),
        recovered.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn the_platform_killed_under_load_loses_nothing_on_the_in_process_bus() {
    platform_killed_under_load(&[]).await;
}

#[tokio::test]
async fn the_platform_killed_under_load_loses_nothing_on_rabbitmq() {
    helpdesk_testkit::require_rabbitmq().await;
    let prefix = format!("{}.", unique("faults"));
    platform_killed_under_load(&[("AMQP_URL", amqp_url()), ("BUS_PREFIX", prefix.clone())]).await;
    remove_platform_from_broker(&prefix, MAX_ATTEMPTS, RETRY_BASE_DELAY).await;
}
