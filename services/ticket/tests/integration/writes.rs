//! Writes to one ticket (changes, comments, assignments) from many requests at once: each is applied to the ticket as it then
//! is, and its events carry exactly the state it produced, whether it won at once, retried after
//! another write, or (after repeated misses) took the ticket's lock.

use std::collections::HashSet;

use serde_json::json;
use uuid::Uuid;

use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{
    Envelope, TICKET_EVENTS, TicketCommentAdded, TicketSnapshot, TicketStatus, TicketStatusChanged,
    TicketUpdated,
};
use helpdesk_kit::outbox::EventContext;
use helpdesk_testkit::EventTap;
use ticket_service::comments;
use ticket_service::tickets::{self, TicketChange};
use ticket_service::users::Caller;

use crate::common::*;

/// Follows one ticket's events in order and checks each against the state before it: a
/// `ticket.updated` names exactly the fields that differ and moves `updatedAt` forward, a
/// `ticket.status_changed` follows its `ticket.updated` with the status it replaced, and a comment
/// carries the ticket as it then was.
struct Follower {
    state: TicketSnapshot,
    description_changes: usize,
    pending_status: Option<(TicketStatus, TicketSnapshot)>,
    comments: HashSet<Uuid>,
    assignments: usize,
    deleted: bool,
}

impl Follower {
    fn new(created: TicketSnapshot) -> Self {
        Self {
            state: created,
            description_changes: 0,
            pending_status: None,
            comments: HashSet::new(),
            assignments: 0,
            deleted: false,
        }
    }

