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

use crate::auth::Role;
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

/// A user as embedded in events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserSnapshot {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// The user row's revision at the change this event announces: it grows with every change,
    /// so a read model applies a snapshot only when it is newer than what it holds (events of one
    /// user may arrive out of order). 0 in events from before revisions existed.
    #[serde(default)]
    pub revision: i64,
    /// Which of the user's tokens still count ([`crate::auth::Sessions`]): tokens of an earlier
    /// epoch are refused, except the kept session's.
    #[serde(default)]
    pub token_epoch: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_session: Option<Uuid>,
}

impl UserSnapshot {
    pub fn sessions(&self) -> crate::auth::Sessions {
        crate::auth::Sessions {
            epoch: self.token_epoch,
            kept: self.kept_session,
        }
    }
}

/// A short reference to a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRef {
    pub id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// A ticket's status.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    utoipa::ToSchema,
    sqlx::Type,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    Open,
    InProgress,
    Done,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "OPEN",
            TicketStatus::InProgress => "IN_PROGRESS",
            TicketStatus::Done => "DONE",
        }
    }
}

impl std::str::FromStr for TicketStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "OPEN" => Ok(TicketStatus::Open),
            "IN_PROGRESS" => Ok(TicketStatus::InProgress),
            "DONE" => Ok(TicketStatus::Done),
            other => Err(format!(
                "status must be one of OPEN, IN_PROGRESS, DONE, got {other:?}"
            )),
        }
    }
}

/// A ticket as embedded in events (its description is left out: events stay small).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketSnapshot {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub status: TicketStatus,
    pub assigned_to_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! domain_event {
    ($ty:ty, $event:literal, $exchange:expr, $aggregate:literal, |$p:ident| $id:expr) => {
        impl DomainEvent for $ty {
            const EVENT_TYPE: &'static str = $event;
            const EXCHANGE: &'static str = $exchange;
            const AGGREGATE_TYPE: &'static str = $aggregate;
            fn aggregate_id(&self) -> Uuid {
                let $p = self;
                $id
            }
        }
    };
}

/// `user.created`: a new account (→ welcome email).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreated {
    pub user: UserSnapshot,
}
domain_event!(UserCreated, "user.created", USER_EVENTS, "user", |p| p
    .user
    .id);

/// `user.updated`: the account changed; `changes` names what (e.g. `password`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserUpdated {
    pub user: UserSnapshot,
    pub changes: Vec<String>,
}
domain_event!(UserUpdated, "user.updated", USER_EVENTS, "user", |p| p
    .user
    .id);

/// `user.deleted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDeleted {
    pub id: Uuid,
    pub email: String,
}
domain_event!(UserDeleted, "user.deleted", USER_EVENTS, "user", |p| p.id);

/// `user.role_changed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRoleChanged {
    pub user: UserSnapshot,
    pub old_role: Role,
    pub new_role: Role,
}
domain_event!(
    UserRoleChanged,
    "user.role_changed",
    USER_EVENTS,
    "user",
    |p| p.user.id
);

/// `user.password_reset_requested`: carries the reset link for the email. Only
/// notification-service uses the link; audit strips it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPasswordResetRequested {
    pub user_id: Uuid,
    pub email: String,
    pub first_name: Option<String>,
    pub reset_link: String,
    pub expires_at: DateTime<Utc>,
}
domain_event!(
    UserPasswordResetRequested,
    "user.password_reset_requested",
    USER_EVENTS,
    "user",
    |p| p.user_id
);

