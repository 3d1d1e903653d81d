//! Tickets: create, read, update, delete (listing is in [`crate::listing`]).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult, check_length};
use helpdesk_kit::events::{
    TicketCreated, TicketDeleted, TicketStatus, TicketStatusChanged, TicketUpdated,
};
use helpdesk_kit::http::RequestId;
use helpdesk_kit::outbox::{self, EventContext, OutboxColumns, OutboxRow};

use crate::AppState;
use crate::listing::{inbox, list_tickets};
use crate::users::Caller;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tickets", get(list_tickets).post(create_ticket))
        .route("/tickets/inbox", get(inbox))
        .route(
            "/tickets/{id}",
            get(get_ticket).patch(update_ticket).delete(delete_ticket),
        )
}

pub const NOT_FOUND: &str = "Ticket not found";
/// The refusal of every per-ticket route to someone who cannot view the ticket.
pub const NO_ACCESS: &str = "You do not have access to this ticket";
pub const TITLE_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 10_000;

/// Creator, assignee and ADMIN may view a ticket; every per-ticket route requires it.
pub fn can_view(creator: Uuid, assignee: Option<Uuid>, caller: &Caller) -> bool {
    creator == caller.id || assignee == Some(caller.id) || caller.is_admin()
}

mod rows;
pub(crate) use rows::TicketViewRow;
pub use rows::{Ticket, TicketRow, VIEW, creator_ref, find, view};

/// The event context of a request.
pub fn request_context(request_id: String, caller: &Caller) -> EventContext {
    EventContext::request(request_id, Some(caller.id))
}

/// `{message}` answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub message: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"title": "The printer jams", "description": "Every page since this morning."}))]
pub struct CreateTicket {
    /// 1–200 characters after trimming.
    #[schema(required = true, value_type = String, format = "trimmed", min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// 1–10 000 characters after trimming.
    #[schema(required = true, value_type = String, format = "trimmed", min_length = 1, max_length = 10000)]
    pub description: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"status": "IN_PROGRESS"}))]
pub struct UpdateTicket {
    /// `OPEN`, `IN_PROGRESS` or `DONE`.
    #[schema(value_type = Option<TicketStatus>)]
    pub status: Option<String>,
    /// 1–200 characters after trimming.
    #[schema(format = "trimmed", min_length = 1, max_length = 200)]
    pub title: Option<String>,
    /// 1–10 000 characters after trimming.
    #[schema(format = "trimmed", min_length = 1, max_length = 10000)]
    pub description: Option<String>,
}

fn required_text(field: &str, value: Option<String>, max: usize) -> ApiResult<String> {
    let value = value.ok_or_else(|| ApiError::bad_request(format!("{field} is required")))?;
    let value = value.trim().to_string();
    check_length(field, &value, 1, max)?;
    Ok(value)
}

pub(crate) fn parse_status(value: &str) -> ApiResult<TicketStatus> {
    value.parse().map_err(|e: String| ApiError::bad_request(e))
}

/// Create a ticket.
#[utoipa::path(post, path = "/tickets", request_body = CreateTicket, tag = "tickets", security(("bearer" = [])),
    responses((status = 201, body = Ticket), (status = 400, description = "Invalid field"), (status = 401, description = "Not signed in")))]
pub async fn create_ticket(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<CreateTicket>,
) -> ApiResult<(StatusCode, ApiJson<Ticket>)> {
    let title = required_text("title", body.title, TITLE_MAX)?;
    let description = required_text("description", body.description, DESCRIPTION_MAX)?;
    // The ticket row, its `ticket.created` outbox row and the relay's wake-up in one statement
    // (one round trip, atomic on its own): the row's values are decided here, so the event can
    // carry them. Timestamps in PostgreSQL's precision, so the event and the row agree.
    let now = now_in_pg_precision();
    let row = TicketRow {
        id: Uuid::now_v7(),
        user_id: caller.id,
        title,
        description,
        status: TicketStatus::Open,
        assigned_to_user_id: None,
        created_at: now,
        updated_at: now,
    };
    // The creator is the caller, just resolved from the read model: no further look-up.
    let creator = caller.reference();
    let ctx = request_context(request_id, &caller);
    let out = OutboxRow::event(
        &TicketCreated {
            ticket: row.snapshot(),
            creator: creator.clone().into(),
        },
        &ctx,
    )?;
    insert_created(&state.pool, &row, &out).await?;
    let ticket = Ticket::new(row, creator, None);
    metrics::counter!("helpdesk_tickets_created_total").increment(1);
    Ok((StatusCode::CREATED, ApiJson(ticket)))
}

