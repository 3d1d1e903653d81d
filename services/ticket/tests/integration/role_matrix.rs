//! Every ticket route × USER / AGENT / ADMIN × own / assigned / other ticket → the contract's status.

use crate::common;

use reqwest::Method;
use serde_json::json;
use uuid::Uuid;

use crate::common::{Api, Platform, TestUser, wait_user};
use helpdesk_kit::auth::Role;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Relation {
    Own,
    Assigned,
    Other,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Get,
    Patch,
    Delete,
    Assign,
    ListComments,
    AddComment,
    Audit,
}

const ROUTES: [Route; 7] = [
    Route::Get,
    Route::Patch,
    Route::Delete,
    Route::Assign,
    Route::ListComments,
    Route::AddComment,
    Route::Audit,
];
const ROLES: [Role; 3] = [Role::User, Role::Agent, Role::Admin];
const RELATIONS: [Relation; 3] = [Relation::Own, Relation::Assigned, Relation::Other];

/// The contract's answer.
fn expected(route: Route, role: Role, rel: Relation) -> u16 {
    let staff = role.is_staff();
    let admin = role == Role::Admin;
    let viewer = rel != Relation::Other || admin;
    match route {
        Route::Get => {
            if viewer {
                200
            } else {
                403
            }
        }
        // Every per-ticket route needs view rights (creator, assignee, ADMIN).
        Route::Patch => {
            if viewer {
                200
            } else {
                403
            }
        }
        Route::Delete => {
            if admin || rel == Relation::Own {
                200
            } else {
                403
            }
        }
        Route::Assign => {
            if admin {
                200
            } else {
                403
            }
        }
        Route::ListComments => {
            if viewer {
                200
            } else {
                403
            }
        }
        Route::AddComment => {
            if viewer {
                201
            } else {
                403
            }
        }
        Route::Audit => {
            if staff && viewer {
                200
            } else {
                403
            }
        }
    }
}

async fn request(
    api: &Api,
    route: Route,
    caller: &TestUser,
    ticket: Uuid,
    assignee: Uuid,
) -> common::Resp {
    let t = Some(caller.token.as_str());
    match route {
        Route::Get => {
            api.call(Method::GET, &format!("/tickets/{ticket}"), t, None)
                .await
        }
        Route::Patch => {
            api.call(
                Method::PATCH,
                &format!("/tickets/{ticket}"),
                t,
                Some(json!({"status": "IN_PROGRESS"})),
            )
            .await
        }
        Route::Delete => {
            api.call(Method::DELETE, &format!("/tickets/{ticket}"), t, None)
                .await
        }
        Route::Assign => {
            api.call(
                Method::PATCH,
                &format!("/tickets/{ticket}/assign"),
                t,
                Some(json!({"assignedToUserId": assignee})),
            )
            .await
        }
        Route::ListComments => {
            api.call(Method::GET, &format!("/tickets/{ticket}/comments"), t, None)
                .await
        }
        Route::AddComment => {
            api.call(
                Method::POST,
                &format!("/tickets/{ticket}/comments"),
                t,
                Some(json!({"body": "hello"})),
            )
            .await
        }
        Route::Audit => {
            api.call(Method::GET, &format!("/tickets/{ticket}/audit"), t, None)
                .await
        }
    }
}

