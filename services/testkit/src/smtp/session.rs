//! One SMTP session (RFC 5321 as far as a mail client uses it): EHLO/HELO, STARTTLS, AUTH PLAIN
//! and LOGIN (RFC 4954), MAIL, RCPT, DATA, RSET, NOOP, QUIT.

use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Received, Settings, Shared, SinkTls, mime};

/// The longest command line accepted (RFC 5321 allows 512 octets; AUTH lines may be longer).
const MAX_LINE: usize = 4096;
/// The largest message accepted.
const MAX_MESSAGE: usize = 10 * 1024 * 1024;
const HOST: &str = "sink.test";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The connection with its read buffer (lines are read by hand so that nothing read ahead is
/// lost, and STARTTLS can take the stream over).
struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
}

impl Conn {
    /// The next line without its CRLF; `None` at end of stream.
    async fn line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if self.buf.len() > max {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            let mut chunk = [0u8; 8192];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        self.io.write_all(text.as_bytes()).await?;
        self.io.write_all(b"\r\n").await?;
        self.io.flush().await
    }

    async fn upgrade(self, acceptor: &tokio_rustls::TlsAcceptor) -> io::Result<Conn> {
        if !self.buf.is_empty() {
            // Commands pipelined after STARTTLS would be read in the clear (RFC 3207 §4.2).
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data sent before the TLS handshake",
            ));
        }
        let tls = acceptor.accept(self.io).await?;
        Ok(Conn {
            io: Box::new(tls),
            buf: Vec::new(),
        })
    }
}

/// Where a session is.
#[derive(Default)]
struct State {
    greeted: bool,
    secure: bool,
    authenticated: bool,
    from: Option<String>,
    to: Vec<String>,
}

impl State {
    fn reset_envelope(&mut self) {
        self.from = None;
        self.to.clear();
    }
}

pub(super) async fn run(socket: TcpStream, settings: &Settings, shared: &Shared) {
    let _ = session(socket, settings, shared).await;
}

async fn session(socket: TcpStream, settings: &Settings, shared: &Shared) -> io::Result<()> {
    let mut conn = Conn {
        io: Box::new(socket),
        buf: Vec::new(),
    };
    let mut state = State::default();
    if settings.tls == SinkTls::Implicit {
        let acceptor = settings.acceptor.as_ref().expect("TLS has an acceptor");
        conn = conn.upgrade(acceptor).await?;
        state.secure = true;
    }
    conn.reply(&format!("220 {HOST} ESMTP helpdesk-kit test sink"))
        .await?;
    let mut answered = 0usize;
    loop {
        let Some(line) = conn.line(MAX_LINE).await? else {
            return Ok(());
        };
        if settings.stall_after.is_some_and(|n| answered >= n) {
            // Hangs: reads on, answers nothing.
            continue;
        }
        answered += 1;
        let line = String::from_utf8_lossy(&line).into_owned();
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" | "HELO" => {
                state.greeted = true;
                state.reset_envelope();
                if verb == "HELO" {
                    conn.reply(&format!("250 {HOST}")).await?;
                    continue;
                }
                let mut lines = vec![HOST.to_string(), "8BITMIME".into(), "SMTPUTF8".into()];
                lines.push(format!("SIZE {MAX_MESSAGE}"));
                if settings.tls == SinkTls::StartTls && !state.secure {
                    lines.push("STARTTLS".into());
                }
                if offers_auth(settings, &state) {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                let last = lines.len() - 1;
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    conn.reply(&format!("250{sep}{l}")).await?;
                }
            }
            "STARTTLS" => {
                if settings.tls != SinkTls::StartTls || state.secure {
                    conn.reply("503 5.5.1 STARTTLS not available").await?;
                    continue;
                }
                conn.reply("220 2.0.0 Ready to start TLS").await?;
                let acceptor = settings.acceptor.as_ref().expect("TLS has an acceptor");
                conn = conn.upgrade(acceptor).await?;
                // RFC 3207: the client starts over with EHLO.
                state = State {
                    secure: true,
                    ..State::default()
                };
            }
            "AUTH" => auth(&mut conn, &mut state, settings, shared, &arg).await?,
            "MAIL" => {
                if let Some(refusal) = refuse_mail(settings, &state) {
                    conn.reply(refusal).await?;
                } else if state.from.is_some() {
                    conn.reply("503 5.5.1 Error: nested MAIL command").await?;
                } else if let Some(from) = path_arg(&arg, "FROM:") {
                    state.from = Some(from);
                    conn.reply("250 2.1.0 OK").await?;
                } else {
                    conn.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                if state.from.is_none() {
                    conn.reply("503 5.5.1 Error: need MAIL command").await?;
                } else if let Some(to) = path_arg(&arg, "TO:").filter(|t| !t.is_empty()) {
                    if settings.reject.contains(&to.to_ascii_lowercase()) {
                        shared.update(|r| r.rejected += 1);
                        conn.reply(&format!("550 5.1.1 Mailbox unavailable: {to}"))
                            .await?;
                    } else {
                        state.to.push(to);
                        conn.reply("250 2.1.5 OK").await?;
                    }
                } else {
                    conn.reply("501 5.5.4 Syntax: RCPT TO:<address>").await?;
                }
            }
            "DATA" => {
                if state.to.is_empty() {
                    conn.reply("503 5.5.1 Error: need RCPT command").await?;
                    continue;
                }
                conn.reply("354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(raw) = data(&mut conn).await? else {
                    conn.reply("552 5.3.4 Message too big").await?;
                    state.reset_envelope();
                    continue;
                };
                let (headers, body) = mime::parse(&raw);
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let message = Received {
                    to: std::mem::take(&mut state.to),
                    from: state.from.take().unwrap_or_default(),
                    subject: header("Subject"),
                    message_id: header("Message-ID"),
                    headers,
                    body,
                    raw,
                };
                shared.update(|r| r.messages.push(message));
                conn.reply("250 2.0.0 Message accepted for delivery")
                    .await?;
            }
            "RSET" => {
                state.reset_envelope();
                conn.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => conn.reply("250 2.0.0 OK").await?,
            "VRFY" => conn.reply("252 2.0.0 Cannot VRFY user").await?,
            "QUIT" => {
                conn.reply("221 2.0.0 Bye").await?;
                return Ok(());
            }
            _ => conn.reply("500 5.5.2 Command not recognized").await?,
        }
    }
}