/// Writes a new OPEN ticket (`row.created_at` is also its `updated_at`), its `ticket.created`
/// outbox row and the relay's wake-up (a NOTIFY, unless a relay is polling anyway) in one
/// statement: one round trip, atomic on its own. (`helpdesk bench baseline` measures the
/// database's own limit with this same statement.)
pub async fn insert_created(
    db: impl PgExecutor<'_>,
    row: &TicketRow,
    out: &OutboxRow,
) -> sqlx::Result<()> {
    sqlx::query!(
        "WITH t AS (INSERT INTO tickets (id, user_id, title, description, status, created_at, updated_at) \
           VALUES ($1, $2, $3, $4, 'OPEN', $5, $5) RETURNING 1), \
         o AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers) \
           SELECT $6, $7, $8, $9, $10, $11 FROM t RETURNING 1) \
         SELECT pg_notify(current_schema() || '_outbox', '') FROM o \
         WHERE NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())",
        row.id,
        row.user_id,
        row.title,
        row.description,
        row.created_at,
        out.event_id,
        out.exchange,
        out.routing_key,
        out.aggregate_id,
        out.body,
        out.headers,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// One ticket: its creator, its assignee or an ADMIN.
#[utoipa::path(get, path = "/tickets/{id}", tag = "tickets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = Ticket), (status = 403, description = "Not yours"), (status = 404, description = "Ticket not found")))]
pub async fn get_ticket(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Ticket>> {
    let ticket = view(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    if !can_view(ticket.user_id, ticket.assigned_to_user_id, &caller) {
        return Err(ApiError::forbidden(NO_ACCESS));
    }
    Ok(ApiJson(ticket))
}

/// How many times a write to one ticket reads it and writes only if it is still as read (two
/// round trips, no transaction) before it reads and writes it holding the ticket's row lock
/// instead. Each miss means that another write to the same ticket committed in between.
pub const OPTIMISTIC_ATTEMPTS: u32 = 3;

/// One write to one ticket, as [`write_unless_changed`] runs it.
pub trait TicketWrite: Sync {
    type Done: Send;

    /// The ticket written to.
    fn ticket(&self) -> Uuid;

    /// Reads the ticket, decides, and writes in one statement only if the ticket is still as it
    /// read it: `Ok(None)` when it was not, and nothing was written.
    fn attempt(
        &self,
        db: &mut PgConnection,
    ) -> impl Future<Output = ApiResult<Option<Self::Done>>> + Send;
}

/// Runs `write` on one connection up to `optimistic` times, until an attempt finds the ticket as
/// it read it; then once more in a transaction that first takes the ticket's row lock, so the
/// ticket cannot change between the read and the write.
pub async fn write_unless_changed<W: TicketWrite>(
    pool: &PgPool,
    write: &W,
    optimistic: u32,
) -> ApiResult<W::Done> {
    let mut conn = pool.acquire().await?;
    for _ in 0..optimistic {
        if let Some(done) = write.attempt(&mut conn).await? {
            return Ok(done);
        }
        metrics::counter!("helpdesk_ticket_write_conflicts_total").increment(1);
    }
    metrics::counter!("helpdesk_ticket_write_locked_total").increment(1);
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query!(
        "SELECT id FROM tickets WHERE id = $1 FOR UPDATE",
        write.ticket()
    )
    .fetch_optional(&mut *tx)
    .await?;
    let done = write
        .attempt(&mut tx)
        .await?
        .ok_or_else(|| ApiError::internal("a locked ticket changed between read and write"))?;
    tx.commit().await?;
    Ok(done)
}

/// Now, truncated to PostgreSQL's microseconds, so an event carrying it and the row agree.
fn now_in_pg_precision() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(chrono::TimeDelta::microseconds(1))
        .unwrap_or_else(|_| Utc::now())
}

/// A ticket's next `updated_at`: now, in PostgreSQL's precision, and after the previous one
/// (so it grows with every change even if clocks disagree).
pub(crate) fn next_updated_at(previous: DateTime<Utc>) -> DateTime<Utc> {
    now_in_pg_precision().max(previous + chrono::TimeDelta::microseconds(1))
}

/// The fields a PATCH may change (each `None` to leave it).
#[derive(Debug, Clone, Default)]
pub struct TicketChange {
    pub status: Option<TicketStatus>,
    pub title: Option<String>,
    pub description: Option<String>,
}

impl TicketChange {
    fn parse(body: UpdateTicket) -> ApiResult<Self> {
        Ok(Self {
            status: body.status.as_deref().map(parse_status).transpose()?,
            title: body
                .title
                .map(|t| required_text("title", Some(t), TITLE_MAX))
                .transpose()?,
            description: body
                .description
                .map(|d| required_text("description", Some(d), DESCRIPTION_MAX))
                .transpose()?,
        })
    }
}

/// Change a ticket's status, title or description: whoever can view it (creator, assignee, ADMIN).
#[utoipa::path(patch, path = "/tickets/{id}", request_body = UpdateTicket, tag = "tickets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = Ticket), (status = 400, description = "Invalid field or status"),
        (status = 403, description = "Not yours"), (status = 404, description = "Ticket not found")))]
