//! The outbox relay while the broker holds up its confirmations (against real PostgreSQL; the
//! bus is a stand-in that confirms when the test says so), and the RabbitMQ bus sending before
//! earlier messages are confirmed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::stand_in::StandInBus;
use helpdesk_kit::bus::amqp::AmqpBus;
use helpdesk_kit::bus::{Bus, OutgoingMessage};
use helpdesk_kit::events::{Envelope, EventMetadata, USER_EVENTS, UserDeleted};
use helpdesk_kit::outbox::{self, EventContext, OutboxRelay, RelayError};
use helpdesk_testkit::{self as testing, EventTap, amqp_url, unique};

async fn fixture() -> (PgPool, String) {
    testing::require_postgres().await;
    let schema = unique("t_relay_");
    (crate::pgbus::pool(&schema).await, schema)
}

fn deleted() -> UserDeleted {
    let id = Uuid::new_v4();
    UserDeleted {
        id,
        email: format!("{id}@example.com"),
    }
}

/// Writes `n` events in one transaction (so a relay takes them together); returns their ids.
async fn write(pool: &PgPool, n: usize) -> Vec<String> {
    let mut tx = pool.begin().await.unwrap();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(publish(&mut tx).await);
    }
    tx.commit().await.unwrap();
    ids
}

async fn publish(tx: &mut sqlx::PgConnection) -> String {
    let event = outbox::publish(tx, &deleted(), &EventContext::default())
        .await
        .unwrap();
    event.event_id.to_string()
}

/// The outbox's rows in order: event id and attempts.
async fn outbox_rows(pool: &PgPool) -> Vec<(String, i32)> {
    sqlx::query_as::<_, (Uuid, i32)>("SELECT event_id, attempts FROM outbox ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, attempts)| (id.to_string(), attempts))
        .collect()
}

#[tokio::test]
async fn events_committed_while_a_batch_awaits_its_confirmation_are_sent_behind_it() {
    let (pool, schema) = fixture().await;
    let bus = Arc::new(StandInBus::holding());
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &schema);

    // `late` takes its id first but commits only after `early` was sent.
    let mut late_tx = pool.begin().await.unwrap();
    let late = publish(&mut late_tx).await;
    let early = write(&pool, 1).await;
    let round = start_round(relay);
    assert_eq!(bus.await_batches(1).await, vec![early]);

    // While the broker holds up the first confirmation, what commits meanwhile goes out.
    let newer = publish(&mut late_tx).await;
    late_tx.commit().await.unwrap();
    let batches = bus.await_batches(2).await;
    assert_eq!(batches[1], vec![late.clone(), newer.clone()]);
    assert!(
        !round.is_finished(),
        "the round waits for its confirmations"
    );

    bus.confirm(0, 1, None);
    bus.confirm(1, 2, None);
    assert_eq!(finished(round).await, 3);
    assert_eq!(outbox_rows(&pool).await, vec![]);
    testing::drop_schema(&schema).await;
}

#[tokio::test]
async fn a_failed_batch_and_all_after_it_stay_in_order_and_what_was_confirmed_is_gone() {
    let (pool, schema) = fixture().await;
    let bus = Arc::new(StandInBus::holding());
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &schema);
    let first = write(&pool, 1).await;
    let round = start_round(relay);
    bus.await_batches(1).await;
    let second_and_third = write(&pool, 2).await;
    bus.await_batches(2).await;
    let fourth = write(&pool, 1).await;
    let batches = bus.await_batches(3).await;
    assert_eq!(
        batches,
        vec![first, second_and_third.clone(), fourth.clone()]
    );
    let (third, fourth) = (second_and_third[1].clone(), fourth[0].clone());

    // The broker confirms the first batch and the first message of the second, then refuses one;
    // the third batch is never confirmed.
    bus.confirm(0, 1, None);
    bus.confirm(1, 1, Some("broker refused (nack) a message"));
    let error = ended(round).await.unwrap_err();
    assert!(error.to_string().contains("nack"), "{error}");
    assert_eq!(
        outbox_rows(&pool).await,
        vec![(third.clone(), 1), (fourth.clone(), 0)],
        "the confirmed events are gone; the refused one (its attempt counted) and the one sent after it stay"
    );
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM outbox ORDER BY id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(last_error.unwrap().contains("nack"));

    // The next round sends them again, in order.
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &schema);
    let round = start_round(relay);
    assert_eq!(bus.await_batches(4).await[3], vec![third, fourth]);
    bus.confirm(3, 2, None);
    assert_eq!(finished(round).await, 2);
    assert_eq!(outbox_rows(&pool).await, vec![]);
    testing::drop_schema(&schema).await;
}

