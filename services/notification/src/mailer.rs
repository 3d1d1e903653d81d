//! Where mail goes: the [`Mailer`] trait, its SMTP implementation (lettre), a file mailer that
//! writes `.eml` files (local runs without an SMTP server), and no delivery at all when neither
//! is configured (a platform without SMTP is valid: emails are recorded and marked failed).
//!
//! SMTP settings come from `SMTP_URL` (`smtp://user:pass@host:port?tls=none|starttls|tls`,
//! `smtps://...` meaning implicit TLS), or from `SMTP_HOST`, `SMTP_PORT`, `SMTP_TLS`,
//! `SMTP_USERNAME`, `SMTP_PASSWORD(_FILE)`. `SMTP_TLS_CA_FILE` adds a trusted root certificate
//! (a private relay's CA); `SMTP_TIMEOUT` bounds each SMTP exchange.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::contract::var;

/// An email ready to go out.
#[derive(Debug, Clone)]
pub struct OutgoingMail {
    pub id: uuid::Uuid,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
}

/// A failed send. `message` is the server's answer (or the local reason) and is what the email's
/// `lastError` shows. `retryable` is false when trying again cannot help (an address that does not
/// parse).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    pub message: String,
    pub retryable: bool,
}

impl MailError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Sends one email.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError>;
    /// Where mail goes, for logs (never includes credentials).
    fn describe(&self) -> String;
    /// Why this mailer cannot deliver anything, when it cannot: the sender then fails emails
    /// without attempting them.
    fn undeliverable(&self) -> Option<&str> {
        None
    }
}

fn build_message(mail: &OutgoingMail) -> Result<Message, MailError> {
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| MailError::fatal(format!("invalid from address: {e}")))?;
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| MailError::fatal(format!("invalid recipient address: {e}")))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}@helpdesk>", mail.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| MailError::fatal(format!("cannot build the message: {e}")))
}

/// TLS mode of the SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain text (a trusted local relay).
    None,
    /// Plain connection upgraded with STARTTLS (required, no fallback).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

impl TlsMode {
    fn parse(var: &str, v: &str) -> Result<Self, ConfigError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "plain" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" | "implicit" | "smtps" | "wrapper" => Ok(Self::Implicit),
            other => Err(ConfigError::new(
                var,
                format!("TLS mode must be none, starttls or tls, got {other:?}"),
            )),
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::StartTls => 587,
            Self::Implicit => 465,
        }
    }
}

/// How to reach the SMTP server.
#[derive(Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: TlsMode,
    pub credentials: Option<(String, String)>,
    pub ca_pem: Option<String>,
    pub timeout: Duration,
    pub pool_size: u32,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|c| &c.0))
            .finish()
    }
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SmtpSettings {
    /// From `SMTP_URL`, or else from `SMTP_HOST` and friends; `None` when neither is set.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let timeout = env.duration_or(var::SMTP_TIMEOUT, Duration::from_secs(15))?;
        let pool_size: u32 = env.parse_or(var::SMTP_POOL_SIZE, 10)?;
        let ca_pem = match env.raw(var::SMTP_TLS_CA_FILE) {
            None => None,
            Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(var::SMTP_TLS_CA_FILE, format!("cannot read {path:?}: {e}"))
            })?),
        };
        if let Some(url) = env.value_or_file(var::SMTP_URL)? {
            let mut s = Self::parse_url(url.trim())?;
            s.timeout = timeout;
            s.pool_size = pool_size;
            s.ca_pem = ca_pem;
            return Ok(Some(s));
        }
        let Some(host) = env.raw(var::SMTP_HOST) else {
            return Ok(None);
        };
        let tls = match env.raw(var::SMTP_TLS) {
            Some(v) => TlsMode::parse(var::SMTP_TLS, &v)?,
            None => TlsMode::None,
        };
        let port = env.parse_or(var::SMTP_PORT, tls.default_port())?;
        let credentials = match (
            env.raw(var::SMTP_USERNAME),
            env.value_or_file(var::SMTP_PASSWORD)?,
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (Some(u), None) => Some((u, String::new())),
            (None, _) => None,
        };
        Ok(Some(Self {
            host,
            port,
            tls,
            credentials,
            ca_pem,
            timeout,
            pool_size,
        }))
    }

    /// Parses `smtp://user:pass@host:port?tls=none|starttls|tls` (or `smtps://`).
    pub fn parse_url(text: &str) -> Result<Self, ConfigError> {
        let bad = |problem: String| ConfigError::new(var::SMTP_URL, problem);
        let url = reqwest::Url::parse(text)
            .map_err(|e| bad(format!("is not a URL like smtp://user:pass@host:port: {e}")))?;
        let mut tls = match url.scheme() {
            "smtp" => TlsMode::None,
            "smtps" => TlsMode::Implicit,
            other => return Err(bad(format!("scheme must be smtp or smtps, got {other:?}"))),
        };
        for (k, v) in url.query_pairs() {
            if k == "tls" {
                tls = TlsMode::parse(var::SMTP_URL, &v)?;
            }
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let credentials = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                url.password().map(percent_decode).unwrap_or_default(),
            )
        });
        Ok(Self {
            host,
            port: url.port().unwrap_or(tls.default_port()),
            tls,
            credentials,
            ca_pem: None,
            timeout: Duration::from_secs(15),
            pool_size: 10,
        })
    }
}

