//! A real SMTP server for tests, in-process: it speaks plain SMTP, STARTTLS or implicit TLS
//! (SMTPS) with a self-signed certificate it makes itself, can require AUTH PLAIN/LOGIN with one
//! account, refuses chosen recipients, can stop answering mid-session, and keeps every message it
//! accepts in memory for the test to read or wait for.
//!
//! It runs on a thread of its own (with its own Tokio runtime), so it keeps answering whatever the
//! test's runtime is doing, and it is stopped (its port closed) when dropped.
//!
//! ```no_run
//! # async fn demo() {
//! use helpdesk_testkit::smtp::SmtpSink;
//! let sink = SmtpSink::builder().starttls().auth("mailer", "secret").start();
//! // SMTP_URL = sink.url(), SMTP_TLS_CA_FILE = sink.ca_file()
//! let mails = sink.wait_for("ann@example.com", 1).await;
//! assert_eq!(mails[0].subject, "Welcome");
//! # }
//! ```

mod mime;
mod session;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// How long [`SmtpSink::wait_for`] waits before failing the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// How the sink speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkTls {
    /// Plain SMTP; STARTTLS is not offered.
    None,
    /// STARTTLS offered and required before any mail (and before AUTH).
    StartTls,
    /// SMTPS: TLS from the first byte.
    Implicit,
}

impl SinkTls {
    /// The `tls=` value of an `SMTP_URL` for this mode.
    pub fn url_mode(self) -> &'static str {
        match self {
            SinkTls::None => "none",
            SinkTls::StartTls => "starttls",
            SinkTls::Implicit => "tls",
        }
    }
}

/// A message as the sink accepted it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The envelope's recipients (`RCPT TO`), as given.
    pub to: Vec<String>,
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// The message as sent (dot-stuffing undone, CRLF line ends).
    pub raw: Vec<u8>,
    /// The header fields in order, unfolded, encoded words (RFC 2047) decoded.
    pub headers: Vec<(String, String)>,
    /// The `Subject` header, decoded (empty when absent).
    pub subject: String,
    /// The `Message-ID` header (empty when absent).
    pub message_id: String,
    /// The body, its transfer encoding (base64, quoted-printable) undone, with `\n` line ends.
    pub body: String,
}

impl Received {
    /// The first header field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether `address` is among the envelope's recipients (case-insensitive).
    pub fn is_to(&self, address: &str) -> bool {
        self.to.iter().any(|t| t.eq_ignore_ascii_case(address))
    }
}

/// What the sessions record, with a version bumped on every change (what waiters wait on).
#[derive(Default)]
struct Record {
    messages: Vec<Received>,
    rejected: usize,
    auth_failures: Vec<String>,
}

struct Shared {
    record: Mutex<Record>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut Record)) {
        f(&mut self.record.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|v| *v += 1);
    }

    fn read<T>(&self, f: impl FnOnce(&Record) -> T) -> T {
        f(&self.record.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What a session needs to know about the sink's settings.
struct Settings {
    tls: SinkTls,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    auth: Option<(String, String)>,
    reject: HashSet<String>,
    stall_after: Option<usize>,
}

/// Settings of an [`SmtpSink`]; [`SmtpSinkBuilder::start`] starts it.
#[derive(Debug, Default)]
pub struct SmtpSinkBuilder {
    port: Option<u16>,
    tls: Option<SinkTls>,
    auth: Option<(String, String)>,
    reject: Vec<String>,
    stall_after: Option<usize>,
}

impl SmtpSinkBuilder {
    /// Listens on this port of 127.0.0.1 (default: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Offers STARTTLS and requires it before AUTH and mail.
    pub fn starttls(self) -> Self {
        self.tls(SinkTls::StartTls)
    }

    /// Speaks TLS from the first byte (SMTPS).
    pub fn implicit_tls(self) -> Self {
        self.tls(SinkTls::Implicit)
    }

    pub fn tls(mut self, tls: SinkTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Requires AUTH (PLAIN or LOGIN, offered only over TLS when TLS is on) with this account
    /// before any mail; other credentials are refused with 535 and counted
    /// ([`SmtpSink::auth_failures`]).
    pub fn auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Refuses `RCPT TO` for this address with a permanent `550 5.1.1 Mailbox unavailable`,
    /// counted in [`SmtpSink::rejections`].
    pub fn reject_recipient(mut self, address: &str) -> Self {
        self.reject.push(address.to_ascii_lowercase());
        self
    }

    /// Greets, answers `commands` commands, then never answers again (but keeps the connection
    /// open): a server that hangs mid-session.
    pub fn stall_after(mut self, commands: usize) -> Self {
        self.stall_after = Some(commands);
        self
    }

    /// Starts the sink; it listens when this returns. Panics (failing the test) with the reason
    /// when it cannot, e.g. the port is taken.
    pub fn start(self) -> SmtpSink {
        let tls = self.tls.unwrap_or(SinkTls::None);
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port.unwrap_or(0)))
            .unwrap_or_else(|e| panic!("the test SMTP server cannot listen: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let (cert, acceptor) = match tls {
            SinkTls::None => (None, None),
            SinkTls::StartTls | SinkTls::Implicit => {
                let cert = TestCert::generate();
                let acceptor = cert.acceptor();
                (Some(cert), Some(acceptor))
            }
        };
        let settings = Arc::new(Settings {
            tls,
            acceptor,
            auth: self.auth,
            reject: self.reject.into_iter().collect(),
            stall_after: self.stall_after,
        });
        let shared = Arc::new(Shared {
            record: Mutex::default(),
            changed: watch::channel(0).0,
        });
        let stop = CancellationToken::new();
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("smtp-sink-{}", addr.port()))
                .spawn(move || serve(listener, settings, shared, stop))
                .expect("a thread for the test SMTP server")
        };
        SmtpSink {
            addr,
            tls,
            cert,
            shared,
            stop,
            thread: Some(thread),
        }
    }
}

