use super::*;

fn t(status: TicketStatus, assigned_to: Option<Uuid>) -> Counted {
    Counted {
        status,
        assigned_to,
        created_at: DateTime::from_timestamp(125, 0).unwrap_or_default(),
    }
}

#[test]
fn a_new_ticket_counts_once() {
    let d = Delta::between(None, Some(t(TicketStatus::Open, None)));
    assert_eq!((d.total, d.open, d.unassigned), (1, 1, 1));
    assert_eq!(
        d.created_per_minute
            .get(&minute(DateTime::from_timestamp(125, 0).unwrap())),
        Some(&1)
    );
    assert_eq!(
        minute(DateTime::from_timestamp(125, 0).unwrap()).timestamp(),
        120
    );
}

#[test]
fn a_change_moves_between_counters() {
    let agent = Uuid::new_v4();
    let d = Delta::between(
        Some(t(TicketStatus::Open, None)),
        Some(t(TicketStatus::InProgress, Some(agent))),
    );
    assert_eq!(
        (d.total, d.open, d.in_progress, d.unassigned),
        (0, -1, 1, -1)
    );
    assert_eq!(d.per_agent.get(&agent), Some(&1));
    assert!(d.created_per_minute.values().all(|c| *c == 0));
    let d = Delta::between(
        Some(t(TicketStatus::InProgress, Some(agent))),
        Some(t(TicketStatus::Done, Some(agent))),
    );
    assert_eq!(
        d.per_agent.get(&agent),
        Some(&-1),
        "DONE tickets are not an agent's load"
    );
    let d = Delta::between(Some(t(TicketStatus::Done, Some(agent))), None);
    assert_eq!((d.total, d.done, d.unassigned), (-1, -1, 0));
}
