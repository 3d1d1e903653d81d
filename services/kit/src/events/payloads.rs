//! The payload of each event type, with its exchange, routing key and aggregate
//! ([`DomainEvent`]), and the snapshots of users and tickets they embed.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{DomainEvent, NOTIFICATION_EVENTS, TICKET_EVENTS, USER_EVENTS};
use crate::auth::Role;

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
