//! Internal routes for admin-service (service credential required; never routed publicly).

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use uuid::Uuid;

use helpdesk_kit::auth::{Role, ServiceCaller};
use helpdesk_kit::contract::Service;
use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use helpdesk_kit::events::{UserDeleted, UserRoleChanged};
use helpdesk_kit::http::RequestId;
use helpdesk_kit::outbox::{self, EventContext};

use crate::AppState;
use crate::auth::Message;
use crate::users::{self, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route("/users/{id}/role", axum::routing::patch(change_role))
}

const NOT_FOUND: &str = "User not found";

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated roles to include (all when absent), e.g. `AGENT,ADMIN`.
    pub roles: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct RoleRequest {
    #[schema(value_type = Role)]
    pub role: String,
}

/// Who acted, as passed by admin-service for the audit trail.
fn actor(headers: &axum::http::HeaderMap) -> Option<Uuid> {
    headers.get("x-acting-user-id")?.to_str().ok()?.parse().ok()
}

/// One user (internal).
#[utoipa::path(get, path = "/users/{id}", tag = "internal", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = User), (status = 404, description = "User not found")))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: ServiceCaller,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<User>> {
    // Only admin-service administers users.
    caller.require(&[Service::Admin])?;
    let row = users::find_by_id(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    Ok(ApiJson(User::from(&row)))
}

/// Users, newest first, optionally filtered by role (internal).
#[utoipa::path(get, path = "/users", tag = "internal", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = [User])))]
pub async fn list_users(
    State(state): State<AppState>,
    caller: ServiceCaller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Vec<User>>> {
    // Only admin-service administers users.
    caller.require(&[Service::Admin])?;
    let roles = q
        .roles
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Role>().map_err(ApiError::bad_request))
        .collect::<ApiResult<Vec<Role>>>()?;
    let rows = users::list(&state.pool, &roles).await?;
    Ok(ApiJson(rows.iter().map(User::from).collect()))
}

/// Change a user's role (internal). Demoting the last ADMIN is refused.
#[utoipa::path(patch, path = "/users/{id}/role", request_body = RoleRequest, tag = "internal", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = User), (status = 400, description = "Invalid role or last admin"), (status = 404, description = "User not found")))]
pub async fn change_role(
    State(state): State<AppState>,
    caller: ServiceCaller,
    RequestId(request_id): RequestId,
    headers: axum::http::HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> ApiResult<ApiJson<User>> {
    // Only admin-service administers users.
    caller.require(&[Service::Admin])?;
    let role: Role = body.role.parse().map_err(ApiError::bad_request)?;
    let mut tx = state.pool.begin().await?;
    let admins = users::lock_admins(&mut tx).await?;
    let row = users::lock_by_id(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    if row.role == role {
        return Ok(ApiJson(User::from(&row)));
    }
    if row.role == Role::Admin && admins <= 1 {
        return Err(ApiError::bad_request(
            "Cannot demote the last administrator",
        ));
    }
    let updated = users::set_role(&mut tx, id, role).await?;
    let ctx = EventContext::request(request_id, actor(&headers));
    outbox::publish(
        &mut tx,
        &UserRoleChanged {
            user: updated.snapshot(),
            old_role: row.role,
            new_role: role,
        },
        &ctx,
    )
    .await?;
    tx.commit().await?;
    Ok(ApiJson(User::from(&updated)))
}

/// Delete a user (internal). Deleting the last ADMIN is refused.
#[utoipa::path(delete, path = "/users/{id}", tag = "internal", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = Message), (status = 400, description = "Last admin"), (status = 404, description = "User not found")))]
pub async fn delete_user(
    State(state): State<AppState>,
    caller: ServiceCaller,
    RequestId(request_id): RequestId,
    headers: axum::http::HeaderMap,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Message>> {
    // Only admin-service administers users.
    caller.require(&[Service::Admin])?;
    let mut tx = state.pool.begin().await?;
    let admins = users::lock_admins(&mut tx).await?;
    let row = users::lock_by_id(&mut tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found(NOT_FOUND))?;
    if row.role == Role::Admin && admins <= 1 {
        return Err(ApiError::bad_request(
            "Cannot delete the last administrator",
        ));
    }
    users::delete(&mut tx, id).await?;
    let ctx = EventContext::request(request_id, actor(&headers));
    outbox::publish(
        &mut tx,
        &UserDeleted {
            id,
            email: row.email.clone(),
        },
        &ctx,
    )
    .await?;
    tx.commit().await?;
    Ok(Message::new("User deleted successfully"))
}
