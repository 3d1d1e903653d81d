//! `helpdesk up` as a user runs it: the real binary, its private PostgreSQL, one port.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use helpdesk_kit::testing::{database_url, eventually, unique};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn helpdesk(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_helpdesk"));
    c.args(args)
        .env_remove("DATABASE_URL")
        .env_remove("AMQP_URL")
        .env_remove("SMTP_URL")
        .env_remove("BOOTSTRAP_ADMIN_EMAIL")
        .env_remove("BOOTSTRAP_ADMIN_PASSWORD")
        .env("USER_ARGON2_MEMORY_KIB", "1024")
        .env("USER_ARGON2_ITERATIONS", "1")
        .env_remove("FRONTEND_BASE_URL")
        .env_remove("CORS_ALLOWED_ORIGINS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Up {
    child: Child,
    base: String,
}

impl Up {
    async fn start(dir: &std::path::Path) -> Up {
        Self::start_with(dir, &[]).await
    }

    /// Starts with extra environment variables.
    async fn start_with(dir: &std::path::Path, vars: &[(&str, &str)]) -> Up {
        let port = free_port();
        let child = helpdesk(&[
            "up",
            "--port",
            &port.to_string(),
            "--data-dir",
            &dir.to_string_lossy(),
        ])
        .envs(vars.iter().copied())
        .spawn()
        .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let url = format!("{base}/ready");
        eventually(Duration::from_secs(60), "helpdesk up to be ready", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        })
        .await;
        Up { child, base }
    }

    /// Ctrl-C / SIGTERM: a clean stop.
    fn stop(mut self) -> String {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(status.success(), "clean exit, got {status}");
        out
    }
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(unique("helpdesk-up-"))
}