pub async fn update_ticket(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateTicket>,
) -> ApiResult<ApiJson<Ticket>> {
    let change = TicketChange::parse(body)?;
    let ctx = request_context(request_id, &caller);
    let ticket =
        change_ticket(&state.pool, &caller, id, &change, &ctx, OPTIMISTIC_ATTEMPTS).await?;
    Ok(ApiJson(ticket))
}

/// Applies `change` to ticket `id` for `caller` and records `ticket.updated` (and
/// `ticket.status_changed` when the status changed); a change to nothing writes nothing. Each
/// attempt reads the ticket with its users, then writes the row and its events in one statement
/// if the ticket is still as read (see [`write_unless_changed`]): two round trips.
pub async fn change_ticket(
    pool: &PgPool,
    caller: &Caller,
    id: Uuid,
    change: &TicketChange,
    ctx: &EventContext,
    optimistic: u32,
) -> ApiResult<Ticket> {
    let write = ChangeTicket {
        id,
        caller,
        change,
        ctx,
    };
    write_unless_changed(pool, &write, optimistic).await
}

struct ChangeTicket<'a> {
    id: Uuid,
    caller: &'a Caller,
    change: &'a TicketChange,
    ctx: &'a EventContext,
}

impl TicketWrite for ChangeTicket<'_> {
    type Done = Ticket;

    fn ticket(&self) -> Uuid {
        self.id
    }

    async fn attempt(&self, db: &mut PgConnection) -> ApiResult<Option<Ticket>> {
        let before = view(&mut *db, self.id)
            .await?
            .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
        if !can_view(before.user_id, before.assigned_to_user_id, self.caller) {
            return Err(ApiError::forbidden(NO_ACCESS));
        }
        let mut after = before.clone();
        let mut changes = Vec::new();
        if let Some(status) = self.change.status.filter(|s| *s != before.status) {
            after.status = status;
            changes.push("status".to_string());
        }
        if let Some(title) = self.change.title.as_ref().filter(|t| **t != before.title) {
            after.title.clone_from(title);
            changes.push("title".to_string());
        }
        if let Some(description) = self
            .change
            .description
            .as_ref()
            .filter(|d| **d != before.description)
        {
            after.description.clone_from(description);
            changes.push("description".to_string());
        }
        if changes.is_empty() {
            return Ok(Some(before));
        }
        after.updated_at = next_updated_at(before.updated_at);
        let mut events = OutboxColumns::default();
        events.publish(
            &TicketUpdated {
                ticket: after.snapshot(),
                changes,
            },
            self.ctx,
        )?;
        if after.status != before.status {
            events.publish(
                &TicketStatusChanged {
                    ticket: after.snapshot(),
                    old_status: before.status,
                    new_status: after.status,
                    creator: before.user.clone().into(),
                },
                self.ctx,
            )?;
        }
        let written = write_if_unchanged(db, &before, &after, &events, None).await?;
        Ok(written.then_some(after))
    }
}

/// Writes `after` (status, title, description, assignee, `updated_at`), its `events` and the
/// relay's wake-up (unless a relay is polling anyway) in one statement, only if the ticket is
/// still `before` (and, with `staff`, that user is still an AGENT or ADMIN): `false` when it was
/// not, and nothing was written.
pub(crate) async fn write_if_unchanged(
    db: &mut PgConnection,
    before: &Ticket,
    after: &Ticket,
    events: &OutboxColumns,
    staff: Option<Uuid>,
) -> sqlx::Result<bool> {
    let written = sqlx::query_scalar!(
        r#"WITH t AS (UPDATE tickets SET status = $2, title = $3, description = $4,
               assigned_to_user_id = $5, updated_at = $6
             WHERE id = $1 AND user_id = $7 AND status = $8 AND title = $9 AND description = $10
               AND assigned_to_user_id IS NOT DISTINCT FROM $11 AND updated_at = $12
               AND ($13::uuid IS NULL
                 OR EXISTS (SELECT FROM users WHERE id = $13 AND role IN ('AGENT', 'ADMIN')))
             RETURNING 1),
           o AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers)
             SELECT e, x, r, a, b, h
             FROM t, unnest($14::uuid[], $15::text[], $16::text[], $17::text[], $18::text[],
               $19::jsonb[]) WITH ORDINALITY AS n(e, x, r, a, b, h, o)
             ORDER BY o RETURNING 1)
           SELECT CASE WHEN NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())
             THEN pg_notify(current_schema() || '_outbox', '')::text END AS notified
           FROM t"#,
        before.id,
        after.status.as_str(),
        after.title,
        after.description,
        after.assigned_to_user_id,
        after.updated_at,
        before.user_id,
        before.status.as_str(),
        before.title,
        before.description,
        before.assigned_to_user_id,
        before.updated_at,
        staff,
        &events.event_ids,
        &events.exchanges as &[&str],
        &events.routing_keys,
        &events.aggregate_ids,
        &events.bodies,
        &events.headers,
    )
    .fetch_optional(&mut *db)
    .await?;
    Ok(written.is_some())
}

