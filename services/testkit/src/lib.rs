//! Helpers for integration tests against the real PostgreSQL and RabbitMQ. Every test gets its
//! own schema and its own broker prefix, so tests run in parallel. A missing component fails the
//! test with a message saying what to start; nothing passes silently.
//!
//! Beside the helpers here: [`service`] (a platform's services in-process, their broker objects),
//! [`http`] (requests and the contract's error shape), [`smtp`] (a real SMTP server in-process),
//! [`servers`] (a PostgreSQL cluster and a RabbitMQ node a test may break) and [`contract`]
//! (a service's configuration held to the platform's contract).

use std::sync::Arc;
use std::time::Duration;

use helpdesk_kit::auth::{JwtKeys, generate_key_pair};

pub mod contract;
pub mod http;
pub mod servers;
pub mod service;
pub mod smtp;

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

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
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
            helpdesk_kit::auth::DEFAULT_ISSUER,
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

        use helpdesk_kit::bus::Bus as _;
        require_rabbitmq().await;
        let bus = helpdesk_kit::bus::amqp::AmqpBus::new(&amqp_url(), prefix);
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
    pub async fn next(&mut self) -> (String, helpdesk_kit::events::Envelope) {
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
        pred: impl Fn(&helpdesk_kit::events::Envelope) -> bool,
    ) -> helpdesk_kit::events::Envelope {
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
    queue_state(channel, name).await.map(|q| q.message_count())
}

/// The broker queue `name` as the broker reports it (messages ready, consumers); `None` while it
/// does not exist. A failed look-up closes `channel`.
pub async fn queue_state(channel: &lapin::Channel, name: &str) -> Option<lapin::Queue> {
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
