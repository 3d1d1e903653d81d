use super::*;

#[test]
fn smtp_urls_parse() {
    let s = SmtpSettings::parse_url("smtp://us%40er:p%3Ass@mail.example.com:2525?tls=starttls")
        .unwrap();
    assert_eq!(s.host, "mail.example.com");
    assert_eq!(s.port, 2525);
    assert_eq!(s.tls, TlsMode::StartTls);
    assert_eq!(s.credentials, Some(("us@er".into(), "p:ss".into())));
    let s = SmtpSettings::parse_url("smtps://relay").unwrap();
    assert_eq!(
        (s.port, s.tls, s.credentials),
        (465, TlsMode::Implicit, None)
    );
    let s = SmtpSettings::parse_url("smtp://127.0.0.1:1025").unwrap();
    assert_eq!(
        (s.host.as_str(), s.port, s.tls),
        ("127.0.0.1", 1025, TlsMode::None)
    );
    assert!(SmtpSettings::parse_url("http://x").is_err());
    assert!(SmtpSettings::parse_url("smtp://x?tls=maybe").is_err());
    assert!(
        !format!(
            "{:?}",
            SmtpSettings::parse_url("smtp://u:secret@h").unwrap()
        )
        .contains("secret")
    );
}

#[tokio::test]
async fn the_file_mailer_writes_one_eml_per_email() {
    let dir = std::env::temp_dir().join(format!("mail-{}", uuid::Uuid::new_v4()));
    let mailer = FileMailer::new(dir.clone()).unwrap();
    let mail = OutgoingMail {
        id: uuid::Uuid::new_v4(),
        from: "Helpdesk <help@example.com>".into(),
        to: "ann@example.com".into(),
        subject: "Hi".into(),
        body: "Hello Ann".into(),
    };
    mailer.send(&mail).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1);
    assert!(
        files[0]
            .to_string_lossy()
            .ends_with(&format!("{}.eml", mail.id))
    );
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        text.contains("To: ann@example.com")
            && text.contains("Subject: Hi")
            && text.contains("Hello Ann")
    );
    let bad = OutgoingMail {
        to: "not an address".into(),
        ..mail
    };
    assert!(
        !mailer.send(&bad).await.unwrap_err().retryable,
        "a malformed address is not retried"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Security review, item 3: mail holds live reset links, so only the owner may read it,
/// even when the folder already existed with looser modes.
#[tokio::test]
async fn mail_files_and_their_folder_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        format!(
            "{:o}",
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        )
    };
    let root = std::env::temp_dir().join(format!("mail-{}", uuid::Uuid::new_v4()));
    let fresh = root.join("fresh");
    let existing = root.join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in [&fresh, &existing] {
        let mailer = FileMailer::new(dir.clone()).unwrap();
        assert_eq!(mode(dir), "700", "{}", dir.display());
        let mail = OutgoingMail {
            id: uuid::Uuid::new_v4(),
            from: "help@example.com".into(),
            to: "ann@example.com".into(),
            subject: "Reset your password".into(),
            body: "https://app.example.com/reset-password?token=secret".into(),
        };
        mailer.send(&mail).await.unwrap();
        let files: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(
            mode(&files[0].path()),
            "600",
            "{}",
            files[0].path().display()
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[tokio::test]
async fn without_a_transport_every_email_fails_at_once_saying_why() {
    let mailer = MailTransport::Disabled.mailer().unwrap();
    let mail = OutgoingMail {
        id: uuid::Uuid::new_v4(),
        from: "help@example.com".into(),
        to: "ann@example.com".into(),
        subject: "Hi".into(),
        body: "Hello".into(),
    };
    assert_eq!(mailer.undeliverable(), Some(DELIVERY_NOT_CONFIGURED));
    let err = mailer.send(&mail).await.unwrap_err();
    assert!(!err.retryable);
    assert_eq!(
        err.message,
        "mail delivery is not configured (no SMTP_URL or SMTP_HOST)"
    );
    assert!(
        DELIVERY_NOT_CONFIGURED.contains(var::SMTP_URL)
            && DELIVERY_NOT_CONFIGURED.contains(var::SMTP_HOST)
    );
}

#[test]
fn host_variables_are_an_alternative() {
    let env = Env::from_map([
        (var::SMTP_HOST, "h"),
        (var::SMTP_TLS, "tls"),
        (var::SMTP_USERNAME, "u"),
        (var::SMTP_PASSWORD, "p"),
    ]);
    let s = SmtpSettings::from_env(&env).unwrap().unwrap();
    assert_eq!(
        (s.host.as_str(), s.port, s.tls),
        ("h", 465, TlsMode::Implicit)
    );
    assert!(
        SmtpSettings::from_env(&Env::from_map::<[(&str, &str); 0], _, _>([]))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        MailTransport::from_env(&Env::from_map([("X", "y")])).unwrap(),
        MailTransport::Disabled
    ));
}