/// Delete a ticket and its comments: ADMIN any ticket, others only their own.
#[utoipa::path(delete, path = "/tickets/{id}", tag = "tickets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = Message), (status = 403, description = "Not yours"), (status = 404, description = "Ticket not found")))]
pub async fn delete_ticket(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Message>> {
    let ctx = request_context(request_id, &caller);
    let write = DeleteTicket {
        id,
        caller: &caller,
        ctx: &ctx,
    };
    write_unless_changed(&state.pool, &write, OPTIMISTIC_ATTEMPTS).await?;
    Ok(ApiJson(Message {
        message: "Ticket deleted successfully".into(),
    }))
}

/// Deletes ticket `id` (its comments go with it) and records `ticket.deleted`. Each attempt reads
/// the ticket, then deletes it and writes its event in one statement if it is still as read (see
/// [`write_unless_changed`]): two round trips.
struct DeleteTicket<'a> {
    id: Uuid,
    caller: &'a Caller,
    ctx: &'a EventContext,
}

impl TicketWrite for DeleteTicket<'_> {
    type Done = ();

    fn ticket(&self) -> Uuid {
        self.id
    }

    async fn attempt(&self, db: &mut PgConnection) -> ApiResult<Option<()>> {
        let ticket = find(&mut *db, self.id)
            .await?
            .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
        if !self.caller.is_admin() && ticket.user_id != self.caller.id {
            let who = if self.caller.role == Role::Agent {
                "Agents"
            } else {
                "Users"
            };
            return Err(ApiError::forbidden(format!(
                "{who} can only delete tickets they created"
            )));
        }
        let out = OutboxRow::event(
            &TicketDeleted {
                ticket: ticket.snapshot(),
            },
            self.ctx,
        )?;
        let deleted = sqlx::query_scalar!(
            r#"WITH t AS (DELETE FROM tickets
                 WHERE id = $1 AND user_id = $2 AND status = $3 AND title = $4
                   AND assigned_to_user_id IS NOT DISTINCT FROM $5 AND updated_at = $6
                 RETURNING 1),
               o AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers)
                 SELECT $7, $8, $9, $10, $11, $12 FROM t RETURNING 1)
               SELECT CASE WHEN NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())
                 THEN pg_notify(current_schema() || '_outbox', '')::text END AS notified
               FROM t"#,
            ticket.id,
            ticket.user_id,
            ticket.status.as_str(),
            ticket.title,
            ticket.assigned_to_user_id,
            ticket.updated_at,
            out.event_id,
            out.exchange,
            out.routing_key,
            out.aggregate_id,
            out.body,
            out.headers,
        )
        .fetch_optional(&mut *db)
        .await?;
        Ok(deleted.map(|_| ()))
    }
}

/// Deletes a ticket (its comments go with it) and records `ticket.deleted`.
async fn delete_with_event(
    tx: &mut PgConnection,
    ticket: &TicketRow,
    ctx: &EventContext,
) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM tickets WHERE id = $1", ticket.id)
        .execute(&mut *tx)
        .await?;
    outbox::publish(
        tx,
        &TicketDeleted {
            ticket: ticket.snapshot(),
        },
        ctx,
    )
    .await?;
    Ok(())
}

/// `user.deleted`: removes every ticket the user created, one `ticket.deleted` each.
pub async fn remove_user_tickets(
    tx: &mut PgConnection,
    user_id: Uuid,
    ctx: &EventContext,
) -> sqlx::Result<usize> {
    let owned = sqlx::query_as!(
        TicketRow,
        r#"SELECT id, user_id, title, description, status AS "status: TicketStatus",
             assigned_to_user_id, created_at, updated_at
           FROM tickets WHERE user_id = $1 ORDER BY created_at, id FOR UPDATE"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    for ticket in &owned {
        delete_with_event(tx, ticket, ctx).await?;
    }
    Ok(owned.len())
}
