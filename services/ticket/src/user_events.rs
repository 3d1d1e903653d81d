//! `user.*` events: the users read model, and what a user's deletion removes from every part of
//! ticket-service (their tickets, their assignments, their comments). This module depends on the
//! others; none of them depends on it.

use async_trait::async_trait;
use sqlx::PgConnection;
use uuid::Uuid;

use helpdesk_kit::bus::{EventHandler, HandlerError};
use helpdesk_kit::events::{
    DomainEvent, Envelope, UserCreated, UserDeleted, UserRoleChanged, UserUpdated,
};
use helpdesk_kit::outbox::EventContext;

use crate::{assignment, comments, tickets, users};

/// Removes a user: tombstone, their tickets and comments, and their assignments (each change
/// publishes its own event, caused by the deletion).
async fn remove(tx: &mut PgConnection, id: Uuid, ctx: &EventContext) -> Result<(), HandlerError> {
    tickets::remove_user_tickets(tx, id, ctx).await?;
    assignment::unassign_user(tx, id, ctx).await?;
    comments::remove_user_comments(tx, id).await?;
    users::forget(tx, id).await?;
    Ok(())
}

/// Applies `user.*` events to the read model.
pub struct UserEvents;

#[async_trait]
impl EventHandler for UserEvents {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        match event.event_type.as_str() {
            UserCreated::EVENT_TYPE => {
                users::upsert(tx, &event.payload::<UserCreated>()?.user, event.timestamp).await?
            }
            UserUpdated::EVENT_TYPE => {
                users::upsert(tx, &event.payload::<UserUpdated>()?.user, event.timestamp).await?
            }
            UserRoleChanged::EVENT_TYPE => {
                let user = event.payload::<UserRoleChanged>()?.user;
                users::upsert(tx, &user, event.timestamp).await?
            }
            UserDeleted::EVENT_TYPE => {
                let id = event.payload::<UserDeleted>()?.id;
                remove(tx, id, &EventContext::caused_by(event)).await?
            }
            _ => {}
        }
        Ok(())
    }
}
