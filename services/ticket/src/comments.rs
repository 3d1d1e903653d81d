//! Comments on a ticket; internal notes are for staff only.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult, check_length};
use helpdesk_kit::events::TicketCommentAdded;
use helpdesk_kit::http::RequestId;
use helpdesk_kit::outbox::{EventContext, OutboxRow};

use crate::AppState;
use crate::tickets::{
    self, NOT_FOUND, OPTIMISTIC_ATTEMPTS, TicketRow, TicketWrite, request_context,
    write_unless_changed,
};
use crate::users::Caller;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/tickets/{id}/comments",
        get(list_comments).post(add_comment),
    )
}

pub const BODY_MAX: usize = 10_000;

/// A comment's author (`UserRef` with `role`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommentAuthor {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Option<Role>,
}

/// The contract's Comment object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: Uuid,
    pub ticket_id: Uuid,
    pub author_id: Uuid,
    pub body: String,
    pub is_internal: bool,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
    pub author: CommentAuthor,
}

struct CommentRow {
    id: Uuid,
    ticket_id: Uuid,
    author_id: Uuid,
    body: String,
    is_internal: bool,
    created_at: DateTime<Utc>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    role: Option<Role>,
}

impl From<CommentRow> for Comment {
    fn from(r: CommentRow) -> Self {
        Comment {
            id: r.id,
            ticket_id: r.ticket_id,
            author_id: r.author_id,
            body: r.body,
            is_internal: r.is_internal,
            created_at: r.created_at,
            author: CommentAuthor {
                id: r.author_id,
                email: r.email.unwrap_or_default(),
                first_name: r.first_name,
                last_name: r.last_name,
                role: r.role,
            },
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"body": "Looking into it.", "isInternal": false}))]
pub struct CreateComment {
    /// 1–10 000 characters after trimming.
    #[schema(required = true, value_type = String, format = "trimmed", min_length = 1, max_length = 10000)]
    pub body: Option<String>,
    /// Honoured only for staff.
    pub is_internal: Option<bool>,
}

/// Who may read and write a ticket's comments: whoever can view the ticket.
fn check_access(caller: &Caller, ticket: &TicketRow) -> ApiResult<()> {
    if ticket.visible_to(caller) {
        Ok(())
    } else {
        Err(ApiError::forbidden(crate::tickets::NO_ACCESS))
    }
}

/// A ticket's comments, oldest first (a USER never sees internal notes).
#[utoipa::path(get, path = "/tickets/{id}/comments", tag = "comments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 200, body = [Comment]), (status = 403, description = "No access"), (status = 404, description = "Ticket not found")))]
pub async fn list_comments(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Vec<Comment>>> {
    let ticket = tickets::find(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    check_access(&caller, &ticket)?;
    let rows = sqlx::query_as!(
        CommentRow,
        r#"SELECT c.id, c.ticket_id, c.author_id, c.body, c.is_internal, c.created_at,
             u.email AS "email?", u.first_name, u.last_name, u.role AS "role?: Role"
           FROM comments c LEFT JOIN users u ON u.id = c.author_id
           WHERE c.ticket_id = $1 AND (NOT c.is_internal OR $2)
           ORDER BY c.created_at, c.id"#,
        id,
        caller.is_staff(),
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(rows.into_iter().map(Comment::from).collect()))
}

/// Add a comment (`isInternal` only for staff).
#[utoipa::path(post, path = "/tickets/{id}/comments", request_body = CreateComment, tag = "comments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Ticket id")),
    responses((status = 201, body = Comment), (status = 400, description = "Invalid body"), (status = 403, description = "No access"),
        (status = 404, description = "Ticket not found")))]
pub async fn add_comment(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateComment>,
) -> ApiResult<(StatusCode, ApiJson<Comment>)> {
    let text = body
        .body
        .ok_or_else(|| ApiError::bad_request("body is required"))?
        .trim()
        .to_string();
    check_length("body", &text, 1, BODY_MAX)?;
    let is_internal = caller.is_staff() && body.is_internal.unwrap_or(false);
    let ctx = request_context(request_id, &caller);
    let comment = add(
        &state.pool,
        &caller,
        id,
        text,
        is_internal,
        &ctx,
        OPTIMISTIC_ATTEMPTS,
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(comment)))
}