    fn apply(&mut self, e: &Envelope) {
        assert!(
            !self.deleted,
            "nothing follows the deletion, got {}",
            e.event_type
        );
        if e.event_type != "ticket.status_changed" {
            assert!(
                self.pending_status.is_none(),
                "a status change is announced right after its ticket.updated, got {}",
                e.event_type
            );
        }
        match e.event_type.as_str() {
            "ticket.updated" => {
                let u: TicketUpdated = serde_json::from_value(e.payload.clone()).unwrap();
                let before = self.state.clone();
                let after = u.ticket;
                assert!(
                    after.updated_at > before.updated_at,
                    "updatedAt moves forward"
                );
                let mut differ = Vec::new();
                if after.status != before.status {
                    differ.push("status");
                }
                if after.title != before.title {
                    differ.push("title");
                }
                let named: Vec<&str> = u
                    .changes
                    .iter()
                    .map(String::as_str)
                    .filter(|c| *c != "description")
                    .collect();
                assert_eq!(named, differ, "changes name what differs from {before:?}");
                if u.changes.iter().any(|c| c == "description") {
                    self.description_changes += 1;
                }
                assert_eq!(
                    (after.user_id, after.assigned_to_user_id, after.created_at),
                    (
                        before.user_id,
                        before.assigned_to_user_id,
                        before.created_at
                    )
                );
                if after.status != before.status {
                    self.pending_status = Some((before.status, after.clone()));
                }
                self.state = after;
            }
            "ticket.status_changed" => {
                let s: TicketStatusChanged = serde_json::from_value(e.payload.clone()).unwrap();
                let (old, snapshot) = self
                    .pending_status
                    .take()
                    .expect("a status change follows the ticket.updated that made it");
                assert_eq!((s.old_status, s.new_status), (old, snapshot.status));
                assert_eq!(s.ticket, snapshot);
                assert_eq!(s.creator.id, snapshot.user_id);
            }
            "ticket.comment_added" => {
                let c: TicketCommentAdded = serde_json::from_value(e.payload.clone()).unwrap();
                assert_eq!(
                    c.ticket, self.state,
                    "a comment carries the ticket as it was"
                );
                assert!(self.comments.insert(c.comment_id), "one event per comment");
            }
            "ticket.assigned" | "ticket.unassigned" => {
                let before = self.state.clone();
                let after: TicketSnapshot =
                    serde_json::from_value(e.payload["ticket"].clone()).unwrap();
                assert!(
                    after.updated_at > before.updated_at,
                    "updatedAt moves forward"
                );
                assert_eq!(
                    e.payload["previousAssigneeId"],
                    serde_json::to_value(before.assigned_to_user_id).unwrap(),
                    "the previous assignee is the one before"
                );
                let assignee = e.payload["assignee"]["id"]
                    .as_str()
                    .map(|id| id.parse().unwrap());
                assert_eq!(after.assigned_to_user_id, assignee);
                assert_ne!(after.assigned_to_user_id, before.assigned_to_user_id);
                assert_eq!(
                    (&after.title, after.status, after.user_id),
                    (&before.title, before.status, before.user_id)
                );
                self.assignments += 1;
                self.state = after;
            }
            "ticket.deleted" => {
                let d: TicketSnapshot =
                    serde_json::from_value(e.payload["ticket"].clone()).unwrap();
                assert_eq!(d, self.state, "the deletion carries the ticket as it was");
                self.deleted = true;
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn concurrent_changes_and_comments_each_announce_the_state_they_produced() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let owner = p.announce_user(Role::User).await;
    let admin = p.announce_user(Role::Admin).await;
    let agent = p.announce_user(Role::Agent).await;
    for u in [&owner, &admin, &agent] {
        wait_user(&svc.pool, u).await;
    }
    let mut tap = EventTap::start(&p.prefix, TICKET_EVENTS).await;
    let id = api.create_ticket(&owner, "contended").await;
    let created = tap.next_where("ticket.created", |_| true).await;
    let created: TicketSnapshot =
        serde_json::from_value(created.payload["ticket"].clone()).unwrap();

    // More writers than the pool has connections, all on one ticket: most of them read a state
    // that another one changes before they write.
    let statuses = ["IN_PROGRESS", "DONE", "OPEN"];
    let mut requests = Vec::new();
    for i in 0..40 {
        let api = api.clone();
        let who = if i % 2 == 0 { &owner } else { &admin }.clone();
        let (admin, agent_id) = (admin.clone(), agent.id);
        requests.push(tokio::spawn(async move {
            match i % 5 {
                0 => {
                    api.patch(
                        &format!("/tickets/{id}"),
                        &who.token,
                        json!({"status": statuses[i % 3]}),
                    )
                    .await
                    .status
                }
                1 => {
                    api.patch(
                        &format!("/tickets/{id}"),
                        &who.token,
                        json!({"title": format!("title {i}"), "status": statuses[(i + 1) % 3]}),
                    )
                    .await
                    .status
                }
                2 => {
                    api.patch(
                        &format!("/tickets/{id}"),
                        &who.token,
                        json!({"description": format!("description {i}")}),
                    )
                    .await
                    .status
                }
                3 => {
                    api.post(
                        &format!("/tickets/{id}/comments"),
                        &who.token,
                        json!({"body": format!("comment {i}")}),
                    )
                    .await
                    .status
                }
                _ => {
                    let to = (i % 10 == 4).then_some(agent_id);
                    api.assign(&admin, id, to).await.status
                }
            }
        }));
    }
    for (i, r) in requests.into_iter().enumerate() {
        let status = r.await.unwrap();
        assert_eq!(status, if i % 5 == 3 { 201 } else { 200 }, "request {i}");
    }

    let last = api.get(&format!("/tickets/{id}"), &owner.token).await;
    assert_eq!(last.status, 200);
    let last_updated: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(last.body["updatedAt"].clone()).unwrap();
    let mut follower = Follower::new(created);
    while follower.comments.len() < 8
        || follower.state.updated_at < last_updated
        || follower.pending_status.is_some()
    {
        let (_, e) = tap.next().await;
        follower.apply(&e);
    }
    assert_eq!(follower.state.updated_at, last_updated);
    assert_eq!(
        serde_json::to_value(follower.state.status).unwrap(),
        last.body["status"]
    );
    assert_eq!(follower.state.title, last.body["title"].as_str().unwrap());
    assert_eq!(
        follower.description_changes, 8,
        "every description was new, so each is a change"
    );
    let comments = api
        .get(&format!("/tickets/{id}/comments"), &owner.token)
        .await;
    assert_eq!(comments.body.as_array().map(Vec::len), Some(8));
    assert!(
        follower.assignments >= 1,
        "the first assignment changes the assignee"
    );
    assert_eq!(
        serde_json::to_value(follower.state.assigned_to_user_id).unwrap(),
        last.body["assignedToUserId"]
    );
    tap.assert_quiet(std::time::Duration::from_millis(500))
        .await;
    svc.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn a_deletion_among_concurrent_changes_comes_last_with_the_state_it_deleted() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let owner = p.announce_user(Role::User).await;
    wait_user(&svc.pool, &owner).await;
    let mut tap = EventTap::start(&p.prefix, TICKET_EVENTS).await;
    let id = api.create_ticket(&owner, "doomed").await;
    let created = tap.next_where("ticket.created", |_| true).await;
    let created: TicketSnapshot =
        serde_json::from_value(created.payload["ticket"].clone()).unwrap();
    let mut requests = Vec::new();
    for i in 0..21 {
        let (api, token) = (api.clone(), owner.token.clone());
        requests.push(tokio::spawn(async move {
            let path = format!("/tickets/{id}");
            if i == 10 {
                api.delete(&path, &token).await.status
            } else {
                let body = json!({"title": format!("title {i}")});
                api.patch(&path, &token, body).await.status
            }
        }));
    }
    for (i, r) in requests.into_iter().enumerate() {
        let status = r.await.unwrap();
        if i == 10 {
            assert_eq!(status, 200, "the deletion");
        } else {
            assert!(status == 200 || status == 404, "change {i}: {status}");
        }
    }
    assert_eq!(
        api.get(&format!("/tickets/{id}"), &owner.token)
            .await
            .status,
        404
    );
    let mut follower = Follower::new(created);
    while !follower.deleted {
        let (_, e) = tap.next().await;
        follower.apply(&e);
    }
    tap.assert_quiet(std::time::Duration::from_millis(500))
        .await;
    svc.stop().await;
    p.cleanup().await;
}

/// The path after repeated misses: the ticket's row lock held from the read to the write.
#[tokio::test]
async fn writes_that_take_the_ticket_lock_answer_and_announce_as_the_optimistic_ones() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let owner = p.announce_user(Role::User).await;
    let stranger = p.announce_user(Role::User).await;
    for u in [&owner, &stranger] {
        wait_user(&svc.pool, u).await;
    }
    let mut tap = EventTap::start(&p.prefix, TICKET_EVENTS).await;
    let id = api.create_ticket(&owner, "locked").await;
    tap.next_where("ticket.created", |_| true).await;
    let caller = |u: &TestUser| Caller {
        id: u.id,
        email: u.email.clone(),
        first_name: Some("First".into()),
        last_name: None,
        role: u.role,
    };
    let ctx = EventContext::request("locked-path", Some(owner.id));
    let change = TicketChange {
        status: Some(TicketStatus::Done),
        title: Some("locked, renamed".into()),
        description: None,
    };

    let ticket = tickets::change_ticket(&svc.pool, &caller(&owner), id, &change, &ctx, 0)
        .await
        .unwrap();
    assert_eq!(ticket.status, TicketStatus::Done);
    assert_eq!(ticket.title, "locked, renamed");
    assert_eq!(ticket.user.id, owner.id);
    let got = api.get(&format!("/tickets/{id}"), &owner.token).await;
    assert_eq!(
        got.body,
        serde_json::to_value(&ticket).unwrap(),
        "the answer is the stored ticket"
    );
    let updated = tap.next_where("ticket.updated", |_| true).await;
    assert_eq!(updated.payload["changes"], json!(["status", "title"]));
    assert_eq!(
        updated.metadata.correlation_id.as_deref(),
        Some("locked-path")
    );
    let changed = tap.next_where("ticket.status_changed", |_| true).await;
    assert_eq!(changed.payload["oldStatus"], "OPEN");
    assert_eq!(changed.payload["newStatus"], "DONE");
    assert_eq!(changed.payload["creator"]["email"], owner.email.as_str());

    // The same change again changes nothing and announces nothing.
    let again = tickets::change_ticket(&svc.pool, &caller(&owner), id, &change, &ctx, 0)
        .await
        .unwrap();
    assert_eq!(again.updated_at, ticket.updated_at);

    let comment = comments::add(
        &svc.pool,
        &caller(&owner),
        id,
        "under the lock".into(),
        false,
        &ctx,
        0,
    )
    .await
    .unwrap();
    let added = tap.next_where("ticket.comment_added", |_| true).await;
    assert_eq!(added.payload["commentId"], comment.id.to_string());
    assert_eq!(added.payload["ticket"]["status"], "DONE");
    let listed = api
        .get(&format!("/tickets/{id}/comments"), &owner.token)
        .await;
    assert_eq!(listed.body[0]["id"], comment.id.to_string());
    assert_eq!(
        listed.body[0]["createdAt"],
        serde_json::to_value(&comment).unwrap()["createdAt"]
    );

    // Refusals on the locked path are the routes' own.
    let denied = comments::add(
        &svc.pool,
        &caller(&stranger),
        id,
        "not mine".into(),
        false,
        &ctx,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(denied.status.as_u16(), 403);
    let missing =
        tickets::change_ticket(&svc.pool, &caller(&owner), Uuid::now_v7(), &change, &ctx, 0)
            .await
            .unwrap_err();
    assert_eq!(missing.status.as_u16(), 404);
    tap.assert_quiet(std::time::Duration::from_millis(500))
        .await;
    svc.stop().await;
    p.cleanup().await;
}
