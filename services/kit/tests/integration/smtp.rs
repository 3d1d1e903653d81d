//! The test SMTP server (`testing::smtp`) speaks the protocol a mail client expects: plain,
//! STARTTLS and implicit TLS, AUTH with one account, refused recipients, a hanging server, and a
//! closed port once stopped. (notification-service's tests drive it with a real client, lettre.)

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use helpdesk_testkit::smtp::{SinkTls, SmtpSink};

/// A line-based SMTP client over any stream.
struct Client<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// The full reply (every line of a multi-line one), e.g. `250-a\n250 b`.
    async fn reply(&mut self) -> String {
        let mut all = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.io.read_line(&mut line).await.expect("read a reply");
            assert!(n > 0, "the server closed the connection");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            all.push(line);
            if last {
                return all.join("\n");
            }
        }
    }

    async fn send(&mut self, line: &str) {
        let io = self.io.get_mut();
        io.write_all(line.as_bytes()).await.expect("write");
        io.write_all(b"\r\n").await.expect("write");
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply().await
    }
}

async fn plain(sink: &SmtpSink) -> Client<TcpStream> {
    let socket = TcpStream::connect(sink.addr()).await.expect("connect");
    let mut c = Client {
        io: BufReader::new(socket),
    };
    assert!(c.reply().await.starts_with("220 "));
    c
}

fn connector(sink: &SmtpSink) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(sink.cert().expect("a TLS sink").cert_der().clone())
        .expect("the sink's certificate as a root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

fn server_name() -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// Sends one message (envelope and data) in an open session.
async fn send_mail<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Client<S>, to: &str, data: &str) {
    assert!(
        c.cmd("MAIL FROM:<app@helpdesk.test>")
            .await
            .starts_with("250")
    );
    assert!(c.cmd(&format!("RCPT TO:<{to}>")).await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    for line in data.lines() {
        c.send(line).await;
    }
    assert!(c.cmd(".").await.starts_with("250"));
}

#[tokio::test]
async fn plain_smtp_delivers_a_parsed_message_and_refuses_chosen_recipients() {
    let sink = SmtpSink::builder()
        .reject_recipient("bounce@example.com")
        .start();
    assert_eq!(
        sink.url(),
        format!("smtp://127.0.0.1:{}?tls=none", sink.port())
    );
    let mut c = plain(&sink).await;
    assert_eq!(
        c.cmd("MAIL FROM:<a@b>").await.get(..3),
        Some("503"),
        "EHLO first"
    );
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        !ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        c.cmd("MAIL FROM:<app@helpdesk.test>")
            .await
            .starts_with("250")
    );
    let refused = c.cmd("RCPT TO:<Bounce@example.com>").await;
    assert!(
        refused.starts_with("550 5.1.1 Mailbox unavailable"),
        "{refused}"
    );
    assert_eq!(sink.rejections(), 1);
    assert!(c.cmd("RSET").await.starts_with("250"));
    send_mail(
        &mut c,
        "Ann@example.com",
        "Subject: =?utf-8?b?Q2Fmw6k=?= ready\r\nMessage-ID: <m1@test>\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\nHello Ann,\r\n..a dotted line=\r\n \
         continued\r\n",
    )
    .await;
    assert!(c.cmd("QUIT").await.starts_with("221"));

    let got = sink.wait_for("ann@example.com", 1).await;
    assert_eq!(got[0].to, ["Ann@example.com"]);
    assert_eq!(got[0].from, "app@helpdesk.test");
    assert_eq!(got[0].subject, "Café ready");
    assert_eq!(got[0].message_id, "<m1@test>");
    assert_eq!(got[0].header("message-id"), Some("<m1@test>"));
    assert_eq!(got[0].body, "Hello Ann,\n.a dotted line continued\n");
    assert!(sink.to("bounce@example.com").is_empty());
}

#[tokio::test]
async fn starttls_then_auth_is_required_and_wrong_credentials_get_535() {
    let sink = SmtpSink::builder()
        .starttls()
        .auth("mailer", "s3cret")
        .start();
    assert!(sink.url().ends_with("?tls=starttls"));
    let mut c = plain(&sink).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b>").await.get(..3),
        Some("530"),
        "TLS first"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("220"));
    let tls = connector(&sink)
        .connect(server_name(), c.io.into_inner())
        .await
        .expect("a TLS session trusting the sink's certificate");
    let mut c = Client {
        io: BufReader::new(tls),
    };
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(
        ehlo.contains("AUTH PLAIN LOGIN") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<a@b>").await.get(..3),
        Some("530"),
        "AUTH first"
    );
    let wrong = B64.encode(b"\0mailer\0guess");
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {wrong}")).await.get(..3),
        Some("535")
    );
    assert_eq!(sink.auth_failures(), ["PLAIN"]);
    assert_eq!(c.cmd("AUTH LOGIN").await, "334 VXNlcm5hbWU6");
    assert_eq!(c.cmd(&B64.encode("mailer")).await, "334 UGFzc3dvcmQ6");
    assert!(c.cmd(&B64.encode("s3cret")).await.starts_with("235"));
    send_mail(&mut c, "bo@example.com", "Subject: Signed in\r\n\r\nHi\r\n").await;
    assert_eq!(
        sink.wait_for("bo@example.com", 1).await[0].subject,
        "Signed in"
    );
    assert_eq!(sink.auth_failures().len(), 1);
}

#[tokio::test]
async fn implicit_tls_speaks_tls_from_the_first_byte() {
    let sink = SmtpSink::builder().tls(SinkTls::Implicit).start();
    assert!(sink.url().ends_with("?tls=tls"));
    let socket = TcpStream::connect(sink.addr()).await.expect("connect");
    let tls = connector(&sink)
        .connect(server_name(), socket)
        .await
        .expect("a TLS session");
    let mut c = Client {
        io: BufReader::new(tls),
    };
    assert!(c.reply().await.starts_with("220 "));
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    send_mail(&mut c, "cy@example.com", "Subject: Wrapped\r\n\r\nx\r\n").await;
    assert_eq!(
        sink.wait_for("cy@example.com", 1).await[0].subject,
        "Wrapped"
    );
}

#[tokio::test]
async fn a_stalling_server_stops_answering_and_a_stopped_one_closes_its_port() {
    let mut sink = SmtpSink::builder().stall_after(1).start();
    let mut c = plain(&sink).await;
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    c.send("NOOP").await;
    let mut line = String::new();
    let silent = tokio::time::timeout(Duration::from_millis(500), c.io.read_line(&mut line)).await;
    assert!(silent.is_err(), "answered after stalling: {line:?}");

    let addr = sink.addr();
    sink.stop();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed once stopped"
    );
}
