//! Emails triggered by events reach a real SMTP server: welcome, password reset (completed over
//! HTTP with the link from the mail), ticket mails to the right people, once per event however
//! often it is delivered; the internal HTTP routes.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Platform, SmtpSink, http};
use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{
    Envelope, EventMetadata, TicketAssigned, TicketCreated, TicketSnapshot, TicketStatus,
    TicketStatusChanged, TicketUnassigned, UserRef,
};
use helpdesk_testkit::eventually;

const ADMIN: (&str, &str) = ("root@helpdesk.test", "admin-password-1");

fn smtp_url(sink: &SmtpSink) -> String {
    format!("smtp://127.0.0.1:{}", sink.port())
}

#[tokio::test]
async fn welcome_and_reset_mails_arrive_and_the_reset_link_completes_the_reset() {
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let config = p.notification_config(&[
        ("SMTP_URL", &smtp_url(&sink)),
        ("MAIL_FROM", "Helpdesk <help@helpdesk.test>"),
    ]);
    let (_notif, pool) = p.start_notification(config).await;
    let users = p.start_user_service(ADMIN).await;
    let c = http();

    // Signup → user.created → welcome email.
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    let res = c
        .post(format!("{users}/auth/signup"))
        .json(&json!({"email": email, "password": "first-password", "firstName": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let welcome = sink.wait_for(&email, 1).await;
    assert_eq!(welcome[0].subject, "Welcome to Helpdesk, Ada");
    assert!(welcome[0].body.contains("Hello Ada"), "{}", welcome[0].body);
    assert_eq!(welcome[0].from, "help@helpdesk.test");

    // Forgot password → user.password_reset_requested → reset email with the link.
    let res = c
        .post(format!("{users}/auth/forgot-password"))
        .json(&json!({"email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mails = sink.wait_for(&email, 2).await;
    let reset = mails
        .iter()
        .find(|m| m.subject.contains("Reset"))
        .expect("a reset email");
    let link = reset
        .body
        .split_whitespace()
        .find(|w| w.starts_with("http://helpdesk.test/reset-password?token="))
        .unwrap_or_else(|| panic!("no reset link in {:?}", reset.body));
    let token = link.split_once("token=").map(|(_, t)| t).unwrap();

    let res = c
        .post(format!("{users}/auth/reset-password"))
        .json(&json!({"token": token, "newPassword": "second-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let login = |password: &'static str| {
        let c = c.clone();
        let url = format!("{users}/auth/login");
        let email = email.clone();
        async move {
            c.post(url)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(login("second-password").await, 200);
    assert_eq!(login("first-password").await, 401);

    // Once sent, the stored reset email no longer holds the link; the welcome email keeps its body.
    let bodies: Vec<(String, String, String)> =
        eventually(Duration::from_secs(10), "both emails SENT", || async {
            let rows: Vec<(String, String, String)> =
                sqlx::query_as("SELECT template, status, body FROM emails WHERE recipient = $1 ORDER BY created_at")
                    .bind(&email)
                    .fetch_all(&pool)
                    .await
                    .ok()?;
            rows.iter().all(|r| r.1 == "SENT").then_some(rows)
        })
        .await;
    assert_eq!(bodies.len(), 2);
    assert_eq!(
        (bodies[0].0.as_str(), bodies[0].2.contains("Hello Ada")),
        ("welcome", true)
    );
    assert_eq!(
        (bodies[1].0.as_str(), bodies[1].2.as_str()),
        ("password_reset", "")
    );
    p.finish().await;
}

fn user(name: &str) -> UserRef {
    UserRef {
        id: Uuid::new_v4(),
        email: format!("{name}-{}@example.com", Uuid::new_v4().simple()),
        first_name: Some(name.to_string()),
        last_name: Some("Tester".into()),
    }
}

fn snapshot(creator: &UserRef, status: TicketStatus, assignee: Option<&UserRef>) -> TicketSnapshot {
    TicketSnapshot {
        id: Uuid::new_v4(),
        user_id: creator.id,
        title: "Printer on fire".into(),
        status,
        assigned_to_user_id: assignee.map(|a| a.id),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

async fn emails_for_event(pool: &sqlx::PgPool, event: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM emails WHERE source_event_id = $1")
        .bind(event)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn ticket_mails_go_to_the_right_people_once_per_event() {
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let staff = format!("staff-{}@example.com", Uuid::new_v4().simple());
    let config = p.notification_config(&[
        ("SMTP_URL", &smtp_url(&sink)),
        ("STAFF_NOTIFY_EMAIL", &staff),
    ]);
    let (_notif, pool) = p.start_notification(config).await;
    let mut tap =
        helpdesk_testkit::EventTap::start(&p.prefix, helpdesk_kit::events::NOTIFICATION_EVENTS)
            .await;

    let creator = user("Carla");
    let agent = user("Alan");
    let mut ticket = snapshot(&creator, TicketStatus::Open, None);
    let meta = EventMetadata::default();

    let created = Envelope::wrap(
        &TicketCreated {
            ticket: ticket.clone(),
            creator: creator.clone(),
        },
        meta.clone(),
    );
    p.publish(&created).await;
    let mail = sink.wait_for(&staff, 1).await;
    assert_eq!(mail[0].subject, "New ticket: Printer on fire");
    // The email and its `email.queued` were written together.
    let queued = tap
        .next_where("email.queued", |e| e.payload["to"] == staff.as_str())
        .await;
    let stored: Uuid = sqlx::query_scalar("SELECT id FROM emails WHERE source_event_id = $1")
        .bind(created.event_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(queued.payload["emailId"], stored.to_string());
    assert_eq!(queued.payload["subject"], "New ticket: Printer on fire");
    assert_eq!(queued.metadata.causation_id, Some(created.event_id));
    assert!(
        mail[0]
            .body
            .contains(&format!("http://helpdesk.test/tickets/{}", ticket.id))
    );

    ticket.assigned_to_user_id = Some(agent.id);
    let assigned = Envelope::wrap(
        &TicketAssigned {
            ticket: ticket.clone(),
            assignee: agent.clone(),
            previous_assignee_id: None,
            creator: creator.clone(),
        },
        meta.clone(),
    );
    // Delivered three times: still one email per recipient.
    for _ in 0..3 {
        p.publish(&assigned).await;
    }
    let to_creator = sink.wait_for(&creator.email, 1).await;
    assert_eq!(
        to_creator[0].subject,
        "Your ticket \"Printer on fire\" was assigned to Alan Tester"
    );
    let to_agent = sink.wait_for(&agent.email, 1).await;
    assert_eq!(
        to_agent[0].subject,
        "Ticket assigned to you: Printer on fire"
    );
    assert!(to_agent[0].body.contains("opened by Carla Tester"));

    ticket.status = TicketStatus::InProgress;
    let changed = Envelope::wrap(
        &TicketStatusChanged {
            ticket: ticket.clone(),
            old_status: TicketStatus::Open,
            new_status: TicketStatus::InProgress,
            creator: creator.clone(),
        },
        meta.clone(),
    );
    p.publish(&changed).await;
    p.publish(&changed).await;
    let mails = sink.wait_for(&creator.email, 2).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Your ticket \"Printer on fire\" is now IN_PROGRESS")
    );

    ticket.assigned_to_user_id = None;
    let unassigned = Envelope::wrap(
        &TicketUnassigned {
            ticket: ticket.clone(),
            previous_assignee_id: Some(agent.id),
            creator: creator.clone(),
        },
        meta.clone(),
    );
    p.publish(&unassigned).await;
    let mails = sink.wait_for(&creator.email, 3).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject.contains("waiting for a new assignee"))
    );

    // Every event is handled (the last one published has its email): no duplicate came later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.to(&creator.email).len(),
        3,
        "assigned, status changed, unassigned: once each"
    );
    assert_eq!(sink.to(&agent.email).len(), 1);
    assert_eq!(sink.to(&staff).len(), 1);
    assert_eq!(emails_for_event(&pool, assigned.event_id).await, 2);
    assert_eq!(emails_for_event(&pool, changed.event_id).await, 1);
    let statuses: Vec<String> = sqlx::query_scalar("SELECT DISTINCT status FROM emails")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(statuses, vec!["SENT".to_string()]);
    p.finish().await;
}

#[tokio::test]
async fn internal_routes_queue_mail_and_report_its_status() {
    let sink = SmtpSink::start();
    let mut p = Platform::new().await;
    let config = p.notification_config(&[("SMTP_URL", &smtp_url(&sink))]);
    let (base, _pool) = p.start_notification(config).await;
    let c = http();
    let service = p.keys.service_token("ticket-service");
    let admin = p
        .keys
        .keys
        .issue_user_token(Uuid::new_v4(), "a@example.com", Role::Admin)
        .unwrap();
    let agent = p
        .keys
        .keys
        .issue_user_token(Uuid::new_v4(), "b@example.com", Role::Agent)
        .unwrap();
    let to = format!("{}@example.com", Uuid::new_v4().simple());
    let post = |token: String, body: Value| {
        let c = c.clone();
        let url = format!("{base}/notifications/email");
        async move {
            c.post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };

    // Free text.
    let res = post(
        service.clone(),
        json!({"to": to, "subject": "Hello", "body": "Plain words"}),
    )
    .await;
    assert_eq!(res.status(), 202);
    let queued: Value = res.json().await.unwrap();
    assert_eq!(queued["status"], "PENDING");
    let id = queued["id"].as_str().unwrap().to_string();
    // A template with data.
    let res = post(service.clone(), json!({"to": to, "template": "welcome", "data": {"firstName": "Zoe", "email": to, "loginUrl": "x"}})).await;
    assert_eq!(res.status(), 202);
    let mails = sink.wait_for(&to, 2).await;
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Hello" && m.body.trim() == "Plain words")
    );
    assert!(
        mails
            .iter()
            .any(|m| m.subject == "Welcome to Helpdesk, Zoe")
    );

    // Status: for services and ADMINs.
    let status = |token: String, id: String| {
        let c = c.clone();
        let url = format!("{base}/notifications/status/{id}");
        async move { c.get(url).bearer_auth(token).send().await.unwrap() }
    };
    let body: Value = eventually(Duration::from_secs(10), "status SENT", || async {
        let v: Value = status(service.clone(), id.clone())
            .await
            .json()
            .await
            .ok()?;
        (v["status"] == "SENT").then_some(v)
    })
    .await;
    assert_eq!(body["to"], to.as_str());
    assert_eq!(body["subject"], "Hello");
    assert_eq!(body["attempts"], 1);
    assert!(body["lastError"].is_null());
    assert!(body["sentAt"].is_string() && body["createdAt"].is_string());
    assert!(body.get("body").is_none(), "the body is never exposed");
    assert_eq!(status(admin.clone(), id.clone()).await.status(), 200);
    assert_eq!(status(agent.clone(), id.clone()).await.status(), 403);
    assert_eq!(
        status(admin.clone(), Uuid::new_v4().to_string())
            .await
            .status(),
        404
    );
    assert_eq!(
        status(admin.clone(), "not-a-uuid".into()).await.status(),
        400
    );
    assert_eq!(
        c.get(format!("{base}/notifications/status/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Internal only: a user token, even an ADMIN's, cannot queue mail.
    assert_eq!(
        post(
            admin.clone(),
            json!({"to": to, "subject": "x", "body": "y"})
        )
        .await
        .status(),
        401
    );
    // Validation, in the contract's error shape.
    for (body, needle) in [
        (json!({"to": "nope", "subject": "x", "body": "y"}), "to"),
        (json!({"to": to, "subject": "x"}), "subject and body"),
        (
            json!({"to": to, "template": "no-such-template"}),
            "unknown template",
        ),
        (
            json!({"to": to, "template": "welcome", "data": {"firstName": "Q"}}),
            "missing",
        ),
        (json!({"to": to, "subject": "", "body": "y"}), "subject"),
    ] {
        let res = post(service.clone(), body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["statusCode"], 400);
        assert_eq!(err["error"], "Bad Request");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{err} should mention {needle}"
        );
    }
    p.finish().await;
}

/// Security review, items 7 and 5: the status route trusted the role in the token, so a demoted
/// or deleted ADMIN kept access until expiry, as did a session ended by a password change. It
/// now checks notification-service's record of role changes, password changes and deletions.
#[tokio::test]
async fn the_status_route_checks_the_callers_current_role_and_session() {
    use helpdesk_kit::events::{UserDeleted, UserRoleChanged, UserSnapshot, UserUpdated};
    let mut p = Platform::new().await;
    let config = p.notification_config(&[]);
    let (base, _pool) = p.start_notification(config).await;
    let c = http();
    let status = |token: String| {
        let c = c.clone();
        let url = format!("{base}/notifications/status/{}", Uuid::new_v4());
        async move {
            c.get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let snapshot =
        |id: Uuid, role: Role, revision: i64, epoch: i64, kept: Option<Uuid>| UserSnapshot {
            id,
            email: format!("{id}@example.com"),
            first_name: None,
            last_name: None,
            role,
            created_at: Utc::now(),
            revision,
            token_epoch: epoch,
            kept_session: kept,
        };
    let keys = &p.keys.keys;
    let (demoted, signed_out, deleted) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let token = |id: Uuid, session: Uuid| {
        keys.issue_session_token(id, "x@example.com", Role::Admin, session, (0, 0))
            .unwrap()
    };
    let (kept, other) = (Uuid::new_v4(), Uuid::new_v4());
    let demoted_token = token(demoted, Uuid::new_v4());
    let kept_token = token(signed_out, kept);
    let other_token = token(signed_out, other);
    let deleted_token = token(deleted, Uuid::new_v4());
    for t in [&demoted_token, &kept_token, &other_token, &deleted_token] {
        assert_eq!(status(t.clone()).await, 404, "an ADMIN reads statuses");
    }
    p.publish(&Envelope::wrap(
        &UserRoleChanged {
            user: snapshot(demoted, Role::Agent, 2, 0, None),
            old_role: Role::Admin,
            new_role: Role::Agent,
        },
        EventMetadata::default(),
    ))
    .await;
    p.publish(&Envelope::wrap(
        &UserUpdated {
            user: snapshot(signed_out, Role::Admin, 2, 1, Some(kept)),
            changes: vec!["password".into()],
        },
        EventMetadata::default(),
    ))
    .await;
    p.publish(&Envelope::wrap(
        &UserDeleted {
            id: deleted,
            email: "gone@example.com".into(),
        },
        EventMetadata::default(),
    ))
    .await;
    eventually(
        Duration::from_secs(15),
        "the changes to take effect",
        || async {
            (status(demoted_token.clone()).await == 403
                && status(other_token.clone()).await == 401
                && status(deleted_token.clone()).await == 401)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        status(kept_token.clone()).await,
        404,
        "the session that changed the password stays signed in"
    );
    // Promoted back and signed in again (revision 3) before that event arrives: the row
    // (revision 2) is behind the token, whose role counts.
    let again = keys
        .issue_session_token(
            demoted,
            "x@example.com",
            Role::Admin,
            Uuid::new_v4(),
            (0, 3),
        )
        .unwrap();
    assert_eq!(status(again).await, 404, "the newer token's ADMIN counts");
    p.finish().await;
}
