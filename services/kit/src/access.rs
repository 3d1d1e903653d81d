//! Who may call, by the caller's *current* state, for services that keep no copy of the users
//! (admin-service, notification-service).
//!
//! A token states the role at sign-in. These services keep only a small table, `user_access`, of
//! the users whose state changed after sign-in (role changes, password changes and resets,
//! deletions; fed by `user.role_changed`, `user.updated` and `user.deleted`): for them the table
//! wins over the token, so a demoted, signed-out or deleted user loses access within a second,
//! without a call to user-service on every request. The service's migrations create the table:
//!
//! ```sql
//! CREATE TABLE user_access (user_id UUID PRIMARY KEY, role TEXT, deleted BOOLEAN NOT NULL DEFAULT false,
//!   changed_at TIMESTAMPTZ NOT NULL, revision BIGINT NOT NULL DEFAULT 0,
//!   token_epoch BIGINT NOT NULL DEFAULT 0, kept_session UUID);
//! ```

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::auth::{AuthUser, Role, SESSION_ENDED, Sessions};
use crate::bus::{EventHandler, HandlerError};
use crate::error::ApiError;
use crate::events::{Envelope, UserDeleted, UserRoleChanged, UserSnapshot, UserUpdated};
use crate::remembered::Remembered;

/// A user's row of `user_access`.
#[derive(Debug, Clone)]
pub struct Access {
    role: Option<Role>,
    revision: i64,
    deleted: bool,
    token_epoch: i64,
    kept_session: Option<Uuid>,
}

/// `user_access` remembered between requests, absent rows too (an insert is announced like any
/// change): the service's migrations put the kit's `notify_user_change` trigger on the table.
pub type AccessCache = Remembered<Option<Access>>;

/// The caller's current role: `Ok(None)` when the account was deleted, 401 when the token's
/// session ended (password change or reset).
pub async fn current_role(
    pool: &PgPool,
    cache: &AccessCache,
    user: &AuthUser,
) -> Result<Option<Role>, ApiError> {
    let row = match cache.get(user.id) {
        Some(row) => row,
        None => {
            let seen = cache.epoch();
            let row = sqlx::query_as!(
                Access,
                r#"SELECT role AS "role: Role", revision, deleted, token_epoch, kept_session FROM user_access WHERE user_id = $1"#,
                user.id,
            )
            .fetch_optional(pool)
            .await?;
            cache.remember(user.id, &row, seen);
            row
        }
    };
    let Some(row) = row else {
        return Ok(Some(user.role));
    };
    if row.deleted {
        return Ok(None);
    }
    let sessions = Sessions {
        epoch: row.token_epoch,
        kept: row.kept_session,
    };
    if !sessions.admits(user) {
        return Err(ApiError::unauthorized(SESSION_ENDED));
    }
    Ok(Some(
        user.role_by(row.role.map(|role| (role, row.revision))),
    ))
}

/// Records role changes, password changes and deletions; an older snapshot never overrides a
/// newer one (by the user's revision), and a deletion is final.
pub struct AccessModel;

async fn record(tx: &mut PgConnection, user: &UserSnapshot, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO user_access (user_id, role, deleted, revision, token_epoch, kept_session, changed_at) \
         VALUES ($1, $2, false, $3, $4, $5, $6) \
         ON CONFLICT (user_id) DO UPDATE SET role = EXCLUDED.role, revision = EXCLUDED.revision, \
             token_epoch = EXCLUDED.token_epoch, kept_session = EXCLUDED.kept_session, \
             changed_at = EXCLUDED.changed_at \
         WHERE (user_access.revision, user_access.changed_at) <= (EXCLUDED.revision, EXCLUDED.changed_at)",
        user.id,
        user.role.as_str(),
        user.revision,
        user.token_epoch,
        user.kept_session,
        at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn record_deletion(tx: &mut PgConnection, id: Uuid, at: DateTime<Utc>) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO user_access (user_id, deleted, changed_at) VALUES ($1, true, $2) \
         ON CONFLICT (user_id) DO UPDATE SET deleted = true, changed_at = EXCLUDED.changed_at",
        id,
        at,
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl EventHandler for AccessModel {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(p) = event.payload_if::<UserRoleChanged>()? {
            record(tx, &p.user, event.timestamp).await?;
        } else if let Some(p) = event.payload_if::<UserUpdated>()? {
            record(tx, &p.user, event.timestamp).await?;
        } else if let Some(p) = event.payload_if::<UserDeleted>()? {
            record_deletion(tx, p.id, event.timestamp).await?;
        }
        Ok(())
    }
}
