//! The audit log: entries, their routes (append-only: a write route for services, read routes for
//! staff and admins) and their queries, newest first with keyset pagination.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, PgConnection, PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use helpdesk_kit::auth::{Role, ServiceCaller};
use helpdesk_kit::error::{
    ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, check_length, check_timestamp,
};
use helpdesk_kit::events::redact_secrets;

use crate::AppState;
use crate::users::{Caller, StaffOrService, UserRef};
use helpdesk_kit::pagination::{Cursor, PageRequest, next_cursor_header};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/audit/log", post(log_entry))
        .route("/audit/entity/{entity_type}/{entity_id}", get(by_entity))
        .route("/audit/actor/{id}", get(by_actor))
        .route("/audit/search", get(search))
}

/// The contract's AuditEvent object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub id: Uuid,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
    pub actor: Option<UserRef>,
}

#[derive(FromRow)]
struct EntryRow {
    id: Uuid,
    actor_id: Option<Uuid>,
    action: String,
    entity_type: String,
    entity_id: String,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
}

impl From<EntryRow> for AuditEvent {
    fn from(r: EntryRow) -> Self {
        let actor = match (r.actor_id, r.email) {
            (Some(id), Some(email)) => Some(UserRef {
                id,
                email,
                first_name: r.first_name,
                last_name: r.last_name,
            }),
            _ => None,
        };
        AuditEvent {
            id: r.id,
            actor_id: r.actor_id,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            metadata: r.metadata,
            created_at: r.created_at,
            actor,
        }
    }
}

/// The start of the listing's query (filters, order and page are added to it, see [`list`]);
/// `find` is the same query for one entry.
const VIEW: &str = "SELECT a.id, a.actor_id, a.action, a.entity_type, a.entity_id, a.metadata, a.created_at, \
     u.email, u.first_name, u.last_name FROM audit_events a LEFT JOIN users u ON u.id = a.actor_id";

/// An entry to write.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// The domain event it records (`None` for entries written through the API).
    pub event_id: Option<Uuid>,
    pub actor_id: Option<Uuid>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: String,
    /// Already free of secrets.
    pub metadata: serde_json::Value,
    /// When it happened (`None`: now).
    pub created_at: Option<DateTime<Utc>>,
}

/// Writes an entry; an event already recorded is not recorded again. Returns the new entry's id.
pub async fn insert(db: &mut PgConnection, e: &NewEntry) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "INSERT INTO audit_events (id, event_id, actor_id, action, entity_type, entity_id, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, COALESCE($8, now())) ON CONFLICT (event_id) DO NOTHING RETURNING id",
        Uuid::now_v7(),
        e.event_id,
        e.actor_id,
        e.action,
        e.entity_type,
        e.entity_id,
        e.metadata,
        e.created_at,
    )
    .fetch_optional(db)
    .await
}

/// Writes entries in one statement (in order); events already recorded are not recorded again.
pub async fn insert_all(db: &mut PgConnection, entries: &[NewEntry]) -> sqlx::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = entries.iter().map(|_| Uuid::now_v7()).collect();
    let event_ids: Vec<Option<Uuid>> = entries.iter().map(|e| e.event_id).collect();
    let actors: Vec<Option<Uuid>> = entries.iter().map(|e| e.actor_id).collect();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    let entity_types: Vec<&str> = entries.iter().map(|e| e.entity_type.as_str()).collect();
    let entity_ids: Vec<&str> = entries.iter().map(|e| e.entity_id.as_str()).collect();
    let metadata: Vec<&serde_json::Value> = entries.iter().map(|e| &e.metadata).collect();
    let created: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| e.created_at).collect();
    sqlx::query!(
        "INSERT INTO audit_events (id, event_id, actor_id, action, entity_type, entity_id, metadata, created_at) \
         SELECT i, e, a, ac, et, ei, m, COALESCE(c, now()) \
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::jsonb[], \
                     $8::timestamptz[]) WITH ORDINALITY AS n(i, e, a, ac, et, ei, m, c, o) \
         ORDER BY o ON CONFLICT (event_id) DO NOTHING",
        &ids,
        &event_ids as &[Option<Uuid>],
        &actors as &[Option<Uuid>],
        &actions as &[&str],
        &entity_types as &[&str],
        &entity_ids as &[&str],
        &metadata as &[&serde_json::Value],
        &created as &[Option<DateTime<Utc>>],
    )
    .execute(db)
    .await?;
    Ok(())
}

