//! Helpers for integration tests against the real PostgreSQL and RabbitMQ. Every test gets its
//! own schema and its own broker prefix, so tests run in parallel. A missing component fails the
//! test with a message saying what to start; nothing passes silently.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{JwtKeys, generate_key_pair};

pub mod servers;

/// `TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A short unique lowercase name with the given prefix, e.g. `t3f9a1c2d`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Panics with a clear message when PostgreSQL is not reachable.
pub async fn require_postgres() {
    use sqlx::Connection;
    let url = database_url();
    match tokio::time::timeout(Duration::from_secs(5), sqlx::PgConnection::connect(&url)).await {
        Ok(Ok(c)) => {
            let _ = c.close().await;
        }
        _ => panic!(
            "PostgreSQL is required for this test but is not reachable at {url} (start it, or set TEST_DATABASE_URL)"
        ),
    }
}

/// Panics with a clear message when RabbitMQ is not reachable.
pub async fn require_rabbitmq() {
    let url = amqp_url();
    let ok = tokio::time::timeout(
        Duration::from_secs(5),
        lapin::Connection::connect(&url, Default::default()),
    )
    .await;
    match ok {
        Ok(Ok(c)) => {
            let _ = c.close(200, "bye".into()).await;
        }
        _ => panic!(
            "RabbitMQ is required for this test but is not reachable at {url} (start it, or set TEST_AMQP_URL)"
        ),
    }
}

/// Drops a test schema (best effort).
pub async fn drop_schema(schema: &str) {
    use sqlx::Connection;
    if let Ok(mut c) = sqlx::PgConnection::connect(&database_url()).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&mut c)
        .await;
        let _ = c.close().await;
    }
}

/// A fresh signing key pair for a test platform.
pub struct TestKeys {
    pub private_pem: String,
    pub public_pem: String,
    pub keys: Arc<JwtKeys>,
}

impl TestKeys {
    pub fn generate() -> Self {
        let (private_pem, public_pem) = generate_key_pair();
        let keys = JwtKeys::from_pem(
            &public_pem,
            Some(&private_pem),
            crate::auth::DEFAULT_ISSUER,
            Duration::from_secs(3600),
        )
        .expect("generated keys are valid");
        Self {
            private_pem,
            public_pem,
            keys: Arc::new(keys),
        }
    }

    /// A service credential for `service`.
    pub fn service_token(&self, service: &str) -> String {
        self.keys
            .issue_service_token(service, Duration::from_secs(3600))
            .expect("test keys can sign")
    }
}

/// Waits until `check` returns `Some`, polling every 20 ms, up to `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a service published: a private queue bound to every event of one exchange under a bus
/// prefix, read in order. The queue goes away with the tap.
pub struct EventTap {
    consumer: lapin::Consumer,
    _conn: lapin::Connection,
}

