//! No password, hash or reset token appears in logs or responses.

use crate::common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: every task of the service logs into the capture installed below.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_logs_or_responses() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut app = common::spawn().await;
    let password = "Sup3r-Secret-Pa55";
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "gina@example.com", "password": password}),
            None,
        )
        .await;
    let signup_body = res.text().await.unwrap();
    app.login("gina@example.com", "Wr0ng-Guess-Pa55").await;
    app.login("gina@example.com", password).await;
    app.post(
        "/auth/forgot-password",
        json!({"email": "gina@example.com"}),
        None,
    )
    .await;
    let env = app
        .event_where("user.password_reset_requested", |_| true)
        .await;
    let link = env.payload["resetLink"].as_str().unwrap().to_string();
    let token = link.split("token=").nth(1).unwrap().to_string();
    let new_password = "An0ther-Secret-Pa55";
    let res = app
        .post(
            "/auth/reset-password",
            json!({"token": token, "newPassword": new_password}),
            None,
        )
        .await;
    let reset_body = res.text().await.unwrap();
    let hash: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE email = 'gina@example.com'")
            .fetch_one(&app.pool)
            .await
            .unwrap();

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request finished"), "logs were captured");
    for secret in [
        password,
        "Wr0ng-Guess-Pa55",
        new_password,
        token.as_str(),
        hash.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret leaked into the logs");
        assert!(!signup_body.contains(secret) && !reset_body.contains(secret));
    }
    assert!(!logs.contains("$argon2"));
    let body: Value = serde_json::from_str(&signup_body).unwrap();
    assert!(!body.to_string().contains("argon2"));
    app.stop().await;
}
