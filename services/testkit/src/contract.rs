//! Holds a service's configuration loading to the platform's contract
//! ([`helpdesk_contract::Service::requires`]): the operator renders the contract's variables, so a
//! service that reads another name, or needs one more, fails these checks.

use std::path::PathBuf;

use helpdesk_contract::{Command, Requirement, var};

use super::{TestKeys, amqp_url, database_url, unique};
use helpdesk_kit::config::{ConfigError, Env};
use helpdesk_kit::runtime::{Loaded, ServiceDef, load};

/// A dummy but valid value for a variable the contract may require (`None`: no value known,
/// add one here).
pub fn valid_value(name: &str, keys: &TestKeys) -> Option<String> {
    Some(match name {
        var::JWT_PUBLIC_KEY => keys.public_pem.clone(),
        var::JWT_PRIVATE_KEY => keys.private_pem.clone(),
        var::SERVICE_TOKEN => keys.service_token("test-service"),
        var::AMQP_URL => amqp_url(),
        n if n == var::DATABASE_URL || n.ends_with(&format!("_{}", var::DATABASE_URL)) => {
            database_url()
        }
        n if n.ends_with("_SERVICE_URL") => "http://127.0.0.1:9".into(),
        _ => return None,
    })
}

/// Values for `requirements`: each requirement by its own variable, or (`alternatives`) by
/// its first alternative, a `_FILE` one pointing at a file written into `dir`.
fn values(
    requirements: &[Requirement],
    keys: &TestKeys,
    alternatives: bool,
    dir: &std::path::Path,
) -> Vec<(String, String)> {
    requirements
        .iter()
        .map(|r| {
            let value = |name: &str| {
                valid_value(name, keys)
                    .unwrap_or_else(|| panic!("no test value for {name}: add one to valid_value"))
            };
            match r.alternatives.first() {
                Some(alt) if alternatives => {
                    if alt.strip_suffix(var::FILE_SUFFIX) == Some(r.var) {
                        let path = dir.join(alt);
                        std::fs::write(&path, value(r.var)).expect("temp file");
                        (alt.to_string(), path.to_string_lossy().into_owned())
                    } else {
                        (alt.to_string(), value(alt))
                    }
                }
                _ => (r.var.to_string(), value(r.var)),
            }
        })
        .collect()
}

fn outcome<D: ServiceDef>(command: Command, env: &Env) -> Result<(), ConfigError> {
    match load::<D>(command, env)? {
        Loaded::Serve(_) if command == Command::Serve => Ok(()),
        Loaded::Migrate(_) if command == Command::Migrate => Ok(()),
        _ => panic!(
            "{}: load({command}) returned another command's config",
            D::NAME
        ),
    }
}

struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// For `serve` and `migrate`: the service's loader (what its binary runs) accepts exactly the
/// variables the contract requires, given directly or by their alternatives (`_FILE` variants
/// as the operator mounts them, `<PREFIX>_DATABASE_URL`), and refuses each one missing with an
/// error naming it.
pub fn assert_loader_follows_the_contract<D: ServiceDef>() {
    let keys = TestKeys::generate();
    let dir = TempDir(std::env::temp_dir().join(unique("contract-")));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    for command in Command::ALL {
        let required = D::SERVICE.requires(command);
        for alternatives in [false, true] {
            let vars = values(required, &keys, alternatives, &dir.0);
            if let Err(e) = outcome::<D>(command, &Env::from_map(vars.clone())) {
                panic!(
                    "{} {command} refuses exactly the contract's variables {:?}: {e}",
                    D::NAME,
                    vars.iter().map(|(k, _)| k).collect::<Vec<_>>()
                );
            }
        }
        for (i, missing) in required.iter().enumerate() {
            let mut rest = required.to_vec();
            rest.remove(i);
            let env = Env::from_map(values(&rest, &keys, false, &dir.0));
            match outcome::<D>(command, &env) {
                Ok(()) => panic!(
                    "{} {command} runs without {missing}, which the contract requires",
                    D::NAME
                ),
                Err(e) => assert_eq!(
                    e.var,
                    missing.var,
                    "{} {command} without {missing} must name it, said: {e}",
                    D::NAME
                ),
            }
        }
    }
    // `migrate` reads nothing but the database: a serve-only variable, broken, is ignored.
    let migrate = values(D::SERVICE.requires(Command::Migrate), &keys, false, &dir.0);
    let mut broken = migrate.clone();
    broken.push((var::JWT_PUBLIC_KEY.into(), "not a key".into()));
    broken.push((var::BIND_ADDR.into(), "not an address".into()));
    if let Err(e) = outcome::<D>(Command::Migrate, &Env::from_map(broken)) {
        panic!("{} migrate reads more than the database: {e}", D::NAME);
    }
}

/// Runs the service's binary as the operator's migration Job does (an empty environment but
/// `RUST_LOG` and `DATABASE_URL`): `migrate` succeeds against a fresh database, twice
/// (idempotent), and creates the service's schema; `serve` with the same environment exits 2
/// naming a variable the contract requires for serving. The database is dropped afterwards.
pub async fn assert_binary_follows_the_contract<D: ServiceDef>(binary: &str) {
    use sqlx::Connection;
    super::require_postgres().await;
    let db = unique("migrate_");
    let mut admin = sqlx::PgConnection::connect(&database_url())
        .await
        .expect("test database");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
        .execute(&mut admin)
        .await
        .expect("create a database");
    let mut url = reqwest::Url::parse(&database_url()).expect("TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{db}"));
    let run = |command: Command| {
        tokio::process::Command::new(binary)
            .arg(command.as_str())
            .env_clear()
            .env(var::RUST_LOG, "warn")
            .env(var::DATABASE_URL, url.as_str())
            .kill_on_drop(true)
            .output()
    };
    let mut outputs = Vec::new();
    for _ in 0..2 {
        outputs.push(
            run(Command::Migrate)
                .await
                .expect("the service binary runs"),
        );
    }
    let serve = tokio::time::timeout(std::time::Duration::from_secs(30), run(Command::Serve))
        .await
        .expect("serve without its configuration exits at once")
        .expect("the service binary runs");
    let schema_exists = async {
        let mut c = sqlx::PgConnection::connect(url.as_str()).await.ok()?;
        let found = sqlx::query_scalar!(
            r#"SELECT count(*) AS "count!" FROM pg_tables WHERE schemaname = $1 AND tablename = 'outbox'"#,
            D::SERVICE.schema(),
        )
        .fetch_one(&mut c)
        .await
        .ok();
        let _ = c.close().await;
        found
    }
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    let _ = admin.close().await;
    for out in outputs {
        assert!(
            out.status.success(),
            "{} migrate with only DATABASE_URL exited {:?}: {}",
            D::NAME,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        schema_exists,
        Some(1),
        "{} migrate created its schema {}",
        D::NAME,
        D::SERVICE.schema()
    );
    let stderr = String::from_utf8_lossy(&serve.stderr);
    let missing = D::SERVICE.missing(Command::Serve, |v| v == var::DATABASE_URL);
    assert_eq!(
        serve.status.code(),
        Some(2),
        "{} serve without its configuration: {stderr}",
        D::NAME
    );
    assert!(
        missing.iter().any(|r| stderr.contains(r.var)),
        "{} serve names a missing variable of {missing:?}: {stderr}",
        D::NAME
    );
}
