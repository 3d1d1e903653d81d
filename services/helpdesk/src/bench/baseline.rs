//! `helpdesk bench --baseline`: each hot route's throughput as a fraction of what the database
//! itself can do with the same SQL, measured in one run on the same database.
//!
//! 1. Raw limits: in a scratch schema holding copies of ticket-service's tables (`LIKE ...
//!    INCLUDING ALL`: same columns, defaults, checks and indexes), `clients` connections run
//!    closed-loop (a) the list query ticket-service runs for `GET /tickets` over 50 rows, and
//!    (b) the write `POST /tickets` commits (ticket row, outbox row, NOTIFY), as the one statement
//!    ticket-service runs (`tickets::create_ticket`: one round trip, atomic on its own; the
//!    same work as a BEGIN / INSERT / INSERT + NOTIFY / COMMIT transaction, which takes four
//!    round trips and so gives the database a lower limit to be measured against).
//! 2. The platform: `clients` closed-loop HTTP clients as one signed-in AGENT with 50 tickets,
//!    `GET /tickets`, then `POST /tickets` while a sampler measures the event lag (ticket created
//!    → in its audit trail, so the consumers must keep up).
//! 3. The ratios, against the targets; with `--pid`, the platform process's peak RSS.
//!
//! Every phase warms up first and counts only what completes within its measured window.

use std::sync::Arc;

use anyhow::Context;
use chrono::DurationRound;
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::contract::Service;
use helpdesk_kit::db::DbConfig;
use helpdesk_kit::events::{Envelope, TicketCreated, TicketSnapshot, TicketStatus, UserRef};

use helpdesk_kit::outbox::{EventContext, OutboxRow};
use ticket_service::tickets::{self, TicketRow};

use super::Settings;
use super::api::{
    Consumers, Target, expect_len, print_event_lag, sample_event_lag, send, send_array_len,
};
use super::db::{Database, ServiceDb};
use super::load::{self, Failure, Outcome, Plan, RouteStats, Summary};
use super::rss::memory_mib;

/// Tickets of the signed-in user the list returns (the whole first page is 50 rows).
const TICKETS: usize = 50;

/// ticket-service's list statement for `GET /tickets` (`listing::page`, scope: created by the
/// caller, no filter, first page of 50 plus one to see whether another page follows).
fn list_sql() -> String {
    format!(
        "{} WHERE TRUE AND t.user_id = $1 ORDER BY t.created_at DESC, t.id DESC LIMIT $2",
        tickets::VIEW
    )
}

/// The scratch copy of ticket-service's tables the raw limits are measured on.
struct Scratch {
    pool: PgPool,
    list_sql: String,
    schema: String,
    owner: Uuid,
}

impl Scratch {
    /// The scratch schema with copies of ticket-service's tables and one AGENT's 50 tickets
    /// (removed again if any step fails).
    async fn create(ticket: &ServiceDb, clients: usize) -> anyhow::Result<Self> {
        let schema = format!("bench_baseline_{}", Uuid::new_v4().simple());
        let pool = helpdesk_kit::db::connect(&DbConfig {
            url: ticket.url.clone(),
            schema: schema.clone(),
            max_connections: clients as u32,
            application_name: "helpdesk-bench",
        })
        .await
        .context("cannot connect to the platform's database for the raw limits")?;
        let scratch = Self {
            pool,
            list_sql: list_sql(),
            schema,
            owner: Uuid::now_v7(),
        };
        match scratch.fill(ticket).await {
            Ok(()) => Ok(scratch),
            Err(e) => {
                let _ = scratch.remove().await;
                Err(e)
            }
        }
    }

