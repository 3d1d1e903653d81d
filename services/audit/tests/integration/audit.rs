//! audit-service against real PostgreSQL and RabbitMQ: one entry per event, no secrets, the
//! dead-letter queue, the routes and the retention job.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::common::{Audit, WAIT};
use helpdesk_kit::auth::Role;
use helpdesk_kit::events::{
    EmailSent, Envelope, EventMetadata, TICKET_EVENTS, TicketCreated, TicketSnapshot, TicketStatus,
    UserPasswordResetRequested, UserRef,
};
use helpdesk_testkit::{amqp_url, eventually};

fn ticket_created(creator: &common::TestUser) -> Envelope {
    let now = Utc::now();
    let ticket = TicketSnapshot {
        id: Uuid::now_v7(),
        user_id: creator.id,
        title: "Broken".into(),
        status: TicketStatus::Open,
        assigned_to_user_id: None,
        created_at: now,
        updated_at: now,
    };
    let creator_ref = UserRef {
        id: creator.id,
        email: creator.email.clone(),
        first_name: None,
        last_name: None,
    };
    Envelope::wrap(
        &TicketCreated {
            ticket,
            creator: creator_ref,
        },
        EventMetadata {
            user_id: Some(creator.id),
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn every_event_becomes_exactly_one_entry_without_secrets() {
    // One consumer: the sentinel below relies on queue order.
    let a = Audit::start(&[("AUDIT_CONSUMERS", "1")]).await;
    let agent = a.user(Role::Agent).await;
    let user = a.user(Role::User).await;

    let created = ticket_created(&agent);
    for _ in 0..3 {
        a.publish(&created).await; // redelivered
    }
    let reset = Envelope::wrap(
        &UserPasswordResetRequested {
            user_id: user.id,
            email: user.email.clone(),
            first_name: None,
            reset_link: "https://app.example.com/reset-password?token=SECRET-RESET-TOKEN".into(),
            expires_at: Utc::now(),
        },
        EventMetadata {
            user_id: Some(user.id),
            ..Default::default()
        },
    );
    a.publish(&reset).await;
    let sent = Envelope::wrap(
        &EmailSent {
            email_id: Uuid::new_v4(),
            to: user.email.clone(),
            attempts: 1,
        },
        EventMetadata::default(),
    );
    a.publish(&sent).await;
    // A hand-made event with secrets nested anywhere (in properties its schema does not name:
    // what it names must still match).
    let mut custom = sent.clone();
    custom.event_id = Uuid::new_v4();
    custom.payload = json!({"emailId": Uuid::new_v4(), "to": "x@example.com", "attempts": 1, "nested": {"passwordHash": "$argon2id$SECRET", "list": [{"accessToken": "SECRET-JWT"}]}});
    a.publish(&custom).await;

    // The queue is handled in order: once this last event is recorded, every copy before it was seen.
    let sentinel = ticket_created(&user);
    a.publish(&sentinel).await;
    for e in [&created, &reset, &sent, &custom, &sentinel] {
        a.wait_entry(e.event_id).await;
    }
    assert_eq!(
        a.entries_for(created.event_id).await,
        1,
        "a redelivered event is recorded once"
    );
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE metadata::text LIKE '%SECRET%'",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no reset link, token or hash is stored");

    // The entity trail: staff (user token) or a service credential; newest first; with the actor.
    let path = format!("/audit/entity/ticket/{}", created.aggregate_id);
    let r = a.get(&path, &agent.token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let items = r.body.as_array().unwrap();
    assert_eq!(items.len(), 1);
    let e = &items[0];
    assert_eq!(e["action"], "ticket.created");
    assert_eq!(e["entityType"], "ticket");
    assert_eq!(e["actorId"], agent.id.to_string());
    assert_eq!(e["actor"]["email"], agent.email.as_str());
    assert_eq!(e["actor"]["firstName"], "Ada");
    assert_eq!(e["metadata"]["ticket"]["title"], "Broken");
    let service = a.keys.service_token("ticket-service");
    assert_eq!(a.get(&path, &service).await.status, 200);
    assert_eq!(a.get(&path, &user.token).await.status, 403);
    assert_eq!(a.call(Method::GET, &path, None, None).await.status, 401);
    let r = a
        .get(&format!("/audit/entity/user/{}", user.id), &agent.token)
        .await;
    let actions: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["user.password_reset_requested", "user.created"],
        "newest first"
    );
    let entry: serde_json::Value = r.body[0]["metadata"].clone();
    assert!(entry.get("resetLink").is_none() && entry["email"] == user.email.as_str());
    let r = a
        .get(
            &format!("/audit/entity/email/{}", sent.aggregate_id),
            &agent.token,
        )
        .await;
    assert_eq!(
        r.body[0]["actor"],
        serde_json::Value::Null,
        "no actor for system events"
    );
    a.stop().await;
}

async fn dead_letters(queue: &str) -> Vec<Vec<u8>> {
    let conn = lapin::Connection::connect(&amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut out = Vec::new();
    while let Some(m) = ch
        .basic_get(format!("{queue}.dlq").into(), BasicGetOptions::default())
        .await
        .unwrap()
    {
        out.push(m.delivery.data.clone());
        m.delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
    out
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_without_blocking_the_queue() {
    // Several consumers (the default is one): the poison message blocks none of them.
    let a = Audit::start(&[("AUDIT_CONSUMERS", "4")]).await;
    let agent = a.user(Role::Agent).await;
    a.publish_raw(
        TICKET_EVENTS,
        "ticket.created",
        b"{ this is not an event".to_vec(),
    )
    .await;
    // A well-formed envelope whose user.created payload is not a user.
    let mut bad_user = ticket_created(&agent);
    bad_user.event_type = "user.created".into();
    bad_user.payload = json!({"user": "nobody"});
    a.publish(&bad_user).await;
    let good = ticket_created(&agent);
    a.publish(&good).await;
    a.wait_entry(good.event_id).await;

    let queue = format!("{}{}", a.prefix, audit_service::EVENTS_QUEUE);
    let dead = std::sync::Mutex::new(Vec::new());
    eventually(WAIT, "two dead letters", || async {
        let got = dead_letters(&queue).await;
        let mut dead = dead.lock().unwrap();
        dead.extend(got);
        (dead.len() >= 2).then_some(())
    })
    .await;
    let dead = dead.into_inner().unwrap();
    assert!(
        dead.iter()
            .any(|m| m.as_slice() == b"{ this is not an event")
    );
    assert!(dead.iter().any(|m| {
        serde_json::from_slice::<Envelope>(m).is_ok_and(|e| e.event_id == bad_user.event_id)
    }));
    assert_eq!(
        a.entries_for(bad_user.event_id).await,
        0,
        "a failed event leaves no partial entry"
    );
    a.stop().await;
}

/// Reliability, item 5: a `ticket.created` whose payload is `{"foo":1}` became an audit entry for
/// a nonexistent entity while admin and notification dead-lettered it. Every consumer now checks
/// an event against its JSON Schema first: it is dead-lettered with the reason, records nothing,
/// and a valid event after it is still recorded.
#[tokio::test]
async fn an_event_that_does_not_match_its_schema_is_dead_lettered_and_records_nothing() {
    use helpdesk_kit::bus::dlq::DeadLetters;
    let a = Audit::start(&[("AUDIT_CONSUMERS", "1")]).await;
    let agent = a.user(Role::Agent).await;
    let mut foo = ticket_created(&agent);
    foo.payload = json!({"foo": 1});
    a.publish(&foo).await;
    let good = ticket_created(&agent);
    a.publish(&good).await;
    a.wait_entry(good.event_id).await;

    let dead = eventually(WAIT, "the dead letter", || async {
        let dead = a.bus.list(audit_service::EVENTS_QUEUE).await.unwrap();
        (!dead.is_empty()).then_some(dead)
    })
    .await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let body: Envelope = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!(body.event_id, foo.event_id);
    let error = dead[0].last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("does not match its schema")
            && error.contains(r#"/payload: missing required property "ticket""#),
        "{error}"
    );
    assert_eq!(dead[0].attempts, 1, "a schema mismatch is not retried");
    assert_eq!(a.entries_for(foo.event_id).await, 0);
    a.stop().await;
}

#[tokio::test]
async fn routes_enforce_roles_filter_and_page() {
    let a = Audit::start(&[]).await;
    let admin = a.user(Role::Admin).await;
    let agent = a.user(Role::Agent).await;
    let service = a.keys.service_token("admin-service");

    // POST /audit/log: service credential only, validated, secrets removed, append-only.
    let body = json!({"actorId": admin.id, "action": "user.role_changed", "entityType": "user", "entityId": agent.id, "metadata": {"newRole": "ADMIN", "password": "hunter2"}});
    let r = a
        .call(
            Method::POST,
            "/audit/log",
            Some(&service),
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["actor"]["email"], admin.email.as_str());
    assert_eq!(r.body["metadata"], json!({"newRole": "ADMIN"}));
    assert_eq!(
        a.call(
            Method::POST,
            "/audit/log",
            Some(&admin.token),
            Some(body.clone())
        )
        .await
        .status,
        401,
        "user tokens are refused"
    );
    assert_eq!(
        a.call(Method::POST, "/audit/log", None, Some(body))
            .await
            .status,
        401
    );
    for (bad, field) in [
        (json!({"entityType": "user", "entityId": "1"}), "action"),
        (json!({"action": "x", "entityId": "1"}), "entityType"),
        (json!({"action": "x", "entityType": "user"}), "entityId"),
        (
            json!({"action": "x", "entityType": "user", "entityId": "1", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"action": "x", "entityType": "user", "entityId": "1", "actorId": "nope"}),
            "actorId",
        ),
        // Security review, item 9: text PostgreSQL cannot store is a 400 naming the field.
        (
            json!({"action": "x", "entityType": "user", "entityId": "a\u{0}b"}),
            "entityId",
        ),
        (
            json!({"action": "x", "entityType": "user", "entityId": "1", "metadata": {"note": "\u{0}"}}),
            "metadata.note",
        ),
    ] {
        let r = a
            .call(
                Method::POST,
                "/audit/log",
                Some(&service),
                Some(bad.clone()),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(
            r.body["message"].as_str().unwrap().contains(field),
            "{bad} → {:?}",
            r.body
        );
    }
    let id = r.body["id"].as_str().unwrap_or_default().to_string();
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let r = a
            .call(method.clone(), "/audit/log", Some(&service), None)
            .await;
        assert_eq!(r.status, 405, "{method} /audit/log");
        let r = a
            .call(
                method.clone(),
                &format!("/audit/entity/user/{id}"),
                Some(&service),
                None,
            )
            .await;
        assert_eq!(r.status, 405, "{method} on an entry");
    }

    // Several entries by the agent on one ticket.
    let ticket = Uuid::new_v4();
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = json!({"actorId": agent.id, "action": if i % 2 == 0 { "ticket.updated" } else { "ticket.commented" }, "entityType": "ticket", "entityId": ticket, "metadata": {"i": i}});
        let r = a
            .call(Method::POST, "/audit/log", Some(&service), Some(body))
            .await;
        assert_eq!(r.status, 201);
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    ids.reverse();

    // /audit/actor: ADMIN only, newest first, pages through X-Next-Cursor.
    let path = format!("/audit/actor/{}", agent.id);
    assert_eq!(a.get(&path, &agent.token).await.status, 403);
    assert_eq!(
        a.get("/audit/actor/not-a-uuid", &admin.token).await.status,
        400
    );
    let first = a.get(&format!("{path}?limit=3"), &admin.token).await;
    assert_eq!(first.status, 200);
    let cursor = first.header("x-next-cursor").expect("a next page");
    let second = a
        .get(&format!("{path}?limit=3&cursor={cursor}"), &admin.token)
        .await;
    assert!(second.header("x-next-cursor").is_none());
    let walked: Vec<String> = first
        .body
        .as_array()
        .unwrap()
        .iter()
        .chain(second.body.as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(walked.len(), 6, "five entries and the agent's own signup");
    assert_eq!(walked[..5], ids[..]);

    // /audit/search: ADMIN only, filters, {items, nextCursor}.
    assert_eq!(a.get("/audit/search", &agent.token).await.status, 403);
    let r = a
        .get(
            &format!("/audit/search?entityType=ticket&entityId={ticket}&action=ticket.updated"),
            &admin.token,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    assert!(r.body["nextCursor"].is_null());
    let r = a
        .get(
            &format!("/audit/search?actorId={}&limit=2", agent.id),
            &admin.token,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let next = r.body["nextCursor"]
        .as_str()
        .expect("nextCursor")
        .to_string();
    let r = a
        .get(
            &format!("/audit/search?actorId={}&limit=2&cursor={next}", agent.id),
            &admin.token,
        )
        .await;
    assert_eq!(r.body["items"][0]["id"], ids[2].as_str());
    let future = (Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let past = (Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let r = a
        .get(&format!("/audit/search?from={future}"), &admin.token)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    let r = a
        .get(
            &format!("/audit/search?from={past}&to={future}&entityId={ticket}"),
            &admin.token,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 5);
    for q in [
        "limit=501",
        "limit=0",
        "cursor=nope",
        "actorId=nope",
        "from=yesterday",
        &format!("from={future}&to={past}"),
    ] {
        let r = a.get(&format!("/audit/search?{q}"), &admin.token).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
    }
    a.stop().await;
}

#[tokio::test]
async fn retention_removes_only_entries_older_than_the_configured_days() {
    // The service's own job keeps ten years, so only the explicit run below removes anything.
    let a = Audit::start(&[("AUDIT_RETENTION_DAYS", "3650")]).await;
    for age_days in [400, 31, 29, 1] {
        sqlx::query("INSERT INTO audit_events (id, action, entity_type, entity_id, created_at) VALUES ($1, 'x', 'ticket', $2, now() - make_interval(days => $3))")
            .bind(Uuid::now_v7())
            .bind(age_days.to_string())
            .bind(age_days)
            .execute(&a.pool)
            .await
            .unwrap();
    }
    let removed = audit_service::retention::run_once(&a.pool, 30)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT entity_id FROM audit_events ORDER BY created_at")
            .fetch_all(&a.pool)
            .await
            .unwrap();
    assert_eq!(left, vec!["29", "1"]);
    assert_eq!(
        audit_service::retention::run_once(&a.pool, 30)
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    a.stop().await;
}

#[test]
fn configuration_is_checked() {
    let keys = helpdesk_testkit::TestKeys::generate();
    let base = |extra: (&str, &str)| {
        helpdesk_kit::config::Env::from_map([
            ("DATABASE_URL", "postgres://postgres@127.0.0.1/postgres"),
            ("JWT_PUBLIC_KEY", keys.public_pem.as_str()),
            extra,
        ])
    };
    let c = audit_service::Config::from_env(&base(("X", "y"))).unwrap();
    assert_eq!(c.retention_days, 365);
    assert_eq!(c.retention_interval, Duration::from_secs(3600));
    assert_eq!(c.common.db.schema, "audit");
    assert_eq!(c.consumers, 1);
    let err = audit_service::Config::from_env(&base(("AUDIT_RETENTION_DAYS", "0"))).unwrap_err();
    assert_eq!(err.var, "AUDIT_RETENTION_DAYS");
}

/// Security review, High 1: a `user.updated` snapshot read before a demotion and published after
/// it must not give the demoted ADMIN the audit log back.
#[tokio::test]
async fn a_stale_user_snapshot_after_a_demotion_does_not_restore_admin_access() {
    use helpdesk_kit::events::{UserRoleChanged, UserSnapshot, UserUpdated};
    let audit = Audit::start(&[]).await;
    let admin = audit.user(Role::Admin).await;
    let snapshot = |role: Role, revision: i64| UserSnapshot {
        id: admin.id,
        email: admin.email.clone(),
        first_name: Some("Ada".into()),
        last_name: None,
        role,
        created_at: Utc::now(),
        revision,
        token_epoch: 0,
        kept_session: None,
    };
    let demotion = Envelope::wrap(
        &UserRoleChanged {
            user: snapshot(Role::User, 3),
            old_role: Role::Admin,
            new_role: Role::User,
        },
        EventMetadata::default(),
    );
    audit.publish(&demotion).await;
    audit.wait_entry(demotion.event_id).await;
    // Stamped after the demotion, but carrying the revision the password change had read.
    let stale = Envelope::wrap(
        &UserUpdated {
            user: snapshot(Role::Admin, 2),
            changes: vec!["password".into()],
        },
        EventMetadata::default(),
    );
    audit.publish(&stale).await;
    audit.wait_entry(stale.event_id).await;
    let role: String = sqlx::query_scalar("SELECT role FROM users WHERE id = $1")
        .bind(admin.id)
        .fetch_one(&audit.pool)
        .await
        .unwrap();
    assert_eq!(role, "USER");
    let search = audit
        .call(Method::GET, "/audit/search", Some(&admin.token), None)
        .await;
    assert_eq!(search.status, 403, "{:?}", search.body);
    audit.stop().await;
}

/// Security review, item 5: a password change ends every other session in audit-service too.
#[tokio::test]
async fn a_session_ended_by_a_password_change_is_refused() {
    use helpdesk_kit::events::{UserSnapshot, UserUpdated};
    let audit = Audit::start(&[]).await;
    let admin = audit.user(Role::Admin).await;
    let (kept, other) = (Uuid::new_v4(), Uuid::new_v4());
    let token = |session: Uuid| {
        audit
            .keys
            .keys
            .issue_session_token(admin.id, &admin.email, Role::Admin, session, (0, 0))
            .unwrap()
    };
    let (kept_token, other_token) = (token(kept), token(other));
    for t in [&kept_token, &other_token] {
        let r = audit
            .call(Method::GET, "/audit/search", Some(t), None)
            .await;
        assert_eq!(r.status, 200);
    }
    let changed = Envelope::wrap(
        &UserUpdated {
            user: UserSnapshot {
                id: admin.id,
                email: admin.email.clone(),
                first_name: Some("Ada".into()),
                last_name: None,
                role: Role::Admin,
                created_at: Utc::now(),
                revision: 2,
                token_epoch: 1,
                kept_session: Some(kept),
            },
            changes: vec!["password".into()],
        },
        EventMetadata::default(),
    );
    audit.publish(&changed).await;
    audit.wait_entry(changed.event_id).await;
    let r = audit
        .call(Method::GET, "/audit/search", Some(&other_token), None)
        .await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    let r = audit
        .call(Method::GET, "/audit/search", Some(&kept_token), None)
        .await;
    assert_eq!(r.status, 200, "the changing session stays signed in");
    audit.stop().await;
}

/// Security review, item 10: secrets are removed by pattern in any case (`Reset_Link` with a
/// token, `authorization`, cookies, `*_secret`, `*Token`, hashes), from the metadata of
/// `POST /audit/log` and from event payloads; links without a token and ordinary fields stay.
#[tokio::test]
async fn secrets_are_redacted_by_pattern_from_api_entries_and_events() {
    let a = Audit::start(&[]).await;
    let service = a.keys.service_token("admin-service");
    let secrets = json!({
        "Reset_Link": "https://app.example.com/reset-password?token=SECRET-1",
        "authorization": "Bearer SECRET-2",
        "Cookie": "sid=SECRET-3",
        "client_secret": "SECRET-4",
        "X-Refresh-Token": "SECRET-5",
        "NEW_PASSWORD": "SECRET-6",
        "details": {"PasswordHash": "SECRET-7", "callbackUrl": "https://x.example/cb?reset_token=SECRET-8"},
        "ticketLink": "https://app.example.com/tickets/42",
        "newRole": "ADMIN",
    });
    let kept = json!({
        "details": {},
        "ticketLink": "https://app.example.com/tickets/42",
        "newRole": "ADMIN",
    });

    let body = json!({"action": "user.role_changed", "entityType": "user", "entityId": "42", "metadata": secrets});
    let r = a
        .call(Method::POST, "/audit/log", Some(&service), Some(body))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["metadata"], kept);

    let mut event = Envelope::wrap(
        &EmailSent {
            email_id: Uuid::new_v4(),
            to: "x@example.com".into(),
            attempts: 1,
        },
        EventMetadata::default(),
    );
    // The secrets ride along a valid payload (events are checked against their schema first).
    if let (Some(payload), Some(extra)) = (event.payload.as_object_mut(), secrets.as_object()) {
        payload.extend(extra.clone());
    }
    a.publish(&event).await;
    a.wait_entry(event.event_id).await;
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM audit_events WHERE event_id = $1")
            .bind(event.event_id)
            .fetch_one(&a.pool)
            .await
            .unwrap();
    for (k, v) in kept.as_object().unwrap() {
        assert_eq!(&stored[k], v, "{k} is kept: {stored}");
    }
    assert_eq!(stored["to"], "x@example.com");
    let leaked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_events WHERE metadata::text LIKE '%SECRET-%'",
    )
    .fetch_one(&a.pool)
    .await
    .unwrap();
    assert_eq!(leaked, 0, "no secret is stored");
    a.stop().await;
}
