//! The end-to-end walk: [`walk`] runs its steps in order over the [`Walk`] state; the first steps
//! are here, the ticket work in [`tickets`], the account steps in [`accounts`].

mod accounts;
mod tickets;

use std::time::Duration;

use helpdesk_testkit::{eventually, unique};
use reqwest::Method;
use serde_json::{Value, json};

use crate::*;

/// The whole contract, in the order a team would use it, signed in as the platform's first
/// administrator. With `sink` (the SMTP server the platform sends to) every mail is checked too,
/// and the password reset uses the link from its mail; without it (a platform without SMTP) the
/// mail steps are skipped.
pub async fn walk(base: &str, admin: &Admin, sink: Option<&SmtpSink>, entry: Entry) {
    let mut w = Walk::sign_up(base, admin, sink, entry).await;
    w.request_ids().await;
    w.internal_routes().await;
    w.role_change().await;
    w.tickets().await;
    w.view_rights().await;
    w.assignment().await;
    w.comments().await;
    w.assignee_must_be_staff().await;
    w.status_change().await;
    w.audit_trail().await;
    w.dashboard().await;
    w.passwords().await;
    w.deletion().await;
}

/// The walk's state between its steps: who is signed in and the ticket they work on.
struct Walk<'a> {
    api: Api,
    sink: Option<&'a SmtpSink>,
    entry: Entry,
    alice_email: String,
    bob_email: String,
    alice_id: String,
    bob_id: String,
    admin: String,
    admin_user: Value,
    bob: String,
    bob_user: Value,
    alice: String,
    tid: String,
}

impl<'a> Walk<'a> {
    /// Signup (welcome mail), duplicate email, and who is who.
    async fn sign_up(base: &str, admin: &Admin, sink: Option<&'a SmtpSink>, entry: Entry) -> Self {
        let api = Api {
            http: client(),
            base: base.to_string(),
        };
        let run = unique("");
        let alice_email = format!("alice-{run}@e2e.test");
        let bob_email = format!("bob-{run}@e2e.test");
        // Signup → welcome mail; login with role.
        let v = api
            .ok(
                Method::POST,
                "/auth/signup",
                None,
                Some(
                    json!({"email": alice_email, "password": "alice-pass-1", "firstName": "Alice"}),
                ),
                201,
            )
            .await;
        let alice_id = v["user"]["id"].as_str().unwrap().to_string();
        assert_eq!(v["user"]["role"], "AGENT");
        if let Some(sink) = sink {
            mail_about(sink, &alice_email, "welcome").await;
        }
        let v = api
            .ok(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": bob_email, "password": "bob-pass-12"})),
                201,
            )
            .await;
        let bob_id = v["user"]["id"].as_str().unwrap().to_string();
        let msg = api
            .fails(
                Method::POST,
                "/auth/signup",
                None,
                Some(json!({"email": alice_email.to_uppercase(), "password": "whatever1"})),
                409,
            )
            .await;
        assert_eq!(msg, "Email already exists");
        let (admin, admin_user) = api.login(&admin.email, &admin.password).await;
        assert_eq!(admin_user["role"], "ADMIN");
        let (bob, bob_user) = api.login(&bob_email, "bob-pass-12").await;
        assert_eq!(bob_user["role"], "AGENT");
        Self {
            api,
            sink,
            entry,
            alice_email,
            bob_email,
            alice_id,
            bob_id,
            admin,
            admin_user,
            bob,
            bob_user,
            alice: String::new(),
            tid: String::new(),
        }
    }

