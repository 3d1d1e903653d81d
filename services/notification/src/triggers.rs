//! Which events send which emails: the consumer of `notification-service.events`. It only queues
//! rendered emails (in the transaction that records the event); the [`crate::sender`] sends them.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgConnection;

use helpdesk_kit::bus::{EventHandler, HandlerError};
use helpdesk_kit::events::{
    Envelope, TicketAssigned, TicketCreated, TicketStatusChanged, TicketUnassigned, UserCreated,
    UserPasswordResetRequested, UserRef,
};
use helpdesk_kit::outbox::EventContext;

use crate::emails::{self, NewEmail};
use crate::templates::{self, Templates};

/// Renders and queues the emails of each trigger event.
pub struct Triggers {
    pub templates: Arc<Templates>,
    /// Where new-ticket notices go (none: not sent).
    pub staff_notify_email: Option<String>,
    /// Base of links in emails (`<base>/tickets/<id>`, `<base>/login`).
    pub frontend_base_url: String,
}

fn name_of(first_name: Option<&str>, fallback: &str) -> String {
    first_name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(fallback)
        .to_string()
}

fn full_name(u: &UserRef) -> String {
    let parts: Vec<&str> = [u.first_name.as_deref(), u.last_name.as_deref()]
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        u.email.clone()
    } else {
        parts.join(" ")
    }
}

/// One email to queue: recipient, template and its data.
struct Planned {
    to: String,
    template: &'static str,
    data: Vec<(&'static str, String)>,
}

impl Triggers {
    fn ticket_url(&self, id: uuid::Uuid) -> String {
        format!("{}/tickets/{id}", self.frontend_base_url)
    }

    /// The emails an event calls for (none for events that trigger nothing).
    fn plan(&self, event: &Envelope) -> Result<Vec<Planned>, HandlerError> {
        if let Some(p) = event.payload_if::<UserCreated>()? {
            return Ok(vec![Planned {
                to: p.user.email.clone(),
                template: templates::WELCOME,
                data: vec![
                    ("firstName", name_of(p.user.first_name.as_deref(), "there")),
                    ("email", p.user.email),
                    ("loginUrl", format!("{}/login", self.frontend_base_url)),
                ],
            }]);
        }
        if let Some(p) = event.payload_if::<UserPasswordResetRequested>()? {
            return Ok(vec![Planned {
                to: p.email,
                template: templates::PASSWORD_RESET,
                data: vec![
                    ("firstName", name_of(p.first_name.as_deref(), "there")),
                    ("resetLink", p.reset_link),
                    (
                        "expiresAt",
                        p.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                    ),
                ],
            }]);
        }
        if let Some(p) = event.payload_if::<TicketCreated>()? {
            let Some(staff) = &self.staff_notify_email else {
                return Ok(vec![]);
            };
            return Ok(vec![Planned {
                to: staff.clone(),
                template: templates::TICKET_CREATED,
                data: vec![
                    ("title", p.ticket.title.clone()),
                    ("ticketId", p.ticket.id.to_string()),
                    ("creatorName", full_name(&p.creator)),
                    ("creatorEmail", p.creator.email.clone()),
                    ("ticketUrl", self.ticket_url(p.ticket.id)),
                ],
            }]);
        }
        if let Some(p) = event.payload_if::<TicketStatusChanged>()? {
            return Ok(vec![Planned {
                to: p.creator.email.clone(),
                template: templates::TICKET_STATUS_CHANGED,
                data: vec![
                    (
                        "firstName",
                        name_of(p.creator.first_name.as_deref(), "there"),
                    ),
                    ("title", p.ticket.title.clone()),
                    ("oldStatus", p.old_status.as_str().to_string()),
                    ("newStatus", p.new_status.as_str().to_string()),
                    ("ticketUrl", self.ticket_url(p.ticket.id)),
                ],
            }]);
        }
        if let Some(p) = event.payload_if::<TicketAssigned>()? {
            let url = self.ticket_url(p.ticket.id);
            return Ok(vec![
                Planned {
                    to: p.creator.email.clone(),
                    template: templates::TICKET_ASSIGNED,
                    data: vec![
                        (
                            "firstName",
                            name_of(p.creator.first_name.as_deref(), "there"),
                        ),
                        ("title", p.ticket.title.clone()),
                        ("assigneeName", full_name(&p.assignee)),
                        ("ticketUrl", url.clone()),
                    ],
                },
                Planned {
                    to: p.assignee.email.clone(),
                    template: templates::TICKET_ASSIGNED_TO_YOU,
                    data: vec![
                        (
                            "firstName",
                            name_of(p.assignee.first_name.as_deref(), "there"),
                        ),
                        ("title", p.ticket.title.clone()),
                        ("creatorName", full_name(&p.creator)),
                        ("ticketUrl", url),
                    ],
                },
            ]);
        }
        if let Some(p) = event.payload_if::<TicketUnassigned>()? {
            return Ok(vec![Planned {
                to: p.creator.email.clone(),
                template: templates::TICKET_UNASSIGNED,
                data: vec![
                    (
                        "firstName",
                        name_of(p.creator.first_name.as_deref(), "there"),
                    ),
                    ("title", p.ticket.title.clone()),
                    ("ticketUrl", self.ticket_url(p.ticket.id)),
                ],
            }]);
        }
        Ok(vec![])
    }
}

#[async_trait]
impl EventHandler for Triggers {
    async fn handle(&self, tx: &mut PgConnection, event: &Envelope) -> Result<(), HandlerError> {
        let ctx = EventContext::caused_by(event);
        for planned in self.plan(event)? {
            let rendered = self
                .templates
                .render(planned.template, &templates::data(planned.data))
                // A deployer's template that needs data we do not have: fix the template, then replay.
                .map_err(|e| {
                    HandlerError::Permanent(format!("template {}: {e}", planned.template))
                })?;
            let email = NewEmail {
                source_event_id: Some(event.event_id),
                recipient: planned.to,
                template: Some(planned.template.to_string()),
                subject: rendered.subject,
                body: rendered.body,
                sensitive: templates::is_sensitive(planned.template),
            };
            let queued = emails::queue(tx, &email, &ctx).await?;
            tracing::debug!(
                template = planned.template,
                queued = queued.is_some(),
                "email for event"
            );
        }
        Ok(())
    }
}
