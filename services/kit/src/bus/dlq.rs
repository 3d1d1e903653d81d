//! Dead letters: what a consumer gave up on, listed and replayed (`helpdesk dlq`). Both buses
//! keep the message as it was published plus the attempts and the last error; a replay hands it
//! back to its queue with a fresh attempt count, so the consumer tries it again (its idempotency
//! record makes a replay of something already applied harmless).

use serde::Serialize;

use super::BusError;

/// One dead-lettered message.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The logical queue it was dead-lettered from (e.g. `audit-service.events`).
    pub queue: String,
    /// The broker message id (the event id for events).
    pub message_id: String,
    /// The routing key it was published with (the event type).
    pub routing_key: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The body as text when it is UTF-8 (events are JSON), else a note of its size.
    pub body: String,
}

impl DeadLetter {
    pub(crate) fn body_text(body: &[u8]) -> String {
        match std::str::from_utf8(body) {
            Ok(s) => s.to_string(),
            Err(_) => format!("<{} bytes of binary data>", body.len()),
        }
    }
}

/// Listing and replaying dead letters.
#[async_trait::async_trait]
pub trait DeadLetters: Send + Sync {
    /// The dead letters of `queue`, oldest first; nothing is removed.
    async fn list(&self, queue: &str) -> Result<Vec<DeadLetter>, BusError>;

    /// Hands the dead letters of `queue` back to it (only `message_id` when given) and returns
    /// how many. Each is replayed once per call, even if it fails again meanwhile.
    async fn replay(&self, queue: &str, message_id: Option<&str>) -> Result<usize, BusError>;
}
