//! Test platform: a real SMTP server (aiosmtpd with `smtp_sink.py`), notification-service and
//! user-service in-process on random ports, each on its own schema and broker prefix.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection};
use serde::Deserialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use helpdesk_kit::bus::Subscription;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::config::Env;
use helpdesk_kit::db;
use helpdesk_kit::events::Envelope;
use helpdesk_kit::runtime;
use helpdesk_kit::testing::{self, TestKeys, eventually, unique};

// ---------------------------------------------------------------- SMTP server

/// A message as the SMTP server received it (body decoded).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Received {
    pub to: Vec<String>,
    pub from: String,
    pub subject: String,
    pub message_id: String,
    pub body: String,
}

/// How the test SMTP server speaks.
#[derive(Debug, Clone)]
pub enum SinkTls {
    None,
    /// STARTTLS required, with this (cert, key).
    StartTls(PathBuf, PathBuf),
    /// SMTPS, with this (cert, key).
    Implicit(PathBuf, PathBuf),
    /// STARTTLS with this (cert, key), then AUTH with this (user, password) before any mail.
    StartTlsLogin(PathBuf, PathBuf, String, String),
}

/// A real SMTP server (aiosmtpd) storing what it receives in a folder; killed on drop.
pub struct SmtpSink {
    child: Option<Child>,
    pub dir: PathBuf,
    pub port: u16,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl SmtpSink {
    pub async fn start(reject: &[&str]) -> Self {
        Self::start_on(free_port(), reject, SinkTls::None).await
    }

    /// Starts aiosmtpd on `port`; fails the test with a clear message when it cannot.
    pub async fn start_on(port: u16, reject: &[&str], tls: SinkTls) -> Self {
        let dir = std::env::temp_dir().join(unique("smtp-sink-"));
        std::fs::create_dir_all(&dir).expect("sink folder");
        let log = std::fs::File::create(dir.join("server.log")).expect("sink log");
        let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut cmd = Command::new("python3");
        cmd.env("PYTHONPATH", &tests);
        if let SinkTls::StartTlsLogin(cert, key, user, password) = &tls {
            cmd.arg(tests.join("smtp_auth_sink.py"))
                .args(["127.0.0.1", &port.to_string()])
                .arg(cert)
                .arg(key)
                .args([user, password])
                .arg(&dir);
        } else {
            cmd.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        }
        match &tls {
            SinkTls::None | SinkTls::StartTlsLogin(..) => {}
            SinkTls::StartTls(cert, key) => {
                cmd.arg("--tlscert").arg(cert).arg("--tlskey").arg(key);
            }
            SinkTls::Implicit(cert, key) => {
                cmd.arg("--smtpscert").arg(cert).arg("--smtpskey").arg(key);
            }
        }
        if !matches!(tls, SinkTls::StartTlsLogin(..)) {
            cmd.args(["-c", "smtp_sink.Sink"]).arg(&dir);
        }
        if !reject.is_empty() {
            cmd.arg(reject.join(","));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 for the test SMTP server (aiosmtpd): {e}")
            });
        let mut sink = SmtpSink {
            child: Some(child),
            dir,
            port,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return sink;
            }
            if let Some(child) = sink.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = std::fs::read_to_string(sink.dir.join("server.log")).unwrap_or_default();
                panic!(
                    "the test SMTP server could not be started ({status}); it needs Python 3 with aiosmtpd \
                     (pip install aiosmtpd). Its output:\n{log}"
                );
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "the test SMTP server did not listen on 127.0.0.1:{port} within 15 s (pip install aiosmtpd)"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every message received so far.
    pub fn messages(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                let text = std::fs::read_to_string(&path).expect("sink file");
                out.push(serde_json::from_str(&text).expect("sink JSON"));
            }
        }
        out
    }

    /// Messages to `address`.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.messages()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Waits for `n` messages to `address`.
    pub async fn wait_for(&self, address: &str, n: usize) -> Vec<Received> {
        eventually(
            Duration::from_secs(20),
            &format!("{n} email(s) to {address}"),
            || async {
                let got = self.to(address);
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }

    /// RCPT TO refusals so far.
    pub fn rejections(&self) -> usize {
        std::fs::read_to_string(self.dir.join("rejected.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed certificate for 127.0.0.1 (cert, key), made with the openssl command.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("cert folder");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("the openssl command is needed to make a test certificate: {e}")
        });
    assert!(
        status.success(),
        "openssl could not make a test certificate"
    );
    (cert, key)
}

// ---------------------------------------------------------------- services

/// What every service of a test platform shares.
pub struct Platform {
    pub keys: TestKeys,
    pub prefix: String,
    pub shutdown: CancellationToken,
    pub schemas: Vec<String>,
    pub queues: Vec<Subscription>,
}

impl Platform {
    pub async fn new() -> Self {
        testing::require_postgres().await;
        testing::require_rabbitmq().await;
        Self {
            keys: TestKeys::generate(),
            prefix: format!("{}.", unique("t")),
            shutdown: CancellationToken::new(),
            schemas: Vec::new(),
            queues: Vec::new(),
        }
    }

    fn base_env(&self, schema_var: &str, schema: &str) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", testing::database_url()),
            (schema_var, schema.to_string()),
            ("AMQP_URL", testing::amqp_url()),
            ("BUS_PREFIX", self.prefix.clone()),
            ("BIND_ADDR", "127.0.0.1:0".to_string()),
            ("JWT_PUBLIC_KEY", self.keys.public_pem.clone()),
            ("FRONTEND_BASE_URL", "http://helpdesk.test".to_string()),
            ("EVENT_RETRY_BASE_DELAY", "100ms".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// notification-service's configuration with `extra` settings.
    pub fn notification_config(&mut self, extra: &[(&str, &str)]) -> notification_service::Config {
        let schema = unique("t_notif_");
        self.schemas.push(schema.clone());
        let mut env = self.base_env("NOTIFICATION_DB_SCHEMA", &schema);
        env.push(("NOTIFICATION_POLL_INTERVAL".into(), "100ms".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        notification_service::Config::from_env(&Env::from_map(env)).expect("notification config")
    }

    /// Starts notification-service; returns its base URL and its pool.
    pub async fn start_notification(
        &mut self,
        config: notification_service::Config,
    ) -> (String, PgPool) {
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &notification_service::MIGRATOR)
            .await
            .expect("migrate");
        let sub = notification_service::triggers::subscription(
            config.event_retries.0,
            config.event_retries.1,
        );
        self.prebind(&sub).await;
        self.prebind(
            &helpdesk_kit::bus::topology::NOTIFICATION_USERS
                .subscription(config.event_retries.0, config.event_retries.1),
        )
        .await;
        let bus = Arc::new(AmqpBus::new(&testing::amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = notification_service::build(config, pool.clone(), bus, self.shutdown.clone())
            .await
            .expect("build");
        tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            self.shutdown.clone(),
        ));
        (format!("http://{addr}"), pool)
    }

    /// Starts user-service with a bootstrap admin; returns its base URL.
    pub async fn start_user_service(&mut self, admin: (&str, &str)) -> String {
        let schema = unique("t_user_");
        self.schemas.push(schema.clone());
        let mut env = self.base_env("USER_DB_SCHEMA", &schema);
        env.extend(
            [
                ("JWT_PRIVATE_KEY", self.keys.private_pem.as_str()),
                ("USER_ARGON2_MEMORY_KIB", "1024"),
                ("USER_ARGON2_ITERATIONS", "1"),
                ("BOOTSTRAP_ADMIN_EMAIL", admin.0),
                ("BOOTSTRAP_ADMIN_PASSWORD", admin.1),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = user_service::Config::from_env(&Env::from_map(env)).expect("user config");
        let pool = db::connect(&config.db).await.expect("connect");
        db::migrate(&pool, &user_service::MIGRATOR)
            .await
            .expect("migrate");
        let bus = Arc::new(AmqpBus::new(&testing::amqp_url(), &self.prefix));
        let listener = runtime::bind(config.http.bind_addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let service = user_service::build(config, pool, bus, self.shutdown.clone())
            .await
            .expect("build");
        tokio::spawn(runtime::run(
            listener,
            service.router,
            service.workers,
            self.shutdown.clone(),
        ));
        format!("http://{addr}")
    }

    /// Declares and binds a consumer's queue before anything is published, so no event published
    /// before the consumer connects is lost (the consumer declares the same queue).
    pub async fn prebind(&mut self, sub: &Subscription) {
        let bus = AmqpBus::new(&testing::amqp_url(), &self.prefix);
        helpdesk_kit::bus::Bus::declare(&bus, sub)
            .await
            .expect("declare the consumer's queue");
        self.queues.push(sub.clone());
    }

    /// Publishes an event as its producer would.
    pub async fn publish(&self, event: &Envelope) {
        let conn = Connection::connect(&testing::amqp_url(), Default::default())
            .await
            .expect("amqp");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(Default::default())
            .await
            .expect("confirms");
        ch.basic_publish(
            format!("{}{}", self.prefix, event.exchange()).into(),
            event.event_type.as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(event).expect("json"),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
        let _ = conn.close(200, "bye".into()).await;
    }

    /// Stops the services and removes the schemas and broker objects (on success).
    pub async fn finish(self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for schema in &self.schemas {
            testing::drop_schema(schema).await;
        }
        if let Ok(conn) = Connection::connect(&testing::amqp_url(), Default::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                for sub in &self.queues {
                    let q = format!("{}{}", self.prefix, sub.queue);
                    let mut names = vec![q.clone(), format!("{q}.dlq")];
                    names.extend(
                        (1..sub.max_attempts)
                            .map(|a| format!("{q}.retry.{}ms", sub.retry_delay(a).as_millis())),
                    );
                    for name in names {
                        let _ = ch
                            .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for exchange in helpdesk_kit::events::ALL_EXCHANGES {
                    let _ = ch
                        .exchange_delete(
                            format!("{}{exchange}", self.prefix).into(),
                            Default::default(),
                        )
                        .await;
                }
            }
            let _ = conn.close(200, "bye".into()).await;
        }
    }
}

/// A JSON HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}