    /// Every response echoes X-Request-Id.
    async fn request_ids(&self) {
        let api = &self.api;
        let entry = self.entry;
        // Every response echoes X-Request-Id, also the ones answered in front of the services.
        let echoed: &[&str] = match entry {
            Entry::Platform => &["/health", "/no-such-prefix/x", "/tickets"],
            Entry::ClusterIngress => &["/tickets", "/auth/me", "/admin/agents"],
        };
        for path in echoed {
            let res = api
                .http
                .get(format!("{}{path}", api.base))
                .header("x-request-id", "e2e-request-1")
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok()),
                Some("e2e-request-1"),
                "{path}"
            );
        }
    }

    /// Internal routes stay internal; an email status is for ADMINs.
    async fn internal_routes(&self) {
        let api = &self.api;
        let entry = self.entry;
        let admin = self.admin.clone();
        let bob = self.bob.clone();
        // Internal routes are not served on the public entry point; an email's status is, for ADMINs.
        match entry {
            Entry::Platform => {
                for path in [
                    "/auth/validate",
                    "/audit/log",
                    "/users/by-email",
                    "/notifications/email",
                ] {
                    let msg = api
                        .fails(Method::POST, path, Some(&admin), Some(json!({})), 404)
                        .await;
                    assert_eq!(msg, "Not found", "{path}");
                }
            }
            Entry::ClusterIngress => {
                for path in ["/users/by-email", "/notifications/email"] {
                    let (status, _) = api
                        .call(Method::POST, path, Some(&admin), Some(json!({})))
                        .await;
                    assert_eq!(status, 404, "{path} is not routed");
                }
                for path in ["/auth/validate", "/audit/log"] {
                    api.fails(Method::POST, path, Some(&admin), Some(json!({})), 401)
                        .await;
                }
            }
        }
        let status = "/notifications/status/00000000-0000-4000-8000-000000000000";
        let msg = api
            .fails(Method::GET, status, Some(&admin), None, 404)
            .await;
        assert_eq!(msg, "Email not found", "routed to notification-service");
        api.fails(Method::GET, status, Some(&bob), None, 403).await;
    }

    /// Alice becomes a requester (USER).
    async fn role_change(&mut self) {
        let api = &self.api;
        let alice_email = self.alice_email.clone();
        let alice_id = self.alice_id.clone();
        let bob_id = self.bob_id.clone();
        let admin = self.admin.clone();
        let bob = self.bob.clone();
        // Alice becomes a requester (USER) through admin-service; it takes effect in ticket-service.
        let v = api
            .ok(
                Method::PATCH,
                &format!("/admin/users/{alice_id}/role"),
                Some(&admin),
                Some(json!({"role": "USER"})),
                200,
            )
            .await;
        assert_eq!(v["role"], "USER");
        api.fails(
            Method::PATCH,
            &format!("/admin/users/{alice_id}/role"),
            Some(&admin),
            Some(json!({"role": "BOSS"})),
            400,
        )
        .await;
        let (alice, alice_user) = api.login(&alice_email, "alice-pass-1").await;
        assert_eq!(alice_user["role"], "USER");
        api.fails(Method::GET, "/admin/users", Some(&alice), None, 403)
            .await;
        let agents = api
            .ok(Method::GET, "/admin/agents", Some(&bob), None, 200)
            .await;
        assert!(agents.as_array().unwrap().iter().any(|u| u["id"] == bob_id));
        assert!(
            !agents
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u["id"] == alice_id)
        );
        self.alice = alice;
    }

    /// Creating and listing tickets, and bad input.
    async fn tickets(&mut self) {
        let api = &self.api;
        let base = &self.api.base;
        let alice_email = self.alice_email.clone();
        let alice = self.alice.clone();
        // Tickets.
        let t = api
            .ok(
                Method::POST,
                "/tickets",
                Some(&alice),
                Some(json!({"title": "  VPN is down  ", "description": "Since this morning."})),
                201,
            )
            .await;
        let tid = t["id"].as_str().unwrap().to_string();
        assert_eq!(t["title"], "VPN is down");
        assert_eq!(t["status"], "OPEN");
        assert_eq!(t["user"]["email"], alice_email);
        assert!(t["assignedTo"].is_null());
        api.fails(
            Method::POST,
            "/tickets",
            Some(&alice),
            Some(json!({"title": "", "description": "x"})),
            400,
        )
        .await;
        let mine = api
            .ok(Method::GET, "/tickets", Some(&alice), None, 200)
            .await;
        assert_eq!(mine.as_array().unwrap().len(), 1);
        api.fails(
            Method::GET,
            &format!("/tickets/{UNKNOWN_ID}"),
            Some(&alice),
            None,
            404,
        )
        .await;
        api.fails(Method::GET, "/tickets", None, None, 401).await;
        let (status, _) = api
            .call(Method::GET, "/tickets/not-a-uuid", Some(&alice), None)
            .await;
        assert!(status == 400 || status == 404, "malformed id: {status}");
        let res = api
            .http
            .post(format!("{base}/tickets"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        assert_eq!(res.json::<Value>().await.unwrap()["statusCode"], 400);
        self.tid = tid;
    }

    /// Per-ticket routes need view rights.
    async fn view_rights(&self) {
        let api = &self.api;
        let bob = self.bob.clone();
        let tid = self.tid.clone();
        // Every per-ticket route needs view rights (creator, assignee, ADMIN): an AGENT who is
        // neither reads and changes nothing, whatever the route.
        for (method, path, body) in [
            (Method::GET, format!("/tickets/{tid}"), None),
            (
                Method::PATCH,
                format!("/tickets/{tid}"),
                Some(json!({"status": "DONE"})),
            ),
            (Method::GET, format!("/tickets/{tid}/comments"), None),
            (
                Method::POST,
                format!("/tickets/{tid}/comments"),
                Some(json!({"body": "hi"})),
            ),
            (Method::GET, format!("/tickets/{tid}/audit"), None),
        ] {
            api.fails(method, &path, Some(&bob), body, 403).await;
        }
    }
}