/// Sends over SMTP with a pooled lettre transport.
///
/// lettre's async timeout only bounds connecting: a server that stops answering in the middle of
/// a session (after STARTTLS, during AUTH or DATA) would hold a send, and the sender, forever. So
/// a whole send gets [`SEND_DEADLINE_FACTOR`] × `SMTP_TIMEOUT`; after a stall the pool is
/// replaced, because the stalled connection is out of step with the server and must not be reused.
pub struct SmtpMailer {
    settings: SmtpSettings,
    transport: std::sync::RwLock<AsyncSmtpTransport<Tokio1Executor>>,
    describe: String,
}

/// A whole send (connect, TLS, AUTH, MAIL, RCPT, DATA) may take this many `SMTP_TIMEOUT`s.
pub const SEND_DEADLINE_FACTOR: u32 = 2;

fn smtp_transport(s: &SmtpSettings) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_parameters = || -> anyhow::Result<TlsParameters> {
        let mut b = TlsParameters::builder(s.host.clone());
        if let Some(pem) = &s.ca_pem {
            b = b.add_root_certificate(Certificate::from_pem(pem.as_bytes())?);
        }
        Ok(b.build_rustls()?)
    };
    let tls = match s.tls {
        TlsMode::None => Tls::None,
        TlsMode::StartTls => Tls::Required(tls_parameters()?),
        TlsMode::Implicit => Tls::Wrapper(tls_parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
        .port(s.port)
        .tls(tls)
        .timeout(Some(s.timeout))
        .pool_config(PoolConfig::new().max_size(s.pool_size.max(1)));
    if let Some((user, pass)) = &s.credentials {
        builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
    }
    Ok(builder.build())
}

impl SmtpMailer {
    pub fn new(s: &SmtpSettings) -> anyhow::Result<Self> {
        Ok(Self {
            transport: std::sync::RwLock::new(smtp_transport(s)?),
            settings: s.clone(),
            describe: format!("smtp {}:{} ({:?})", s.host, s.port, s.tls),
        })
    }

    fn current(&self) -> AsyncSmtpTransport<Tokio1Executor> {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops every pooled connection (the old pool aborts them) and starts a new pool.
    fn reset(&self) {
        match smtp_transport(&self.settings) {
            Ok(fresh) => *self.transport.write().unwrap_or_else(|e| e.into_inner()) = fresh,
            Err(e) => tracing::warn!(error = %e, "cannot rebuild the SMTP transport"),
        }
    }
}

/// The error text with its causes, e.g. `permanent error (550): mailbox unavailable`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let message = build_message(mail)?;
        let deadline = self.settings.timeout * SEND_DEADLINE_FACTOR;
        match tokio::time::timeout(deadline, self.current().send(message)).await {
            Ok(sent) => sent
                .map(|_| ())
                .map_err(|e| MailError::retryable(chain(&e))),
            Err(_) => {
                self.reset();
                Err(MailError::retryable(format!(
                    "the SMTP server did not finish the exchange within {} s",
                    deadline.as_secs_f64()
                )))
            }
        }
    }
    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// Writes each email as `<dir>/<created>-<id>.eml` (local runs).
///
/// Mail carries live secrets (reset links), so the folder is `0700` (tightened when it already
/// exists with looser modes) and each file `0600`: only the account running the platform reads it.
pub struct FileMailer {
    dir: PathBuf,
}

/// Mode of the mail folder.
pub const MAIL_DIR_MODE: u32 = 0o700;
/// Mode of each mail file.
pub const MAIL_FILE_MODE: u32 = 0o600;

impl FileMailer {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let cannot =
            |e: std::io::Error| anyhow::anyhow!("cannot create mail folder {}: {e}", dir.display());
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(MAIL_DIR_MODE)
            .create(&dir)
            .map_err(cannot)?;
        // `mode` only applies to folders it creates: an existing one is tightened here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(MAIL_DIR_MODE))
            .map_err(cannot)?;
        Ok(Self { dir })
    }
}

