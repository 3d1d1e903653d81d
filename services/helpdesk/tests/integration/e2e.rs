//! End-to-end: the platform started as a user would, walked through the whole contract over HTTP
//! through one port, with a real SMTP sink (the walk itself is `helpdesk_e2e::walk`). Runs twice:
//! against `helpdesk up` (private PostgreSQL, in-process bus) and against the five service
//! binaries on RabbitMQ behind `helpdesk gateway`. The simulated cluster runs the same walk
//! through the operator's ingress (`operator/simcluster`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use helpdesk_e2e::{Admin, Entry, Procs, SmtpSink, free_port, wait_ready, walk};
use helpdesk_testkit::{self as testing, TestKeys, amqp_url, database_url, eventually, unique};
use reqwest::Client;

const ADMIN_EMAIL: &str = "admin@e2e.test";
const ADMIN_PASSWORD: &str = "e2e-admin-password";

fn admin() -> Admin {
    Admin {
        email: ADMIN_EMAIL.into(),
        password: ADMIN_PASSWORD.into(),
    }
}

/// [`crate::up::TEST_PLATFORM`]'s settings, and short event retries.
fn fast_hashing(c: &mut Command) -> &mut Command {
    c.envs(crate::up::TEST_PLATFORM.iter().copied())
        .env("EVENT_RETRY_BASE_DELAY", "100ms")
}

/// The binaries of the other workspace crates, built on demand (next to this test's executable).
fn service_binary(name: &str) -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    if !path.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-p", name, "--bin", name])
            .status()
            .expect("cargo");
        assert!(status.success(), "building {name}");
    }
    path
}

#[tokio::test]
async fn whole_contract_through_helpdesk_up() {
    let sink = SmtpSink::start();
    let dir = std::env::temp_dir().join(unique("e2e-up-"));
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_helpdesk"));
    cmd.args([
        "up",
        "--port",
        &port.to_string(),
        "--data-dir",
        &dir.to_string_lossy(),
    ])
    .env_remove("DATABASE_URL")
    .env_remove("AMQP_URL")
    .env("SMTP_URL", sink.url())
    .env("MAIL_FROM", "helpdesk@e2e.test")
    .env("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
    .env("BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
    .stdout(Stdio::null());
    let procs = Procs(vec![fast_hashing(&mut cmd).spawn().unwrap()]);
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    walk(&base, &admin(), Some(&sink), Entry::Platform).await;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn whole_contract_through_five_processes_on_rabbitmq() {
    testing::require_postgres().await;
    testing::require_rabbitmq().await;
    let sink = SmtpSink::start();
    let keys = TestKeys::generate();
    let run = unique("e2e");
    let prefix = format!("{run}.");
    let services = [
        "user-service",
        "ticket-service",
        "audit-service",
        "notification-service",
        "admin-service",
    ];
    let ports: Vec<u16> = services.iter().map(|_| free_port()).collect();
    let url_of = |name: &str| {
        format!(
            "http://127.0.0.1:{}",
            ports[services.iter().position(|s| *s == name).unwrap()]
        )
    };
    let mut procs = Procs(Vec::new());
    let mut schemas = Vec::new();
    for (i, name) in services.iter().enumerate() {
        let var = name.trim_end_matches("-service").to_ascii_uppercase();
        let schema = format!("{run}_{}", var.to_ascii_lowercase());
        schemas.push(schema.clone());
        let mut cmd = Command::new(service_binary(name));
        cmd.env("DATABASE_URL", database_url())
            .env(format!("{var}_DB_SCHEMA"), &schema)
            .env(format!("{var}_DB_MAX_CONNECTIONS"), "5")
            .env("AMQP_URL", amqp_url())
            .env("BUS_PREFIX", &prefix)
            .env("BIND_ADDR", format!("127.0.0.1:{}", ports[i]))
            .env("JWT_PUBLIC_KEY", &keys.public_pem)
            .env("SERVICE_TOKEN", keys.service_token(name))
            .env("USER_SERVICE_URL", url_of("user-service"))
            .env("AUDIT_SERVICE_URL", url_of("audit-service"))
            .env("SMTP_URL", sink.url())
            .env("MAIL_FROM", "helpdesk@e2e.test")
            .env("FRONTEND_BASE_URL", "https://helpdesk.e2e.test")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        if *name == "user-service" {
            cmd.env("JWT_PRIVATE_KEY", &keys.private_pem)
                .env("BOOTSTRAP_ADMIN_EMAIL", ADMIN_EMAIL)
                .env("BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        procs.0.push(fast_hashing(&mut cmd).spawn().unwrap());
    }
    for name in services {
        wait_ready(&url_of(name)).await;
    }
    let gateway_port = free_port();
    let mut gw = Command::new(env!("CARGO_BIN_EXE_helpdesk"));
    gw.args(["gateway", "--port", &gateway_port.to_string()])
        .stdout(Stdio::null());
    for name in services {
        gw.env(
            format!("{}_URL", name.to_ascii_uppercase().replace('-', "_")),
            url_of(name),
        );
    }
    procs.0.push(gw.spawn().unwrap());
    let base = format!("http://127.0.0.1:{gateway_port}");
    eventually(Duration::from_secs(20), "the gateway", || async {
        Client::new()
            .get(format!("{base}/health"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    walk(&base, &admin(), Some(&sink), Entry::Platform).await;
    drop(procs);
    for s in schemas {
        testing::drop_schema(&s).await;
    }
    // The default attempts (5) and the retry delay set above.
    testing::service::remove_platform_from_broker(&prefix, 5, Duration::from_millis(100)).await;
}