#[tokio::test]
async fn every_route_role_and_relation_answers_as_the_contract_says() {
    let mut p = Platform::new().await;
    let audit = p.start_audit(None).await;
    let ticket = p
        .start_ticket(None, &[("AUDIT_SERVICE_URL", audit.url.clone())])
        .await;
    let api = Api::new(&ticket.url);

    let setup_admin = p.announce_user(Role::Admin).await;
    let stranger = p.announce_user(Role::User).await;
    let staff_assignee = p.announce_user(Role::Agent).await;
    // Callers per (role, relation); the USER who is an assignee was an AGENT when assigned.
    let user = p.announce_user(Role::User).await;
    let agent = p.announce_user(Role::Agent).await;
    let admin = p.announce_user(Role::Admin).await;
    let demoted = p.announce_user(Role::Agent).await;
    for u in [
        &setup_admin,
        &stranger,
        &staff_assignee,
        &user,
        &agent,
        &admin,
        &demoted,
    ] {
        wait_user(&ticket.pool, u).await;
    }
    let caller_for = |role: Role, rel: Relation| -> &TestUser {
        match (role, rel) {
            (Role::User, Relation::Assigned) => &demoted,
            (Role::User, _) => &user,
            (Role::Agent, _) => &agent,
            (Role::Admin, _) => &admin,
        }
    };

    // One fresh ticket per case: some routes delete or change it.
    let mut cases = Vec::new();
    for route in ROUTES {
        for role in ROLES {
            for rel in RELATIONS {
                let caller = caller_for(role, rel);
                let id = match rel {
                    Relation::Own => api.create_ticket(caller, "own").await,
                    Relation::Other => api.create_ticket(&stranger, "other").await,
                    Relation::Assigned => {
                        let id = api.create_ticket(&stranger, "assigned").await;
                        let r = api.assign(&setup_admin, id, Some(caller.id)).await;
                        assert_eq!(r.status, 200, "{:?}", r.body);
                        id
                    }
                };
                cases.push((route, role, rel, id));
            }
        }
    }
    let demoted = p.change_role(&demoted, Role::User).await;
    wait_user(&ticket.pool, &demoted).await;
    let caller_for = |role: Role, rel: Relation| -> &TestUser {
        match (role, rel) {
            (Role::User, Relation::Assigned) => &demoted,
            (Role::User, _) => &user,
            (Role::Agent, _) => &agent,
            (Role::Admin, _) => &admin,
        }
    };

    let mut failures = Vec::new();
    for (route, role, rel, id) in &cases {
        let caller = caller_for(*role, *rel);
        let r = request(&api, *route, caller, *id, staff_assignee.id).await;
        let want = expected(*route, *role, *rel);
        if r.status != want {
            failures.push(format!(
                "{route:?} as {role} on {rel:?} ticket: got {} want {want} ({:?})",
                r.status, r.body
            ));
        }
        if r.status == 403 {
            assert!(
                r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
                "403 carries a message"
            );
            assert_eq!(r.body["statusCode"], 403);
            assert_eq!(r.body["error"], "Forbidden");
        }
        if matches!(route, Route::Delete) && r.status == 403 {
            assert!(
                r.message().contains("can only delete tickets they created"),
                "{:?}",
                r.body
            );
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix mismatches:\n{}",
        failures.join("\n")
    );

    // 404 for a ticket that does not exist, 400 for a malformed id, on every route and role.
    let missing = Uuid::new_v4();
    for route in ROUTES {
        for role in ROLES {
            let caller = caller_for(role, Relation::Own);
            let r = request(&api, route, caller, missing, staff_assignee.id).await;
            let want = match (route, role) {
                // The contract: 404 when the ticket does not exist, then 403 (assignment is
                // refused by role before any look-up).
                (Route::Assign, r) if r != Role::Admin => 403,
                _ => 404,
            };
            assert_eq!(
                r.status, want,
                "{route:?} as {role} on a missing ticket: {:?}",
                r.body
            );
            if want == 404 {
                assert_eq!(r.message(), "Ticket not found");
            }
        }
    }
    for path in [
        "/tickets/not-a-uuid",
        "/tickets/123/comments",
        "/tickets/x/audit",
    ] {
        let r = api.get(path, &admin.token).await;
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
        assert_eq!(r.body["statusCode"], 400);
    }
    // No token, a foreign token: 401.
    let r = api.call(Method::GET, "/tickets", None, None).await;
    assert_eq!(r.status, 401);
    let foreign = helpdesk_testkit::TestKeys::generate()
        .keys
        .issue_user_token(user.id, &user.email, Role::Admin)
        .unwrap();
    assert_eq!(api.get("/tickets", &foreign).await.status, 401);

    ticket.stop().await;
    audit.stop().await;
    p.cleanup().await;
}
