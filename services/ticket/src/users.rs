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

use async_trait::async_trait;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use helpdesk_kit::auth::{AuthUser, Role, SESSION_ENDED, Sessions};
use helpdesk_kit::bus::{EventHandler, HandlerError};
use helpdesk_kit::error::ApiError;
use helpdesk_kit::events::{
    DomainEvent, Envelope, UserCreated, UserDeleted, UserRoleChanged, UserSnapshot, UserUpdated,
};
use helpdesk_kit::outbox::EventContext;

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
#[derive(Debug, Clone, FromRow)]
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
    sqlx::query_as("SELECT id, email, first_name, last_name, role FROM users WHERE id = $1")
        .bind(id)
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

#[derive(FromRow)]
struct Lookup {
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    role: Option<Role>,
    deleted: bool,
    token_epoch: Option<i64>,
    kept_session: Option<Uuid>,
}

/// Resolves a verified token against the read model (see the module documentation).
pub async fn resolve(pool: &sqlx::PgPool, token: &AuthUser) -> Result<Caller, ApiError> {
    let found: Lookup = sqlx::query_as(
        "SELECT u.email, u.first_name, u.last_name, u.role, (d.id IS NOT NULL) AS deleted, \
           u.token_epoch, u.kept_session \
         FROM (VALUES ($1::uuid)) AS k (id) \
         LEFT JOIN users u ON u.id = k.id LEFT JOIN deleted_users d ON d.id = k.id",
    )
    .bind(token.id)
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
    if let (Some(email), Some(role)) = (found.email, found.role) {
        return Ok(Caller {
            id: token.id,
            email,
            first_name: found.first_name,
            last_name: found.last_name,
            role,
        });
    }
    sqlx::query(
        "INSERT INTO users (id, email, role, provisional) \
         SELECT $1, $2, $3, true WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE id = $1) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(token.id)
    .bind(&token.email)
    .bind(token.role)
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
        resolve(&state.pool, &token).await
    }
}

/// Writes a user snapshot unless the row already reflects a newer revision (or, between
/// snapshots of the same revision, a newer event) or the user is deleted.
async fn upsert(tx: &mut PgConnection, user: &UserSnapshot, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO users (id, email, first_name, last_name, role, provisional, synced_at, revision, \
           token_epoch, kept_session) \
         SELECT $1, $2, $3, $4, $5, false, $6, $7, $8, $9 WHERE NOT EXISTS (SELECT 1 FROM deleted_users WHERE id = $1) \
         ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, first_name = EXCLUDED.first_name, \
           last_name = EXCLUDED.last_name, role = EXCLUDED.role, provisional = false, \
           synced_at = EXCLUDED.synced_at, revision = EXCLUDED.revision, \
           token_epoch = EXCLUDED.token_epoch, kept_session = EXCLUDED.kept_session \
         WHERE (users.revision, users.synced_at) <= (EXCLUDED.revision, EXCLUDED.synced_at)",
    )
    .bind(user.id)
    .bind(&user.email)
    .bind(&user.first_name)
    .bind(&user.last_name)
    .bind(user.role)
    .bind(at)
    .bind(user.revision)
    .bind(user.token_epoch)
    .bind(user.kept_session)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Removes a user: tombstone, their tickets and comments, and their assignments.
async fn remove(tx: &mut PgConnection, id: Uuid, ctx: &EventContext) -> Result<(), HandlerError> {
    sqlx::query("INSERT INTO deleted_users (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    crate::tickets::remove_user_tickets(tx, id, ctx).await?;
    crate::assignment::unassign_user(tx, id, ctx).await?;
    crate::comments::remove_user_comments(tx, id).await?;
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Applies `user.*` events to the read model.
pub struct UserEvents;

#[async_trait]
impl EventHandler for UserEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            UserCreated::EVENT_TYPE => {
                upsert(tx, &event.payload::<UserCreated>()?.user, event.timestamp).await?
            }
            UserUpdated::EVENT_TYPE => {
                upsert(tx, &event.payload::<UserUpdated>()?.user, event.timestamp).await?
            }
            UserRoleChanged::EVENT_TYPE => {
                upsert(
                    tx,
                    &event.payload::<UserRoleChanged>()?.user,
                    event.timestamp,
                )
                .await?
            }
            UserDeleted::EVENT_TYPE => {
                remove(
                    tx,
                    event.payload::<UserDeleted>()?.id,
                    &EventContext::caused_by(event),
                )
                .await?
            }
            _ => {}
        }
        Ok(())
    }
}
