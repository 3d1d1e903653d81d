//! Failing fast and recovering by itself (reliability, items 2 and 3): `helpdesk up` with its
//! database gone, and `helpdesk gateway`'s `/ready` over its upstreams.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Value, json};

use helpdesk_kit::contract::Service;
use helpdesk_testkit::{
    self as testing, Proxy, database_url, eventually, free_port, postgres_addr, unique,
};

/// A command of the `helpdesk` binary that is killed when the test ends, however it ends.
fn helpdesk(args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_helpdesk"));
    c.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("SMTP_URL")
        .env_remove("BOOTSTRAP_ADMIN_EMAIL")
        .env_remove("BOOTSTRAP_ADMIN_PASSWORD")
        .envs(crate::up::TEST_PLATFORM.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

async fn get_timed(http: &reqwest::Client, url: &str, token: Option<&str>) -> Answer {
    let started = Instant::now();
    let mut req = http.get(url).timeout(Duration::from_secs(30));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.expect("an answer");
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = res.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
        took: started.elapsed(),
    }
}

/// A database of its own on the test server, dropped with the guard.
struct Database {
    name: String,
}

impl Database {
    async fn create() -> Self {
        use sqlx::Connection;
        let name = unique("hd_outage_");
        let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        Self { name }
    }

    /// Its URL through `addr` (a proxy in front of the test server).
    fn url_via(&self, addr: std::net::SocketAddr) -> String {
        let mut url = reqwest::Url::parse(&testing::database_url_via(addr)).unwrap();
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }

    async fn drop_it(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await;
        let _ = admin.close().await;
    }
}

/// With its database stopped, `helpdesk up` answers API requests with 503 and `Retry-After`
/// within ~1 s (it was a 500 after 5 s) and `/ready` with 503 within ~2 s (it took 10 s or more:
/// five services asked one after another); when the database is back it serves again by itself.
#[tokio::test]
async fn up_fails_fast_while_its_database_is_down_and_recovers_by_itself() {
    testing::require_postgres().await;
    let db = Database::create().await;
    let proxy = Proxy::start(Some(postgres_addr())).await;
    let dir = std::env::temp_dir().join(unique("helpdesk-outage-"));
    let port = free_port();
    let child = helpdesk(&[
        "up",
        "--port",
        &port.to_string(),
        "--data-dir",
        &dir.to_string_lossy(),
    ])
    .env("DATABASE_URL", db.url_via(proxy.addr))
    .spawn()
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let ready = format!("{base}/ready");
    eventually(
        Duration::from_secs(60),
        "helpdesk up to be ready",
        || async {
            let res = http.get(&ready).send().await.ok()?;
            (res.status() == 200).then_some(())
        },
    )
    .await;
    let creds = std::fs::read_to_string(dir.join("admin-credentials")).unwrap();
    let (email, password) = creds.trim().split_once('\n').unwrap();
    let login: Value = http
        .post(format!("{base}/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"]
        .as_str()
        .unwrap_or_else(|| panic!("a token in {login}"))
        .to_string();
    let tickets = format!("{base}/tickets");
    assert_eq!(get_timed(&http, &tickets, Some(&token)).await.status, 200);

    proxy.stop();
    for _ in 0..3 {
        let api = get_timed(&http, &tickets, Some(&token)).await;
        assert_eq!(api.status, 503, "{}", api.body);
        assert_eq!(api.retry_after.as_deref(), Some("1"));
        assert_eq!(api.body["statusCode"], 503);
        assert_eq!(api.body["error"], "Service Unavailable");
        assert!(
            api.took < Duration::from_millis(1500),
            "the API's 503 took {:?}",
            api.took
        );
        let r = get_timed(&http, &ready, None).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["statusCode"], 503);
        assert_eq!(r.body["services"]["ticket-service"], "not ready");
        assert!(
            r.took < Duration::from_millis(2500),
            "/ready took {:?}",
            r.took
        );
    }

    proxy.set(Some(postgres_addr()));
    eventually(
        Duration::from_secs(15),
        "ready again after the outage",
        || async { (get_timed(&http, &ready, None).await.status == 200).then_some(()) },
    )
    .await;
    assert_eq!(get_timed(&http, &tickets, Some(&token)).await.status, 200);

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("a clean stop")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Issue 14, item 12: no start-up lock warning, whichever database is used.
    assert!(!stdout.contains("own a lock"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
    db.drop_it().await;
}

#[derive(Clone, Copy, PartialEq)]
enum Upstream {
    Ready,
    NotReady,
    Hanging,
}

/// A stand-in for a service: `/ready` answers as told.
async fn upstream(mode: Arc<Mutex<Upstream>>) -> String {
    async fn ready(State(mode): State<Arc<Mutex<Upstream>>>) -> (StatusCode, &'static str) {
        let m = *mode.lock().unwrap();
        match m {
            Upstream::Ready => (StatusCode::OK, r#"{"status":"ready"}"#),
            Upstream::NotReady => (StatusCode::SERVICE_UNAVAILABLE, r#"{"statusCode":503}"#),
            Upstream::Hanging => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                (StatusCode::OK, "{}")
            }
        }
    }
    let router = axum::Router::new()
        .route("/ready", get(ready))
        .with_state(mode);
    format!("http://{}", testing::serve(router).await)
}

/// `helpdesk gateway` had no `/ready` (404). It now reflects its upstreams': 200 when all are
/// ready, else 503 within ~2 s naming those that are not, even when one does not answer at all.
#[tokio::test]
async fn the_gateway_is_ready_when_all_its_upstreams_are() {
    let mut modes = Vec::new();
    let port = free_port();
    let mut cmd = helpdesk(&["gateway", "--port", &port.to_string()]);
    for service in Service::ALL {
        let mode = Arc::new(Mutex::new(Upstream::Ready));
        cmd.env(service.url_var(), upstream(mode.clone()).await);
        modes.push((service.binary(), mode));
    }
    let _gateway = cmd.spawn().unwrap();
    let http = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/ready");
    let first = eventually(Duration::from_secs(20), "the gateway", || async {
        http.get(&ready).send().await.ok().map(|_| ())
    });
    first.await;
    let r = get_timed(&http, &ready, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["services"]["audit-service"], "ready");

    let set = |name: &str, m: Upstream| {
        let (_, mode) = modes.iter().find(|(n, _)| *n == name).unwrap();
        *mode.lock().unwrap() = m;
    };
    set("audit-service", Upstream::NotReady);
    set("notification-service", Upstream::Hanging);
    let r = get_timed(&http, &ready, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["statusCode"], 503);
    assert_eq!(r.body["error"], "Service Unavailable");
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.contains("audit-service") && message.contains("notification-service"),
        "{message}"
    );
    assert!(!message.contains("ticket-service"), "{message}");
    assert_eq!(r.body["services"]["notification-service"], "not ready");
    assert_eq!(r.body["services"]["user-service"], "ready");
    assert!(r.took < Duration::from_millis(2500), "took {:?}", r.took);

    set("audit-service", Upstream::Ready);
    set("notification-service", Upstream::Ready);
    assert_eq!(get_timed(&http, &ready, None).await.status, 200);
}
