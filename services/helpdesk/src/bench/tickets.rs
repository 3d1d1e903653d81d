//! `helpdesk bench tickets`: ticket-service and audit-service on the running platform.
//!
//! 1. `POST /tickets`: one account per client, 50 tickets each, while a sampler measures the
//!    event lag (ticket created → in its audit trail);
//! 2. `GET /tickets` (first page) with those 50 own tickets, for the measured time;
//! 3. the same with 5 000 own tickets: 4 950 more each, seeded into ticket-service's `tickets`
//!    and removed afterwards;
//! 4. audit search (by entity, actor, action, time window, unfiltered; an entity's trail) as the
//!    admin over `--audit-rows` entries seeded into audit-service's `audit_events` (spread over
//!    1 000 actors, 100 000 entities, 7 actions and 300 days), removed afterwards.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::contract::Service;

use super::Settings;
use super::api::{
    self, Account, Consumers, Target, by_accounts, each_turn, expect_len, print_event_lag,
    sample_event_lag,
};
use super::db::{Database, ServiceDb, poll, with_seeded};
use super::load::{self, Outcome, Plan, Report, RouteStats, Summary, Turn};

/// Tickets each account creates through the API.
const OWN: u64 = 50;
/// Own tickets in the second list phase.
const MANY: u64 = 5_000;
/// `GET /tickets`' default page.
const PAGE: usize = 100;
const AUDIT_CLIENTS: usize = 8;
const AUDIT_REQUESTS: u64 = 400;
const ACTORS: usize = 1_000;
const ENTITIES: u64 = 100_000;
const ACTIONS: &str = "ARRAY['ticket.created','ticket.updated','ticket.status_changed',\
    'ticket.assigned','ticket.unassigned','ticket.comment_added','ticket.deleted']";

/// Runs the tickets scenario and prints its report.
pub async fn run(
    target: &Target,
    settings: &Settings,
    db: &Database,
    audit_rows: u64,
) -> anyhow::Result<()> {
    let tickets = db.service(Service::Ticket, &["tickets"]).await?;
    let audit = db.service(Service::Audit, &["audit_events"]).await?;
    println!(
        "helpdesk bench tickets: {} clients, {OWN} creates each, {:?} per list phase, {audit_rows} audit entries, against {}",
        settings.clients, settings.measured, target.base
    );
    let run = api::run_id();
    let accounts = Arc::new(target.accounts(&run, settings.clients).await?);
    let mut summary = Summary::new();

    let consumers = Consumers::open(db).await?;
    let stop = CancellationToken::new();
    let lag = tokio::spawn({
        let (target, stop) = (target.clone(), stop.clone());
        async move { sample_event_lag(&target, Some(&consumers), stop).await }
    });
    let creates = load::closed_loop(
        "POST /tickets",
        Plan::count(settings.clients, settings.clients as u64 * OWN),
        by_accounts(target, &accounts, 201, |target, account, seq| {
            let body = json!({"title": format!("Ticket {seq}"), "description": "The printer is on fire again."});
            target.http.post(target.url("/tickets")).bearer_auth(&account.token).json(&body)
        }),
    )
    .await;
    stop.cancel();
    let lags = lag.await.unwrap_or_default();
    summary.report(&creates);
    let ids: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
    let audit_lag = audit_lag(&audit, &ids, creates.all().count()).await?;
    // With a failed create some account has fewer than 50: any page length is then right.
    let own = (creates.all().errors() == 0).then_some(OWN as usize);

    let plan = Plan::timed(settings.clients, settings.warmup, settings.measured);
    let route = format!("GET /tickets ({OWN} own tickets)");
    summary.report(&load::closed_loop(&route, plan, list(target, &accounts, own)).await);

    let marker = format!("Seeded by helpdesk bench {run}");
    let many = with_seeded(
        &format!("{} tickets per account", MANY - OWN),
        seed_tickets(&tickets, &ids, MANY - OWN, &marker),
        async |_| {
            let route = format!("GET /tickets ({MANY} own tickets, first page)");
            Ok(load::closed_loop(&route, plan, list(target, &accounts, Some(PAGE))).await)
        },
        async |_| remove_tickets(&tickets, &ids, &marker).await,
    )
    .await?;
    summary.report(&many);
    tickets.pool.close().await;

    let actors: Arc<Vec<Uuid>> = Arc::new((0..ACTORS).map(|_| Uuid::new_v4()).collect());
    let entity = format!("bench-{run}-");
    let searches = with_seeded(
        &format!("{audit_rows} audit entries"),
        seed_audit(&audit, audit_rows, &actors, &entity),
        async |_| Ok(audit_searches(target, &actors, &entity, audit_rows).await),
        async |_| audit.delete_any("audit_events", "actor_id", &actors).await,
    )
    .await?;
    audit.pool.close().await;
    let (mut all, mut window) = (RouteStats::default(), Duration::ZERO);
    for search in &searches {
        summary.report(search);
        all.merge(&search.all());
        window += search.window;
    }
    summary.row("audit search, all kinds", &all, window);
    summary.print();
    print_event_lag("during the creates", &lags, true);
    println!(
        "audit lag of the creates (event time → audit entry written, by the database's clock): n={} p50 {:.1} ms p99 {:.1} ms",
        audit_lag.count(),
        audit_lag.ms(0.5),
        audit_lag.ms(0.99)
    );
    Ok(())
}