    async fn fill(&self, ticket: &ServiceDb) -> anyhow::Result<()> {
        // `outbox_relay` empty: no relay is awake, so the raw write always NOTIFYs, as the issue's
        // raw transaction (ticket, outbox row, NOTIFY) did.
        for table in ["users", "tickets", "outbox", "outbox_relay"] {
            // The source's name is configuration (see `db`).
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE TABLE {table} (LIKE {} INCLUDING ALL)",
                ticket.table(table)
            )))
            .execute(&self.pool)
            .await
            .with_context(|| format!("cannot copy {}", ticket.table(table)))?;
        }
        sqlx::query(
            "INSERT INTO users (id, email, role) VALUES ($1, 'baseline@bench.test', 'AGENT')",
        )
        .bind(self.owner)
        .execute(&self.pool)
        .await?;
        for i in 0..TICKETS {
            sqlx::query(
                "INSERT INTO tickets (id, user_id, title, description) VALUES ($1, $2, $3, $4)",
            )
            .bind(Uuid::now_v7())
            .bind(self.owner)
            .bind(format!("Ticket {i}"))
            .bind("A ticket of the baseline's 50-row list")
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("ANALYZE tickets").execute(&self.pool).await?;
        Ok(())
    }

    async fn list(&self) -> Outcome {
        let rows = sqlx::query(sqlx::AssertSqlSafe(self.list_sql.as_str()))
            .bind(self.owner)
            .bind(TICKETS as i64 + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(|_| Failure("database error".into()))?;
        expect_len(rows.len(), TICKETS)
    }

    /// What `POST /tickets` commits: the ticket (returned), its `ticket.created` outbox row and
    /// the relay's wake-up.
    async fn write(&self) -> Outcome {
        let attempt = async {
            let now = chrono::Utc::now()
                .duration_trunc(chrono::TimeDelta::microseconds(1))
                .unwrap_or_else(|_| chrono::Utc::now());
            let ticket = TicketSnapshot {
                id: Uuid::now_v7(),
                user_id: self.owner,
                title: "Printer on fire".into(),
                status: TicketStatus::Open,
                assigned_to_user_id: None,
                created_at: now,
                updated_at: now,
            };
            let creator = UserRef {
                id: self.owner,
                email: "baseline@bench.test".into(),
                first_name: None,
                last_name: None,
            };
            let ctx = EventContext::request(Uuid::new_v4().to_string(), Some(self.owner));
            let envelope = Envelope::wrap(
                &TicketCreated {
                    ticket: ticket.clone(),
                    creator,
                },
                ctx.metadata(),
            );
            let row = TicketRow {
                id: ticket.id,
                user_id: ticket.user_id,
                title: ticket.title,
                description: "The printer on the second floor is on fire again.".into(),
                status: TicketStatus::Open,
                assigned_to_user_id: None,
                created_at: now,
                updated_at: now,
            };
            // ticket-service's own statement, on the scratch tables.
            tickets::insert_created(&self.pool, &row, &OutboxRow::of(&envelope)?).await?;
            Ok::<_, sqlx::Error>(())
        };
        attempt.await.map_err(|_| Failure("database error".into()))
    }

    /// Drops the scratch schema and closes its pool.
    async fn remove(&self) -> anyhow::Result<()> {
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA \"{}\" CASCADE",
            self.schema
        )))
        .execute(&self.pool)
        .await;
        self.pool.close().await;
        dropped.with_context(|| format!("cannot drop the scratch schema {}", self.schema))?;
        Ok(())
    }
}

