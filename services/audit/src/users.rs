//! The read model of users (fed by `user.*` events): the `actor` of each entry, and who is calling.
//!
//! Authorization uses the caller's current role from this read model. A user whose `user.created`
//! event has not arrived yet is judged by their token's claims (signed by user-service); a deleted
//! user is refused (tombstone). Deleted users keep their row so old entries still name their actor.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role, SESSION_ENDED, Sessions, bearer};
use helpdesk_kit::error::ApiError;
use helpdesk_kit::events::UserSnapshot;

use crate::AppState;

/// An entry's actor (`UserRef`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// The signed-in user with their current role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub role: Role,
}

struct Lookup {
    role: Option<Role>,
    revision: Option<i64>,
    deleted: bool,
    token_epoch: Option<i64>,
    kept_session: Option<Uuid>,
}

/// Resolves a verified token against the read model.
pub async fn resolve(pool: &sqlx::PgPool, token: &AuthUser) -> Result<Caller, ApiError> {
    let found = sqlx::query_as!(
        Lookup,
        r#"SELECT u.role AS "role?: Role", u.revision AS "revision?", (d.id IS NOT NULL) AS "deleted!",
             u.token_epoch AS "token_epoch?", u.kept_session
           FROM (VALUES ($1::uuid)) AS k (id)
             LEFT JOIN users u ON u.id = k.id LEFT JOIN deleted_users d ON d.id = k.id"#,
        token.id,
    )
    .fetch_one(pool)
    .await?;
    if found.deleted {
        return Err(ApiError::unauthorized("User no longer exists"));
    }
    let sessions = Sessions {
        epoch: found.token_epoch.unwrap_or(0),
        kept: found.kept_session,
    };
    if !sessions.admits(token) {
        return Err(ApiError::unauthorized(SESSION_ENDED));
    }
    Ok(Caller {
        id: token.id,
        role: token.role_by(found.role.zip(found.revision)),
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = AuthUser::from_request_parts(parts, state).await?;
        resolve(&state.pool, &token).await
    }
}

/// A staff member (user token) or another service (service credential): the entity trail is read
/// by staff directly and by ticket-service on their behalf.
#[derive(Debug, Clone)]
pub enum StaffOrService {
    Staff(Caller),
    Service(String),
}

impl FromRequestParts<AppState> for StaffOrService {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(Ok(service)) = bearer(parts).map(|t| state.keys().verify_service_token(t)) {
            return Ok(StaffOrService::Service(service.sub));
        }
        let caller = Caller::from_request_parts(parts, state).await?;
        if !caller.role.is_staff() {
            return Err(ApiError::forbidden("Only staff can read the audit log"));
        }
        Ok(StaffOrService::Staff(caller))
    }
}

/// Writes a user snapshot unless the row already reflects a newer revision (or, between
/// snapshots of the same revision, a newer event).
pub async fn upsert(
    tx: &mut PgConnection,
    user: &UserSnapshot,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO users (id, email, first_name, last_name, role, synced_at, revision, token_epoch, \
           kept_session) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
           last_name = EXCLUDED.last_name, role = EXCLUDED.role, synced_at = EXCLUDED.synced_at, \
           revision = EXCLUDED.revision, token_epoch = EXCLUDED.token_epoch, \
           kept_session = EXCLUDED.kept_session \
         WHERE (users.revision, users.synced_at) <= (EXCLUDED.revision, EXCLUDED.synced_at)",
        user.id,
        user.email,
        user.first_name,
        user.last_name,
        user.role.as_str(),
        at,
        user.revision,
        user.token_epoch,
        user.kept_session,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records a deletion: the user's tokens are refused from now on.
pub async fn tombstone(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO deleted_users (id) VALUES ($1) ON CONFLICT DO NOTHING",
        id
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}