/// The audit lag of every ticket the accounts created: `recorded_at - created_at` of their
/// `ticket.created` entries, once all `created` are in (or what is there when no more came for a
/// minute).
async fn audit_lag(
    audit: &ServiceDb,
    accounts: &[Uuid],
    created: usize,
) -> anyhow::Result<RouteStats> {
    // Table names are configuration (see `db`); the values are bound.
    let sql = format!(
        "SELECT (extract(epoch FROM recorded_at - created_at))::float8 FROM {} \
         WHERE action = 'ticket.created' AND actor_id = ANY($1)",
        audit.table("audit_events")
    );
    let read = async || {
        let mut lags: Vec<f64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(accounts)
            .fetch_all(&audit.pool)
            .await?;
        lags.sort_by(f64::total_cmp);
        Ok(lags)
    };
    let every = Duration::from_millis(200);
    let (lags, _) = poll(every, Duration::from_secs(60), read, |l| l.len() >= created).await?;
    let lags = lags
        .into_iter()
        .map(|s| Duration::from_secs_f64(s.max(0.0)));
    Ok(RouteStats::from_latencies(lags.collect()))
}

/// Each client lists its account's tickets (the first page), expecting `expected` of them.
fn list(
    target: &Target,
    accounts: &Arc<Vec<Account>>,
    expected: Option<usize>,
) -> impl Fn(Turn) -> BoxFuture<'static, Outcome> + Send + Sync + 'static {
    let (http, url, accounts) = (
        target.http.clone(),
        target.url("/tickets"),
        accounts.clone(),
    );
    move |turn| {
        let account = &accounts[turn.client % accounts.len()];
        let req = http.get(&url).bearer_auth(&account.token);
        Box::pin(async move {
            let n = api::send_array_len(req, 200).await?;
            expected.map_or(Ok(()), |expected| expect_len(n, expected))
        })
    }
}

/// In one transaction: `per_account` older tickets for each account, marked by their description.
async fn seed_tickets(
    tickets: &ServiceDb,
    accounts: &[Uuid],
    per_account: u64,
    marker: &str,
) -> anyhow::Result<()> {
    let table = tickets.table("tickets");
    let mut tx = tickets.pool.begin().await?;
    // Table names are configuration (see `db`); the values are bound.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {table} (id, user_id, title, description, status, created_at, updated_at) \
         SELECT gen_random_uuid(), u, 'Seeded ticket ' || g, $3, 'OPEN', \
                now() - g * interval '1 second', now() \
         FROM unnest($1::uuid[]) AS u, generate_series(1, $2::bigint) AS g"
    )))
    .bind(accounts)
    .bind(per_account as i64)
    .bind(marker)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tickets.analyze("tickets").await
}

