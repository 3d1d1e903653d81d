//! The dashboard: a read model of tickets kept by ticket events, and `GET /admin/dashboard/statistics`.
//!
//! Each ticket event carries the ticket's snapshot: the handler upserts the ticket's row with it
//! and adjusts the counters by the difference between the row's old and new contribution, in the
//! transaction that records the event. A snapshot older than the stored one is ignored (events
//! out of order); a deleted ticket stays a tombstone (a late event cannot bring it back);
//! duplicates are skipped by the idempotent consumer. Reading the figures is one row, the
//! per-agent rows, and an indexed count of the last 24 hours.

use std::collections::BTreeMap;

use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use helpdesk_kit::bus::{EventHandler, HandlerError};
use helpdesk_kit::error::{ApiJson, ApiResult};
use helpdesk_kit::events::{
    DomainEvent, Envelope, TicketDeleted, TicketSnapshot, TicketStatus, UserDeleted,
};

use crate::AppState;
use crate::access::AdminCaller;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/dashboard/statistics", get(statistics))
}

/// Tickets not DONE assigned to one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentLoad {
    pub agent_id: Uuid,
    pub count: i64,
}

/// The dashboard's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Statistics {
    pub total_tickets: i64,
    pub open_tickets: i64,
    pub in_progress_tickets: i64,
    pub done_tickets: i64,
    /// Tickets with no assignee (any status).
    pub unassigned_tickets: i64,
    /// Tickets created in the last 24 hours that still exist.
    pub created_last24h: i64,
    /// Tickets not DONE (OPEN or IN_PROGRESS) per assignee, most loaded first.
    pub open_per_agent: Vec<AgentLoad>,
}

/// Dashboard statistics (ADMIN).
#[utoipa::path(get, path = "/admin/dashboard/statistics", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Statistics), (status = 401, description = "Not signed in"), (status = 403, description = "Admin access required")))]
pub async fn statistics(
    State(state): State<AppState>,
    _admin: AdminCaller,
) -> ApiResult<ApiJson<Statistics>> {
    Ok(ApiJson(read_statistics(&state.pool).await?))
}

/// Reads the figures: O(1) in the number of tickets (one row, one row per loaded agent, at most
/// 1440 per-minute rows), in one statement. One statement reads one snapshot, so a batch
/// committed meanwhile is in every figure or in none (the per-agent figures never show an
/// assignment the counters do not count yet); and it is one round trip, where a read-only
/// transaction around two statements was five (begin, isolation level, two reads, commit).
pub async fn read_statistics(pool: &sqlx::PgPool) -> sqlx::Result<Statistics> {
    let row = sqlx::query!(
        r#"SELECT total, open, in_progress, done, unassigned,
             (SELECT COALESCE(sum(count), 0)::bigint FROM created_per_minute
              WHERE minute > date_trunc('minute', now()) - interval '24 hours') AS "last24h!",
             loads.agents AS "agents!", loads.counts AS "counts!"
           FROM ticket_counters,
             LATERAL (SELECT COALESCE(array_agg(agent_id ORDER BY count DESC, agent_id), '{}') AS agents,
                             COALESCE(array_agg(count ORDER BY count DESC, agent_id), '{}') AS counts
                      FROM open_per_agent WHERE count > 0) loads"#
    )
    .fetch_one(pool)
    .await?;
    let open_per_agent = row
        .agents
        .into_iter()
        .zip(row.counts)
        .map(|(agent_id, count)| AgentLoad { agent_id, count })
        .collect();
    Ok(Statistics {
        total_tickets: row.total,
        open_tickets: row.open,
        in_progress_tickets: row.in_progress,
        done_tickets: row.done,
        unassigned_tickets: row.unassigned,
        created_last24h: row.last24h,
        open_per_agent,
    })
}

/// What a ticket adds to the counters.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counted {
    status: TicketStatus,
    assigned_to: Option<Uuid>,
    created_at: DateTime<Utc>,
}