/// Writes `bytes` to a new file readable by its owner only.
async fn write_private(path: PathBuf, bytes: Vec<u8>) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(MAIL_FILE_MODE)
            .open(path)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })
    .await
    .map_err(std::io::Error::other)?
}

#[async_trait]
impl Mailer for FileMailer {
    async fn send(&self, mail: &OutgoingMail) -> Result<(), MailError> {
        let message = build_message(mail)?;
        let name = format!(
            "{}-{}.eml",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
            mail.id
        );
        let tmp = self.dir.join(format!(".{name}.tmp"));
        // Write then rename, so a reader never sees half a message.
        write_private(tmp.clone(), message.formatted())
            .await
            .map_err(|e| MailError::retryable(format!("cannot write mail file: {e}")))?;
        tokio::fs::rename(&tmp, self.dir.join(&name))
            .await
            .map_err(|e| MailError::retryable(format!("cannot write mail file: {e}")))
    }
    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}

/// Why an email is not sent when no transport is configured (its `lastError`).
pub const DELIVERY_NOT_CONFIGURED: &str =
    "mail delivery is not configured (no SMTP_URL or SMTP_HOST)";

/// No delivery: every email fails at once with [`DELIVERY_NOT_CONFIGURED`], without an attempt,
/// so its status says what happened instead of staying `PENDING` for ever.
pub struct DisabledMailer;

#[async_trait]
impl Mailer for DisabledMailer {
    async fn send(&self, _mail: &OutgoingMail) -> Result<(), MailError> {
        Err(MailError::fatal(DELIVERY_NOT_CONFIGURED))
    }
    fn describe(&self) -> String {
        "nowhere (delivery is not configured)".into()
    }
    fn undeliverable(&self) -> Option<&str> {
        Some(DELIVERY_NOT_CONFIGURED)
    }
}

/// The configured transport.
#[derive(Debug, Clone)]
pub enum MailTransport {
    Smtp(SmtpSettings),
    Files(PathBuf),
    /// Neither SMTP nor a mail folder: emails are recorded and marked failed.
    Disabled,
}

impl MailTransport {
    /// `NOTIFICATION_MAIL_DIR` (write files) wins; then SMTP settings; without either, delivery
    /// is disabled.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        if let Some(dir) = env.raw(var::NOTIFICATION_MAIL_DIR) {
            return Ok(Self::Files(PathBuf::from(dir)));
        }
        Ok(SmtpSettings::from_env(env)?.map_or(Self::Disabled, Self::Smtp))
    }

    pub fn mailer(&self) -> anyhow::Result<std::sync::Arc<dyn Mailer>> {
        Ok(match self {
            Self::Smtp(s) => std::sync::Arc::new(SmtpMailer::new(s)?),
            Self::Files(dir) => std::sync::Arc::new(FileMailer::new(dir.clone())?),
            Self::Disabled => std::sync::Arc::new(DisabledMailer),
        })
    }
}

#[cfg(test)]
mod tests;
