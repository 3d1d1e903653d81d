//! The ticket as the contract shows it ([`Ticket`]), as stored ([`TicketRow`]), and the reads
//! every per-ticket route starts with: view, find, and the creator as a user reference.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgConnection, PgExecutor, Row};
use uuid::Uuid;

use helpdesk_kit::events::{TicketSnapshot, TicketStatus};

use super::can_view;
use crate::users::{self, Caller, UserRef};

/// The contract's Ticket object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TicketStatus,
    pub assigned_to_user_id: Option<Uuid>,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "helpdesk_kit::json::timestamp")]
    pub updated_at: DateTime<Utc>,
    pub user: UserRef,
    pub assigned_to: Option<UserRef>,
}

/// A stored ticket (without the embedded users).
#[derive(Debug, Clone)]
pub struct TicketRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub title: String,
    pub description: String,
    pub status: TicketStatus,
    pub assigned_to_user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TicketRow {
    pub fn snapshot(&self) -> TicketSnapshot {
        TicketSnapshot {
            id: self.id,
            user_id: self.user_id,
            title: self.title.clone(),
            status: self.status,
            assigned_to_user_id: self.assigned_to_user_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    pub fn visible_to(&self, caller: &Caller) -> bool {
        can_view(self.user_id, self.assigned_to_user_id, caller)
    }
}

/// A ticket row with its users' fields (from [`VIEW`] or [`view`]).
pub(crate) struct TicketViewRow {
    pub(crate) id: Uuid,
    user_id: Uuid,
    title: String,
    description: String,
    status: TicketStatus,
    assigned_to_user_id: Option<Uuid>,
    pub(crate) created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    creator_email: Option<String>,
    creator_first_name: Option<String>,
    creator_last_name: Option<String>,
    assignee_email: Option<String>,
    assignee_first_name: Option<String>,
    assignee_last_name: Option<String>,
}

impl TicketViewRow {
    /// The row's [`VIEW`] columns, which start at column `at` (by position: a listing reads
    /// thousands of them a second, and a look-up by name hashes every column's name each time).
    pub(crate) fn from_row_at(row: &PgRow, at: usize) -> sqlx::Result<Self> {
        Ok(Self {
            id: row.try_get(at)?,
            user_id: row.try_get(at + 1)?,
            title: row.try_get(at + 2)?,
            description: row.try_get(at + 3)?,
            status: row.try_get(at + 4)?,
            assigned_to_user_id: row.try_get(at + 5)?,
            created_at: row.try_get(at + 6)?,
            updated_at: row.try_get(at + 7)?,
            creator_email: row.try_get(at + 8)?,
            creator_first_name: row.try_get(at + 9)?,
            creator_last_name: row.try_get(at + 10)?,
            assignee_email: row.try_get(at + 11)?,
            assignee_first_name: row.try_get(at + 12)?,
            assignee_last_name: row.try_get(at + 13)?,
        })
    }
}

impl FromRow<'_, PgRow> for TicketViewRow {
    fn from_row(row: &PgRow) -> sqlx::Result<Self> {
        Self::from_row_at(row, 0)
    }
}

impl Ticket {
    /// The ticket as events carry it.
    pub fn snapshot(&self) -> TicketSnapshot {
        TicketSnapshot {
            id: self.id,
            user_id: self.user_id,
            title: self.title.clone(),
            status: self.status,
            assigned_to_user_id: self.assigned_to_user_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }

    /// A ticket with the users to embed.
    pub fn new(t: TicketRow, user: UserRef, assigned_to: Option<UserRef>) -> Self {
        Ticket {
            id: t.id,
            user_id: t.user_id,
            title: t.title,
            description: t.description,
            status: t.status,
            assigned_to_user_id: t.assigned_to_user_id,
            created_at: t.created_at,
            updated_at: t.updated_at,
            user,
            assigned_to,
        }
    }
}

impl From<TicketViewRow> for Ticket {
    fn from(r: TicketViewRow) -> Self {
        let t = TicketRow {
            id: r.id,
            user_id: r.user_id,
            title: r.title,
            description: r.description,
            status: r.status,
            assigned_to_user_id: r.assigned_to_user_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        };
        let user = UserRef {
            id: t.user_id,
            email: r.creator_email.unwrap_or_default(),
            first_name: r.creator_first_name,
            last_name: r.creator_last_name,
        };
        let assigned_to = match (t.assigned_to_user_id, r.assignee_email) {
            (Some(id), Some(email)) => Some(UserRef {
                id,
                email,
                first_name: r.assignee_first_name,
                last_name: r.assignee_last_name,
            }),
            _ => None,
        };
        Ticket::new(t, user, assigned_to)
    }
}

/// The select of a ticket with its creator and assignee: the listings add their filters, order
/// and page to it (see [`crate::listing`]); [`view`] is the same query for one ticket.
pub const VIEW: &str = "SELECT t.id, t.user_id, t.title, t.description, t.status, t.assigned_to_user_id, t.created_at, t.updated_at, \
     c.email AS creator_email, c.first_name AS creator_first_name, c.last_name AS creator_last_name, \
     a.email AS assignee_email, a.first_name AS assignee_first_name, a.last_name AS assignee_last_name \
     FROM tickets t LEFT JOIN users c ON c.id = t.user_id LEFT JOIN users a ON a.id = t.assigned_to_user_id";

/// A ticket with its embedded users.
pub async fn view(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Ticket>> {
    let row = sqlx::query_as!(
        TicketViewRow,
        r#"SELECT t.id, t.user_id, t.title, t.description, t.status AS "status: TicketStatus",
             t.assigned_to_user_id, t.created_at, t.updated_at,
             c.email AS "creator_email?", c.first_name AS creator_first_name,
             c.last_name AS creator_last_name,
             a.email AS "assignee_email?", a.first_name AS assignee_first_name,
             a.last_name AS assignee_last_name
           FROM tickets t LEFT JOIN users c ON c.id = t.user_id
             LEFT JOIN users a ON a.id = t.assigned_to_user_id
           WHERE t.id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Ticket::from))
}

pub async fn find(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TicketRow>> {
    sqlx::query_as!(
        TicketRow,
        r#"SELECT id, user_id, title, description, status AS "status: TicketStatus",
             assigned_to_user_id, created_at, updated_at
           FROM tickets WHERE id = $1"#,
        id,
    )
    .fetch_optional(db)
    .await
}

/// The creator as embedded in events (a fallback reference when the read model lacks them).
pub async fn creator_ref(
    db: &mut PgConnection,
    ticket: &TicketRow,
) -> sqlx::Result<helpdesk_kit::events::UserRef> {
    let found = users::find(&mut *db, ticket.user_id).await?;
    Ok(found
        .map(|u| u.reference().into())
        .unwrap_or(helpdesk_kit::events::UserRef {
            id: ticket.user_id,
            email: String::new(),
            first_name: None,
            last_name: None,
        }))
}
