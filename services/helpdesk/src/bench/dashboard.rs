//! `helpdesk bench dashboard`: `GET /admin/dashboard/statistics` as an ADMIN over many tickets.
//!
//! `--tickets` tickets are seeded into admin-service's read model (`tickets`, as a replay would
//! leave it: a third of each status, a quarter unassigned, the rest spread over 20 agents, created
//! over the last two days) with their share of the counters (`ticket_counters`,
//! `open_per_agent`, `created_per_minute`) added in the same transaction, the way the service's
//! event handler adjusts them; then the dashboard is read for the measured time; then the seeded
//! rows and their share of the counters are removed again. Adding and subtracting (instead of
//! recounting) leaves what the platform's own events do meanwhile untouched.

use sqlx::PgConnection;
use uuid::Uuid;

use helpdesk_kit::contract::Service;

use super::Settings;
use super::api::{Target, each_turn};
use super::db::{Database, ServiceDb, with_seeded};
use super::load::{self, Plan, Summary};

const AGENTS: usize = 20;

/// The seeded tickets: all of one made-up creator, assigned to made-up agents.
struct Seeded {
    owner: Uuid,
    agents: Vec<Uuid>,
}

/// Runs the dashboard scenario and prints its report.
pub async fn run(
    target: &Target,
    settings: &Settings,
    db: &Database,
    tickets: u64,
) -> anyhow::Result<()> {
    let admin = db
        .service(
            Service::Admin,
            &[
                "tickets",
                "ticket_counters",
                "open_per_agent",
                "created_per_minute",
            ],
        )
        .await?;
    println!(
        "helpdesk bench dashboard: {tickets} tickets, read by {} client(s) for {:?}, against {}",
        settings.clients, settings.measured, target.base
    );
    let before = total_tickets(target).await?;
    let report = with_seeded(
        &format!("{tickets} dashboard tickets"),
        seed(&admin, tickets),
        async |_| {
            let seen = total_tickets(target).await?;
            println!("the dashboard counts {seen} tickets ({before} before the {tickets} seeded)");
            let (http, url) = (
                target.http.clone(),
                target.url("/admin/dashboard/statistics"),
            );
            let token = target.admin.clone();
            let plan = Plan::timed(settings.clients, settings.warmup, settings.measured);
            let statistics = each_turn(move |_| http.get(&url).bearer_auth(&token), 200);
            Ok(load::closed_loop("GET /admin/dashboard/statistics", plan, statistics).await)
        },
        async |seeded| remove(&admin, seeded).await,
    )
    .await?;
    admin.pool.close().await;
    let mut summary = Summary::new();
    summary.report(&report);
    summary.print();
    println!(
        "seeded tickets removed: the dashboard counts {} tickets",
        total_tickets(target).await?
    );
    Ok(())
}

async fn total_tickets(target: &Target) -> anyhow::Result<i64> {
    let figures = target.statistics().await?;
    figures["totalTickets"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("the dashboard's answer has no totalTickets: {figures}"))
}

/// In one transaction: the tickets and their share of the counters.
async fn seed(admin: &ServiceDb, tickets: u64) -> anyhow::Result<Seeded> {
    let seeded = Seeded {
        owner: Uuid::new_v4(),
        agents: (0..AGENTS).map(|_| Uuid::new_v4()).collect(),
    };
    let mut tx = admin.pool.begin().await?;
    // Table names are configuration (see `db`); the values are bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} (id, user_id, status, assigned_to, created_at, updated_at, live) \
         SELECT gen_random_uuid(), $1, (ARRAY['OPEN','IN_PROGRESS','DONE'])[1 + i % 3], \
                CASE WHEN i % 4 = 0 THEN NULL ELSE ($2::uuid[])[1 + i % {AGENTS}] END, \
                now() - (i % 2880) * interval '1 minute', now(), true \
         FROM generate_series(1, $3::bigint) AS i",
        admin.table("tickets")
    )))
    .bind(seeded.owner)
    .bind(&seeded.agents)
    .bind(tickets as i64)
    .execute(&mut *tx)
    .await?;
    count_in(&mut tx, admin, &seeded, 1).await?;
    tx.commit().await?;
    Ok(seeded)
}

/// In one transaction: the seeded tickets' share of the counters, then the tickets.
async fn remove(admin: &ServiceDb, seeded: Seeded) -> anyhow::Result<()> {
    let mut tx = admin.pool.begin().await?;
    count_in(&mut tx, admin, &seeded, -1).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {} WHERE user_id = $1",
        admin.table("tickets")
    )))
    .bind(seeded.owner)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Adds (`sign` 1) or subtracts (-1) the seeded tickets' contribution to the counters, in the
/// order the service's event handler takes its locks (counters, per agent, per minute). The
/// subtraction removes the rows it leaves at zero (the seeded agents' and minutes').
async fn count_in(
    tx: &mut PgConnection,
    admin: &ServiceDb,
    seeded: &Seeded,
    sign: i64,
) -> anyhow::Result<()> {
    let (tickets, counters, per_agent, per_minute) = (
        admin.table("tickets"),
        admin.table("ticket_counters"),
        admin.table("open_per_agent"),
        admin.table("created_per_minute"),
    );
    let mut statements = vec![
        format!(
            "UPDATE {counters} AS c SET total = c.total + $2 * s.total, open = c.open + $2 * s.open, \
             in_progress = c.in_progress + $2 * s.in_progress, done = c.done + $2 * s.done, \
             unassigned = c.unassigned + $2 * s.unassigned \
             FROM (SELECT count(*) AS total, count(*) FILTER (WHERE status = 'OPEN') AS open, \
                   count(*) FILTER (WHERE status = 'IN_PROGRESS') AS in_progress, \
                   count(*) FILTER (WHERE status = 'DONE') AS done, \
                   count(*) FILTER (WHERE assigned_to IS NULL) AS unassigned \
                   FROM {tickets} WHERE user_id = $1 AND live) AS s"
        ),
        format!(
            "INSERT INTO {per_agent} AS a (agent_id, count) \
             SELECT assigned_to, $2 * count(*) FROM {tickets} \
             WHERE user_id = $1 AND live AND status <> 'DONE' AND assigned_to IS NOT NULL GROUP BY 1 \
             ON CONFLICT (agent_id) DO UPDATE SET count = a.count + EXCLUDED.count"
        ),
        format!(
            "INSERT INTO {per_minute} AS m (minute, count) \
             SELECT date_trunc('minute', created_at), $2 * count(*) FROM {tickets} \
             WHERE user_id = $1 AND live GROUP BY 1 \
             ON CONFLICT (minute) DO UPDATE SET count = m.count + EXCLUDED.count"
        ),
    ];
    if sign < 0 {
        // Every statement gets both parameters; here `$2 < 0` always holds. ARRAY(...) is
        // computed once (the planner's estimate of the fresh rows would be stale).
        statements.push(format!(
            "DELETE FROM {per_agent} WHERE count = 0 AND $2 < 0 AND agent_id = ANY(ARRAY( \
             SELECT DISTINCT assigned_to FROM {tickets} WHERE user_id = $1))"
        ));
        statements.push(format!(
            "DELETE FROM {per_minute} WHERE count = 0 AND $2 < 0 AND minute = ANY(ARRAY( \
             SELECT DISTINCT date_trunc('minute', created_at) FROM {tickets} WHERE user_id = $1))"
        ));
    }
    for sql in statements {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(seeded.owner)
            .bind(sign)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