/// Adds `caller`'s comment to ticket `ticket_id` and records `ticket.comment_added`, if the caller
/// can view the ticket. The ticket is read, and the comment and its event are written in one
/// statement if the ticket is still as read (see [`write_unless_changed`]): two round trips. The
/// statement holds the ticket's share lock, so a concurrent delete cannot orphan the comment.
pub async fn add(
    pool: &PgPool,
    caller: &Caller,
    ticket_id: Uuid,
    body: String,
    is_internal: bool,
    ctx: &EventContext,
    optimistic: u32,
) -> ApiResult<Comment> {
    let write = AddComment {
        ticket_id,
        comment_id: Uuid::now_v7(),
        caller,
        body: &body,
        is_internal,
        ctx,
    };
    let created_at = write_unless_changed(pool, &write, optimistic).await?;
    let comment_id = write.comment_id;
    // The author is the caller, just resolved from the read model: no further look-up.
    Ok(Comment {
        id: comment_id,
        ticket_id,
        author_id: caller.id,
        body,
        is_internal,
        created_at,
        author: CommentAuthor {
            id: caller.id,
            email: caller.email.clone(),
            first_name: caller.first_name.clone(),
            last_name: caller.last_name.clone(),
            role: Some(caller.role),
        },
    })
}

struct AddComment<'a> {
    ticket_id: Uuid,
    comment_id: Uuid,
    caller: &'a Caller,
    body: &'a str,
    is_internal: bool,
    ctx: &'a EventContext,
}

impl TicketWrite for AddComment<'_> {
    type Done = DateTime<Utc>;

    fn ticket(&self) -> Uuid {
        self.ticket_id
    }

    async fn attempt(&self, db: &mut PgConnection) -> ApiResult<Option<DateTime<Utc>>> {
        let ticket = tickets::find(&mut *db, self.ticket_id)
            .await?
            .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
        check_access(self.caller, &ticket)?;
        let event = TicketCommentAdded {
            ticket: ticket.snapshot(),
            comment_id: self.comment_id,
            author_id: self.caller.id,
            is_internal: self.is_internal,
        };
        let out = OutboxRow::event(&event, self.ctx)?;
        let written = sqlx::query!(
            r#"WITH t AS (SELECT FROM tickets WHERE id = $1 AND user_id = $2 AND status = $3
                   AND title = $4 AND assigned_to_user_id IS NOT DISTINCT FROM $5 AND updated_at = $6
                 FOR SHARE),
               c AS (INSERT INTO comments (id, ticket_id, author_id, body, is_internal)
                 SELECT $7, $1, $8, $9, $10 FROM t RETURNING created_at),
               o AS (INSERT INTO outbox (event_id, exchange, routing_key, aggregate_id, body, headers)
                 SELECT $11, $12, $13, $14, $15, $16 FROM c RETURNING 1)
               SELECT c.created_at,
                 CASE WHEN NOT EXISTS (SELECT FROM outbox_relay WHERE awake_until > clock_timestamp())
                   THEN pg_notify(current_schema() || '_outbox', '')::text END AS notified
               FROM c"#,
            self.ticket_id,
            ticket.user_id,
            ticket.status.as_str(),
            ticket.title,
            ticket.assigned_to_user_id,
            ticket.updated_at,
            self.comment_id,
            self.caller.id,
            self.body,
            self.is_internal,
            out.event_id,
            out.exchange,
            out.routing_key,
            out.aggregate_id,
            out.body,
            out.headers,
        )
        .fetch_optional(&mut *db)
        .await?;
        Ok(written.map(|r| r.created_at))
    }
}

/// `user.deleted`: removes the user's comments on other users' tickets (their own tickets are
/// already gone with theirs).
pub async fn remove_user_comments(tx: &mut PgConnection, user_id: Uuid) -> sqlx::Result<u64> {
    Ok(
        sqlx::query!("DELETE FROM comments WHERE author_id = $1", user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
    )
}
