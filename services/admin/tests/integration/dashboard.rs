//! The dashboard read model against real RabbitMQ and PostgreSQL: after a random mix of ticket
//! operations (with duplicated and late, out-of-order events), the statistics equal a direct count
//! of the expected tickets and of the read model; a change shows within a second.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::common::{Platform, http};
use admin_service::dashboard::{AgentLoad, Statistics, count_directly};
use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{
    Envelope, EventMetadata, TicketAssigned, TicketCreated, TicketDeleted, TicketSnapshot,
    TicketStatus, TicketStatusChanged, TicketUnassigned, TicketUpdated, UserDeleted, UserRef,
};
use helpdesk_testkit::eventually;

fn user_ref(id: Uuid) -> UserRef {
    UserRef {
        id,
        email: format!("{id}@example.com"),
        first_name: None,
        last_name: None,
    }
}

/// The expected figures from the tickets that should exist.
fn expected(tickets: &HashMap<Uuid, TicketSnapshot>, now: DateTime<Utc>) -> Statistics {
    let count =
        |f: &dyn Fn(&TicketSnapshot) -> bool| tickets.values().filter(|t| f(t)).count() as i64;
    let mut per_agent: BTreeMap<Uuid, i64> = BTreeMap::new();
    for t in tickets.values() {
        if let (Some(a), true) = (t.assigned_to_user_id, t.status != TicketStatus::Done) {
            *per_agent.entry(a).or_default() += 1;
        }
    }
    let mut open_per_agent: Vec<AgentLoad> = per_agent
        .into_iter()
        .map(|(agent_id, count)| AgentLoad { agent_id, count })
        .collect();
    open_per_agent.sort_by(|a, b| b.count.cmp(&a.count).then(a.agent_id.cmp(&b.agent_id)));
    Statistics {
        total_tickets: tickets.len() as i64,
        open_tickets: count(&|t| t.status == TicketStatus::Open),
        in_progress_tickets: count(&|t| t.status == TicketStatus::InProgress),
        done_tickets: count(&|t| t.status == TicketStatus::Done),
        unassigned_tickets: count(&|t| t.assigned_to_user_id.is_none()),
        created_last24h: count(&|t| t.created_at > now - chrono::Duration::hours(23)),
        open_per_agent,
    }
}

fn status_of(n: u32) -> TicketStatus {
    [
        TicketStatus::Open,
        TicketStatus::InProgress,
        TicketStatus::Done,
    ][(n % 3) as usize]
}

