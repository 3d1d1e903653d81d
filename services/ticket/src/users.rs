//! The read model of users, fed by `user.*` events, and who is calling.
//!
//! Authorization uses the caller's current role and existence from this read model, not from the
//! token: a role change applies at once, and a deleted user's token stops working as soon as the
//! `user.deleted` event is handled (a tombstone keeps refusing it).
//!
//! Event lag: a user who has just signed up may call before their `user.created` event arrives.
//! Their token is signed by user-service, so its claims are trusted for that window: a
//! *provisional* row is written from them, which the event then overwrites. A tombstoned
//! (deleted) user never gets a provisional row.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role, SESSION_ENDED, Sessions};
use helpdesk_kit::error::ApiError;
use helpdesk_kit::events::UserSnapshot;

use crate::AppState;

/// A user as embedded in tickets (`UserRef`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

impl From<UserRef> for helpdesk_kit::events::UserRef {
    fn from(u: UserRef) -> Self {
        Self {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
        }
    }
}

/// A row of the read model.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
}

impl UserRow {
    pub fn reference(&self) -> UserRef {
        UserRef {
            id: self.id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
        }
    }
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, first_name, last_name, role AS "role: Role" FROM users WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The signed-in user with their current role from the read model.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
}

impl Caller {
    /// The caller as embedded in tickets and events.
    pub fn reference(&self) -> UserRef {
        UserRef {
            id: self.id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
    pub fn is_staff(&self) -> bool {
        self.role.is_staff()
    }
}

/// Callers remembered between requests, forgotten when the read model announces a change to them
/// (migration `0004_user_change_notify.sql`; see [`helpdesk_kit::remembered`]).
pub type CallerCache = helpdesk_kit::remembered::Remembered<Lookup>;

/// What the read model says about a token's user (every field empty when it has no row).
#[derive(Debug, Clone)]
pub struct Lookup {
    pub(crate) email: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
    pub(crate) role: Option<Role>,
    pub(crate) revision: Option<i64>,
    pub(crate) deleted: bool,
    pub(crate) token_epoch: Option<i64>,
    pub(crate) kept_session: Option<Uuid>,
}

/// The caller `token` stands for by `found`: refused when deleted or its session ended; `None`
/// when the read model has no row yet (see [`resolve`]). A token issued at a later revision of the
/// account than the row's speaks for the account until the row catches up
/// ([`AuthUser::role_by`]).
pub(crate) fn admit(token: &AuthUser, found: Lookup) -> Result<Option<Caller>, ApiError> {
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
    Ok(match (found.email, found.role, found.revision) {
        (Some(email), Some(role), Some(revision)) => {
            let behind = token.is_newer_than(revision);
            Some(Caller {
                id: token.id,
                email: if behind { token.email.clone() } else { email },
                first_name: found.first_name,
                last_name: found.last_name,
                role: token.role_by(Some((role, revision))),
            })
        }
        _ => None,
    })
}

/// Resolves a verified token against the read model (see the module documentation).
pub async fn resolve(
    pool: &sqlx::PgPool,
    callers: &CallerCache,
    token: &AuthUser,
) -> Result<Caller, ApiError> {
    if let Some(found) = callers.get(token.id)
        && let Some(caller) = admit(token, found)?
    {
        return Ok(caller);
    }
    let seen = callers.epoch();
    // The listings run this same look-up inside their own statement (`listing::LOOKUP`).
    let found = sqlx::query_as!(
        Lookup,
        r#"SELECT u.email AS "email?", u.first_name, u.last_name, u.role AS "role?: Role",
             u.revision AS "revision?", (d.id IS NOT NULL) AS "deleted!",
             u.token_epoch AS "token_epoch?", u.kept_session
           FROM (VALUES ($1::uuid)) AS k (id)
             LEFT JOIN users u ON u.id = k.id LEFT JOIN deleted_users d ON d.id = k.id"#,
        token.id,
    )
    .fetch_one(pool)
    .await?;
    if found.deleted || found.email.is_some() {
        callers.remember(token.id, &found, seen);
    }
    if let Some(caller) = admit(token, found)? {
        return Ok(caller);
    }
    sqlx::query!(
        "INSERT INTO users (id, email, role, provisional) \
         SELECT $1, $2, $3, true WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE id = $1) \
         ON CONFLICT (id) DO NOTHING",
        token.id,
        token.email,
        token.role.as_str(),
    )
    .execute(pool)
    .await?;
    Ok(Caller {
        id: token.id,
        email: token.email.clone(),
        first_name: None,
        last_name: None,
        role: token.role,
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = AuthUser::from_request_parts(parts, state).await?;
        resolve(&state.pool, &state.callers, &token).await
    }
}

/// Writes a user snapshot unless the row already reflects a newer revision (or, between
/// snapshots of the same revision, a newer event) or the user is deleted.
pub async fn upsert(
    tx: &mut PgConnection,
    user: &UserSnapshot,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO users (id, email, first_name, last_name, role, provisional, synced_at, revision, \
           token_epoch, kept_session) \
         SELECT $1, $2, $3, $4, $5, false, $6, $7, $8, $9 WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE id = $1) \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
           last_name = EXCLUDED.last_name, role = EXCLUDED.role, provisional = false, \
           synced_at = EXCLUDED.synced_at, revision = EXCLUDED.revision, \
           token_epoch = EXCLUDED.token_epoch, kept_session = EXCLUDED.kept_session \
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

/// Tombstones a deleted user (their tokens stay refused) and removes their row; what they own
/// is removed by [`crate::user_events`].
pub async fn forget(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO deleted_users (id) VALUES ($1) ON CONFLICT DO NOTHING",
        id
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!("DELETE FROM users WHERE id = $1", id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