/// A signed-in AGENT of the platform with its 50 tickets.
async fn platform_agent(target: &Target) -> anyhow::Result<String> {
    let account = target
        .signup(&format!("baseline-{}@bench.test", Uuid::new_v4().simple()))
        .await?;
    anyhow::ensure!(
        account.role == "AGENT",
        "the bench needs signups to be AGENTs (SIGNUP_DEFAULT_ROLE), got {}",
        account.role
    );
    for i in 0..TICKETS {
        target
            .create_ticket(&account.token, &format!("Ticket {i}"))
            .await?;
    }
    Ok(account.token)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

const RAW_LIST: &str = "raw list query (50 rows)";
const RAW_WRITE: &str = "raw write (one statement)";
const LIST: &str = "GET /tickets (50 rows)";
const CREATE: &str = "POST /tickets";

/// The raw limits, on the scratch copy.
async fn raw_limits(scratch: &Arc<Scratch>, plan: Plan) -> (load::Report, load::Report) {
    let s = scratch.clone();
    let list = load::closed_loop(RAW_LIST, plan, move |_| {
        let s = s.clone();
        async move { s.list().await }
    })
    .await;
    let s = scratch.clone();
    let write = load::closed_loop(RAW_WRITE, plan, move |_| {
        let s = s.clone();
        async move { s.write().await }
    })
    .await;
    (list, write)
}

/// Runs the ratio bench and prints its report.
pub async fn run(
    target: &Target,
    settings: &Settings,
    db: &Database,
    pid: Option<u32>,
) -> anyhow::Result<()> {
    let plan = Plan::timed(settings.clients, settings.warmup, settings.measured);
    println!(
        "helpdesk bench baseline: {} clients, {:?} warm-up + {:?} per phase, against {}",
        settings.clients, settings.warmup, settings.measured, target.base
    );
    let ticket = db
        .service(Service::Ticket, &["users", "tickets", "outbox"])
        .await?;
    let (raw_list, raw_write) = super::db::with_seeded(
        "scratch copy of ticket-service's tables",
        async { Ok(Arc::new(Scratch::create(&ticket, settings.clients).await?)) },
        async |scratch| Ok(raw_limits(scratch, plan).await),
        async |scratch| scratch.remove().await,
    )
    .await?;
    ticket.pool.close().await;

    let token = Arc::new(platform_agent(target).await?);
    let list = {
        let (http, url, token) = (target.http.clone(), target.url("/tickets"), token.clone());
        load::closed_loop(LIST, plan, move |_| {
            let req = http.get(&url).bearer_auth(&*token);
            async move { expect_len(send_array_len(req, 200).await?, TICKETS) }
        })
        .await
    };
    let consumers = Consumers::open(db).await?;
    let stop = CancellationToken::new();
    let lag = tokio::spawn({
        let (target, stop) = (target.clone(), stop.clone());
        async move { sample_event_lag(&target, Some(&consumers), stop).await }
    });
    let create = {
        let (http, url, token) = (target.http.clone(), target.url("/tickets"), token.clone());
        load::closed_loop(CREATE, plan, move |turn| {
            let body = json!({"title": format!("Load {}", turn.client), "description": "Created by the baseline bench"});
            let req = http.post(&url).bearer_auth(&*token).json(&body);
            async move { send(req, 201).await.map(drop) }
        })
        .await
    };
    stop.cancel();
    let lags = lag.await.unwrap_or_default();
    report(&[&raw_list, &raw_write, &list, &create], &lags, pid);
    Ok(())
}

fn report(phases: &[&load::Report; 4], lags: &RouteStats, pid: Option<u32>) {
    let mut summary = Summary::new();
    for phase in phases {
        summary.report(phase);
    }
    summary.print();
    let [raw_list, raw_write, list, create] = phases.map(|p| (p.all(), p.window));
    let ratio = |(a, wa): &(RouteStats, _), (b, wb): &(RouteStats, _)| a.rate(*wa) / b.rate(*wb);
    let (list_ratio, write_ratio) = (ratio(&list, &raw_list), ratio(&create, &raw_write));
    println!(
        "GET /tickets:  {:.1} % of the raw list limit, p95 {:.1} ms (target >= 40 %, p95 < 20 ms: {})",
        list_ratio * 100.0,
        list.0.ms(0.95),
        verdict(list_ratio >= 0.40 && list.0.ms(0.95) < 20.0)
    );
    println!(
        "POST /tickets: {:.1} % of the raw write limit, p95 {:.1} ms (target >= 50 %, p95 < 50 ms: {})",
        write_ratio * 100.0,
        create.0.ms(0.95),
        verdict(write_ratio >= 0.50 && create.0.ms(0.95) < 50.0)
    );
    print_event_lag("during POST load", lags, true);
    println!(
        "event lag target p99 < 1000 ms: {}",
        verdict(lags.count() > 0 && lags.ms(0.99) < 1000.0)
    );
    if let Some(pid) = pid {
        match memory_mib(pid, "VmHWM") {
            Some(mib) => println!(
                "peak RSS of pid {pid} so far: {mib:.1} MiB (target <= 128 MiB: {})",
                verdict(mib <= 128.0)
            ),
            None => println!("peak RSS of pid {pid}: unavailable (no /proc/{pid}/status)"),
        }
    }
}
