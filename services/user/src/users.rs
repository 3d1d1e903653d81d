//! Accounts: the `users` table and its JSON view.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::events::UserSnapshot;

/// A stored account.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: Uuid,
    pub email: String,
    pub password_hash: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// Bumped by every change; events carry it so read models keep only the newest state.
    pub revision: i64,
    pub token_epoch: i64,
    pub kept_session: Option<Uuid>,
}

/// The contract's User object (never a password hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
}

impl From<&UserRow> for User {
    fn from(r: &UserRow) -> Self {
        User {
            id: r.id,
            email: r.email.clone(),
            first_name: r.first_name.clone(),
            last_name: r.last_name.clone(),
            role: r.role,
            created_at: r.created_at,
        }
    }
}

impl UserRow {
    pub fn snapshot(&self) -> UserSnapshot {
        UserSnapshot {
            id: self.id,
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            role: self.role,
            created_at: self.created_at,
            revision: self.revision,
            token_epoch: self.token_epoch,
            kept_session: self.kept_session,
        }
    }
}

// Every query that returns a `UserRow` names its columns; the macros check them against the
// struct's fields (`role` is stored as text).

pub async fn find_by_email(db: impl PgExecutor<'_>, email: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, password_hash, first_name, last_name, role AS "role: Role", created_at,
             revision, token_epoch, kept_session
           FROM users WHERE lower(email) = lower($1)"#,
        email,
    )
    .fetch_optional(db)
    .await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, password_hash, first_name, last_name, role AS "role: Role", created_at,
             revision, token_epoch, kept_session
           FROM users WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// Locks the row for the rest of the transaction.
pub async fn lock_by_id(db: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, password_hash, first_name, last_name, role AS "role: Role", created_at,
             revision, token_epoch, kept_session
           FROM users WHERE id = $1 FOR UPDATE"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// Users with one of `roles` (all when empty), newest first.
pub async fn list(db: impl PgExecutor<'_>, roles: &[Role]) -> sqlx::Result<Vec<UserRow>> {
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    sqlx::query_as!(
        UserRow,
        r#"SELECT id, email, password_hash, first_name, last_name, role AS "role: Role", created_at,
             revision, token_epoch, kept_session
           FROM users WHERE cardinality($1::text[]) = 0 OR role = ANY($1)
           ORDER BY created_at DESC, id DESC"#,
        &roles as &[&str],
    )
    .fetch_all(db)
    .await
}

/// A new account.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub password_hash: &'a str,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub role: Role,
}

/// Inserts an account; a case-insensitive duplicate email violates `users_email_lower_key`.
pub async fn insert(db: &mut PgConnection, new: &NewUser<'_>) -> sqlx::Result<UserRow> {
    sqlx::query_as!(
        UserRow,
        r#"INSERT INTO users (id, email, password_hash, first_name, last_name, role)
           VALUES ($1, $2, $3, $4, $5, $6)
           RETURNING id, email, password_hash, first_name, last_name, role AS "role: Role",
             created_at, revision, token_epoch, kept_session"#,
        Uuid::now_v7(),
        new.email,
        new.password_hash,
        new.first_name,
        new.last_name,
        new.role.as_str(),
    )
    .fetch_one(db)
    .await
}

/// Sets the password, ends every session but `keep` (the one that changed it; `None` for a
/// reset) and returns the committed-to-be row (its current role, not a copy read earlier), or
/// `None` when the account is gone.
pub async fn set_password(
    db: &mut PgConnection,
    id: Uuid,
    hash: &str,
    keep: Option<Uuid>,
) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as!(
        UserRow,
        r#"UPDATE users SET password_hash = $2, updated_at = now(), revision = revision + 1,
             token_epoch = token_epoch + 1, kept_session = $3
           WHERE id = $1
           RETURNING id, email, password_hash, first_name, last_name, role AS "role: Role",
             created_at, revision, token_epoch, kept_session"#,
        id,
        hash,
        keep,
    )
    .fetch_optional(db)
    .await
}

/// Stores a new hash of the same password (other parameters) while the stored one is still `old`:
/// the sessions stay and the row's revision is kept (nothing another service sees changed). A
/// password change or reset in between wins (nothing is stored).
pub async fn rehash(pool: &sqlx::PgPool, id: Uuid, old: &str, new: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2",
        id,
        old,
        new,
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn set_role(db: &mut PgConnection, id: Uuid, role: Role) -> sqlx::Result<UserRow> {
    sqlx::query_as!(
        UserRow,
        r#"UPDATE users SET role = $2, updated_at = now(), revision = revision + 1
           WHERE id = $1
           RETURNING id, email, password_hash, first_name, last_name, role AS "role: Role",
             created_at, revision, token_epoch, kept_session"#,
        id,
        role.as_str(),
    )
    .fetch_one(db)
    .await
}

pub async fn delete(db: &mut PgConnection, id: Uuid) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM users WHERE id = $1", id)
        .execute(db)
        .await?;
    Ok(())
}

/// Locks every ADMIN row and returns how many there are (serialises last-admin checks).
pub async fn lock_admins(db: &mut PgConnection) -> sqlx::Result<i64> {
    let ids = sqlx::query_scalar!("SELECT id FROM users WHERE role = 'ADMIN' FOR UPDATE")
        .fetch_all(db)
        .await?;
    Ok(ids.len() as i64)
}

/// Whether `e` is the case-insensitive email uniqueness violation.
pub fn is_duplicate_email(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.constraint() == Some("users_email_lower_key"))
}
