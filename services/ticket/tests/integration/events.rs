//! Events: the user deletion cascade, the audit trail through audit-service, audit-service down,
//! and writes that keep working while audit-service and RabbitMQ are down.

use std::time::{Duration, Instant};

use serde_json::json;
use uuid::Uuid;

use crate::common::{Api, Platform, Proxy, WAIT, broker_addr, signed_out_everywhere, wait_user};
use helpdesk_kit::auth::Role;
use helpdesk_kit::events::TICKET_EVENTS;
use helpdesk_testkit::{EventTap, amqp_url, eventually};

#[tokio::test]
async fn deleting_a_user_removes_their_tickets_and_comments_and_unassigns_theirs() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let admin = p.announce_user(Role::Admin).await;
    let victim = p.announce_user(Role::Agent).await;
    let other = p.announce_user(Role::User).await;
    for u in [&admin, &victim, &other] {
        wait_user(&svc.pool, u).await;
    }
    let v1 = api.create_ticket(&victim, "victim 1").await;
    let v2 = api.create_ticket(&victim, "victim 2").await;
    let o1 = api.create_ticket(&other, "other 1").await;
    let o2 = api.create_ticket(&other, "other 2").await;
    assert_eq!(api.assign(&admin, o1, Some(victim.id)).await.status, 200);
    assert_eq!(api.assign(&admin, v1, Some(admin.id)).await.status, 200);
    // Commenting needs view rights: the victim is o2's assignee while commenting, then not.
    assert_eq!(api.assign(&admin, o2, Some(victim.id)).await.status, 200);
    for (t, who) in [(v1, &admin), (o1, &victim), (o1, &other), (o2, &victim)] {
        assert_eq!(
            api.post(
                &format!("/tickets/{t}/comments"),
                &who.token,
                json!({"body": "hi"})
            )
            .await
            .status,
            201
        );
    }
    assert_eq!(api.assign(&admin, o2, Some(admin.id)).await.status, 200);
    let mut tap = EventTap::start(&p.prefix, TICKET_EVENTS).await;

    let deletion = p.delete_user(&victim, Some(admin.id)).await;
    let mut caused = Vec::new();
    while caused.len() < 3 {
        let (_, e) = tap.next().await;
        if e.metadata.causation_id == Some(deletion.event_id) {
            caused.push(e);
        }
    }
    let mut kinds: Vec<(String, String)> = caused
        .iter()
        .map(|e| (e.event_type.clone(), e.aggregate_id.clone()))
        .collect();
    kinds.sort();
    let mut want = vec![
        ("ticket.deleted".to_string(), v1.to_string()),
        ("ticket.deleted".to_string(), v2.to_string()),
        ("ticket.unassigned".to_string(), o1.to_string()),
    ];
    want.sort();
    assert_eq!(kinds, want, "one event per change");
    assert!(
        caused.iter().all(|e| e.metadata.user_id == Some(admin.id)),
        "the actor is who deleted the user"
    );
    let unassigned = caused
        .iter()
        .find(|e| e.event_type == "ticket.unassigned")
        .unwrap();
    assert_eq!(
        unassigned.payload["previousAssigneeId"],
        victim.id.to_string()
    );

    for t in [v1, v2] {
        assert_eq!(
            api.get(&format!("/tickets/{t}"), &admin.token).await.status,
            404
        );
    }
    let r = api.get(&format!("/tickets/{o1}"), &admin.token).await;
    assert!(r.body["assignedToUserId"].is_null() && r.body["assignedTo"].is_null());
    let comments = api
        .get(&format!("/tickets/{o1}/comments"), &admin.token)
        .await;
    let authors: Vec<&str> = comments
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["authorId"].as_str().unwrap())
        .collect();
    assert_eq!(
        authors,
        vec![other.id.to_string().as_str()],
        "the victim's comment is gone"
    );
    assert_eq!(
        api.get(&format!("/tickets/{o2}/comments"), &admin.token)
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM comments WHERE ticket_id = ANY($1) OR author_id = $2",
    )
    .bind(vec![v1, v2])
    .bind(victim.id)
    .fetch_one(&svc.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
    assert_eq!(api.get("/tickets", &victim.token).await.status, 401);
    // A redelivered deletion changes nothing and emits nothing more.
    p.publish(&deletion).await;
    let extra = tokio::time::timeout(Duration::from_millis(700), tap.next()).await;
    assert!(extra.is_err(), "no event from a duplicate deletion");
    svc.stop().await;
    p.cleanup().await;
}

