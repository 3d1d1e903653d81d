//! The rendered backup CronJob's command, run against a real PostgreSQL: it writes a dump that
//! restores, and keeps only the newest `retention` dumps. Needs the PostgreSQL server on
//! 127.0.0.1:5432 (user postgres, trust) and the client tools (`psql`, `pg_dump`, `pg_restore`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const PLATFORM: &str = r#"
apiVersion: helpdesk.dev/v1alpha1
kind: HelpdeskPlatform
metadata: {name: hd, namespace: support}
spec:
  version: "0.1.0"
  ingress: {host: helpdesk.example.com}
  postgres:
    backup: {schedule: "0 3 * * *", retention: 2}
"#;

fn render_cron_job() -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_helpdesk-operator"))
        .args(["render", "--check", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("helpdesk-operator runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PLATFORM.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .find(|v| v["kind"] == "CronJob")
        .expect("a CronJob in the rendered objects")
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-XAtqc", sql])
        .output()
        .expect("psql (apt-get install postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql}: {} (is PostgreSQL running on 127.0.0.1:5432?)",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn dumps(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn the_rendered_backup_job_dumps_restorably_and_keeps_the_newest() {
    let cj = render_cron_job();
    let container = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap();
    let env = container["env"].as_array().unwrap();
    let value = |n: &str| -> Option<String> {
        env.iter()
            .find(|e| e["name"] == n)
            .and_then(|e| e["value"].as_str().map(str::to_string))
    };
    assert_eq!(value("BACKUP_RETENTION").as_deref(), Some("2"));

    let id = std::process::id();
    let (db, restored) = (format!("hd_backup_{id}"), format!("hd_restored_{id}"));
    for d in [&db, &restored] {
        psql("postgres", &format!("DROP DATABASE IF EXISTS {d}"));
    }
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE SCHEMA tickets; CREATE TABLE tickets.t (id int, title text); \
         INSERT INTO tickets.t VALUES (1, 'printer on fire')",
    );
    let dir = std::env::temp_dir().join(format!("hd-backup-test-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Two earlier dumps, an unrelated file and the leftover of an interrupted run.
    for f in [
        "helpdesk-20240101T020000Z.dump",
        "helpdesk-20240102T020000Z.dump",
        "notes.txt",
        ".helpdesk-20240103T020000Z.partial",
    ] {
        std::fs::write(dir.join(f), "old").unwrap();
    }

    // The container's command with its env: the Secret's values and the volume stand in.
    let mut run = Command::new(&command[0]);
    run.args(&command[1..]).env_clear();
    for e in env {
        let name = e["name"].as_str().unwrap();
        if let Some(v) = e["value"].as_str() {
            run.env(name, v);
        }
    }
    let out = run
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGHOST", "127.0.0.1")
        .env("PGUSER", "postgres")
        .env("PGPASSWORD", "unused-with-trust")
        .env("PGDATABASE", &db)
        .env("BACKUP_DIR", &dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");

    let names = dumps(&dir);
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        names[0], "helpdesk-20240102T020000Z.dump",
        "the newest old one kept"
    );
    assert!(names[1].starts_with("helpdesk-2") && names[1].ends_with("Z.dump"));
    assert_ne!(
        names[1], "helpdesk-20240101T020000Z.dump",
        "the oldest removed"
    );
    assert_eq!(names[2], "notes.txt", "other files are left alone");
    assert!(
        log.contains("removed helpdesk-20240101T020000Z.dump"),
        "{log}"
    );

    // The dump restores.
    psql("postgres", &format!("CREATE DATABASE {restored}"));
    let restore = Command::new("pg_restore")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &restored])
        .arg(dir.join(&names[1]))
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(
        psql(&restored, "SELECT title FROM tickets.t"),
        "printer on fire"
    );

    for d in [&db, &restored] {
        psql("postgres", &format!("DROP DATABASE {d}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
