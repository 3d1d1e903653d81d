//! Turns every domain event into exactly one audit entry, and keeps the users read model current.

use async_trait::async_trait;
use sqlx::PgConnection;

use helpdesk_kit::bus::{EventHandler, HandlerError};
use helpdesk_kit::events::{
    DomainEvent, Envelope, UserCreated, UserDeleted, UserRoleChanged, UserUpdated, redact_secrets,
};

use crate::entries::{self, NewEntry};
use crate::users;

/// The audit-service's reaction to every event.
pub struct Recorder;

async fn update_users(tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
    match event.event_type.as_str() {
        UserCreated::EVENT_TYPE => {
            users::upsert(tx, &event.payload::<UserCreated>()?.user, event.timestamp).await?
        }
        UserUpdated::EVENT_TYPE => {
            users::upsert(tx, &event.payload::<UserUpdated>()?.user, event.timestamp).await?
        }
        UserRoleChanged::EVENT_TYPE => {
            users::upsert(
                tx,
                &event.payload::<UserRoleChanged>()?.user,
                event.timestamp,
            )
            .await?
        }
        UserDeleted::EVENT_TYPE => users::tombstone(tx, event.payload::<UserDeleted>()?.id).await?,
        _ => {}
    }
    Ok(())
}

/// The entry that records `event`.
fn entry(event: &Envelope) -> NewEntry {
    NewEntry {
        event_id: Some(event.event_id),
        actor_id: event.metadata.user_id,
        action: event.event_type.clone(),
        entity_type: event.aggregate_type.clone(),
        entity_id: event.aggregate_id.clone(),
        metadata: redact_secrets(&event.payload),
        created_at: Some(event.timestamp),
    }
}

/// Counts a recorded entry and its lag (event written, in the producer's transaction → entry
/// written).
fn recorded(event: &Envelope) {
    metrics::counter!("helpdesk_audit_entries_recorded_total", "action" => event.event_type.clone()).increment(1);
    let lag = (chrono::Utc::now() - event.timestamp)
        .to_std()
        .unwrap_or_default();
    metrics::histogram!("helpdesk_audit_lag_seconds").record(lag.as_secs_f64());
}

#[async_trait]
impl EventHandler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        update_users(tx, event).await?;
        entries::insert(tx, &entry(event)).await?;
        recorded(event);
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }

    /// The users read model in event order, then every entry in one statement.
    async fn handle_all(
        &self,
        tx: &mut PgConnection,
        events: &[&Envelope],
    ) -> Result<(), HandlerError> {
        let mut all = Vec::with_capacity(events.len());
        for event in events {
            update_users(tx, event).await?;
            all.push(entry(event));
        }
        entries::insert_all(tx, &all).await?;
        events.iter().for_each(|e| recorded(e));
        Ok(())
    }
}
