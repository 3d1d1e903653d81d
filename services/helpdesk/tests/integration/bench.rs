//! `helpdesk bench` end to end: quick scenarios against a started `helpdesk up`, and what they
//! leave behind (nothing they seeded).

use std::path::Path;

use sqlx::Connection;

use crate::up::{Up, data_dir, embedded_pg_url, helpdesk};

/// Runs `helpdesk bench ARGS` against `up` and returns what it printed.
fn bench(up: &Up, dir: &Path, args: &[&str]) -> String {
    let out = helpdesk(&["bench"])
        .args(args)
        .args(["--base-url", &up.base, "--data-dir", &dir.to_string_lossy()])
        .args(["--pid", &up.child.id().to_string()])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    stdout
}

/// The summary row of `route`: its count and errors, checked to be `count > 0` and no errors.
fn assert_row(out: &str, route: &str) {
    let row = out
        .lines()
        .find(|l| l.starts_with(route))
        .unwrap_or_else(|| panic!("no row {route}: {out}"));
    let cells: Vec<f64> = row[route.len()..]
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    // count, per s, p50, p95, p99, errors
    assert_eq!(cells.len(), 6, "{row}");
    assert!(cells[0] > 0.0 && cells[1] > 0.0, "{row}");
    assert!(cells[2] <= cells[3] && cells[3] <= cells[4], "{row}");
    assert_eq!(cells[5], 0.0, "{row}\n{out}");
}

async fn count(db: &mut sqlx::PgConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(db).await.unwrap()
}

#[tokio::test]
async fn scenarios_measure_a_running_platform_and_remove_what_they_seeded() {
    let dir = data_dir();
    let up = Up::start_with(
        &dir,
        &[
            ("USER_LOGIN_RATE_PER_IP", "0"),
            ("USER_LOGIN_RATE_PER_ACCOUNT", "0"),
        ],
    )
    .await;
    let url = embedded_pg_url(&dir);

    let out = bench(
        &up,
        &dir,
        &["dashboard", "--tickets", "1000", "--seconds", "1"],
    );
    assert!(
        out.contains("the dashboard counts 1000 tickets (0 before the 1000 seeded)"),
        "{out}"
    );
    assert_row(&out, "GET /admin/dashboard/statistics");
    assert!(
        out.contains("seeded tickets removed: the dashboard counts 0 tickets"),
        "{out}"
    );
    assert!(
        out.contains(&format!("RSS of pid {}: ", up.child.id())),
        "{out}"
    );
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin.tickets").await,
        0
    );
    assert_eq!(
        count(&mut db, "SELECT total FROM admin.ticket_counters").await,
        0
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin.created_per_minute").await,
        0
    );
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM admin.open_per_agent").await,
        0
    );

    let out = bench(&up, &dir, &["auth", "--concurrency", "2", "--seconds", "1"]);
    for route in [
        "POST /auth/signup",
        "POST /auth/login",
        "GET /auth/me during a login flood",
        "POST /auth/reset-password (10 outst.)",
        "POST /auth/reset-password (10000 outst.)",
    ] {
        assert_row(&out, route);
    }
    assert_eq!(
        count(&mut db, "SELECT count(*) FROM users.password_reset_tokens").await,
        0,
        "the seeded reset tokens are removed"
    );
    db.close().await.unwrap();
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unreachable_platform_or_missing_admin_is_a_clear_error() {
    let dir = data_dir();
    let d = dir.to_string_lossy().to_string();
    let run = |args: &[&str]| {
        let out = helpdesk(&["bench"]).args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let err = run(&["auth", "--base-url", "http://127.0.0.1:1", "--data-dir", &d]);
    assert!(err.contains("no admin account"), "{err}");
    let err = run(&[
        "tickets",
        "--base-url",
        "http://127.0.0.1:1",
        "--admin-email",
        "a@x.test",
        "--admin-password",
        "secret12",
    ]);
    assert!(
        err.contains("cannot reach the platform at http://127.0.0.1:1"),
        "{err}"
    );
    let err = run(&["auth", "--baseline"]);
    assert!(err.contains("cannot be combined with `auth`"), "{err}");
}