async fn audit_actions(api: &Api, token: &str, ticket: Uuid) -> Option<Vec<serde_json::Value>> {
    let r = api.get(&format!("/tickets/{ticket}/audit"), token).await;
    (r.status == 200).then(|| r.body.as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn the_ticket_audit_trail_is_newest_first_with_the_actor() {
    let mut p = Platform::new().await;
    let audit = p.start_audit(None).await;
    let svc = p
        .start_ticket(None, &[("AUDIT_SERVICE_URL", audit.url.clone())])
        .await;
    let api = Api::new(&svc.url);
    let admin = p.announce_user(Role::Admin).await;
    let agent = p.announce_user(Role::Agent).await;
    let user = p.announce_user(Role::User).await;
    for u in [&admin, &agent, &user] {
        wait_user(&svc.pool, u).await;
        wait_user(&audit.pool, u).await;
    }
    let t = api.create_ticket(&user, "audit me").await;
    // An agent acts on a ticket once it is theirs (every per-ticket route needs view rights).
    assert_eq!(api.assign(&admin, t, Some(agent.id)).await.status, 200);
    assert_eq!(
        api.patch(
            &format!("/tickets/{t}"),
            &agent.token,
            json!({"status": "IN_PROGRESS"})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.post(
            &format!("/tickets/{t}/comments"),
            &agent.token,
            json!({"body": "on it"})
        )
        .await
        .status,
        201
    );
    assert_eq!(api.assign(&admin, t, None).await.status, 200);

    // The agent is no longer the assignee: an ADMIN reads the trail.
    let trail = eventually(WAIT, "six audit entries", || async {
        audit_actions(&api, &admin.token, t)
            .await
            .filter(|v| v.len() >= 6)
    })
    .await;
    let got: Vec<(&str, &str)> = trail
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["actor"]["email"].as_str().unwrap_or("<none>"),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ticket.unassigned", admin.email.as_str()),
            ("ticket.comment_added", agent.email.as_str()),
            ("ticket.status_changed", agent.email.as_str()),
            ("ticket.updated", agent.email.as_str()),
            ("ticket.assigned", admin.email.as_str()),
            ("ticket.created", user.email.as_str()),
        ]
    );
    for e in &trail {
        assert_eq!(e["entityType"], "ticket");
        assert_eq!(e["entityId"], t.to_string());
        assert!(e["metadata"].is_object());
    }
    assert_eq!(trail[2]["metadata"]["oldStatus"], "OPEN");
    assert_eq!(trail[2]["metadata"]["newStatus"], "IN_PROGRESS");
    assert_eq!(
        api.get(&format!("/tickets/{t}/audit"), &user.token)
            .await
            .status,
        403
    );
    svc.stop().await;
    audit.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn audit_service_down_gives_a_fast_503() {
    let mut p = Platform::new().await;
    // Nothing listens on a port we bound and released; a second peer accepts and never answers.
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted_by_peer = accepted.clone();
    let hanging_addr = hanging.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hanging.accept().await {
            accepted_by_peer.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    for (name, addr) in [("refusing", closed), ("hanging", hanging_addr)] {
        let svc = p
            .start_ticket(None, &[("AUDIT_SERVICE_URL", format!("http://{addr}"))])
            .await;
        let api = Api::new(&svc.url);
        let agent = p.announce_user(Role::Agent).await;
        wait_user(&svc.pool, &agent).await;
        let t = api.create_ticket(&agent, "x").await;
        for i in 0..7 {
            let started = Instant::now();
            let r = api.get(&format!("/tickets/{t}/audit"), &agent.token).await;
            let took = started.elapsed();
            assert_eq!(r.status, 503, "{name} #{i}: {:?}", r.body);
            assert!(
                r.message().contains("audit"),
                "a clear message: {:?}",
                r.body
            );
            assert_eq!(r.body["error"], "Service Unavailable");
            assert!(took < Duration::from_secs(2), "{name} #{i} took {took:?}");
        }
        if name == "hanging" {
            // Two attempts per call until five failures open the breaker (during the third
            // call); the four calls after that never reach the peer (without it: 14 attempts).
            let attempts = accepted.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(
                attempts, 5,
                "the open breaker answers without calling the peer"
            );
        }
        // Writes do not depend on audit-service.
        assert_eq!(
            api.patch(
                &format!("/tickets/{t}"),
                &agent.token,
                json!({"status": "DONE"})
            )
            .await
            .status,
            200
        );
        svc.stop().await;
    }
    p.cleanup().await;
}

#[tokio::test]
async fn writes_continue_while_audit_and_broker_are_down_and_the_log_catches_up() {
    let mut p = Platform::new().await;
    let broker = Proxy::start(Some(broker_addr())).await;
    let audit = p.start_audit(None).await;
    let audit_schema = audit.schema.clone();
    let audit_proxy = Proxy::start(Some(audit.addr)).await;
    let svc = p
        .start_ticket(
            None,
            &[
                (
                    "AMQP_URL",
                    format!("amqp://guest:guest@{}/%2f", broker.addr),
                ),
                ("AUDIT_SERVICE_URL", format!("http://{}", audit_proxy.addr)),
            ],
        )
        .await;
    let api = Api::new(&svc.url);
    let agent = p.announce_user(Role::Agent).await;
    wait_user(&svc.pool, &agent).await;
    wait_user(&audit.pool, &agent).await;
    let before = api.create_ticket(&agent, "before the outage").await;
    eventually(WAIT, "audit of the first ticket", || async {
        audit_actions(&api, &agent.token, before)
            .await
            .filter(|v| v.len() == 1)
    })
    .await;

    // Outage: the broker is cut off from ticket-service, audit-service stops.
    broker.set(None);
    audit_proxy.set(None);
    audit.stop().await;
    let mut during = Vec::new();
    for i in 0..5 {
        let t = api.create_ticket(&agent, &format!("during {i}")).await;
        assert_eq!(
            api.patch(
                &format!("/tickets/{t}"),
                &agent.token,
                json!({"status": "IN_PROGRESS"})
            )
            .await
            .status,
            200
        );
        assert_eq!(
            api.post(
                &format!("/tickets/{t}/comments"),
                &agent.token,
                json!({"body": "still works"})
            )
            .await
            .status,
            201
        );
        during.push(t);
    }
    let started = Instant::now();
    let r = api
        .get(&format!("/tickets/{before}/audit"), &agent.token)
        .await;
    assert_eq!(r.status, 503);
    assert!(started.elapsed() < Duration::from_secs(2));
    let backlog: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(
        backlog, 20,
        "every event waits in the outbox (create, update, status change, comment × 5)"
    );

    // Recovery: broker back, a new audit-service instance on the same data.
    broker.set(Some(broker_addr()));
    let audit = p.start_audit(Some(&audit_schema)).await;
    audit_proxy.set(Some(audit.addr));
    for t in &during {
        let trail = eventually(Duration::from_secs(40), "audit catch-up", || async {
            audit_actions(&api, &agent.token, *t)
                .await
                .filter(|v| v.len() >= 4)
        })
        .await;
        let mut actions: Vec<&str> = trail
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        actions.sort();
        assert_eq!(
            actions,
            vec![
                "ticket.comment_added",
                "ticket.created",
                "ticket.status_changed",
                "ticket.updated"
            ]
        );
    }
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_events WHERE entity_type = 'ticket'")
            .fetch_one(&audit.pool)
            .await
            .unwrap();
    assert_eq!(total, 21, "complete and without duplicates");
    svc.stop().await;
    audit.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn a_poison_user_event_is_dead_lettered_and_later_events_still_apply() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let poison = helpdesk_kit::bus::OutgoingMessage {
        exchange: helpdesk_kit::events::USER_EVENTS.into(),
        routing_key: "user.created".into(),
        body: b"definitely not an envelope".to_vec(),
        message_id: Uuid::new_v4().to_string(),
        headers: Default::default(),
    };
    p.publish_raw(poison).await;
    let user = p.announce_user(Role::User).await;
    wait_user(&svc.pool, &user).await;
    let dlq = format!("{}{}.dlq", p.prefix, ticket_service::USERS_QUEUE);
    let conn = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let dead = eventually(
        WAIT,
        "the poison message in the dead-letter queue",
        || async {
            ch.basic_get(
                dlq.as_str().into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .ok()
            .flatten()
            .map(|m| m.delivery.data.clone())
        },
    )
    .await;
    assert_eq!(dead, b"definitely not an envelope");
    let _ = conn.close(200, "bye".into()).await;
    svc.stop().await;
    p.cleanup().await;
}

/// Security review, High 1: a password change by an ADMIN read the row, hashed for a while, then
/// published `user.updated` with the stale role ADMIN after the demotion's `user.role_changed`. The
/// read model must keep the demotion: snapshots apply by revision, not by arrival or timestamp.
#[tokio::test]
async fn a_stale_user_snapshot_published_after_a_demotion_does_not_restore_admin_powers() {
    use helpdesk_kit::events::{Envelope, EventMetadata, UserSnapshot, UserUpdated};
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let admin = p.announce_user(Role::Admin).await;
    let requester = p.announce_user(Role::User).await;
    wait_user(&svc.pool, &admin).await;
    wait_user(&svc.pool, &requester).await;
    let theirs = api.create_ticket(&requester, "not the admin's").await;
    let demoted = p.change_role(&admin, Role::User).await;
    wait_user(&svc.pool, &demoted).await;

    // The stale snapshot: the revision the password change read (before the demotion), stamped
    // later than the demotion.
    let stale = Envelope::wrap(
        &UserUpdated {
            user: UserSnapshot {
                id: admin.id,
                email: admin.email.clone(),
                first_name: Some("First".into()),
                last_name: Some("Last-ADMIN".into()),
                role: Role::Admin,
                created_at: chrono::Utc::now(),
                revision: admin.revision,
                token_epoch: 0,
                kept_session: None,
            },
            changes: vec!["password".into()],
        },
        EventMetadata::default(),
    );
    let stale_id = stale.event_id;
    p.publish(&stale).await;
    eventually(WAIT, "the stale user.updated handled", || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM processed_events WHERE event_id = $1")
                .bind(stale_id)
                .fetch_one(&svc.pool)
                .await
                .unwrap_or(0);
        (n > 0).then_some(())
    })
    .await;

    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(admin.id)
        .fetch_one(&svc.pool)
        .await
        .unwrap();
    assert_eq!(role, "USER", "the demotion stays in the read model");
    // The old ADMIN token has no ADMIN powers left.
    let all = api.get("/tickets?showAll=true", &admin.token).await;
    assert_eq!(all.status, 200);
    assert!(
        all.body
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"] != json!(theirs)),
        "showAll no longer lists other people's tickets: {:?}",
        all.body
    );
    assert_eq!(api.assign(&admin, theirs, None).await.status, 403);

    // A newer snapshot still applies.
    let promoted = p.change_role(&demoted, Role::Agent).await;
    wait_user(&svc.pool, &promoted).await;
    svc.stop().await;
    p.cleanup().await;
}

/// `GET /tickets` and `/tickets/inbox` check the caller in the same statement as the page: they
/// must refuse and admit exactly as every other route does, from the read model, not the token.
#[tokio::test]
async fn listings_check_the_caller_against_the_read_model_in_the_same_statement() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let requester = p.announce_user(Role::User).await;
    let promoted = p.announce_user(Role::Agent).await;
    let leaving = p.announce_user(Role::Agent).await;
    let signed_out = p.announce_user(Role::Agent).await;
    for u in [&requester, &promoted, &leaving, &signed_out] {
        wait_user(&svc.pool, u).await;
    }
    let theirs = api.create_ticket(&requester, "someone else's").await;
    let own = api.create_ticket(&leaving, "mine").await;
    let listed = |r: &crate::common::Resp| -> Vec<serde_json::Value> {
        r.body.as_array().cloned().unwrap_or_default()
    };

    // Promoted to ADMIN after the token was issued: showAll lists everyone's tickets now.
    let now_admin = p.change_role(&promoted, Role::Admin).await;
    wait_user(&svc.pool, &now_admin).await;
    let all = api.get("/tickets?showAll=true", &promoted.token).await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert!(listed(&all).iter().any(|t| t["id"] == json!(theirs)));

    // The caller's own tickets, with the embedded creator, in one round trip.
    let mine = api.get("/tickets", &leaving.token).await;
    assert_eq!(mine.status, 200);
    assert_eq!(listed(&mine).len(), 1);
    assert_eq!(listed(&mine)[0]["id"], json!(own));
    assert_eq!(listed(&mine)[0]["user"]["email"], json!(leaving.email));

    // Deleted: refused on both listings, as everywhere.
    p.delete_user(&leaving, None).await;
    eventually(WAIT, "the deletion handled", || async {
        let r = api.get("/tickets", &leaving.token).await;
        (r.status == 401).then_some(())
    })
    .await;
    assert_eq!(api.get("/tickets/inbox", &leaving.token).await.status, 401);

    // Signed out everywhere (a password change elsewhere moved the token epoch on).
    let epoch = signed_out_everywhere(&signed_out);
    p.publish(&epoch).await;
    eventually(WAIT, "the ended session refused", || async {
        let r = api.get("/tickets/inbox", &signed_out.token).await;
        (r.status == 401).then_some(())
    })
    .await;
    assert_eq!(api.get("/tickets", &signed_out.token).await.status, 401);

    // Not in the read model yet (its user.created still on the way): admitted from the token,
    // with an empty list, and remembered provisionally.
    let early = helpdesk_testkit::service::new_user(Role::Agent, "Early", None);
    let token = p
        .keys
        .keys
        .issue_user_token(early.id, &early.email, Role::Agent)
        .expect("token");
    let r = api.get("/tickets", &token).await;
    assert_eq!((r.status, listed(&r).len()), (200, 0), "{:?}", r.body);
    let provisional: bool = sqlx::query_scalar("SELECT provisional FROM users WHERE id = $1")
        .bind(early.id)
        .fetch_one(&svc.pool)
        .await
        .expect("provisional row");
    assert!(provisional);

    svc.stop().await;
    p.cleanup().await;
}