impl EventTap {
    /// Binds before anything is published, so nothing is missed.
    pub async fn start(prefix: &str, exchange: &str) -> Self {
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;

        use crate::bus::Bus as _;
        require_rabbitmq().await;
        let bus = crate::bus::amqp::AmqpBus::new(&amqp_url(), prefix);
        assert!(
            bus.healthy().await,
            "cannot declare the exchanges on RabbitMQ"
        );
        let conn = lapin::Connection::connect(&amqp_url(), Default::default())
            .await
            .expect("RabbitMQ connection for the event tap");
        let ch = conn.create_channel().await.expect("channel");
        let queue = unique(&format!("{prefix}tap-"));
        ch.queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("tap queue");
        ch.queue_bind(
            queue.as_str().into(),
            bus.name(exchange).into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("tap binding");
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "tap".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("tap consumer");
        Self {
            consumer,
            _conn: conn,
        }
    }

    /// The next event as (routing key, envelope); panics when none arrives within 10 s.
    pub async fn next(&mut self) -> (String, crate::events::Envelope) {
        use futures_util::StreamExt;
        let d = tokio::time::timeout(Duration::from_secs(10), self.consumer.next())
            .await
            .expect("an event should have been published within 10 s")
            .expect("the event tap closed")
            .expect("the event tap failed");
        let envelope = serde_json::from_slice(&d.data).unwrap_or_else(|e| {
            panic!(
                "not an event envelope ({e}): {}",
                String::from_utf8_lossy(&d.data)
            )
        });
        (d.routing_key.to_string(), envelope)
    }

    /// Skips events until one of `event_type` matches `pred`.
    pub async fn next_where(
        &mut self,
        event_type: &str,
        pred: impl Fn(&crate::events::Envelope) -> bool,
    ) -> crate::events::Envelope {
        loop {
            let (key, envelope) = self.next().await;
            if key == event_type && pred(&envelope) {
                return envelope;
            }
        }
    }

    /// Panics when another event arrives within `grace`.
    pub async fn assert_quiet(&mut self, grace: Duration) {
        use futures_util::StreamExt;
        if let Ok(Some(Ok(d))) = tokio::time::timeout(grace, self.consumer.next()).await {
            panic!(
                "unexpected event {}: {}",
                d.routing_key,
                String::from_utf8_lossy(&d.data)
            );
        }
    }
}

/// Serves `router` on a free loopback port for the rest of the test; returns its address.
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// Messages ready in the broker queue `name`; `None` while the queue does not exist.
pub async fn queue_len(channel: &lapin::Channel, name: &str) -> Option<u32> {
    use lapin::options::QueueDeclareOptions;
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .ok()
        .map(|q| q.message_count())
}

/// A TCP proxy that can be cut and restored: a database, broker or peer going down and coming
/// back. Cutting it ([`Proxy::set`] with `None`) accepts and at once closes new connections and
/// drops live ones; [`Proxy::refused`] counts the connections it closed, so a test can wait until
/// a client has really tried during an outage. [`Proxy::stop`] is a stopped server instead: the
/// port is closed, so connecting is refused (and live connections are dropped).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    state: tokio::sync::watch::Sender<ProxyState>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ProxyState {
    Forward(std::net::SocketAddr),
    Cut,
    Stopped,
}

impl Proxy {
    pub async fn start(upstream: Option<std::net::SocketAddr>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::watch::channel(match upstream {
            Some(a) => ProxyState::Forward(a),
            None => ProxyState::Cut,
        });
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        tokio::spawn(Self::run(Some(listener), addr, rx, refused.clone()));
        Self {
            addr,
            state: tx,
            refused,
        }
    }

    async fn run(
        mut listener: Option<tokio::net::TcpListener>,
        addr: std::net::SocketAddr,
        mut rx: tokio::sync::watch::Receiver<ProxyState>,
        counter: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use tokio::io::AsyncWriteExt;
        loop {
            let state = *rx.borrow_and_update();
            match (state, &listener) {
                (ProxyState::Stopped, Some(_)) => listener = None,
                (ProxyState::Stopped, None) => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
                (_, None) => match tokio::net::TcpListener::bind(addr).await {
                    Ok(l) => listener = Some(l),
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                },
                (_, Some(l)) => {
                    let accepted = tokio::select! {
                        accepted = l.accept() => accepted,
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            continue;
                        }
                    };
                    let Ok((mut client, _)) = accepted else {
                        return;
                    };
                    let mut conn_rx = rx.clone();
                    let counter = counter.clone();
                    tokio::spawn(async move {
                        let ProxyState::Forward(target) = state else {
                            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = client.shutdown().await;
                            return;
                        };
                        let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            // Cutting or stopping the proxy drops live connections too.
                            _ = conn_rx.changed() => {}
                        }
                    });
                }
            }
        }
    }

    /// Routes to `upstream`, or refuses everything (and drops live connections) with `None`.
    pub fn set(&self, upstream: Option<std::net::SocketAddr>) {
        let _ = self.state.send(match upstream {
            Some(a) => ProxyState::Forward(a),
            None => ProxyState::Cut,
        });
    }

    /// Closes the port, as a stopped server does: connecting is refused (live connections are
    /// dropped) until the next [`Proxy::set`] opens it again.
    pub fn stop(&self) {
        let _ = self.state.send(ProxyState::Stopped);
    }

    /// Connections refused while cut.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The address of the test PostgreSQL server (from [`database_url`]).