/// A change to the counters.
#[derive(Debug, Default)]
struct Delta {
    total: i64,
    open: i64,
    in_progress: i64,
    done: i64,
    unassigned: i64,
    per_agent: BTreeMap<Uuid, i64>,
    created_per_minute: BTreeMap<DateTime<Utc>, i64>,
}

impl Delta {
    fn add(&mut self, t: Counted, sign: i64) {
        self.total += sign;
        match t.status {
            TicketStatus::Open => self.open += sign,
            TicketStatus::InProgress => self.in_progress += sign,
            TicketStatus::Done => self.done += sign,
        }
        match t.assigned_to {
            None => self.unassigned += sign,
            Some(agent) if t.status != TicketStatus::Done => {
                *self.per_agent.entry(agent).or_default() += sign
            }
            Some(_) => {}
        }
        *self
            .created_per_minute
            .entry(minute(t.created_at))
            .or_default() += sign;
    }

    /// Adds `other`'s changes to these.
    fn merge(&mut self, other: Delta) {
        self.total += other.total;
        self.open += other.open;
        self.in_progress += other.in_progress;
        self.done += other.done;
        self.unassigned += other.unassigned;
        for (agent, change) in other.per_agent {
            *self.per_agent.entry(agent).or_default() += change;
        }
        for (minute, change) in other.created_per_minute {
            *self.created_per_minute.entry(minute).or_default() += change;
        }
    }

    /// The change from `old` to `new` (`None`: not counted).
    fn between(old: Option<Counted>, new: Option<Counted>) -> Self {
        let mut d = Delta::default();
        if let Some(o) = old {
            d.add(o, -1);
        }
        if let Some(n) = new {
            d.add(n, 1);
        }
        d
    }

