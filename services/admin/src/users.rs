//! User administration through user-service: list users and agents, change a role, delete a user.
//! user-service owns the accounts and enforces the last-admin rule; admin-service adds the
//! self-deletion rule and checks the input before calling.

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, patch};
use serde::Deserialize;
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::error::{ApiError, ApiJson, ApiPath, ApiResult};
use helpdesk_kit::http::RequestId;

use crate::AppState;
use crate::access::{AdminCaller, StaffCaller};
use crate::user_service::{CallContext, Message, User};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/users", get(list_users))
        .route("/admin/agents", get(list_agents))
        .route("/admin/users/{id}/role", patch(change_role))
        .route("/admin/users/{id}", delete(delete_user))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"role": "AGENT"}))]
pub struct RoleRequest {
    #[schema(value_type = Role)]
    pub role: String,
}

/// All users, newest first (ADMIN).
#[utoipa::path(get, path = "/admin/users", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [User]), (status = 403, description = "Admin access required"), (status = 503, description = "user-service unavailable")))]
pub async fn list_users(
    State(state): State<AppState>,
    AdminCaller(me): AdminCaller,
    RequestId(request_id): RequestId,
) -> ApiResult<ApiJson<Vec<User>>> {
    let ctx = CallContext {
        request_id: &request_id,
        acting_user: me.id,
    };
    Ok(ApiJson(state.users.list_users(&[], ctx).await?))
}

/// Staff users (AGENT or ADMIN), newest first (staff).
#[utoipa::path(get, path = "/admin/agents", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [User]), (status = 403, description = "Staff access required"), (status = 503, description = "user-service unavailable")))]
pub async fn list_agents(
    State(state): State<AppState>,
    StaffCaller(me): StaffCaller,
    RequestId(request_id): RequestId,
) -> ApiResult<ApiJson<Vec<User>>> {
    let ctx = CallContext {
        request_id: &request_id,
        acting_user: me.id,
    };
    Ok(ApiJson(
        state
            .users
            .list_users(&[Role::Agent, Role::Admin], ctx)
            .await?,
    ))
}

/// Change a user's role (ADMIN). Demoting the last ADMIN is refused.
#[utoipa::path(patch, path = "/admin/users/{id}/role", request_body = RoleRequest, tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = User), (status = 400, description = "Invalid role, or the last administrator"),
        (status = 403, description = "Admin access required"), (status = 404, description = "User not found"), (status = 503, description = "user-service unavailable")))]
pub async fn change_role(
    State(state): State<AppState>,
    AdminCaller(me): AdminCaller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RoleRequest>,
) -> ApiResult<ApiJson<User>> {
    let role: Role = body.role.trim().parse().map_err(ApiError::bad_request)?;
    let ctx = CallContext {
        request_id: &request_id,
        acting_user: me.id,
    };
    let user = state.users.change_role(id, role, ctx).await?;
    tracing::info!(user_id = %id, role = %role, "role changed");
    Ok(ApiJson(user))
}

/// Delete a user (ADMIN). Deleting yourself or the last ADMIN is refused.
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses((status = 200, body = Message), (status = 400, description = "Your own account, or the last administrator"),
        (status = 403, description = "Admin access required"), (status = 404, description = "User not found"), (status = 503, description = "user-service unavailable")))]
pub async fn delete_user(
    State(state): State<AppState>,
    AdminCaller(me): AdminCaller,
    RequestId(request_id): RequestId,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<ApiJson<Message>> {
    if id == me.id {
        return Err(ApiError::bad_request("You cannot delete your own account"));
    }
    let ctx = CallContext {
        request_id: &request_id,
        acting_user: me.id,
    };
    state.users.delete_user(id, ctx).await?;
    tracing::info!(user_id = %id, "user deleted");
    Ok(ApiJson(Message {
        message: "User deleted successfully".into(),
    }))
}
