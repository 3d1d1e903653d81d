//! A stand-in bus for testing the outbox relay's side: it records what it is sent and confirms
//! each batch at once, or only when the test says so (a broker whose disk holds up its
//! confirmations).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use helpdesk_kit::bus::{
    Bus, BusError, Confirmation, MessageHandler, OutgoingMessage, PublishOutcome, Subscription,
    confirmed,
};
use helpdesk_testkit::eventually;

/// A batch's message ids and, while the test holds it, the sender of its confirmation.
type Batch = (Vec<String>, Option<oneshot::Sender<PublishOutcome>>);

#[derive(Default)]
pub struct StandInBus {
    /// Whether batches wait for [`StandInBus::confirm`].
    holding: bool,
    sent: Mutex<Vec<Batch>>,
}

impl StandInBus {
    /// Confirms every batch as it is sent.
    pub fn confirming() -> Self {
        Self::default()
    }

    /// Confirms a batch only when the test calls [`StandInBus::confirm`].
    pub fn holding() -> Self {
        Self {
            holding: true,
            ..Self::default()
        }
    }

    /// The message ids of each batch sent so far.
    pub fn batches(&self) -> Vec<Vec<String>> {
        let sent = self.sent.lock().unwrap();
        sent.iter().map(|(ids, _)| ids.clone()).collect()
    }

    /// Whether the event `id` was sent.
    pub fn contains(&self, id: Uuid) -> bool {
        let id = id.to_string();
        self.batches().iter().flatten().any(|sent| *sent == id)
    }

    /// Waits until `n` batches were sent and returns them.
    pub async fn await_batches(&self, n: usize) -> Vec<Vec<String>> {
        eventually(
            Duration::from_secs(10),
            &format!("{n} batches sent"),
            || async {
                let batches = self.batches();
                (batches.len() >= n).then_some(batches)
            },
        )
        .await
    }

    /// Confirms the first `confirmed` messages of held batch `batch`; with `error`, the rest
    /// failed.
    pub fn confirm(&self, batch: usize, confirmed: usize, error: Option<&str>) {
        let sender = self.sent.lock().unwrap()[batch].1.take();
        let outcome = PublishOutcome {
            confirmed,
            error: error.map(|e| BusError(e.to_string())),
        };
        let _ = sender.expect("a held batch, confirmed once").send(outcome);
    }
}

#[async_trait]
impl Bus for StandInBus {
    async fn publish(&self, messages: &[OutgoingMessage]) -> PublishOutcome {
        self.send(messages.to_vec()).await.await
    }

    async fn send(&self, messages: Vec<OutgoingMessage>) -> Confirmation {
        let ids = messages.iter().map(|m| m.message_id.clone()).collect();
        if !self.holding {
            self.sent.lock().unwrap().push((ids, None));
            return confirmed(PublishOutcome {
                confirmed: messages.len(),
                error: None,
            });
        }
        let (tx, rx) = oneshot::channel();
        self.sent.lock().unwrap().push((ids, Some(tx)));
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| PublishOutcome {
                confirmed: 0,
                error: Some(BusError("the test dropped the confirmation".into())),
            })
        })
    }

    async fn consume(
        &self,
        _subscription: Subscription,
        _handler: Arc<dyn MessageHandler>,
        shutdown: CancellationToken,
    ) {
        shutdown.cancelled().await
    }

    async fn healthy(&self) -> bool {
        true
    }
}