#[tokio::test]
async fn up_serves_the_platform_on_one_port_and_reuses_its_data() {
    let dir = data_dir();
    let up = Up::start(&dir).await;
    let http = reqwest::Client::new();
    let creds = std::fs::read_to_string(dir.join("admin-credentials")).unwrap();
    let (email, password) = creds.trim().split_once('\n').unwrap();
    let res = http
        .post(format!("{}/auth/login", up.base))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["user"]["role"], "ADMIN");
    let res = http
        .post(format!("{}/auth/signup", up.base))
        .json(&json!({"email": "kim@example.com", "password": "secret12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    // Internal routes are not exposed on the public port.
    let res = http.get(format!("{}/users", up.base)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let docs: Value = http
        .get(format!("{}/api/openapi.json", up.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(docs["paths"]["/auth/login"].is_object());
    assert!(
        docs["paths"].get("/users/{id}").is_none(),
        "internal routes are not documented publicly"
    );
    let out = up.stop();
    assert!(out.contains("API base URL"), "{out}");
    assert!(
        out.contains(email) && out.contains("admin-credentials"),
        "prints the admin and where it is stored"
    );
    assert!(out.contains("Helpdesk stopped"));

    // A second start reuses the database, keys and admin.
    let up = Up::start(&dir).await;
    let res = http
        .post(format!("{}/auth/login", up.base))
        .json(&json!({"email": "kim@example.com", "password": "secret12"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn fails_with(cmd: &mut Command, expected: &str) {
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or_default();
    assert!(line.contains(expected), "expected {expected:?} in {stderr}");
}

#[test]
fn clear_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir = data_dir();
    let d = dir.to_string_lossy().to_string();
    fails_with(
        &mut helpdesk(&["up", "--port", &port, "--data-dir", &d]),
        "already in use",
    );
    fails_with(
        &mut helpdesk(&[
            "up",
            "--port",
            "0",
            "--data-dir",
            "/proc/helpdesk-cannot-write",
        ]),
        "data folder",
    );
    fails_with(
        helpdesk(&["up", "--port", "0", "--data-dir", &d])
            .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres"),
        "cannot reach DATABASE_URL",
    );
    fails_with(
        helpdesk(&["up", "--port", "0", "--data-dir", &d])
            .env("DATABASE_URL", database_url())
            .env("AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f"),
        "cannot reach AMQP_URL",
    );
    fails_with(
        helpdesk(&["up", "--port", "0", "--data-dir", &d]).env("PG_BIN_DIR", "/nonexistent/bin"),
        "apt-get install postgresql",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The port of the private PostgreSQL running on `dir` (from `postmaster.pid`), if any.
fn embedded_pg_port(dir: &std::path::Path) -> Option<u16> {
    let pid_file = std::fs::read_to_string(dir.join("postgres/postmaster.pid")).ok()?;
    let mut lines = pid_file.lines();
    let pid = lines.next()?.trim();
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return None;
    }
    lines.nth(2)?.trim().parse().ok()
}

/// Security review, High 2 (no trust: a local account cannot log in as the superuser) and
/// reliability item 4 (after a crash, the next clean stop stops the adopted server too).
#[tokio::test]
async fn the_private_postgres_needs_the_generated_password_and_stops_with_the_platform() {
    use sqlx::Connection;
    use std::os::unix::fs::PermissionsExt;
    let dir = data_dir();
    let mut up = Up::start(&dir).await;
    let port = embedded_pg_port(&dir).expect("the private PostgreSQL runs");
    let no_password =
        sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .await;
    assert!(
        no_password.is_err(),
        "the superuser must not get in without the password"
    );
    let wrong = sqlx::PgConnection::connect(&format!(
        "postgres://postgres:guess@127.0.0.1:{port}/postgres"
    ))
    .await;
    assert!(wrong.is_err());
    let secret = dir.join("postgres-password");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the password is readable by its owner only"
    );
    let password = std::fs::read_to_string(&secret).unwrap();
    let conn = sqlx::PgConnection::connect(&format!(
        "postgres://postgres:{}@127.0.0.1:{port}/postgres",
        password.trim()
    ))
    .await
    .expect("the platform's password works");
    conn.close().await.unwrap();
    let hba = std::fs::read_to_string(dir.join("postgres/pg_hba.conf")).unwrap();
    assert!(!hba.contains("trust"), "{hba}");

    // A crash leaves the server running; the next `up` adopts it and its clean stop stops it.
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    assert!(
        embedded_pg_port(&dir).is_some(),
        "the server outlived the crash"
    );
    let up = Up::start(&dir).await;
    let out = up.stop();
    assert!(
        !out.contains(password.trim()),
        "the password is never printed"
    );
    assert!(
        embedded_pg_port(&dir).is_none(),
        "a clean stop leaves no PostgreSQL running"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `helpdesk migrate` needs the database and nothing else: with only `DATABASE_URL` (a fresh
/// database) it creates every service's schema, and generates no keys.
#[tokio::test]
async fn migrate_needs_only_database_url() {
    use helpdesk_kit::contract::{Service, var};
    use sqlx::Connection;
    let db = unique("hd_migrate_");
    let mut admin = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut url = reqwest::Url::parse(&database_url()).unwrap();
    url.set_path(&format!("/{db}"));
    let dir = data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_helpdesk"))
        .args(["migrate", "--data-dir", &dir.to_string_lossy()])
        .env_clear()
        .env(var::DATABASE_URL, url.as_str())
        .output()
        .unwrap();
    let mut c = sqlx::PgConnection::connect(url.as_str()).await.unwrap();
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname::text FROM pg_tables WHERE tablename = 'outbox' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    c.close().await.unwrap();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helpdesk migrate failed: {stderr}");
    let mut expected: Vec<String> = Service::ALL.iter().map(|s| s.schema().into()).collect();
    expected.sort();
    assert_eq!(schemas, expected);
    assert!(
        !dir.join("jwt-private.pem").exists(),
        "migrate generates no signing keys"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `Access-Control-Allow-Origin` a browser at `origin` gets for a preflight of
/// `POST /auth/login` and for a simple `GET /tickets` (both must agree).
async fn allowed_origin(http: &reqwest::Client, base: &str, origin: &str) -> Option<String> {
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{base}/auth/login"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(
        preflight.status().is_success(),
        "preflight answered: {}",
        preflight.status()
    );
    let header = |r: &reqwest::Response| {
        r.headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let from_preflight = header(&preflight);
    let simple = http
        .get(format!("{base}/tickets"))
        .header("Origin", origin)
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status(), 401);
    assert_eq!(
        header(&simple),
        from_preflight,
        "preflight and simple request agree for {origin}"
    );
    from_preflight
}

/// Security review, item 8: `helpdesk up` answers only the frontend's origin (its
/// `FRONTEND_BASE_URL`), or the usual local dev servers when nothing is configured, never `*`;
/// `CORS_ALLOWED_ORIGINS` still wins. The allowed origins are printed at start-up.
#[tokio::test]
async fn up_allows_only_the_frontends_origin() {
    let dir = data_dir();
    let http = reqwest::Client::new();
    let foreign = "https://evil.example";

    let up = Up::start_with(
        &dir,
        &[("FRONTEND_BASE_URL", "https://helpdesk.example.com/app/")],
    )
    .await;
    assert_eq!(
        allowed_origin(&http, &up.base, "https://helpdesk.example.com")
            .await
            .as_deref(),
        Some("https://helpdesk.example.com")
    );
    assert_eq!(allowed_origin(&http, &up.base, foreign).await, None);
    assert_eq!(
        allowed_origin(&http, &up.base, "http://localhost:3000").await,
        None,
        "dev servers are only the default when no frontend is configured"
    );
    let out = up.stop();
    assert!(
        out.contains("CORS origins: https://helpdesk.example.com\n"),
        "{out}"
    );

    let up = Up::start(&dir).await;
    for dev in [
        "http://localhost:3000",
        "http://localhost:5173",
        "http://127.0.0.1:3000",
        "http://127.0.0.1:5173",
    ] {
        assert_eq!(
            allowed_origin(&http, &up.base, dev).await.as_deref(),
            Some(dev)
        );
    }
    assert_eq!(allowed_origin(&http, &up.base, foreign).await, None);
    let out = up.stop();
    assert!(
        out.contains("CORS origins: http://localhost:3000, http://localhost:5173, http://127.0.0.1:3000, http://127.0.0.1:5173"),
        "{out}"
    );

    let up = Up::start_with(
        &dir,
        &[
            ("FRONTEND_BASE_URL", "https://helpdesk.example.com"),
            ("CORS_ALLOWED_ORIGINS", "https://other.example"),
        ],
    )
    .await;
    assert_eq!(
        allowed_origin(&http, &up.base, "https://other.example")
            .await
            .as_deref(),
        Some("https://other.example")
    );
    assert_eq!(
        allowed_origin(&http, &up.base, "https://helpdesk.example.com").await,
        None
    );
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
