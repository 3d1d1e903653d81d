//! The platform's database, for the scenarios that seed rows or read a service's tables:
//! DATABASE_URL (a service's own `<PREFIX>_DATABASE_URL` wins, as in the services), else the
//! private PostgreSQL of `--data-dir`. Schemas are the services' (`<PREFIX>_DB_SCHEMA`, default
//! `users`, `tickets`, ...), so run the bench with the platform's settings.
//!
//! Table names come from configuration, not from the user of a route, and a name cannot be a bind
//! parameter: the SQL that names them is built with [`ServiceDb::table`] (quoted identifiers) and
//! passed as `AssertSqlSafe`; every value is still a bind parameter.

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::config::Env;
use helpdesk_kit::contract::{Service, var};
use helpdesk_kit::db::DbConfig;

use crate::postgres::EmbeddedPostgres;

/// Where the platform's data is.
pub struct Database {
    env: Env,
    pg: Option<EmbeddedPostgres>,
}

impl Database {
    /// DATABASE_URL, or the private PostgreSQL `helpdesk up` keeps in `data_dir` (adopted when it
    /// runs; a data folder without one is an error, not a new database).
    pub async fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let mut env = Env::process();
        if env.raw(var::DATABASE_URL).is_none() {
            anyhow::ensure!(
                data_dir.join("postgres").join("PG_VERSION").is_file(),
                "{} holds no platform database: pass the --data-dir `helpdesk up` runs with, or DATABASE_URL",
                data_dir.display()
            );
        }
        let dir = crate::prepare_data_dir(data_dir)?;
        let (url, pg) = crate::database(&env, &dir).await?;
        env.set(var::DATABASE_URL, url);
        Ok(Self { env, pg })
    }

    /// `service`'s database and schema, checked to hold `tables`.
    pub async fn service(&self, service: Service, tables: &[&str]) -> anyhow::Result<ServiceDb> {
        let cfg = DbConfig::for_service(&self.env, service)?;
        let name = service.binary();
        // Seeding statements are slow by design: no "slow statement" warnings for them.
        let options = PgConnectOptions::from_str(&cfg.url)
            .with_context(|| format!("{name}'s database URL"))?
            .disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .with_context(|| format!("cannot connect to {name}'s database"))?;
        let db = ServiceDb {
            pool,
            url: cfg.url,
            schema: cfg.schema,
        };
        for table in tables {
            let found: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
                .bind(db.table(table))
                .fetch_one(&db.pool)
                .await?;
            anyhow::ensure!(
                found.is_some(),
                "{name}'s schema {:?} has no table {table}: has `helpdesk up` (or `helpdesk migrate`) \
                 migrated this database, and are its *_DB_SCHEMA settings the bench's?",
                db.schema
            );
        }
        Ok(db)
    }

    /// Stops the private PostgreSQL if the bench started it (a running platform keeps it).
    pub fn close(self) {
        if let Some(pg) = self.pg {
            pg.release();
        }
    }
}

/// One service's schema.
pub struct ServiceDb {
    pub pool: PgPool,
    pub url: String,
    pub schema: String,
}

impl ServiceDb {
    /// `"schema"."table"`, quoted, for SQL text.
    pub fn table(&self, table: &str) -> String {
        format!("{}.{}", quote(&self.schema), quote(table))
    }

