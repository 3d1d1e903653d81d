//! Assigning a ticket to a staff member (ADMIN only), and unassigning.

use axum::Router;
use axum::extract::State;
use axum::routing::patch;
use serde::{Deserialize, Deserializer};
use sqlx::PgConnection;
use uuid::Uuid;

use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult};
use helpdesk_kit::events::{TicketAssigned, TicketStatus, TicketUnassigned};
use helpdesk_kit::http::RequestId;
use helpdesk_kit::outbox::{self, EventContext, OutboxColumns};

use crate::AppState;
use crate::tickets::{
    self, NOT_FOUND, OPTIMISTIC_ATTEMPTS, Ticket, TicketRow, TicketWrite, creator_ref,
    next_updated_at, request_context, write_if_unchanged, write_unless_changed,
};
use crate::users::{self, Caller};

pub fn routes() -> Router<AppState> {
    Router::new().route("/tickets/{id}/assign", patch(assign_ticket))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"assignedToUserId": null}))]
pub struct AssignRequest {
    /// The staff member to assign, or `null` to unassign. Required.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Uuid>, required = true)]
    pub assigned_to_user_id: Option<Option<Uuid>>,
}

/// Tells a field given as `null` (`Some(None)`) from a missing one (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

async fn set_assignee(
    tx: &mut PgConnection,
    id: Uuid,
    assignee: Option<Uuid>,
) -> sqlx::Result<TicketRow> {
    sqlx::query_as!(
        TicketRow,
        r#"UPDATE tickets SET assigned_to_user_id = $2, updated_at = now() WHERE id = $1
           RETURNING id, user_id, title, description, status AS "status: TicketStatus",
             assigned_to_user_id, created_at, updated_at"#,
        id,
        assignee,
    )
    .fetch_one(&mut *tx)
    .await
}

async fn publish_unassigned(
    tx: &mut PgConnection,
    before: &TicketRow,
    after: &TicketRow,
    ctx: &EventContext,
) -> sqlx::Result<()> {
    let creator = creator_ref(tx, after).await?;
    let event = TicketUnassigned {
        ticket: after.snapshot(),
        previous_assignee_id: before.assigned_to_user_id,
        creator,
    };
    outbox::publish(tx, &event, ctx).await?;
    Ok(())
}

/// Assign a ticket to a staff member, or unassign it (ADMIN).
#[utoipa::path(patch, path = "/tickets/{id}/assign", request_body = AssignRequest, tag = "tickets", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = Ticket), (status = 400, description = "Assignee missing or not staff"),
        (status = 403, description = "Not an ADMIN"), (status = 404, description = "Ticket not found")))]
pub async fn assign_ticket(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<AssignRequest>,
) -> ApiResult<ApiJson<Ticket>> {
    if !caller.is_admin() {
        return Err(ApiError::forbidden(
            "Only administrators can assign tickets",
        ));
    }
    let target = body
        .assigned_to_user_id
        .ok_or_else(|| ApiError::bad_request("assignedToUserId is required (a user id or null)"))?;
    let ctx = request_context(request_id, &caller);
    let write = Assign {
        id,
        target,
        ctx: &ctx,
    };
    let ticket = write_unless_changed(&state.pool, &write, OPTIMISTIC_ATTEMPTS).await?;
    Ok(ApiJson(ticket))
}

/// Assigns ticket `id` to `target` (a staff member) or unassigns it (`None`), and records
/// `ticket.assigned` or `ticket.unassigned`; the same assignee again writes nothing. Each attempt
/// reads the ticket with its users and the assignee, then writes the row and its event in one
/// statement if the ticket is still as read and the assignee still staff (see
/// [`write_unless_changed`]): three round trips.
struct Assign<'a> {
    id: Uuid,
    target: Option<Uuid>,
    ctx: &'a EventContext,
}

impl TicketWrite for Assign<'_> {
    type Done = Ticket;

    fn ticket(&self) -> Uuid {
        self.id
    }

    async fn attempt(&self, db: &mut PgConnection) -> ApiResult<Option<Ticket>> {
        let before = tickets::view(&mut *db, self.id)
            .await?
            .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
        let assignee = match self.target {
            None => None,
            Some(user_id) => {
                let user = users::find(&mut *db, user_id)
                    .await?
                    .ok_or_else(|| ApiError::bad_request("Assignee does not exist"))?;
                if !user.role.is_staff() {
                    return Err(ApiError::bad_request("Assignee must be an AGENT or ADMIN"));
                }
                Some(user)
            }
        };
        let new_id = assignee.as_ref().map(|u| u.id);
        if new_id == before.assigned_to_user_id {
            return Ok(Some(before));
        }
        let mut after = before.clone();
        after.assigned_to_user_id = new_id;
        after.assigned_to = assignee.as_ref().map(|u| u.reference());
        after.updated_at = next_updated_at(before.updated_at);
        let mut events = OutboxColumns::default();
        let creator = before.user.clone().into();
        match &assignee {
            Some(user) => events.publish(
                &TicketAssigned {
                    ticket: after.snapshot(),
                    assignee: user.reference().into(),
                    previous_assignee_id: before.assigned_to_user_id,
                    creator,
                },
                self.ctx,
            )?,
            None => events.publish(
                &TicketUnassigned {
                    ticket: after.snapshot(),
                    previous_assignee_id: before.assigned_to_user_id,
                    creator,
                },
                self.ctx,
            )?,
        };
        let written = write_if_unchanged(db, &before, &after, &events, new_id).await?;
        Ok(written.then_some(after))
    }
}

/// `user.deleted`: unassigns every ticket assigned to the user, one `ticket.unassigned` each.
pub async fn unassign_user(
    tx: &mut PgConnection,
    user_id: Uuid,
    ctx: &EventContext,
) -> sqlx::Result<usize> {
    let assigned = sqlx::query_as!(
        TicketRow,
        r#"SELECT id, user_id, title, description, status AS "status: TicketStatus",
             assigned_to_user_id, created_at, updated_at
           FROM tickets WHERE assigned_to_user_id = $1 ORDER BY created_at, id FOR UPDATE"#,
        user_id,
    )
    .fetch_all(&mut *tx)
    .await?;
    for before in &assigned {
        let after = set_assignee(tx, before.id, None).await?;
        publish_unassigned(tx, before, &after, ctx).await?;
    }
    Ok(assigned.len())
}
