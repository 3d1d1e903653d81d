//! The first administrator, created from configuration when no ADMIN exists.

use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{UserCreated, UserRoleChanged};
use helpdesk_kit::outbox::{self, EventContext};
use sqlx::PgPool;

use crate::Config;
use crate::passwords::Passwords;
use crate::users::{self, NewUser};

/// Creates (or promotes) the configured bootstrap admin when the platform has no ADMIN yet.
/// Safe with several replicas starting at once (advisory lock).
pub async fn ensure_admin(pool: &PgPool, config: &Config) -> anyhow::Result<()> {
    let Some((email, password)) = &config.bootstrap_admin else {
        return Ok(());
    };
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '-bootstrap-admin'))")
        .execute(&mut *tx)
        .await?;
    if users::lock_admins(&mut tx).await? > 0 {
        return Ok(());
    }
    let hash = Passwords::new(&config.hashing)?
        .hash(password.expose().to_string())
        .await?;
    let ctx = EventContext::default();
    match users::find_by_email(&mut *tx, email).await? {
        Some(existing) => {
            // Someone registered the admin address first: promote it and take over with the
            // configured password, so only the holder of the secret can sign in as admin.
            // Whoever registered the address first is signed out everywhere.
            users::set_password(&mut tx, existing.id, &hash, None).await?;
            // set_role returns the row after both changes (and both revision bumps).
            let row = users::set_role(&mut tx, existing.id, Role::Admin).await?;
            outbox::publish(
                &mut tx,
                &UserRoleChanged {
                    user: row.snapshot(),
                    old_role: existing.role,
                    new_role: Role::Admin,
                },
                &ctx,
            )
            .await?;
        }
        None => {
            let row = users::insert(
                &mut tx,
                &NewUser {
                    email,
                    password_hash: &hash,
                    first_name: Some("Admin"),
                    last_name: None,
                    role: Role::Admin,
                },
            )
            .await?;
            outbox::publish(
                &mut tx,
                &UserCreated {
                    user: row.snapshot(),
                },
                &ctx,
            )
            .await?;
        }
    }
    tx.commit().await?;
    tracing::info!(email = %email, "bootstrap administrator created");
    Ok(())
}
