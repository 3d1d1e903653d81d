//! The walk's ticket work after the first ticket: assignment, comments, status changes, the audit
//! trail and the dashboard.

use reqwest::Method;
use serde_json::json;

use super::*;

impl Walk<'_> {
    /// Assignment by an ADMIN, its mails, the inbox.
    pub(super) async fn assignment(&self) {
        let api = &self.api;
        let sink = self.sink;
        let alice_email = self.alice_email.clone();
        let bob_email = self.bob_email.clone();
        let bob_id = self.bob_id.clone();
        let admin = self.admin.clone();
        let bob = self.bob.clone();
        let tid = self.tid.clone();
        // Assignment by an admin → mails to creator and assignee; the assignee's inbox.
        api.fails(
            Method::PATCH,
            &format!("/tickets/{tid}/assign"),
            Some(&bob),
            Some(json!({"assignedToUserId": bob_id})),
            403,
        )
        .await;
        let v = api
            .ok(
                Method::PATCH,
                &format!("/tickets/{tid}/assign"),
                Some(&admin),
                Some(json!({"assignedToUserId": bob_id})),
                200,
            )
            .await;
        assert_eq!(v["assignedTo"]["id"], bob_id);
        if let Some(sink) = sink {
            mail_about(sink, &bob_email, "assign").await;
            sink.wait_until(MAIL_WAIT, "the assignment mail to the creator", |mails| {
                (mails.iter().filter(|m| m.is_to(&alice_email)).count() >= 2).then_some(())
            })
            .await;
        }
        let inbox = api
            .ok(Method::GET, "/tickets/inbox", Some(&bob), None, 200)
            .await;
        assert!(inbox.as_array().unwrap().iter().any(|t| t["id"] == tid));
    }

    /// Comments; internal notes hidden from the requester.
    pub(super) async fn comments(&self) {
        let api = &self.api;
        let bob = self.bob.clone();
        let alice = self.alice.clone();
        let tid = self.tid.clone();
        // Comments: internal notes are hidden from the requester.
        api.ok(
            Method::POST,
            &format!("/tickets/{tid}/comments"),
            Some(&bob),
            Some(json!({"body": "Looks like the gateway.", "isInternal": true})),
            201,
        )
        .await;
        api.ok(
            Method::POST,
            &format!("/tickets/{tid}/comments"),
            Some(&alice),
            Some(json!({"body": "Any news?", "isInternal": true})),
            201,
        )
        .await;
        let for_alice = api
            .ok(
                Method::GET,
                &format!("/tickets/{tid}/comments"),
                Some(&alice),
                None,
                200,
            )
            .await;
        assert_eq!(
            for_alice.as_array().unwrap().len(),
            1,
            "USER sees no internal note: {for_alice}"
        );
        assert_eq!(
            for_alice[0]["isInternal"], false,
            "isInternal is honoured only for staff"
        );
        let for_bob = api
            .ok(
                Method::GET,
                &format!("/tickets/{tid}/comments"),
                Some(&bob),
                None,
                200,
            )
            .await;
        assert_eq!(for_bob.as_array().unwrap().len(), 2);
        assert_eq!(
            for_bob[0]["author"]["role"], "AGENT",
            "oldest first, author with role"
        );
    }

    /// Only staff can be assigned: Alice, a requester now, is refused. ticket-service judges the
    /// assignee by its read model of users, which learns of her demotion through an event: the
    /// step waits until that model has her as a USER (the author role it shows on her comment),
    /// since an assignment that went through would change the ticket.
    pub(super) async fn assignee_must_be_staff(&self) {
        let api = &self.api;
        let (admin, bob, tid) = (self.admin.clone(), self.bob.clone(), self.tid.clone());
        let alice_id = self.alice_id.clone();
        let path = format!("/tickets/{tid}/comments");
        eventually(
            Duration::from_secs(30),
            "ticket-service's read model has Alice as a USER",
            || async {
                let v = api.ok(Method::GET, &path, Some(&bob), None, 200).await;
                v.as_array()
                    .is_some_and(|a| {
                        a.iter().any(|c| {
                            c["author"]["id"] == alice_id.as_str() && c["author"]["role"] == "USER"
                        })
                    })
                    .then_some(())
            },
        )
        .await;
        api.fails(
            Method::PATCH,
            &format!("/tickets/{tid}/assign"),
            Some(&admin),
            Some(json!({"assignedToUserId": alice_id})),
            400,
        )
        .await;
    }

    /// A status change and its mail.
    pub(super) async fn status_change(&self) {
        let api = &self.api;
        let sink = self.sink;
        let alice_email = self.alice_email.clone();
        let bob = self.bob.clone();
        let tid = self.tid.clone();
        // Status change → mail to the creator.
        let v = api
            .ok(
                Method::PATCH,
                &format!("/tickets/{tid}"),
                Some(&bob),
                Some(json!({"status": "IN_PROGRESS"})),
                200,
            )
            .await;
        assert_eq!(v["status"], "IN_PROGRESS");
        api.fails(
            Method::PATCH,
            &format!("/tickets/{tid}"),
            Some(&bob),
            Some(json!({"status": "SOMEDAY"})),
            400,
        )
        .await;
        if let Some(sink) = sink {
            mail_about(sink, &alice_email, "IN_PROGRESS").await;
        }
    }

    /// The ticket's audit trail.
    pub(super) async fn audit_trail(&self) {
        let api = &self.api;
        let bob = self.bob.clone();
        let bob_user = self.bob_user.clone();
        let alice = self.alice.clone();
        let tid = self.tid.clone();
        // Audit trail, newest first, with actors.
        let path = format!("/tickets/{tid}/audit");
        let trail = eventually(
            Duration::from_secs(30),
            "the ticket's audit trail",
            || async {
                let (s, v) = api.call(Method::GET, &path, Some(&bob), None).await;
                // Every event of the walk so far, the status change included (each arrives through
                // the bus, so an earlier count can be reached before the last one is in), each
                // with its actor: audit-service learns the accounts from user events, which come
                // from another service and may arrive after the ticket events they explain.
                // Consumers apply events in any order, so every one is counted.
                let complete = v.as_array().is_some_and(|a| {
                    let n = |action: &str| a.iter().filter(|e| e["action"] == action).count();
                    n("ticket.created") == 1
                        && n("ticket.assigned") == 1
                        && n("ticket.comment_added") == 2
                        && n("ticket.updated") == 1
                        && n("ticket.status_changed") == 1
                        && a.iter()
                            .all(|e| e["actorId"].is_null() || !e["actor"].is_null())
                });
                (s == 200 && complete).then_some(v)
            },
        )
        .await;
        let actions: Vec<&str> = trail
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions.last(), Some(&"ticket.created"), "{actions:?}");
        // The status change is the newest (`ticket.updated` comes from the same PATCH and may
        // carry the same instant).
        let changed = trail
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "ticket.status_changed")
            .unwrap();
        assert_eq!(changed["createdAt"], trail[0]["createdAt"], "{actions:?}");
        assert!(
            actions.contains(&"ticket.status_changed") && actions.contains(&"ticket.comment_added")
        );
        assert_eq!(trail[0]["actor"]["id"], bob_user["id"]);
        assert!(actions.contains(&"ticket.assigned"), "{actions:?}");
        api.fails(Method::GET, &path, Some(&alice), None, 403).await;
    }

    /// The dashboard.
    pub(super) async fn dashboard(&self) {
        let api = &self.api;
        let admin = self.admin.clone();
        let bob = self.bob.clone();
        // Dashboard.
        let stats = eventually(Duration::from_secs(30), "dashboard figures", || async {
            let v = api
                .ok(
                    Method::GET,
                    "/admin/dashboard/statistics",
                    Some(&admin),
                    None,
                    200,
                )
                .await;
            (v["inProgressTickets"].as_i64() >= Some(1)).then_some(v)
        })
        .await;
        assert!(stats["totalTickets"].as_i64() >= Some(1));
        api.fails(
            Method::GET,
            "/admin/dashboard/statistics",
            Some(&bob),
            None,
            403,
        )
        .await;
    }
}