#[tokio::test]
async fn statistics_equal_a_direct_count_after_500_random_ticket_operations() {
    let seed: u64 = rand::random();
    println!("random seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut p = Platform::new().await;
    let (admin, pool) = p.start_admin("http://127.0.0.1:9", &[]).await;
    let token = p
        .keys
        .keys
        .issue_user_token(Uuid::new_v4(), "root@example.com", Role::Admin)
        .unwrap();

    let creators: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let agents: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let meta = EventMetadata::default();
    let start = Utc::now();
    let mut clock = 0i64;
    let mut tick = || {
        clock += 1;
        start + chrono::Duration::milliseconds(clock)
    };
    let mut tickets: HashMap<Uuid, TicketSnapshot> = HashMap::new();
    let mut events: Vec<Envelope> = Vec::new();
    let (mut duplicates, mut late) = (0, 0);

    for _ in 0..500 {
        let ids: Vec<Uuid> = tickets.keys().copied().collect();
        let pick = |rng: &mut StdRng| ids[rng.gen_range(0..ids.len())];
        let roll = rng.gen_range(0..100);
        let event = if ids.is_empty() || roll < 30 {
            let now = tick();
            // Some tickets are older than a day (imported or replayed history).
            let created_at = if rng.gen_bool(0.1) {
                now - chrono::Duration::days(2)
            } else {
                now
            };
            let creator = creators[rng.gen_range(0..creators.len())];
            let t = TicketSnapshot {
                id: Uuid::new_v4(),
                user_id: creator,
                title: "t".into(),
                status: TicketStatus::Open,
                assigned_to_user_id: None,
                created_at,
                updated_at: now,
            };
            tickets.insert(t.id, t.clone());
            Envelope::wrap(
                &TicketCreated {
                    ticket: t,
                    creator: user_ref(creator),
                },
                meta.clone(),
            )
        } else if roll < 55 {
            let t = tickets.get_mut(&pick(&mut rng)).unwrap();
            let old = t.status;
            t.status = status_of(rng.gen_range(0..3));
            t.updated_at = tick();
            let creator = user_ref(t.user_id);
            Envelope::wrap(
                &TicketStatusChanged {
                    ticket: t.clone(),
                    old_status: old,
                    new_status: t.status,
                    creator,
                },
                meta.clone(),
            )
        } else if roll < 75 {
            let t = tickets.get_mut(&pick(&mut rng)).unwrap();
            let previous = t.assigned_to_user_id;
            t.updated_at = tick();
            let creator = user_ref(t.user_id);
            if rng.gen_bool(0.7) {
                let agent = agents[rng.gen_range(0..agents.len())];
                t.assigned_to_user_id = Some(agent);
                let e = TicketAssigned {
                    ticket: t.clone(),
                    assignee: user_ref(agent),
                    previous_assignee_id: previous,
                    creator,
                };
                Envelope::wrap(&e, meta.clone())
            } else {
                t.assigned_to_user_id = None;
                Envelope::wrap(
                    &TicketUnassigned {
                        ticket: t.clone(),
                        previous_assignee_id: previous,
                        creator,
                    },
                    meta.clone(),
                )
            }
        } else if roll < 87 {
            let t = tickets.get_mut(&pick(&mut rng)).unwrap();
            t.title = "changed".into();
            t.updated_at = tick();
            Envelope::wrap(
                &TicketUpdated {
                    ticket: t.clone(),
                    changes: vec!["title".into()],
                },
                meta.clone(),
            )
        } else if roll < 99 {
            let t = tickets.remove(&pick(&mut rng)).unwrap();
            Envelope::wrap(&TicketDeleted { ticket: t }, meta.clone())
        } else {
            // A user is deleted: their tickets go, tickets assigned to them are freed.
            let gone = if rng.gen_bool(0.5) {
                creators[rng.gen_range(0..creators.len())]
            } else {
                agents[rng.gen_range(0..agents.len())]
            };
            tickets.retain(|_, t| t.user_id != gone);
            for t in tickets.values_mut() {
                if t.assigned_to_user_id == Some(gone) {
                    t.assigned_to_user_id = None;
                }
            }
            let mut e = Envelope::wrap(
                &UserDeleted {
                    id: gone,
                    email: format!("{gone}@example.com"),
                },
                meta.clone(),
            );
            e.timestamp = tick();
            e
        };
        // Late arrivals: an older state of a ticket, as a new event published after the newer one.
        if rng.gen_bool(0.05)
            && let Some(stale) = events.iter().rev().find(|e| {
                e.event_type == "ticket.updated" || e.event_type == "ticket.status_changed"
            })
        {
            let mut copy = stale.clone();
            copy.event_id = Uuid::now_v7();
            events.push(event.clone());
            events.push(copy);
            late += 1;
            continue;
        }
        // Redeliveries: the same event (same id) more than once.
        if rng.gen_bool(0.1) {
            events.push(event.clone());
            duplicates += 1;
        }
        events.push(event);
    }
    println!(
        "{} events ({duplicates} duplicates, {late} late), {} tickets remain",
        events.len(),
        tickets.len()
    );

    let (_conn, ch) = p.publisher().await;
    p.publish_all(&ch, &events).await;

    let want = expected(&tickets, Utc::now());
    let client = http();
    let stats = |client: reqwest::Client, token: String, admin: String| async move {
        let res = client
            .get(format!("{admin}/admin/dashboard/statistics"))
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        res.json::<Statistics>().await.ok()
    };
    // Poll (bounded) until the figures match; on timeout show both.
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let s = stats(client.clone(), token.clone(), admin.clone()).await;
        if s.as_ref() == Some(&want) {
            break want.clone();
        }
        if Instant::now() > deadline {
            panic!("the read model did not catch up (seed {seed}):\n got {s:?}\nwant {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got, want);
    let direct = count_directly(&pool).await.unwrap();
    assert_eq!(
        direct,
        (
            want.total_tickets,
            want.open_tickets,
            want.in_progress_tickets,
            want.done_tickets,
            want.unassigned_tickets
        )
    );
    let per_agent: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT assigned_to, count(*) FROM tickets WHERE live AND status <> 'DONE' AND assigned_to IS NOT NULL \
         GROUP BY assigned_to ORDER BY count(*) DESC, assigned_to",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        per_agent,
        want.open_per_agent
            .iter()
            .map(|a| (a.agent_id, a.count))
            .collect::<Vec<_>>()
    );

    // One more change shows within a second.
    let t = TicketSnapshot {
        id: Uuid::new_v4(),
        user_id: creators[0],
        title: "fresh".into(),
        status: TicketStatus::Open,
        assigned_to_user_id: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    };
    let started = Instant::now();
    p.publish_all(
        &ch,
        &[Envelope::wrap(
            &TicketCreated {
                ticket: t,
                creator: user_ref(creators[0]),
            },
            meta.clone(),
        )],
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the new ticket to count",
        || async {
            let s = stats(client.clone(), token.clone(), admin.clone()).await?;
            (s.total_tickets == want.total_tickets + 1).then_some(())
        },
    )
    .await;
    let lag = started.elapsed();
    println!("a new ticket counted after {lag:?}");
    assert!(
        lag < Duration::from_secs(1),
        "consistent within a second, took {lag:?}"
    );
    p.finish().await;
}
