//! Validation, filters, pagination under concurrent inserts, comments and the users read model.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::common::{Api, Platform, WAIT, wait_user};
use helpdesk_kit::auth::Role;
use helpdesk_testkit::eventually;

#[tokio::test]
async fn validation_errors_name_the_field_and_limits_hold() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let user = p.announce_user(Role::User).await;
    let admin = p.announce_user(Role::Admin).await;
    let agent = p.announce_user(Role::Agent).await;
    for u in [&user, &admin, &agent] {
        wait_user(&svc.pool, u).await;
    }
    let t = &user.token;
    let long = |n: usize| "x".repeat(n);
    let bad = [
        (json!({"description": "d"}), "title"),
        (json!({"title": "   ", "description": "d"}), "title"),
        (json!({"title": long(201), "description": "d"}), "title"),
        (json!({"title": "t"}), "description"),
        (json!({"title": "t", "description": " "}), "description"),
        (
            json!({"title": "t", "description": long(10_001)}),
            "description",
        ),
        (json!({"title": 5, "description": "d"}), "title"),
    ];
    for (body, field) in bad {
        let r = api.post("/tickets", t, body.clone()).await;
        assert_eq!(r.status, 400, "{body}");
        assert!(r.message().contains(field), "{body} → {:?}", r.body);
        assert_eq!(r.body["error"], "Bad Request");
    }
    // Limits are inclusive, titles are trimmed, unknown fields are ignored.
    let r = api.post("/tickets", t, json!({"title": format!("  {}  ", long(200)), "description": long(10_000), "color": "red"})).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["title"].as_str().map(str::len), Some(200));
    assert_eq!(r.body["status"], "OPEN");
    assert_eq!(r.body["user"]["email"], user.email.as_str());
    assert_eq!(r.body["user"]["lastName"], "Last-USER");
    assert!(r.body["assignedTo"].is_null() && r.body["assignedToUserId"].is_null());
    for key in [
        "id",
        "userId",
        "title",
        "description",
        "status",
        "createdAt",
        "updatedAt",
        "user",
    ] {
        assert!(r.body.get(key).is_some(), "Ticket has {key}");
    }
    let id = r.body["id"].as_str().unwrap().to_string();
    let r = api.call(Method::POST, "/tickets", Some(t), None).await;
    assert!(matches!(r.status, 400 | 415), "no body: {}", r.status);

    // PATCH: invalid status, empty title, status change.
    let r = api
        .patch(&format!("/tickets/{id}"), t, json!({"status": "CLOSED"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(r.message().contains("status"));
    let r = api
        .patch(&format!("/tickets/{id}"), t, json!({"title": ""}))
        .await;
    assert_eq!(r.status, 400);
    let r = api
        .patch(
            &format!("/tickets/{id}"),
            t,
            json!({"status": "DONE", "title": "New title"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "DONE");
    assert_eq!(r.body["title"], "New title");

    // Assign: ADMIN only, assignee must exist and be staff, the field is required.
    let path = format!("/tickets/{id}/assign");
    assert_eq!(
        api.patch(&path, &admin.token, json!({"assignedToUserId": user.id}))
            .await
            .status,
        400,
        "USER is not staff"
    );
    let r = api
        .patch(
            &path,
            &admin.token,
            json!({"assignedToUserId": Uuid::new_v4()}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.message(), "Assignee does not exist");
    assert_eq!(
        api.patch(&path, &admin.token, json!({"assignedToUserId": "nope"}))
            .await
            .status,
        400
    );
    assert_eq!(api.patch(&path, &admin.token, json!({})).await.status, 400);
    let r = api
        .patch(&path, &admin.token, json!({"assignedToUserId": agent.id}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["assignedTo"]["email"], agent.email.as_str());
    let r = api
        .patch(&path, &admin.token, json!({"assignedToUserId": null}))
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body["assignedTo"].is_null());
    // The agent works on it from here (commenting needs view rights: assignee).
    assert_eq!(
        api.patch(&path, &admin.token, json!({"assignedToUserId": agent.id}))
            .await
            .status,
        200
    );

    // Comments: body limits; isInternal only for staff; a USER never sees internal notes.
    let cpath = format!("/tickets/{id}/comments");
    assert_eq!(api.post(&cpath, t, json!({"body": "  "})).await.status, 400);
    assert_eq!(
        api.post(&cpath, t, json!({"body": long(10_001)}))
            .await
            .status,
        400
    );
    assert_eq!(api.post(&cpath, t, json!({})).await.status, 400);
    let r = api
        .post(&cpath, t, json!({"body": "mine", "isInternal": true}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["isInternal"], false, "ignored for a USER");
    assert_eq!(r.body["author"]["role"], "USER");
    let r = api
        .post(
            &cpath,
            &agent.token,
            json!({"body": "staff only", "isInternal": true}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["isInternal"], true);
    assert_eq!(r.body["author"]["email"], agent.email.as_str());
    assert_eq!(
        api.post(&cpath, &agent.token, json!({"body": long(10_000)}))
            .await
            .status,
        201
    );
    let seen_by_user = api.get(&cpath, t).await;
    let seen_by_agent = api.get(&cpath, &agent.token).await;
    assert_eq!(seen_by_user.body.as_array().map(Vec::len), Some(2));
    assert_eq!(seen_by_agent.body.as_array().map(Vec::len), Some(3));
    assert_eq!(seen_by_agent.body[0]["body"], "mine", "oldest first");

    // Lists: bad limit, bad cursor, bad filters.
    for q in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "cursor=garbage",
        "status=NOPE",
        "assignedToUserId=xyz",
        "showAll=maybe",
    ] {
        let r = api.get(&format!("/tickets?{q}"), t).await;
        assert_eq!(r.status, 400, "{q}: {:?}", r.body);
    }
    svc.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn lists_filter_and_scope_by_role() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let alice = p.announce_user(Role::User).await;
    let bob = p.announce_user(Role::User).await;
    let agent = p.announce_user(Role::Agent).await;
    let admin = p.announce_user(Role::Admin).await;
    for u in [&alice, &bob, &agent, &admin] {
        wait_user(&svc.pool, u).await;
    }
    let a1 = api.create_ticket(&alice, "Printer on fire").await;
    let a2 = api.create_ticket(&alice, "VPN 100% broken").await;
    let b1 = api.create_ticket(&bob, "printer jam").await;
    assert_eq!(api.assign(&admin, a2, Some(agent.id)).await.status, 200);
    assert_eq!(
        api.patch(
            &format!("/tickets/{a1}"),
            &admin.token,
            json!({"status": "IN_PROGRESS"})
        )
        .await
        .status,
        200
    );

    let ids = |r: &common::Resp| -> Vec<Uuid> {
        r.body
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(
        ids(&api.get("/tickets", &alice.token).await),
        vec![a2, a1],
        "own, newest first"
    );
    assert_eq!(
        ids(&api.get("/tickets?showAll=true", &alice.token).await),
        vec![a2, a1],
        "showAll is for ADMIN"
    );
    assert_eq!(
        ids(&api.get("/tickets?showAll=true", &admin.token).await),
        vec![b1, a2, a1]
    );
    assert!(ids(&api.get("/tickets", &admin.token).await).is_empty());
    assert_eq!(
        ids(&api.get("/tickets?status=IN_PROGRESS", &alice.token).await),
        vec![a1]
    );
    assert_eq!(
        ids(&api
            .get(
                &format!("/tickets?assignedToUserId={}", agent.id),
                &alice.token
            )
            .await),
        vec![a2]
    );
    assert_eq!(
        ids(&api
            .get("/tickets?assignedToUserId=null", &alice.token)
            .await),
        vec![a1]
    );
    assert_eq!(
        ids(&api
            .get("/tickets?q=PRINTER&showAll=true", &admin.token)
            .await),
        vec![b1, a1]
    );
    assert_eq!(
        ids(&api.get("/tickets?q=100%25", &alice.token).await),
        vec![a2],
        "% is literal"
    );
    assert_eq!(
        ids(&api.get("/tickets?q=_", &alice.token).await),
        Vec::<Uuid>::new(),
        "_ is literal"
    );
    assert_eq!(
        ids(&api.get("/tickets/inbox", &agent.token).await),
        vec![a2]
    );
    assert!(ids(&api.get("/tickets/inbox", &alice.token).await).is_empty());
    let r = api.get("/tickets/inbox", &agent.token).await;
    assert_eq!(r.body[0]["assignedTo"]["id"], agent.id.to_string());
    assert!(r.header("x-next-cursor").is_none(), "no next page");

    // Operational routes and the OpenAPI document.
    let anon = |path: &'static str| api.call(Method::GET, path, None, None);
    assert_eq!(anon("/health").await.status, 200);
    assert_eq!(anon("/ready").await.status, 200);
    let doc = anon("/api/openapi.json").await;
    for path in [
        "/tickets",
        "/tickets/inbox",
        "/tickets/{id}",
        "/tickets/{id}/assign",
        "/tickets/{id}/comments",
        "/tickets/{id}/audit",
    ] {
        assert!(doc.body["paths"].get(path).is_some(), "{path} documented");
    }
    let r = api
        .call(Method::GET, "/tickets", Some(&alice.token), None)
        .await;
    assert!(r.header("x-request-id").is_some());
    svc.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn pages_neither_repeat_nor_skip_while_tickets_are_inserted() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let user = p.announce_user(Role::Agent).await;
    wait_user(&svc.pool, &user).await;
    let mut existing = Vec::new();
    for i in 0..45 {
        existing.push(api.create_ticket(&user, &format!("ticket {i}")).await);
    }
    // Keep inserting while the walk runs.
    let writer = {
        let api = api.clone();
        let user = user.clone();
        tokio::spawn(async move {
            let mut n = 0;
            for i in 0..40 {
                api.create_ticket(&user, &format!("concurrent {i}")).await;
                n += 1;
            }
            n
        })
    };
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            None => "/tickets?limit=7".to_string(),
            Some(c) => format!("/tickets?limit=7&cursor={c}"),
        };
        let r = api.get(&path, &user.token).await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        let page = r.body.as_array().expect("body stays an array");
        assert!(page.len() <= 7);
        for t in page {
            seen.push((
                t["createdAt"].as_str().unwrap().to_string(),
                t["id"].as_str().unwrap().parse::<Uuid>().unwrap(),
            ));
        }
        pages += 1;
        cursor = r.header("x-next-cursor");
        if cursor.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await.unwrap();
    assert!(pages >= 7, "walked several pages ({pages})");
    let unique: HashSet<Uuid> = seen.iter().map(|(_, id)| *id).collect();
    assert_eq!(unique.len(), seen.len(), "no ticket appears twice");
    for id in &existing {
        assert!(
            unique.contains(id),
            "ticket {id} that existed when the walk started was skipped"
        );
    }
    let keys: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> = seen
        .iter()
        .map(|(at, id)| (at.parse().unwrap(), *id))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first"
    );
    svc.stop().await;
    p.cleanup().await;
}

#[tokio::test]
async fn authorization_follows_the_users_read_model() {
    let mut p = Platform::new().await;
    let svc = p.start_ticket(None, &[]).await;
    let api = Api::new(&svc.url);
    let admin = p.announce_user(Role::Admin).await;
    let agent = p.announce_user(Role::Agent).await;
    wait_user(&svc.pool, &admin).await;
    wait_user(&svc.pool, &agent).await;

    // The token says AGENT; the read model says ADMIN after a role change: the read model wins.
    let promoted = p.change_role(&agent, Role::Admin).await;
    wait_user(&svc.pool, &promoted).await;
    let r = api.get("/tickets?showAll=true", &agent.token).await;
    assert_eq!(r.status, 200);
    let other = api.create_ticket(&admin, "admin's").await;
    assert_eq!(
        api.get(&format!("/tickets/{other}"), &agent.token)
            .await
            .status,
        200,
        "ADMIN by the read model"
    );
    let demoted = p.change_role(&promoted, Role::User).await;
    wait_user(&svc.pool, &demoted).await;
    assert_eq!(
        api.get(&format!("/tickets/{other}"), &agent.token)
            .await
            .status,
        403,
        "USER by the read model"
    );

    // A user whose user.created has not arrived yet works from their token's claims.
    let newcomer_id = Uuid::now_v7();
    let newcomer_token = p
        .keys
        .keys
        .issue_user_token(newcomer_id, "new@example.com", Role::User)
        .unwrap();
    let r = api
        .post(
            "/tickets",
            &newcomer_token,
            json!({"title": "first", "description": "hello"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["user"]["email"], "new@example.com");

    // A deleted user's token stops working once the event is handled, and stays refused.
    let doomed = p.announce_user(Role::Agent).await;
    wait_user(&svc.pool, &doomed).await;
    assert_eq!(api.get("/tickets", &doomed.token).await.status, 200);
    p.delete_user(&doomed, Some(admin.id)).await;
    let r = eventually(WAIT, "deleted user refused", || async {
        let r = api.get("/tickets", &doomed.token).await;
        (r.status == 401).then_some(r)
    })
    .await;
    assert_eq!(r.message(), "User no longer exists");
    assert_eq!(
        api.post(
            "/tickets",
            &doomed.token,
            json!({"title": "t", "description": "d"})
        )
        .await
        .status,
        401
    );
    svc.stop().await;
    p.cleanup().await;
}