async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<AuditEvent>> {
    let row = sqlx::query_as!(
        EntryRow,
        r#"SELECT a.id, a.actor_id, a.action, a.entity_type, a.entity_id, a.metadata, a.created_at,
             u.email AS "email?", u.first_name, u.last_name
           FROM audit_events a LEFT JOIN users u ON u.id = a.actor_id
           WHERE a.id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(AuditEvent::from))
}

/// Filters of a listing; every one optional.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of entries matching `filters`, newest first, and the next page's cursor.
pub async fn list(
    db: impl PgExecutor<'_>,
    filters: &Filters,
    page: &PageRequest,
) -> sqlx::Result<(Vec<AuditEvent>, Option<Cursor>)> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(VIEW);
    sql.push(" WHERE TRUE");
    if let Some(v) = &filters.action {
        sql.push(" AND a.action = ").push_bind(v.clone());
    }
    if let Some(v) = &filters.entity_type {
        sql.push(" AND a.entity_type = ").push_bind(v.clone());
    }
    if let Some(v) = &filters.entity_id {
        sql.push(" AND a.entity_id = ").push_bind(v.clone());
    }
    if let Some(v) = filters.actor_id {
        sql.push(" AND a.actor_id = ").push_bind(v);
    }
    if let Some(v) = filters.from {
        sql.push(" AND a.created_at >= ").push_bind(v);
    }
    if let Some(v) = filters.to {
        sql.push(" AND a.created_at <= ").push_bind(v);
    }
    if let Some(after) = page.after {
        sql.push(" AND (a.created_at, a.id) < (")
            .push_bind(after.created_at);
        sql.push(", ").push_bind(after.id).push(")");
    }
    sql.push(" ORDER BY a.created_at DESC, a.id DESC LIMIT ")
        .push_bind(page.fetch());
    let mut rows: Vec<EntryRow> = sql.build_query_as().fetch_all(db).await?;
    let next = page.finish(&mut rows, |r| Cursor {
        created_at: r.created_at,
        id: r.id,
    });
    Ok((rows.into_iter().map(AuditEvent::from).collect(), next))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogRequest {
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    /// An object; secrets (passwords, tokens, hashes, reset links) are removed before storing.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
}

fn required(field: &str, value: Option<String>, max: usize) -> ApiResult<String> {
    let v = value
        .ok_or_else(|| ApiError::bad_request(format!("{field} is required")))?
        .trim()
        .to_string();
    check_length(field, &v, 1, max)?;
    Ok(v)
}

/// Record an entry (internal: service credential).
#[utoipa::path(post, path = "/audit/log", request_body = LogRequest, tag = "audit", security(("bearer" = [])),
    responses((status = 201, body = AuditEvent), (status = 400, description = "Invalid field"), (status = 401, description = "No service credential")))]
pub async fn log_entry(
    State(state): State<AppState>,
    _c: ServiceCaller,
    ApiJson(body): ApiJson<LogRequest>,
) -> ApiResult<(StatusCode, ApiJson<AuditEvent>)> {
    let metadata = match body.metadata {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(v @ serde_json::Value::Object(_)) => redact_secrets(&v),
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    };
    let entry = NewEntry {
        event_id: None,
        actor_id: body.actor_id,
        action: required("action", body.action, 100)?,
        entity_type: required("entityType", body.entity_type, 50)?,
        entity_id: required("entityId", body.entity_id, 200)?,
        metadata,
        created_at: None,
    };
    let mut conn = state.pool.acquire().await?;
    let id = insert(&mut conn, &entry)
        .await?
        .ok_or_else(|| ApiError::internal("audit entry was not written"))?;
    let event = find(&mut *conn, id)
        .await?
        .ok_or_else(|| ApiError::internal("audit entry vanished"))?;
    Ok((StatusCode::CREATED, ApiJson(event)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(format = "cursor", min_length = 1)]
    pub cursor: Option<String>,
}

type Page = (HeaderMap, ApiJson<Vec<AuditEvent>>);

/// An entity's trail, newest first (staff, or a service on their behalf).
#[utoipa::path(get, path = "/audit/entity/{entity_type}/{entity_id}",
    params(("entity_type" = String, Path, description = "The kind of entity (`ticket`, `user`, `email`)", min_length = 1, max_length = 50),
        ("entity_id" = String, Path, description = "The entity's id", min_length = 1, max_length = 200), PageQuery), tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], headers(("x-next-cursor" = String, description = "Cursor of the next page"))),
        (status = 403, description = "Not staff")))]
