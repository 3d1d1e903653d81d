//! The event envelope of the contract and a typed payload per event type.
//!
//! Every payload type implements [`DomainEvent`], which fixes its exchange, routing key (= event
//! type) and aggregate. The JSON Schema of each event is generated from these types and checked in
//! under `services/kit/event-schemas/` (a test fails when they drift).

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::bus::HandlerError;

pub mod schema;

/// Exchange of user-service events.
pub const USER_EVENTS: &str = "user.events";
/// Exchange of ticket-service events.
pub const TICKET_EVENTS: &str = "ticket.events";
/// Exchange of notification-service events.
pub const NOTIFICATION_EVENTS: &str = "notification.events";
/// Every exchange of the platform.
pub const ALL_EXCHANGES: [&str; 3] = [USER_EVENTS, TICKET_EVENTS, NOTIFICATION_EVENTS];

/// Correlation data carried by every event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventMetadata {
    /// The `X-Request-Id` of the request that caused the event.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one.
    #[serde(default)]
    pub causation_id: Option<Uuid>,
    /// The user who acted (the audit log's actor).
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

/// The envelope of every event on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<P = serde_json::Value> {
    pub event_id: Uuid,
    pub event_type: String,
    pub aggregate_id: String,
    pub aggregate_type: String,
    pub timestamp: DateTime<Utc>,
    pub version: u32,
    pub payload: P,
    pub metadata: EventMetadata,
}

/// A typed event payload.
pub trait DomainEvent: Serialize + DeserializeOwned + JsonSchema {
    /// The event type, which is also the routing key.
    const EVENT_TYPE: &'static str;
    /// The topic exchange it is published on.
    const EXCHANGE: &'static str;
    /// The kind of aggregate (`user`, `ticket`, `email`).
    const AGGREGATE_TYPE: &'static str;
    /// The aggregate this event is about.
    fn aggregate_id(&self) -> Uuid;
}

impl Envelope<serde_json::Value> {
    /// Wraps a typed payload in a new envelope.
    pub fn wrap<E: DomainEvent>(payload: &E, metadata: EventMetadata) -> Self {
        Envelope {
            event_id: Uuid::now_v7(),
            event_type: E::EVENT_TYPE.to_string(),
            aggregate_id: payload.aggregate_id().to_string(),
            aggregate_type: E::AGGREGATE_TYPE.to_string(),
            timestamp: Utc::now(),
            version: 1,
            // Serializing our own payload structs cannot fail.
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
            metadata,
        }
    }

    /// The payload as the typed event `E`. Another event type, or a payload without `E`'s
    /// shape, is a permanent failure: no retry can fix it.
    pub fn payload<E: DomainEvent>(&self) -> Result<E, HandlerError> {
        self.payload_if::<E>()?.ok_or_else(|| {
            HandlerError::Permanent(format!(
                "expected {}, got {}",
                E::EVENT_TYPE,
                self.event_type
            ))
        })
    }

    /// The payload as `E` when this is an `E` event, `None` for any other type; a malformed
    /// `E` is a permanent failure.
    pub fn payload_if<E: DomainEvent>(&self) -> Result<Option<E>, HandlerError> {
        if self.event_type != E::EVENT_TYPE {
            return Ok(None);
        }
        E::deserialize(&self.payload).map(Some).map_err(|e| {
            HandlerError::Permanent(format!("malformed {} payload: {e}", E::EVENT_TYPE))
        })
    }

    /// The ticket's snapshot every `ticket.*` event carries (after the change).
    pub fn ticket_snapshot(&self) -> Result<TicketSnapshot, HandlerError> {
        #[derive(Deserialize)]
        struct AnyTicketEvent {
            ticket: TicketSnapshot,
        }
        AnyTicketEvent::deserialize(&self.payload)
            .map(|p| p.ticket)
            .map_err(|e| {
                HandlerError::Permanent(format!(
                    "{} without a well-formed ticket snapshot: {e}",
                    self.event_type
                ))
            })
    }

    /// The exchange this event type belongs to.
    pub fn exchange(&self) -> &'static str {
        exchange_of(&self.event_type)
    }
}

/// The exchange of an event type, from its prefix.
pub fn exchange_of(event_type: &str) -> &'static str {
    if event_type.starts_with("user.") {
        USER_EVENTS
    } else if event_type.starts_with("ticket.") {
        TICKET_EVENTS
    } else {
        NOTIFICATION_EVENTS
    }
}

mod payloads;
pub use payloads::*;

/// The JSON Schema of every event (envelope with its typed payload), keyed by event type.
pub fn all_schemas() -> Vec<(&'static str, serde_json::Value)> {
    fn one<E: DomainEvent>() -> (&'static str, serde_json::Value) {
        let schema = schemars::schema_for!(Envelope<E>);
        (
            E::EVENT_TYPE,
            serde_json::to_value(schema).unwrap_or_default(),
        )
    }
    vec![
        one::<UserCreated>(),
        one::<UserUpdated>(),
        one::<UserDeleted>(),
        one::<UserRoleChanged>(),
        one::<UserPasswordResetRequested>(),
        one::<TicketCreated>(),
        one::<TicketUpdated>(),
        one::<TicketStatusChanged>(),
        one::<TicketAssigned>(),
        one::<TicketUnassigned>(),
        one::<TicketDeleted>(),
        one::<TicketCommentAdded>(),
        one::<EmailQueued>(),
        one::<EmailSent>(),
        one::<EmailFailed>(),
    ]
}

/// Words that make a key secret-bearing wherever they appear in it, in any case and with any
/// separators (`password`, `passwordHash`, `Reset_Token`, `X-Api-Token`, `authorization`,
/// `Set-Cookie`, `client_secret`, ...). Such keys are never stored or logged outside the service
/// that needs them.
pub const SECRET_KEY_WORDS: [&str; 10] = [
    "token",
    "password",
    "passwd",
    "secret",
    "authorization",
    "cookie",
    "hash",
    "credential",
    "apikey",
    "privatekey",
];

/// Words of keys that hold links: such a value is a secret when it carries a token parameter
/// (`resetLink`, `Reset_Link`, `callbackUrl` with `?token=...`).
pub const LINK_KEY_WORDS: [&str; 3] = ["link", "url", "uri"];

/// A key lowered and stripped of separators: `Reset_Link`, `reset-link` and `resetLink` are one.
fn normalized_key(key: &str) -> String {
    key.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether a text carries a token in a URL parameter (`?token=...`, `&reset_token=...`).
fn carries_token(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower
        .split(['?', '&', '#', ';'])
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .any(|(name, _)| normalized_key(name).contains("token"))
}

/// Whether `key` (with its `value`) holds a secret: see [`SECRET_KEY_WORDS`] and
/// [`LINK_KEY_WORDS`].
pub fn is_secret(key: &str, value: &serde_json::Value) -> bool {
    let key = normalized_key(key);
    if SECRET_KEY_WORDS.iter().any(|w| key.contains(w)) {
        return true;
    }
    LINK_KEY_WORDS.iter().any(|w| key.contains(w)) && value.as_str().is_some_and(carries_token)
}

/// A copy of `value` with every secret-bearing key removed, at any depth (see [`is_secret`]).
pub fn redact_secrets(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.iter()
                .filter(|(k, v)| !is_secret(k, v))
                .map(|(k, v)| (k.clone(), redact_secrets(v)))
                .collect(),
        ),
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(redact_secrets).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