    async fn apply(self, tx: &mut PgConnection) -> sqlx::Result<()> {
        if self.total != 0
            || self.open != 0
            || self.in_progress != 0
            || self.done != 0
            || self.unassigned != 0
        {
            sqlx::query!(
                "UPDATE ticket_counters SET total = total + $1, open = open + $2, in_progress = in_progress + $3, \
                 done = done + $4, unassigned = unassigned + $5",
                self.total,
                self.open,
                self.in_progress,
                self.done,
                self.unassigned,
            )
            .execute(&mut *tx)
            .await?;
        }
        for (agent, change) in self.per_agent.into_iter().filter(|(_, c)| *c != 0) {
            sqlx::query!(
                "INSERT INTO open_per_agent (agent_id, count) VALUES ($1, $2) \
                 ON CONFLICT (agent_id) DO UPDATE SET count = open_per_agent.count + EXCLUDED.count",
                agent,
                change,
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query!(
                "DELETE FROM open_per_agent WHERE agent_id = $1 AND count = 0",
                agent
            )
            .execute(&mut *tx)
            .await?;
        }
        for (minute, change) in self.created_per_minute.into_iter().filter(|(_, c)| *c != 0) {
            sqlx::query!(
                "INSERT INTO created_per_minute (minute, count) VALUES ($1, $2) \
                 ON CONFLICT (minute) DO UPDATE SET count = created_per_minute.count + EXCLUDED.count",
                minute,
                change,
            )
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

/// The start of `t`'s minute.
fn minute(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(60) * 60;
    DateTime::from_timestamp(secs, 0).unwrap_or(t)
}

/// Forgets per-minute counts older than two days (they can no longer enter the window).
pub async fn prune_minutes(pool: &sqlx::PgPool) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM created_per_minute WHERE minute < now() - interval '2 days'")
            .execute(pool)
            .await?
            .rows_affected(),
    )
}

/// Prunes every hour until `shutdown`.
pub async fn run_pruning(pool: sqlx::PgPool, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        if let Err(e) = prune_minutes(&pool).await {
            tracing::warn!(error = %e, "pruning per-minute counts failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

struct TicketRow {
    id: Uuid,
    user_id: Option<Uuid>,
    status: TicketStatus,
    assigned_to: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: Option<DateTime<Utc>>,
    live: bool,
    removed: bool,
}

impl TicketRow {
    fn counted(&self) -> Option<Counted> {
        self.live.then_some(Counted {
            status: self.status,
            assigned_to: self.assigned_to,
            created_at: self.created_at,
        })
    }
}

/// Locks the ticket's row, creating an uncounted placeholder first when it was never seen.
async fn lock_ticket(tx: &mut PgConnection, t: &TicketSnapshot) -> sqlx::Result<TicketRow> {
    sqlx::query!(
        "INSERT INTO tickets (id, user_id, status, assigned_to, created_at, updated_at, live) \
         VALUES ($1, $2, $3, $4, $5, NULL, false) ON CONFLICT (id) DO NOTHING",
        t.id,
        t.user_id,
        t.status.as_str(),
        t.assigned_to_user_id,
        t.created_at,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query_as!(
        TicketRow,
        r#"SELECT id, user_id, status AS "status: TicketStatus", assigned_to, created_at, updated_at,
             live, removed
           FROM tickets WHERE id = $1 FOR UPDATE"#,
        t.id,
    )
    .fetch_one(&mut *tx)
    .await
}

/// Applies a snapshot of a ticket that exists.
pub async fn apply_snapshot(tx: &mut PgConnection, t: &TicketSnapshot) -> sqlx::Result<()> {
    let row = lock_ticket(tx, t).await?;
    if row.removed || row.updated_at.is_some_and(|seen| t.updated_at < seen) {
        return Ok(());
    }
    let new = Counted {
        status: t.status,
        assigned_to: t.assigned_to_user_id,
        created_at: t.created_at,
    };
    sqlx::query!(
        "UPDATE tickets SET user_id = $2, status = $3, assigned_to = $4, created_at = $5, updated_at = $6, \
         live = true WHERE id = $1",
        t.id,
        t.user_id,
        t.status.as_str(),
        t.assigned_to_user_id,
        t.created_at,
        t.updated_at,
    )
    .execute(&mut *tx)
    .await?;
    Delta::between(row.counted(), Some(new)).apply(tx).await
}

/// Records that a ticket is gone for good.
pub async fn apply_deletion(tx: &mut PgConnection, t: &TicketSnapshot) -> sqlx::Result<()> {
    let row = lock_ticket(tx, t).await?;
    if row.removed {
        return Ok(());
    }
    sqlx::query!(
        "UPDATE tickets SET live = false, removed = true WHERE id = $1",
        row.id
    )
    .execute(&mut *tx)
    .await?;
    Delta::between(row.counted(), None).apply(tx).await
}

/// A deleted user's tickets are removed and tickets assigned to them become unassigned (as
/// ticket-service does); the freed tickets take the deletion's time, so snapshots from before it
/// no longer apply, and ticket-service's own later events change nothing more.
pub async fn apply_user_deletion(
    tx: &mut PgConnection,
    user_id: Uuid,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    let rows = sqlx::query_as!(
        TicketRow,
        r#"SELECT id, user_id, status AS "status: TicketStatus", assigned_to, created_at, updated_at,
             live, removed
           FROM tickets WHERE live AND (user_id = $1 OR assigned_to = $1) ORDER BY id FOR UPDATE"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        let created_by_user = row.user_id == Some(user_id);
        if created_by_user {
            sqlx::query!(
                "UPDATE tickets SET live = false, removed = true WHERE id = $1",
                row.id
            )
            .execute(&mut *tx)
            .await?;
            Delta::between(row.counted(), None).apply(tx).await?;
        } else {
            sqlx::query!(
                "UPDATE tickets SET assigned_to = NULL, updated_at = GREATEST(COALESCE(updated_at, $2), $2) \
                 WHERE id = $1",
                row.id,
                at,
            )
            .execute(&mut *tx)
            .await?;
            let new = Counted {
                status: row.status,
                assigned_to: None,
                created_at: row.created_at,
            };
            Delta::between(row.counted(), Some(new)).apply(tx).await?;
        }
    }
    Ok(())
}

/// Applies the ticket events of a batch (snapshots and deletions, in order) in a fixed number of
/// statements whatever the batch's size: every ticket's row locked at once (placeholders first),
/// the events applied to those rows in memory exactly as [`apply_snapshot`] and [`apply_deletion`]
/// would one by one, then the changed rows written back in one statement and the counters
/// changed once by the batch's summed difference.
pub async fn apply_ticket_events(
    tx: &mut PgConnection,
    events: &[(&TicketSnapshot, bool)],
) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // First sighting of each ticket, in id order (rows are always locked in id order).
    let mut first: BTreeMap<Uuid, &TicketSnapshot> = BTreeMap::new();
    for (t, _) in events {
        first.entry(t.id).or_insert(t);
    }
    let ids: Vec<Uuid> = first.keys().copied().collect();
    let user_ids: Vec<Uuid> = first.values().map(|t| t.user_id).collect();
    let statuses: Vec<&str> = first.values().map(|t| t.status.as_str()).collect();
    let assignees: Vec<Option<Uuid>> = first.values().map(|t| t.assigned_to_user_id).collect();
    let created: Vec<DateTime<Utc>> = first.values().map(|t| t.created_at).collect();
    // Placeholders for tickets never seen, and every row locked, in one statement that reaches
    // each row through the primary key (a `SELECT ... WHERE id = ANY(...) FOR UPDATE` is planned
    // as a scan of the whole table once the batch is large enough). The update changes nothing:
    // it is there to lock and return the rows that exist.
    let mut rows: BTreeMap<Uuid, TicketRow> = sqlx::query_as!(
        TicketRow,
        r#"INSERT INTO tickets (id, user_id, status, assigned_to, created_at, updated_at, live)
           SELECT id, user_id, status, assigned_to, created_at, NULL, false
           FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::timestamptz[])
             AS n(id, user_id, status, assigned_to, created_at)
           ORDER BY id
           ON CONFLICT (id) DO UPDATE SET removed = tickets.removed
           RETURNING id, user_id, status AS "status: TicketStatus", assigned_to, created_at,
             updated_at, live, removed"#,
        &ids,
        &user_ids,
        &statuses as &[&str],
        &assignees as &[Option<Uuid>],
        &created,
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.id, r))
    .collect();
    let mut delta = Delta::default();
    let mut changed = std::collections::BTreeSet::new();
    for (t, deletion) in events {
        let Some(row) = rows.get_mut(&t.id) else {
            continue;
        };
        if row.removed {
            continue;
        }
        let old = row.counted();
        if *deletion {
            row.live = false;
            row.removed = true;
            delta.merge(Delta::between(old, None));
        } else {
            if row.updated_at.is_some_and(|seen| t.updated_at < seen) {
                continue;
            }
            row.user_id = Some(t.user_id);
            row.status = t.status;
            row.assigned_to = t.assigned_to_user_id;
            row.created_at = t.created_at;
            row.updated_at = Some(t.updated_at);
            row.live = true;
            delta.merge(Delta::between(old, row.counted()));
        }
        changed.insert(t.id);
    }
    if changed.is_empty() {
        return Ok(());
    }
    let rows: Vec<&TicketRow> = changed.iter().filter_map(|id| rows.get(id)).collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let user_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.user_id).collect();
    let statuses: Vec<&str> = rows.iter().map(|r| r.status.as_str()).collect();
    let assignees: Vec<Option<Uuid>> = rows.iter().map(|r| r.assigned_to).collect();
    let created: Vec<DateTime<Utc>> = rows.iter().map(|r| r.created_at).collect();
    let updated: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.updated_at).collect();
    let live: Vec<bool> = rows.iter().map(|r| r.live).collect();
    let removed: Vec<bool> = rows.iter().map(|r| r.removed).collect();
    // Written back through the primary key too (every row exists and is locked).
    sqlx::query!(
        "INSERT INTO tickets (id, user_id, status, assigned_to, created_at, updated_at, live, removed) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::timestamptz[], \
                              $6::timestamptz[], $7::bool[], $8::bool[]) \
         ON CONFLICT (id) DO UPDATE SET user_id = EXCLUDED.user_id, status = EXCLUDED.status, \
           assigned_to = EXCLUDED.assigned_to, created_at = EXCLUDED.created_at, \
           updated_at = EXCLUDED.updated_at, live = EXCLUDED.live, removed = EXCLUDED.removed",
        &ids,
        &user_ids as &[Option<Uuid>],
        &statuses as &[&str],
        &assignees as &[Option<Uuid>],
        &created,
        &updated as &[Option<DateTime<Utc>>],
        &live,
        &removed,
    )
    .execute(&mut *tx)
    .await?;
    delta.apply(tx).await
}

/// Keeps the read model from ticket events (and user deletions).
pub struct TicketReadModel;

#[async_trait]
impl EventHandler for TicketReadModel {
    fn batches(&self) -> bool {
        true
    }