fn serve(
    listener: std::net::TcpListener,
    settings: Arc<Settings>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the test SMTP server");
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::from_std(listener).expect("a Tokio listener for the sink");
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.cancelled() => return,
            };
            let Ok((socket, _)) = accepted else {
                continue;
            };
            let (settings, shared, stop) = (settings.clone(), shared.clone(), stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = session::run(socket, &settings, &shared) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    // Dropping the runtime drops the listener and every open session.
}

/// A self-signed certificate for `127.0.0.1` and `localhost`, with its key (PEM).
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestCert {
    pub fn generate() -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".into()])
                .expect("a self-signed test certificate");
        Self {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            cert_der: certified.cert.der().clone(),
            key_der: certified.signing_key.serialize_der(),
        }
    }

    /// The certificate (DER), e.g. for a client's root store.
    pub fn cert_der(&self) -> &rustls::pki_types::CertificateDer<'static> {
        &self.cert_der
    }

    /// A TLS acceptor serving this certificate, on the ring provider.
    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| {
                b.with_no_client_auth()
                    .with_single_cert(vec![self.cert_der.clone()], key)
            })
            .expect("a TLS server configuration for the test certificate");
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// A running test SMTP server on 127.0.0.1; see the module documentation.
pub struct SmtpSink {
    addr: SocketAddr,
    tls: SinkTls,
    cert: Option<TestCert>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SmtpSink {
    pub fn builder() -> SmtpSinkBuilder {
        SmtpSinkBuilder::default()
    }

    /// A plain SMTP server on a free port that accepts every message.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `smtp://127.0.0.1:PORT?tls=none|starttls|tls` (no credentials).
    pub fn url(&self) -> String {
        format!(
            "smtp://127.0.0.1:{}?tls={}",
            self.addr.port(),
            self.tls.url_mode()
        )
    }

    /// The certificate the sink serves (`None` without TLS).
    pub fn cert(&self) -> Option<&TestCert> {
        self.cert.as_ref()
    }

    /// Writes the sink's certificate (PEM) into `dir` and returns its path, for a client's CA
    /// file. Panics without TLS.
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let cert = self
            .cert
            .as_ref()
            .expect("the sink has a certificate only with TLS");
        std::fs::create_dir_all(dir).expect("a folder for the CA file");
        let path = dir.join(format!("smtp-sink-{}.pem", self.addr.port()));
        std::fs::write(&path, &cert.cert_pem).expect("the CA file");
        path
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> Vec<Received> {
        self.shared.read(|r| r.messages.clone())
    }

    /// The messages to `address` so far.
    pub fn to(&self, address: &str) -> Vec<Received> {
        self.shared.read(|r| {
            r.messages
                .iter()
                .filter(|m| m.is_to(address))
                .cloned()
                .collect()
        })
    }

    /// `RCPT TO` refusals so far ([`SmtpSinkBuilder::reject_recipient`]).
    pub fn rejections(&self) -> usize {
        self.shared.read(|r| r.rejected)
    }

    /// Refused logins so far, one entry per attempt naming its mechanism (`PLAIN`, `LOGIN`).
    pub fn auth_failures(&self) -> Vec<String> {
        self.shared.read(|r| r.auth_failures.clone())
    }

    /// Waits until `n` messages to `address` have arrived (up to [`WAIT`]) and returns them.
    pub async fn wait_for(&self, address: &str, n: usize) -> Vec<Received> {
        self.wait_until(WAIT, &format!("{n} email(s) to {address}"), |messages| {
            let to: Vec<Received> = messages
                .iter()
                .filter(|m| m.is_to(address))
                .cloned()
                .collect();
            (to.len() >= n).then_some(to)
        })
        .await
    }

    /// Waits until `check` over every message received so far returns `Some`; it is checked
    /// again on each change (a message, a refusal), never by polling. Panics after `timeout`
    /// naming `what`.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&[Received]) -> Option<T>,
    ) -> T {
        let mut changed = self.shared.changed.subscribe();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if let Some(v) = self.shared.read(|r| check(&r.messages)) {
                    return v;
                }
                if changed.changed().await.is_err() {
                    // The sender lives as long as `self`: this cannot happen while we borrow it.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        match waited {
            Ok(v) => v,
            Err(_) => {
                let got: Vec<String> = self.shared.read(|r| {
                    r.messages
                        .iter()
                        .map(|m| format!("{:?} to {:?}", m.subject, m.to))
                        .collect()
                });
                panic!("timed out after {timeout:?} waiting for {what}; the SMTP sink has {got:?}")
            }
        }
    }

    /// Stops the server: the port is closed and open sessions are dropped when this returns.
    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
    }
}
