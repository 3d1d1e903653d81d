//! Who may call admin-service, by the caller's *current* role.
//!
//! A token states the role at sign-in. admin-service keeps no copy of the users, only a small table
//! of the users whose role changed or who were deleted (from `user.role_changed` and
//! `user.deleted`): for them that table wins over the token, so a demoted or deleted admin loses
//! access within a second, without a call to user-service on every request (the dashboard keeps
//! working while user-service is down).

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role};
use helpdesk_kit::bus::{EventHandler, HandlerError, Subscription};
use helpdesk_kit::error::ApiError;
use helpdesk_kit::events::{Envelope, UserDeleted, UserRoleChanged};

use crate::AppState;

/// The logical queue of role changes and deletions.
pub const QUEUE: &str = helpdesk_kit::bus::topology::ADMIN_USERS.name;

pub fn subscription(max_attempts: u32, retry_base_delay: std::time::Duration) -> Subscription {
    helpdesk_kit::bus::topology::ADMIN_USERS.subscription(max_attempts, retry_base_delay)
}

/// A signed-in user with their current role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
}

/// The caller's current role; `None` when the account was deleted.
async fn current_role(state: &AppState, user: &AuthUser) -> Result<Option<Role>, ApiError> {
    let row: Option<(Option<Role>, bool)> =
        sqlx::query_as("SELECT role, deleted FROM user_access WHERE user_id = $1")
            .bind(user.id)
            .fetch_optional(&state.pool)
            .await?;
    Ok(match row {
        None => Some(user.role),
        Some((_, true)) => None,
        Some((role, false)) => Some(role.unwrap_or(user.role)),
    })
}

async fn caller(
    parts: &mut Parts,
    state: &AppState,
    allowed: fn(Role) -> bool,
    refusal: &str,
) -> Result<Caller, ApiError> {
    let user = AuthUser::from_request_parts(parts, state).await?;
    let role = current_role(state, &user)
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

/// Records role changes and deletions; an older event never overrides a newer one.
pub struct AccessModel;

async fn record(
    tx: &mut PgConnection,
    user_id: Uuid,
    role: Option<Role>,
    deleted: bool,
    revision: i64,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO user_access (user_id, role, deleted, revision, changed_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (user_id) DO UPDATE SET role = COALESCE(EXCLUDED.role, user_access.role), \
             deleted = user_access.deleted OR EXCLUDED.deleted, \
             revision = GREATEST(user_access.revision, EXCLUDED.revision), changed_at = EXCLUDED.changed_at \
         WHERE (user_access.revision, user_access.changed_at) <= (EXCLUDED.revision, EXCLUDED.changed_at) \
            OR EXCLUDED.deleted",
    )
    .bind(user_id)
    .bind(role)
    .bind(deleted)
    .bind(revision)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn malformed(event: &Envelope, e: serde_json::Error) -> HandlerError {
    HandlerError::Permanent(format!("malformed {} payload: {e}", event.event_type))
}

#[async_trait]
impl EventHandler for AccessModel {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(p) = event.decode::<UserRoleChanged>() {
            let p = p.map_err(|e| malformed(event, e))?;
            record(
                tx,
                p.user.id,
                Some(p.new_role),
                false,
                p.user.revision,
                event.timestamp,
            )
            .await?;
        } else if let Some(p) = event.decode::<UserDeleted>() {
            let p = p.map_err(|e| malformed(event, e))?;
            record(tx, p.id, None, true, 0, event.timestamp).await?;
        }
        Ok(())
    }
}