async fn remove_tickets(
    tickets: &ServiceDb,
    accounts: &[Uuid],
    marker: &str,
) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {} WHERE user_id = ANY($1) AND description = $2",
        tickets.table("tickets")
    )))
    .bind(accounts)
    .bind(marker)
    .execute(&tickets.pool)
    .await?;
    Ok(())
}

/// In one transaction, `rows` audit entries of `actors` (no one else's), in batches.
async fn seed_audit(
    audit: &ServiceDb,
    rows: u64,
    actors: &[Uuid],
    entity: &str,
) -> anyhow::Result<()> {
    let table = audit.table("audit_events");
    let mut tx = audit.pool.begin().await?;
    let mut from = 0;
    while from < rows {
        let to = (from + 100_000).min(rows);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {table} (id, event_id, actor_id, action, entity_type, entity_id, metadata, created_at) \
             SELECT gen_random_uuid(), gen_random_uuid(), ($1::uuid[])[1 + g % {ACTORS}], \
                    ({ACTIONS})[1 + g % 7], 'ticket', $2 || (g % {ENTITIES}), '{{\"bench\": true}}', \
                    now() - (g % 300) * interval '1 day' - (g % 86400) * interval '1 second' \
             FROM generate_series($3::bigint, $4::bigint) AS g"
        )))
        .bind(actors)
        .bind(entity)
        .bind(from as i64)
        .bind(to as i64 - 1)
        .execute(&mut *tx)
        .await?;
        from = to;
    }
    tx.commit().await?;
    audit.analyze("audit_events").await
}

/// Each kind of audit search, 400 requests from 8 clients.
async fn audit_searches(
    target: &Target,
    actors: &Arc<Vec<Uuid>>,
    entity: &str,
    rows: u64,
) -> Vec<Report> {
    let entities = rows.clamp(1, ENTITIES);
    let by_actor = actors.clone();
    type Path = Box<dyn Fn(u64) -> String + Send + Sync>;
    let kinds: Vec<(&str, Path)> = vec![
        ("audit search by entity", {
            let entity = entity.to_string();
            Box::new(move |i| {
                let id = (i * 7919) % entities;
                format!("/audit/search?entityType=ticket&entityId={entity}{id}")
            })
        }),
        (
            "audit search by actor",
            Box::new(move |i| {
                let actor = by_actor[(i as usize * 31) % by_actor.len()];
                format!("/audit/search?actorId={actor}&limit=100")
            }),
        ),
        (
            "audit search by action",
            Box::new(|_| "/audit/search?action=ticket.assigned&limit=100".into()),
        ),
        (
            "audit search by time window",
            Box::new(|i| {
                let to = chrono::Utc::now() - chrono::Duration::days((i % 250) as i64);
                let from = to - chrono::Duration::days(1);
                let f = "%Y-%m-%dT%H:%M:%SZ";
                format!(
                    "/audit/search?from={}&to={}&limit=100",
                    from.format(f),
                    to.format(f)
                )
            }),
        ),
        (
            "audit search unfiltered",
            Box::new(|_| "/audit/search?limit=100".into()),
        ),
        ("GET /audit/entity/ticket/:id", {
            let entity = entity.to_string();
            Box::new(move |i| format!("/audit/entity/ticket/{entity}{}", (i * 104_729) % entities))
        }),
    ];
    let mut reports = Vec::new();
    for (name, path) in kinds {
        let (http, base, token) = (
            target.http.clone(),
            target.base.clone(),
            target.admin.clone(),
        );
        let search = each_turn(
            move |turn| {
                http.get(format!("{base}{}", path(turn.seq)))
                    .bearer_auth(&token)
            },
            200,
        );
        let plan = Plan::count(AUDIT_CLIENTS, AUDIT_REQUESTS);
        reports.push(load::closed_loop(name, plan, search).await);
    }
    reports
}
