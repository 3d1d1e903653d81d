//! Ticket listings: the caller's own tickets (or all, for ADMIN), the inbox, filters and pages.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use helpdesk_kit::error::{ApiError, ApiJson, ApiQuery, ApiResult, check_length};
use helpdesk_kit::events::TicketStatus;

use crate::AppState;
use crate::tickets::{Ticket, TicketViewRow, VIEW, parse_status};
use crate::users::Caller;
use helpdesk_kit::pagination::{Cursor, PageRequest, next_cursor_header};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListQuery {
    /// ADMIN only: every ticket instead of the caller's own.
    pub show_all: Option<bool>,
    /// `OPEN`, `IN_PROGRESS` or `DONE`.
    #[param(pattern = "^(OPEN|IN_PROGRESS|DONE)?$")]
    pub status: Option<String>,
    /// An assignee's id, or `null` for unassigned tickets.
    #[param(
        pattern = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|null)?$"
    )]
    pub assigned_to_user_id: Option<String>,
    /// Text in the title or description (case-insensitive), at most 200 characters.
    #[param(format = "trimmed", max_length = 200)]
    pub q: Option<String>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(format = "cursor", min_length = 1)]
    pub cursor: Option<String>,
}

/// Which tickets a listing starts from.
#[derive(Debug, Clone, Copy)]
enum Scope {
    All,
    CreatedBy(Uuid),
    AssignedTo(Uuid),
}

enum AssigneeFilter {
    Any,
    Unassigned,
    User(Uuid),
}

struct Filters {
    status: Option<TicketStatus>,
    assignee: AssigneeFilter,
    text: Option<String>,
}

impl Filters {
    fn parse(q: &ListQuery) -> ApiResult<Self> {
        // Filters are taken as sent (no trimming), as their documented patterns say; empty
        // means none.
        let status = match q.status.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(parse_status(s)?),
        };
        let assignee =
            match q.assigned_to_user_id.as_deref().filter(|s| !s.is_empty()) {
                None => AssigneeFilter::Any,
                Some("null") => AssigneeFilter::Unassigned,
                Some(s) => AssigneeFilter::User(s.parse().map_err(|_| {
                    ApiError::bad_request("assignedToUserId must be a UUID or null")
                })?),
            };
        let text = match q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                check_length("q", s, 1, 200)?;
                Some(s.to_string())
            }
        };
        Ok(Self {
            status,
            assignee,
            text,
        })
    }
}

/// `%text%` for ILIKE with the pattern characters escaped.
fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

async fn page(
    state: &AppState,
    scope: Scope,
    q: &ListQuery,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    let filters = Filters::parse(q)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(VIEW);
    sql.push(" WHERE TRUE");
    match scope {
        Scope::All => {}
        Scope::CreatedBy(id) => {
            sql.push(" AND t.user_id = ").push_bind(id);
        }
        Scope::AssignedTo(id) => {
            sql.push(" AND t.assigned_to_user_id = ").push_bind(id);
        }
    }
    if let Some(status) = filters.status {
        sql.push(" AND t.status = ").push_bind(status.as_str());
    }
    match filters.assignee {
        AssigneeFilter::Any => {}
        AssigneeFilter::Unassigned => {
            sql.push(" AND t.assigned_to_user_id IS NULL");
        }
        AssigneeFilter::User(id) => {
            sql.push(" AND t.assigned_to_user_id = ").push_bind(id);
        }
    }
    if let Some(text) = &filters.text {
        let pattern = like_pattern(text);
        sql.push(" AND (t.title ILIKE ").push_bind(pattern.clone());
        sql.push(" OR t.description ILIKE ")
            .push_bind(pattern)
            .push(")");
    }
    if let Some(after) = page.after {
        sql.push(" AND (t.created_at, t.id) < (")
            .push_bind(after.created_at);
        sql.push(", ").push_bind(after.id).push(")");
    }
    sql.push(" ORDER BY t.created_at DESC, t.id DESC LIMIT ")
        .push_bind(page.fetch());
    let mut rows: Vec<TicketViewRow> = sql.build_query_as().fetch_all(&state.pool).await?;
    let next = page.finish(&mut rows, |r| Cursor {
        created_at: r.created_at,
        id: r.id,
    });
    Ok((
        next_cursor_header(next),
        ApiJson(rows.into_iter().map(Ticket::from).collect()),
    ))
}

/// The caller's tickets (ADMIN with `showAll=true`: every ticket), newest first.
#[utoipa::path(get, path = "/tickets", params(ListQuery), tag = "tickets", security(("bearer" = [])),
    responses((status = 200, body = [Ticket], headers(("x-next-cursor" = String, description = "Cursor of the next page, when there is one"))),
        (status = 400, description = "Invalid filter, limit or cursor")))]
pub async fn list_tickets(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    let scope = if caller.is_admin() && q.show_all == Some(true) {
        Scope::All
    } else {
        Scope::CreatedBy(caller.id)
    };
    page(&state, scope, &q).await
}

/// Tickets assigned to the caller, newest first.
#[utoipa::path(get, path = "/tickets/inbox", params(ListQuery), tag = "tickets", security(("bearer" = [])),
    responses((status = 200, body = [Ticket], headers(("x-next-cursor" = String, description = "Cursor of the next page, when there is one"))),
        (status = 400, description = "Invalid filter, limit or cursor")))]
pub async fn inbox(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    page(&state, Scope::AssignedTo(caller.id), &q).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