/// `ticket.created`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketCreated {
    pub ticket: TicketSnapshot,
    pub creator: UserRef,
}
domain_event!(
    TicketCreated,
    "ticket.created",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.updated`: `changes` names the changed fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketUpdated {
    pub ticket: TicketSnapshot,
    pub changes: Vec<String>,
}
domain_event!(
    TicketUpdated,
    "ticket.updated",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.status_changed` (→ email to the creator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketStatusChanged {
    pub ticket: TicketSnapshot,
    pub old_status: TicketStatus,
    pub new_status: TicketStatus,
    pub creator: UserRef,
}
domain_event!(
    TicketStatusChanged,
    "ticket.status_changed",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.assigned` (→ emails to the creator and the assignee).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketAssigned {
    pub ticket: TicketSnapshot,
    pub assignee: UserRef,
    pub previous_assignee_id: Option<Uuid>,
    pub creator: UserRef,
}
domain_event!(
    TicketAssigned,
    "ticket.assigned",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.unassigned` (→ email to the creator).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketUnassigned {
    pub ticket: TicketSnapshot,
    pub previous_assignee_id: Option<Uuid>,
    pub creator: UserRef,
}
domain_event!(
    TicketUnassigned,
    "ticket.unassigned",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.deleted`: the last state of the ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketDeleted {
    pub ticket: TicketSnapshot,
}
domain_event!(
    TicketDeleted,
    "ticket.deleted",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `ticket.comment_added`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TicketCommentAdded {
    pub ticket: TicketSnapshot,
    pub comment_id: Uuid,
    pub author_id: Uuid,
    pub is_internal: bool,
}
domain_event!(
    TicketCommentAdded,
    "ticket.comment_added",
    TICKET_EVENTS,
    "ticket",
    |p| p.ticket.id
);

/// `email.queued`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailQueued {
    pub email_id: Uuid,
    pub to: String,
    pub subject: String,
    pub template: Option<String>,
}
domain_event!(
    EmailQueued,
    "email.queued",
    NOTIFICATION_EVENTS,
    "email",
    |p| p.email_id
);

/// `email.sent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailSent {
    pub email_id: Uuid,
    pub to: String,
    pub attempts: i32,
}
domain_event!(EmailSent, "email.sent", NOTIFICATION_EVENTS, "email", |p| p
    .email_id);

/// `email.failed`: gave up after the configured attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailFailed {
    pub email_id: Uuid,
    pub to: String,
    pub attempts: i32,
    pub error: String,
}
domain_event!(
    EmailFailed,
    "email.failed",
    NOTIFICATION_EVENTS,
    "email",
    |p| p.email_id
);

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
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("event-schemas")
    }

    /// The checked-in schemas equal the ones generated from the types.
    /// Regenerate with `UPDATE_EVENT_SCHEMAS=1 cargo test -p helpdesk-kit event_schemas`.
    #[test]
    fn event_schemas_match_checked_in_files() {
        let update = std::env::var("UPDATE_EVENT_SCHEMAS").is_ok();
        let dir = schema_dir();
        for (event_type, schema) in all_schemas() {
            let path = dir.join(format!("{event_type}.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
                continue;
            }
            let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!(
                    "{} is missing; run with UPDATE_EVENT_SCHEMAS=1",
                    path.display()
                )
            });
            assert_eq!(
                on_disk,
                text,
                "{} drifted from the Rust types; run with UPDATE_EVENT_SCHEMAS=1",
                path.display()
            );
        }
    }

    #[test]
    fn envelope_round_trip_and_redaction() {
        let p = UserPasswordResetRequested {
            user_id: Uuid::new_v4(),
            email: "a@b.co".into(),
            first_name: None,
            reset_link: "https://x/reset-password?token=secret".into(),
            expires_at: Utc::now(),
        };
        let env = Envelope::wrap(&p, EventMetadata::default());
        assert_eq!(env.event_type, "user.password_reset_requested");
        assert_eq!(env.exchange(), USER_EVENTS);
        let back: UserPasswordResetRequested = env.payload().unwrap();
        assert_eq!(back, p);
        let redacted = redact_secrets(&env.payload);
        assert!(!redacted.to_string().contains("secret"));
        assert!(redacted.get("email").is_some());
    }

    /// Security review, item 10: secrets are found by pattern, not by exact name.
    #[test]
    fn secrets_are_redacted_by_pattern_in_any_case() {
        let value = serde_json::json!({
            "Reset_Link": "https://app.example.com/reset-password?token=SECRET1",
            "callbackUrl": "https://x.example/cb?lang=en&Reset-Token=SECRET2",
            "authorization": "Bearer SECRET3",
            "Cookie": "sid=SECRET4",
            "X-Api-Token": "SECRET5",
            "client_secret": "SECRET6",
            "NEW_PASSWORD": "SECRET7",
            "password_hash": "SECRET8",
            "nested": [{"AccessToken": "SECRET9", "kept": 1}],
            "ticketLink": "https://app.example.com/tickets/42",
            "title": "How do I reset my password?",
            "email": "ann@example.com",
        });
        let redacted = redact_secrets(&value);
        assert!(!redacted.to_string().contains("SECRET"), "{redacted}");
        assert_eq!(
            redacted,
            serde_json::json!({
                "nested": [{"kept": 1}],
                "ticketLink": "https://app.example.com/tickets/42",
                "title": "How do I reset my password?",
                "email": "ann@example.com",
            })
        );
    }
}