pub async fn by_entity(
    State(state): State<AppState>,
    who: StaffOrService,
    ApiPath((entity_type, entity_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Page> {
    // Of the services, only ticket-service reads a trail (for GET /tickets/:id/audit).
    if let StaffOrService::Service(service) = &who
        && service != helpdesk_kit::contract::Service::Ticket.binary()
    {
        return Err(ApiError::forbidden(format!(
            "{service} may not call this route"
        )));
    }
    // The limits of what POST /audit/log stores (and of the route's documentation).
    check_length("entity_type", &entity_type, 1, 50)?;
    check_length("entity_id", &entity_id, 1, 200)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filters = Filters {
        entity_type: Some(entity_type),
        entity_id: Some(entity_id),
        ..Default::default()
    };
    let (items, next) = list(&state.pool, &filters, &page).await?;
    Ok((next_cursor_header(next), ApiJson(items)))
}

fn require_admin(caller: &Caller) -> ApiResult<()> {
    if caller.role == Role::Admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("Only administrators can do this"))
    }
}

/// What one user did, newest first (ADMIN).
#[utoipa::path(get, path = "/audit/actor/{id}", params(("id" = Uuid, Path, description = "The actor's user id"), PageQuery), tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = [AuditEvent], headers(("x-next-cursor" = String, description = "Cursor of the next page"))),
        (status = 403, description = "Not an ADMIN")))]
pub async fn by_actor(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Page> {
    require_admin(&caller)?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let (items, next) = list(
        &state.pool,
        &Filters {
            actor_id: Some(id),
            ..Default::default()
        },
        &page,
    )
    .await?;
    Ok((next_cursor_header(next), ApiJson(items)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct SearchQuery {
    pub action: Option<String>,
    pub entity_type: Option<String>,
    pub entity_id: Option<String>,
    pub actor_id: Option<Uuid>,
    /// Entries at or after this time (RFC 3339, years 1 to 9999).
    pub from: Option<DateTime<Utc>>,
    /// Entries at or before this time (RFC 3339, years 1 to 9999).
    pub to: Option<DateTime<Utc>>,
    /// Page size, 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    #[param(format = "cursor", min_length = 1)]
    pub cursor: Option<String>,
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// Search the log (ADMIN).
#[utoipa::path(get, path = "/audit/search", params(SearchQuery), tag = "audit", security(("bearer" = [])),
    responses((status = 200, body = SearchPage), (status = 400, description = "Invalid filter"), (status = 403, description = "Not an ADMIN")))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<ApiJson<SearchPage>> {
    require_admin(&caller)?;
    check_timestamp("from", q.from.as_ref())?;
    check_timestamp("to", q.to.as_ref())?;
    if let (Some(from), Some(to)) = (q.from, q.to)
        && from > to
    {
        return Err(ApiError::bad_request("from must not be after to"));
    }
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let filters = Filters {
        action: non_empty(q.action),
        entity_type: non_empty(q.entity_type),
        entity_id: non_empty(q.entity_id),
        actor_id: q.actor_id,
        from: q.from,
        to: q.to,
    };
    let (items, next) = list(&state.pool, &filters, &page).await?;
    Ok(ApiJson(SearchPage {
        items,
        next_cursor: next.map(|c| c.encode()),
    }))
}