    /// Runs of ticket events go through [`apply_ticket_events`] together; a user's deletion (which
    /// reads the rows it changes) is applied on its own, between them, in order.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        let mut run: Vec<(TicketSnapshot, bool)> = Vec::with_capacity(events.len());
        for event in events {
            if event.event_type.starts_with("ticket.") {
                run.push((
                    event.ticket_snapshot()?,
                    event.event_type == TicketDeleted::EVENT_TYPE,
                ));
                continue;
            }
            flush(tx, &mut run).await?;
            self.handle(tx, event).await?;
        }
        Ok(flush(tx, &mut run).await?)
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(p) = event.payload_if::<UserDeleted>()? {
            return Ok(apply_user_deletion(tx, p.id, event.timestamp).await?);
        }
        if !event.event_type.starts_with("ticket.") {
            return Ok(());
        }
        let snapshot = event.ticket_snapshot()?;
        if event.event_type == TicketDeleted::EVENT_TYPE {
            apply_deletion(tx, &snapshot).await?;
        } else {
            apply_snapshot(tx, &snapshot).await?;
        }
        Ok(())
    }
}

/// Applies and empties a run of ticket events.
async fn flush(tx: &mut PgConnection, run: &mut Vec<(TicketSnapshot, bool)>) -> sqlx::Result<()> {
    let events: Vec<(&TicketSnapshot, bool)> = run.iter().map(|(t, d)| (t, *d)).collect();
    apply_ticket_events(tx, &events).await?;
    run.clear();
    Ok(())
}