pub fn postgres_addr() -> std::net::SocketAddr {
    let url = database_url();
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
    let host_port = rest
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(rest)
        .split('/')
        .next()
        .unwrap_or("127.0.0.1:5432");
    use std::net::ToSocketAddrs;
    let with_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .expect("TEST_DATABASE_URL names a reachable host:port")
}

/// `database_url()` with its host and port replaced by `addr` (e.g. a [`Proxy`]).
pub fn database_url_via(addr: std::net::SocketAddr) -> String {
    let url = database_url();
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
    let (user, host_and_path) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let path = host_and_path
        .split_once('/')
        .map(|(_, p)| format!("/{p}"))
        .unwrap_or_default();
    format!("{scheme}://{user}{addr}{path}")
}

/// Holds a service's configuration loading to the platform's contract
/// ([`helpdesk_contract::Service::requires`]): the operator renders the contract's variables, so a
/// service that reads another name, or needs one more, fails these checks.
pub mod contract {
    use std::path::PathBuf;

    use helpdesk_contract::{Command, Requirement, var};

    use super::{TestKeys, amqp_url, database_url, unique};
    use crate::config::{ConfigError, Env};
    use crate::runtime::{Loaded, ServiceDef, load};

    /// A dummy but valid value for a variable the contract may require (`None`: no value known,
    /// add one here).
    pub fn valid_value(name: &str, keys: &TestKeys) -> Option<String> {
        Some(match name {
            var::JWT_PUBLIC_KEY => keys.public_pem.clone(),
            var::JWT_PRIVATE_KEY => keys.private_pem.clone(),
            var::SERVICE_TOKEN => keys.service_token("test-service"),
            var::AMQP_URL => amqp_url(),
            n if n == var::DATABASE_URL || n.ends_with(&format!("_{}", var::DATABASE_URL)) => {
                database_url()
            }
            n if n.ends_with("_SERVICE_URL") => "http://127.0.0.1:9".into(),
            _ => return None,
        })
    }

    /// Values for `requirements`: each requirement by its own variable, or (`alternatives`) by
    /// its first alternative, a `_FILE` one pointing at a file written into `dir`.
    fn values(
        requirements: &[Requirement],
        keys: &TestKeys,
        alternatives: bool,
        dir: &std::path::Path,
    ) -> Vec<(String, String)> {
        requirements
            .iter()
            .map(|r| {
                let value = |name: &str| {
                    valid_value(name, keys).unwrap_or_else(|| {
                        panic!("no test value for {name}: add one to valid_value")
                    })
                };
                match r.alternatives.first() {
                    Some(alt) if alternatives => {
                        if alt.strip_suffix(var::FILE_SUFFIX) == Some(r.var) {
                            let path = dir.join(alt);
                            std::fs::write(&path, value(r.var)).expect("temp file");
                            (alt.to_string(), path.to_string_lossy().into_owned())
                        } else {
                            (alt.to_string(), value(alt))
                        }
                    }
                    _ => (r.var.to_string(), value(r.var)),
                }
            })
            .collect()
    }

    fn outcome<D: ServiceDef>(command: Command, env: &Env) -> Result<(), ConfigError> {
        match load::<D>(command, env)? {
            Loaded::Serve(_) if command == Command::Serve => Ok(()),
            Loaded::Migrate(_) if command == Command::Migrate => Ok(()),
            _ => panic!(
                "{}: load({command}) returned another command's config",
                D::NAME
            ),
        }
    }