    /// Deletes the rows of `table` whose `column` is one of `values` (what a scenario seeded).
    pub async fn delete_any(
        &self,
        table: &str,
        column: &str,
        values: &[Uuid],
    ) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {} WHERE {} = ANY($1)",
            self.table(table),
            quote(column)
        )))
        .bind(values)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Refreshes the planner's statistics of `table` after seeding it (the services' queries are
    /// planned as they would be on a table that grew to that size).
    pub async fn analyze(&self, table: &str) -> anyhow::Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ANALYZE {}",
            self.table(table)
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// Runs `read` every `every` until `done` holds for what it read, or what it reads has not changed
/// for `stall`. Returns the last reading and whether `done` held.
pub async fn poll<T: PartialEq>(
    every: Duration,
    stall: Duration,
    mut read: impl AsyncFnMut() -> anyhow::Result<T>,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<(T, bool)> {
    let mut last = read().await?;
    let mut moved = Instant::now();
    loop {
        if done(&last) {
            return Ok((last, true));
        }
        if moved.elapsed() > stall {
            return Ok((last, false));
        }
        tokio::time::sleep(every).await;
        let now = read().await?;
        if now != last {
            (last, moved) = (now, Instant::now());
        }
    }
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Ctrl-C: cancelled on the first one. While rows are seeded it lets the bench remove them; at any
/// other time (or on a second Ctrl-C) the bench exits at once, as without a handler.
fn interrupted() -> &'static (CancellationToken, Arc<AtomicUsize>) {
    static INTERRUPTED: OnceLock<(CancellationToken, Arc<AtomicUsize>)> = OnceLock::new();
    INTERRUPTED.get_or_init(|| {
        let (token, seeding) = (CancellationToken::new(), Arc::new(AtomicUsize::new(0)));
        let (t, s) = (token.clone(), seeding.clone());
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if t.is_cancelled() || s.load(Ordering::SeqCst) == 0 {
                    std::process::exit(130);
                }
                eprintln!("helpdesk bench: interrupted; removing the seeded rows (Ctrl-C again to leave them)");
                t.cancel();
            }
        });
        (token, seeding)
    })
}

/// Seeds rows (`seed`, one transaction: all or nothing), measures, and removes them again however
/// measuring ends: done, failed or interrupted.
pub async fn with_seeded<S, T>(
    what: &str,
    seed: impl Future<Output = anyhow::Result<S>>,
    measure: impl AsyncFnOnce(&S) -> anyhow::Result<T>,
    remove: impl AsyncFnOnce(S) -> anyhow::Result<()>,
) -> anyhow::Result<T> {
    let (stop, seeding) = interrupted();
    seeding.fetch_add(1, Ordering::SeqCst);
    let result = async {
        println!("seeding {what} ...");
        let started = Instant::now();
        let seeded = seed.await.with_context(|| format!("seeding {what}"))?;
        println!("  seeded in {:.1} s", started.elapsed().as_secs_f64());
        let measured = tokio::select! {
            r = measure(&seeded) => r,
            _ = stop.cancelled() => Err(anyhow::anyhow!("interrupted")),
        };
        let started = Instant::now();
        let removed = remove(seeded)
            .await
            .with_context(|| format!("removing the seeded {what}"));
        if removed.is_ok() {
            println!(
                "removed the seeded {what} in {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        match (measured, removed) {
            (Ok(t), Ok(())) => Ok(t),
            (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
            (Err(e), Err(r)) => Err(e.context(format!("{r:#}"))),
        }
    }
    .await;
    seeding.fetch_sub(1, Ordering::SeqCst);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote("users"), "\"users\"");
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }

    #[tokio::test]
    async fn polls_until_done_or_stalled() {
        let ms = Duration::from_millis;
        let mut n = 0;
        let read = async || {
            n += 1;
            Ok(n.min(3))
        };
        assert_eq!(
            poll(ms(1), ms(500), read, |n| *n == 3).await.unwrap(),
            (3, true)
        );
        let stuck = poll(ms(1), ms(20), async || Ok(1), |n| *n == 3)
            .await
            .unwrap();
        assert_eq!(stuck, (1, false));
    }

    #[tokio::test]
    async fn seeded_rows_are_removed_when_measuring_fails() {
        let removed = std::sync::Mutex::new(None);
        let result: anyhow::Result<()> = with_seeded(
            "rows",
            async { Ok(7) },
            async |_: &i32| anyhow::bail!("measuring failed"),
            async |seeded: i32| {
                *removed.lock().unwrap() = Some(seeded);
                Ok(())
            },
        )
        .await;
        assert!(result.unwrap_err().to_string().contains("measuring failed"));
        assert_eq!(*removed.lock().unwrap(), Some(7));
        let failed_seed = with_seeded(
            "rows",
            async { Err::<(), _>(anyhow::anyhow!("no table")) },
            async |_: &()| Ok(()),
            async |_: ()| panic!("nothing was seeded"),
        )
        .await;
        assert!(format!("{:#}", failed_seed.unwrap_err()).contains("seeding rows: no table"));
    }
}