/// Recomputes every counter from the ticket rows (after a bulk load or a manual repair), in one
/// transaction that holds the counters' lock.
pub async fn rebuild_counters(pool: &sqlx::PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query_scalar!("SELECT 1 AS locked FROM ticket_counters FOR UPDATE")
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query!(
        "UPDATE ticket_counters SET (total, open, in_progress, done, unassigned) = ( \
             SELECT count(*), count(*) FILTER (WHERE status = 'OPEN'), count(*) FILTER (WHERE status = 'IN_PROGRESS'), \
                    count(*) FILTER (WHERE status = 'DONE'), count(*) FILTER (WHERE assigned_to IS NULL) \
             FROM tickets WHERE live)"
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM open_per_agent")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO open_per_agent (agent_id, count) SELECT assigned_to, count(*) FROM tickets \
         WHERE live AND status <> 'DONE' AND assigned_to IS NOT NULL GROUP BY assigned_to"
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM created_per_minute")
        .execute(&mut *tx)
        .await?;
    sqlx::query!(
        "INSERT INTO created_per_minute (minute, count) SELECT date_trunc('minute', created_at), count(*) FROM tickets \
         WHERE live GROUP BY 1"
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A direct count over the read model (tests and consistency checks).
pub async fn count_directly(db: impl PgExecutor<'_>) -> sqlx::Result<(i64, i64, i64, i64, i64)> {
    let c = sqlx::query!(
        r#"SELECT count(*) AS "total!", count(*) FILTER (WHERE status = 'OPEN') AS "open!",
             count(*) FILTER (WHERE status = 'IN_PROGRESS') AS "in_progress!",
             count(*) FILTER (WHERE status = 'DONE') AS "done!",
             count(*) FILTER (WHERE assigned_to IS NULL) AS "unassigned!"
           FROM tickets WHERE live"#
    )
    .fetch_one(db)
    .await?;
    Ok((c.total, c.open, c.in_progress, c.done, c.unassigned))
}

#[cfg(test)]
mod tests;