    struct TempDir(PathBuf);
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// For `serve` and `migrate`: the service's loader (what its binary runs) accepts exactly the
    /// variables the contract requires, given directly or by their alternatives (`_FILE` variants
    /// as the operator mounts them, `<PREFIX>_DATABASE_URL`), and refuses each one missing with an
    /// error naming it.
    pub fn assert_loader_follows_the_contract<D: ServiceDef>() {
        let keys = TestKeys::generate();
        let dir = TempDir(std::env::temp_dir().join(unique("contract-")));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        for command in Command::ALL {
            let required = D::SERVICE.requires(command);
            for alternatives in [false, true] {
                let vars = values(required, &keys, alternatives, &dir.0);
                if let Err(e) = outcome::<D>(command, &Env::from_map(vars.clone())) {
                    panic!(
                        "{} {command} refuses exactly the contract's variables {:?}: {e}",
                        D::NAME,
                        vars.iter().map(|(k, _)| k).collect::<Vec<_>>()
                    );
                }
            }
            for (i, missing) in required.iter().enumerate() {
                let mut rest = required.to_vec();
                rest.remove(i);
                let env = Env::from_map(values(&rest, &keys, false, &dir.0));
                match outcome::<D>(command, &env) {
                    Ok(()) => panic!(
                        "{} {command} runs without {missing}, which the contract requires",
                        D::NAME
                    ),
                    Err(e) => assert_eq!(
                        e.var,
                        missing.var,
                        "{} {command} without {missing} must name it, said: {e}",
                        D::NAME
                    ),
                }
            }
        }
        // `migrate` reads nothing but the database: a serve-only variable, broken, is ignored.
        let migrate = values(D::SERVICE.requires(Command::Migrate), &keys, false, &dir.0);
        let mut broken = migrate.clone();
        broken.push((var::JWT_PUBLIC_KEY.into(), "not a key".into()));
        broken.push((var::BIND_ADDR.into(), "not an address".into()));
        if let Err(e) = outcome::<D>(Command::Migrate, &Env::from_map(broken)) {
            panic!("{} migrate reads more than the database: {e}", D::NAME);
        }
    }

    /// Runs the service's binary as the operator's migration Job does (an empty environment but
    /// `RUST_LOG` and `DATABASE_URL`): `migrate` succeeds against a fresh database, twice
    /// (idempotent), and creates the service's schema; `serve` with the same environment exits 2
    /// naming a variable the contract requires for serving. The database is dropped afterwards.
    pub async fn assert_binary_follows_the_contract<D: ServiceDef>(binary: &str) {
        use sqlx::Connection;
        super::require_postgres().await;
        let db = unique("migrate_");
        let mut admin = sqlx::PgConnection::connect(&database_url())
            .await
            .expect("test database");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
            .execute(&mut admin)
            .await
            .expect("create a database");
        let mut url = reqwest::Url::parse(&database_url()).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&format!("/{db}"));
        let run = |command: Command| {
            tokio::process::Command::new(binary)
                .arg(command.as_str())
                .env_clear()
                .env(var::RUST_LOG, "warn")
                .env(var::DATABASE_URL, url.as_str())
                .kill_on_drop(true)
                .output()
        };
        let mut outputs = Vec::new();
        for _ in 0..2 {
            outputs.push(
                run(Command::Migrate)
                    .await
                    .expect("the service binary runs"),
            );
        }
        let serve = tokio::time::timeout(std::time::Duration::from_secs(30), run(Command::Serve))
            .await
            .expect("serve without its configuration exits at once")
            .expect("the service binary runs");
        let schema_exists = async {
            let mut c = sqlx::PgConnection::connect(url.as_str()).await.ok()?;
            let found = sqlx::query_scalar!(
                r#"SELECT count(*) AS "count!" FROM pg_tables WHERE schemaname = $1 AND tablename = 'outbox'"#,
                D::SERVICE.schema(),
            )
            .fetch_one(&mut c)
            .await
            .ok();
            let _ = c.close().await;
            found
        }
        .await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
        for out in outputs {
            assert!(
                out.status.success(),
                "{} migrate with only DATABASE_URL exited {:?}: {}",
                D::NAME,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(
            schema_exists,
            Some(1),
            "{} migrate created its schema {}",
            D::NAME,
            D::SERVICE.schema()
        );
        let stderr = String::from_utf8_lossy(&serve.stderr);
        let missing = D::SERVICE.missing(Command::Serve, |v| v == var::DATABASE_URL);
        assert_eq!(
            serve.status.code(),
            Some(2),
            "{} serve without its configuration: {stderr}",
            D::NAME
        );
        assert!(
            missing.iter().any(|r| stderr.contains(r.var)),
            "{} serve names a missing variable of {missing:?}: {stderr}",
            D::NAME
        );
    }
}
