//! Ticket listings: the caller's own tickets (or all, for ADMIN), the inbox, filters and pages.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder, Row};
use uuid::Uuid;

use helpdesk_kit::error::{ApiError, ApiJson, ApiQuery, ApiResult, check_length};
use helpdesk_kit::events::TicketStatus;

use crate::AppState;
use crate::tickets::{Ticket, TicketViewRow, VIEW, parse_status};
use crate::users;
use helpdesk_kit::auth::{AuthUser, Role};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Appends the page's query (the ticket view, `scope`, the filters, the keyset page) to `sql`.
fn push_page(
    sql: &mut QueryBuilder<Postgres>,
    scope: Scope,
    filters: &Filters,
    page: &PageRequest,
) {
    sql.push(VIEW).push(" WHERE TRUE");
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
}

fn respond(page: &PageRequest, mut rows: Vec<TicketViewRow>) -> (HeaderMap, ApiJson<Vec<Ticket>>) {
    let next = page.finish(&mut rows, |r| Cursor {
        created_at: r.created_at,
        id: r.id,
    });
    (
        next_cursor_header(next),
        ApiJson(rows.into_iter().map(Ticket::from).collect()),
    )
}

/// A page for a resolved caller.
async fn page(
    state: &AppState,
    scope: Scope,
    q: &ListQuery,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    let filters = Filters::parse(q)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let mut sql = QueryBuilder::new("");
    push_page(&mut sql, scope, &filters, &page);
    let rows: Vec<TicketViewRow> = sql.build_query_as().fetch_all(&state.pool).await?;
    Ok(respond(&page, rows))
}

/// The caller look-up of [`users::resolve`], as the first part of a listing's statement.
const LOOKUP: &str = "SELECT u.email AS caller_email, u.first_name AS caller_first_name, \
     u.last_name AS caller_last_name, u.role AS caller_role, u.revision AS caller_revision, \
     (d.id IS NOT NULL) AS caller_deleted, \
     u.token_epoch AS caller_token_epoch, u.kept_session AS caller_kept_session \
     FROM (VALUES (";

/// The columns [`LOOKUP`] puts before the page's.
const CALLER_COLUMNS: usize = 8;

/// Which tickets a listing shows to a caller who is (or is not) an ADMIN.
fn scope_for(id: Uuid, admin: bool, q: &ListQuery, inbox: bool) -> Scope {
    if inbox {
        Scope::AssignedTo(id)
    } else if admin && q.show_all == Some(true) {
        Scope::All
    } else {
        Scope::CreatedBy(id)
    }
}

/// A listing in one round trip: who is calling (checked as [`users::resolve`] checks it, against
/// the read model, not the token) and the page, in one statement. The scope is chosen from the
/// token's role and used only when the read model's role gives the same scope; otherwise (a
/// changed role) and for a caller the read model does not know yet, the listing falls back to
/// resolving the caller first.
async fn listing(
    state: &AppState,
    token: &AuthUser,
    q: &ListQuery,
    inbox: bool,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    // A caller the cache knows (kept current by the read model's changes): the page alone.
    if let Some(found) = state.callers.get(token.id)
        && let Some(caller) = users::admit(token, found)?
    {
        return page(state, scope_for(caller.id, caller.is_admin(), q, inbox), q).await;
    }
    let filters = Filters::parse(q)?;
    let request = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let scope = scope_for(token.id, token.role == Role::Admin, q, inbox);
    let seen = state.callers.epoch();
    let mut sql = QueryBuilder::new("WITH k AS (");
    sql.push(LOOKUP).push_bind(token.id).push(
        "::uuid)) AS k (id) LEFT JOIN users u ON u.id = k.id \
             LEFT JOIN deleted_users d ON d.id = k.id), p AS (",
    );
    push_page(&mut sql, scope, &filters, &request);
    sql.push(") SELECT k.*, p.* FROM k LEFT JOIN p ON TRUE ORDER BY p.created_at DESC, p.id DESC");
    let rows = sql.build().fetch_all(&state.pool).await?;
    let Some(first) = rows.first() else {
        return Err(ApiError::internal("the caller look-up returned no row"));
    };
    let role: Option<String> = first.try_get("caller_role")?;
    let found = users::Lookup {
        email: first.try_get("caller_email")?,
        first_name: first.try_get("caller_first_name")?,
        last_name: first.try_get("caller_last_name")?,
        role: role
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| {
                ApiError::internal(format!("unexpected role in the read model: {e}"))
            })?,
        revision: first.try_get("caller_revision")?,
        deleted: first.try_get("caller_deleted")?,
        token_epoch: first.try_get("caller_token_epoch")?,
        kept_session: first.try_get("caller_kept_session")?,
    };
    if found.deleted || found.email.is_some() {
        state.callers.remember(token.id, &found, seen);
    }
    let caller = match users::admit(token, found)? {
        Some(caller) => caller,
        None => users::resolve(&state.pool, &state.callers, token).await?,
    };
    let wanted = scope_for(caller.id, caller.is_admin(), q, inbox);
    if wanted != scope {
        return page(state, wanted, q).await;
    }
    let mut tickets = Vec::with_capacity(rows.len());
    for row in &rows {
        if row.try_get::<Option<Uuid>, _>("id")?.is_some() {
            tickets.push(TicketViewRow::from_row_at(row, CALLER_COLUMNS)?);
        }
    }
    Ok(respond(&request, tickets))
}

/// The caller's tickets (ADMIN with `showAll=true`: every ticket), newest first.
#[utoipa::path(get, path = "/tickets", params(ListQuery), tag = "tickets", security(("bearer" = [])),
    responses((status = 200, body = [Ticket], headers(("x-next-cursor" = String, description = "Cursor of the next page, when there is one"))),
        (status = 400, description = "Invalid filter, limit or cursor")))]
pub async fn list_tickets(
    State(state): State<AppState>,
    token: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    listing(&state, &token, &q, false).await
}

/// Tickets assigned to the caller, newest first.
#[utoipa::path(get, path = "/tickets/inbox", params(ListQuery), tag = "tickets", security(("bearer" = [])),
    responses((status = 200, body = [Ticket], headers(("x-next-cursor" = String, description = "Cursor of the next page, when there is one"))),
        (status = 400, description = "Invalid filter, limit or cursor")))]
pub async fn inbox(
    State(state): State<AppState>,
    token: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<(HeaderMap, ApiJson<Vec<Ticket>>)> {
    listing(&state, &token, &q, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
