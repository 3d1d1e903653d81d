//! The platform's durable queues: which service consumes what.
//!
//! This is part of the platform's contract, like the exchanges: every service's publisher declares
//! every queue here (and its bindings) before it publishes anything, so an event is kept for a
//! consumer that has not started yet. Without it, the user-service that starts first and creates
//! the bootstrap admin would publish `user.created` to an exchange with no queue bound, and the
//! audit log and the ticket read model would never learn about that admin.
//!
//! Each consumer still declares its own queue in full (retry queues, dead-letter queue) when it
//! starts; retry queues depend on the consumer's own retry settings, so only the consumer makes them.

use std::time::Duration;

use super::Subscription;
use crate::events::{
    DomainEvent, NOTIFICATION_EVENTS, TICKET_EVENTS, TicketAssigned, TicketCreated, TicketDeleted,
    TicketStatusChanged, TicketUnassigned, USER_EVENTS, UserCreated, UserDeleted,
    UserPasswordResetRequested, UserRoleChanged, UserUpdated,
};

/// A durable queue of the platform and what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Logical name (the bus adds its prefix).
    pub name: &'static str,
    /// (exchange, routing-key pattern) pairs.
    pub bindings: &'static [(&'static str, &'static str)],
    /// The largest batch a consumer handles at once (RabbitMQ keeps two such batches in flight
    /// per consumer). The queues every ticket write reaches take 128: under load the next batch
    /// is large and a batch costs the same few statements whatever its size (with 32,
    /// RabbitMQ-mode consumers fell seconds behind 1 000 creates a second). Not more: with 256
    /// the platform's peak RSS in the mixed benchmark reached 124–142 MiB (against 112–113 with
    /// 128), presumably from connection buffers sized to the largest batch's statements.
    pub prefetch: u16,
}

impl Queue {
    /// The consumer's subscription to this queue with its retry settings.
    pub fn subscription(&self, max_attempts: u32, retry_base_delay: Duration) -> Subscription {
        Subscription {
            queue: self.name.to_string(),
            bindings: self
                .bindings
                .iter()
                .map(|(e, p)| (e.to_string(), p.to_string()))
                .collect(),
            max_attempts,
            retry_base_delay,
            prefetch: self.prefetch,
        }
    }
}

const fn on<E: DomainEvent>() -> (&'static str, &'static str) {
    (E::EXCHANGE, E::EVENT_TYPE)
}

/// ticket-service's read model of users.
pub const TICKET_USERS: Queue = Queue {
    name: "ticket-service.users",
    bindings: &[(USER_EVENTS, "user.*")],
    prefetch: 32,
};

/// audit-service: every event on every exchange.
pub const AUDIT_EVENTS: Queue = Queue {
    name: "audit-service.events",
    bindings: &[
        (USER_EVENTS, "#"),
        (TICKET_EVENTS, "#"),
        (NOTIFICATION_EVENTS, "#"),
    ],
    prefetch: 128,
};

/// notification-service: exactly the events that trigger emails.
pub const NOTIFICATION_TRIGGERS: Queue = Queue {
    name: "notification-service.events",
    bindings: &[
        on::<UserCreated>(),
        on::<UserPasswordResetRequested>(),
        on::<TicketCreated>(),
        on::<TicketStatusChanged>(),
        on::<TicketAssigned>(),
        on::<TicketUnassigned>(),
    ],
    prefetch: 128,
};

/// admin-service's record of who may call it now ([`crate::access`]): role changes, password
/// changes and resets (sessions), deletions.
pub const ADMIN_USERS: Queue = Queue {
    name: "admin-service.users",
    bindings: &[
        on::<UserRoleChanged>(),
        on::<UserUpdated>(),
        on::<UserDeleted>(),
    ],
    prefetch: 32,
};

/// notification-service's record of who may read an email's status ([`crate::access`]).
pub const NOTIFICATION_USERS: Queue = Queue {
    name: "notification-service.users",
    bindings: &[
        on::<UserRoleChanged>(),
        on::<UserUpdated>(),
        on::<UserDeleted>(),
    ],
    prefetch: 32,
};

/// admin-service's dashboard read model: the ticket events that change its figures (creation,
/// status, assignment, deletion), and user deletions. Comments and title edits are not bound: they
/// would only cost a transaction each.
pub const ADMIN_TICKETS: Queue = Queue {
    name: "admin-service.tickets",
    bindings: &[
        on::<TicketCreated>(),
        on::<TicketStatusChanged>(),
        on::<TicketAssigned>(),
        on::<TicketUnassigned>(),
        on::<TicketDeleted>(),
        on::<UserDeleted>(),
    ],
    prefetch: 128,
};

/// Bindings that earlier versions made and this one no longer wants, per queue. A binding outlives
/// the code that made it (RabbitMQ keeps it; so does the in-process bus's table), so declaring a
/// queue also removes these; without it an upgraded platform would keep routing, say, every ticket
/// event to the dashboard's queue.
pub const RETIRED_BINDINGS: &[(&str, (&str, &str))] = &[
    // Until the dashboard queue was bound to exactly the events that change its figures.
    (ADMIN_TICKETS.name, (TICKET_EVENTS, "ticket.*")),
];

/// The retired bindings of `queue` (logical name).
pub fn retired_bindings(queue: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
    RETIRED_BINDINGS
        .iter()
        .filter(move |(q, _)| *q == queue)
        .map(|(_, binding)| *binding)
}

/// Every durable queue of the platform.
pub const PLATFORM: [Queue; 6] = [
    TICKET_USERS,
    AUDIT_EVENTS,
    NOTIFICATION_TRIGGERS,
    NOTIFICATION_USERS,
    ADMIN_USERS,
    ADMIN_TICKETS,
];

/// What a publisher declares for every queue of the platform: the queue, its dead-letter queue
/// and its bindings (one attempt, so no retry queues: those are the consumer's).
pub fn declarations() -> impl Iterator<Item = Subscription> {
    PLATFORM
        .iter()
        .map(|q| q.subscription(1, Duration::from_secs(1)))
}

/// Declares every queue of the platform on `bus` (for a bus whose declarations persist, like the
/// in-process one; the RabbitMQ bus does this itself on connect when built with
/// [`AmqpBus::for_platform`](super::amqp::AmqpBus::for_platform)).
pub async fn declare_all(bus: &dyn super::Bus) -> Result<(), super::BusError> {
    for declaration in declarations() {
        bus.declare(&declaration).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_bindings_name_known_exchanges() {
        let mut names: Vec<_> = PLATFORM.iter().map(|q| q.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PLATFORM.len());
        for (queue, binding) in RETIRED_BINDINGS {
            let q = PLATFORM.iter().find(|q| q.name == *queue);
            assert!(
                q.is_some_and(|q| !q.bindings.contains(binding)),
                "a retired binding of {queue} is still wanted or names no queue"
            );
        }
        for q in PLATFORM {
            assert!(!q.bindings.is_empty(), "{}", q.name);
            for (exchange, _) in q.bindings {
                assert!(
                    crate::events::ALL_EXCHANGES.contains(exchange),
                    "{exchange}"
                );
            }
        }
    }
}
