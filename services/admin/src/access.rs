//! Who may call admin-service, by the caller's *current* role and sessions
//! ([`helpdesk_kit::access`]): a demoted, signed-out or deleted admin loses access within a
//! second, without a call to user-service on every request (the dashboard keeps working while
//! user-service is down).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role};
use helpdesk_kit::error::ApiError;

use crate::AppState;

/// A signed-in user with their current role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
}

async fn caller(
    parts: &mut Parts,
    state: &AppState,
    allowed: fn(Role) -> bool,
    refusal: &str,
) -> Result<Caller, ApiError> {
    let user = AuthUser::from_request_parts(parts, state).await?;
    let role = helpdesk_kit::access::current_role(&state.pool, &state.access, &user)
        .await?
        .ok_or_else(|| ApiError::unauthorized("This account no longer exists"))?;
    if !allowed(role) {
        return Err(ApiError::forbidden(refusal));
    }
    Ok(Caller { id: user.id, role })
}

/// A caller whose current role is ADMIN.
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        caller(parts, state, |r| r == Role::Admin, "Admin access required")
            .await
            .map(AdminCaller)
    }
}

/// A caller whose current role is AGENT or ADMIN.
#[derive(Debug, Clone)]
pub struct StaffCaller(pub Caller);

impl FromRequestParts<AppState> for StaffCaller {
    type Rejection = ApiError;
    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        caller(parts, state, Role::is_staff, "Staff access required")
            .await
            .map(StaffCaller)
    }
}

/// Records role changes, password changes and deletions ([`helpdesk_kit::access`]).
pub use helpdesk_kit::access::AccessModel;