/// AUTH is offered once greeted, when an account is configured, and over TLS when TLS is on.
fn offers_auth(settings: &Settings, state: &State) -> bool {
    settings.auth.is_some() && (state.secure || settings.tls == SinkTls::None)
}

/// Why MAIL is refused in this state, if it is.
fn refuse_mail(settings: &Settings, state: &State) -> Option<&'static str> {
    if !state.greeted {
        Some("503 5.5.1 Error: send HELO first")
    } else if settings.tls == SinkTls::StartTls && !state.secure {
        Some("530 5.7.0 Must issue a STARTTLS command first")
    } else if settings.auth.is_some() && !state.authenticated {
        Some("530 5.7.0 Authentication required")
    } else {
        None
    }
}

/// `FROM:<a@b> SIZE=1` → `a@b`.
fn path_arg(arg: &str, keyword: &str) -> Option<String> {
    let rest = arg.get(..keyword.len())?;
    if !rest.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some(rest[..end].to_string())
}

/// The message up to the lone dot, dot-stuffing undone; `None` when too big (read to its end).
async fn data(conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut too_big = false;
    loop {
        let Some(line) = conn.line(MAX_MESSAGE).await? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        if line == b"." {
            return Ok((!too_big).then_some(raw));
        }
        let line = line.strip_prefix(b".").unwrap_or(&line);
        if raw.len() + line.len() > MAX_MESSAGE {
            too_big = true;
            raw.clear();
        }
        if !too_big {
            raw.extend_from_slice(line);
            raw.extend_from_slice(b"\r\n");
        }
    }
}

async fn auth(
    conn: &mut Conn,
    state: &mut State,
    settings: &Settings,
    shared: &Shared,
    arg: &str,
) -> io::Result<()> {
    let Some((user, password)) = &settings.auth else {
        return conn.reply("502 5.5.1 AUTH not supported").await;
    };
    if !state.greeted {
        return conn.reply("503 5.5.1 Error: send EHLO first").await;
    }
    if !offers_auth(settings, state) {
        return conn
            .reply("538 5.7.11 Encryption required for requested authentication mechanism")
            .await;
    }
    if state.authenticated {
        return conn.reply("503 5.5.1 Already authenticated").await;
    }
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
        None => (arg.trim().to_ascii_uppercase(), None),
    };
    let given = match mechanism.as_str() {
        "PLAIN" => {
            let response = match initial {
                Some(i) if i != "=" => Some(i),
                Some(_) => Some(String::new()),
                None => challenge(conn, "").await?,
            };
            let Some(response) = response else {
                return conn.reply("501 5.7.0 Authentication cancelled").await;
            };
            B64.decode(response.as_bytes()).ok().and_then(|bytes| {
                // authzid NUL authcid NUL password
                let mut parts = bytes.split(|&b| b == 0);
                let (_, authcid, password) = (parts.next()?, parts.next()?, parts.next()?);
                Some((authcid.to_vec(), password.to_vec()))
            })
        }
        "LOGIN" => {
            let login = match initial {
                Some(i) => Some(i),
                None => challenge(conn, "VXNlcm5hbWU6").await?,
            };
            let Some(login) = login else {
                return conn.reply("501 5.7.0 Authentication cancelled").await;
            };
            let Some(password) = challenge(conn, "UGFzc3dvcmQ6").await? else {
                return conn.reply("501 5.7.0 Authentication cancelled").await;
            };
            match (
                B64.decode(login.as_bytes()),
                B64.decode(password.as_bytes()),
            ) {
                (Ok(l), Ok(p)) => Some((l, p)),
                _ => None,
            }
        }
        _ => {
            return conn
                .reply("504 5.5.4 Unrecognized authentication type")
                .await;
        }
    };
    let Some((given_user, given_password)) = given else {
        return conn.reply("501 5.5.2 Cannot decode the response").await;
    };
    if given_user == user.as_bytes() && given_password == password.as_bytes() {
        state.authenticated = true;
        conn.reply("235 2.7.0 Authentication successful").await
    } else {
        shared.update(|r| r.auth_failures.push(mechanism.clone()));
        conn.reply("535 5.7.8 Authentication credentials invalid")
            .await
    }
}

/// Sends a `334` challenge; the client's answer, or `None` when it cancels with `*`.
async fn challenge(conn: &mut Conn, text: &str) -> io::Result<Option<String>> {
    conn.reply(&format!("334 {text}")).await?;
    let Some(line) = conn.line(MAX_LINE).await? else {
        return Err(io::ErrorKind::UnexpectedEof.into());
    };
    let line = String::from_utf8_lossy(&line).trim().to_string();
    Ok((line != "*").then_some(line))
}