#[tokio::test]
async fn a_round_takes_no_more_while_its_window_is_full_or_its_time_is_up() {
    let (pool, schema) = fixture().await;
    let bus = Arc::new(StandInBus::holding());
    // At most two events unconfirmed: the first batch fills the window.
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &schema)
        .with_round_limits(2, Duration::from_secs(60));
    let first = write(&pool, 2).await;
    let round = start_round(relay);
    assert_eq!(bus.await_batches(1).await, vec![first]);
    let later = write(&pool, 1).await;
    // The round looks for more every few milliseconds while it has room: give it many chances.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bus.batches().len(), 1, "a full window takes nothing more");
    bus.confirm(0, 2, None);
    // The window is free again: the same round takes what waited.
    assert_eq!(bus.await_batches(2).await[1], later);
    bus.confirm(1, 1, None);
    assert_eq!(finished(round).await, 3);

    // Past its time limit a round only waits for what it sent.
    let relay = OutboxRelay::new(pool.clone(), bus.clone(), &schema)
        .with_round_limits(1000, Duration::from_millis(200));
    let third = write(&pool, 1).await;
    let round = start_round(relay);
    assert_eq!(bus.await_batches(3).await[2], third);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let fourth = write(&pool, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bus.batches().len(),
        3,
        "past its time limit a round takes nothing more"
    );
    bus.confirm(2, 1, None);
    assert_eq!(finished(round).await, 1);
    assert_eq!(outbox_rows(&pool).await, vec![(fourth[0].clone(), 0)]);
    testing::drop_schema(&schema).await;
}

/// One relay round, run in the background.
fn start_round(relay: OutboxRelay) -> JoinHandle<Result<usize, RelayError>> {
    tokio::spawn(async move { relay.relay_once().await })
}

/// What a round returned (it must end within 10 s).
async fn ended(round: JoinHandle<Result<usize, RelayError>>) -> Result<usize, RelayError> {
    tokio::time::timeout(Duration::from_secs(10), round)
        .await
        .expect("the round ends once its batches are confirmed or one failed")
        .unwrap()
}

/// How many events a round that succeeded confirmed.
async fn finished(round: JoinHandle<Result<usize, RelayError>>) -> usize {
    ended(round).await.unwrap()
}

fn message(event: &Envelope) -> OutgoingMessage {
    OutgoingMessage {
        exchange: USER_EVENTS.into(),
        routing_key: event.event_type.clone(),
        body: serde_json::to_vec(event).unwrap(),
        message_id: event.event_id.to_string(),
        headers: Default::default(),
    }
}

#[tokio::test]
async fn rabbitmq_delivers_in_order_what_was_sent_before_earlier_messages_were_confirmed() {
    let prefix = format!("{}.", unique("t"));
    let mut tap = EventTap::start(&prefix, USER_EVENTS).await;
    let bus = AmqpBus::new(&amqp_url(), &prefix);
    let events: Vec<Envelope> = (0..5)
        .map(|_| Envelope::wrap(&deleted(), EventMetadata::default()))
        .collect();
    let first = bus.send(events[..3].iter().map(message).collect()).await;
    let second = bus.send(events[3..].iter().map(message).collect()).await;
    // Awaited in reverse: the confirmations do not depend on being collected in order.
    let second = second.await;
    let first = first.await;
    assert!(first.error.is_none() && second.error.is_none());
    assert_eq!((first.confirmed, second.confirmed), (3, 2));
    for event in &events {
        assert_eq!(&tap.next().await.1, event);
    }
    tap.assert_quiet(Duration::from_millis(300)).await;
    testing::service::remove_broker_objects(&prefix, &[]).await;
}
