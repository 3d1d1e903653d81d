//! The end-to-end walk through the whole HTTP contract, run against any base URL: `helpdesk up`,
//! five service processes behind `helpdesk gateway`, or the simulated cluster's ingress
//! (`helpdesk-simcluster`). Mail is checked through a real SMTP server (the in-process
//! `helpdesk_testkit::smtp::SmtpSink`) when the platform sends to one.

use std::process::{Child, Command};
use std::time::Duration;

pub use helpdesk_testkit::smtp::{Received, SmtpSink};
use helpdesk_testkit::{eventually, http, unique};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};

/// What answers at the base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `helpdesk up` or `helpdesk gateway`: the platform's own front, which answers unrouted
    /// paths itself (contract error shape, `X-Request-Id`) and never routes internal routes.
    Platform,
    /// A cluster's Ingress (or Routes): unrouted paths get the ingress controller's default
    /// backend, and routing is by prefix, so `/auth/validate` and `/audit/log` are reachable but
    /// refuse a user's token (they require a service credential).
    ClusterIngress,
}

/// The HTTP client of the walk. `E2E_RESOLVE=host=ip:port` sends requests for `host` to that
/// address (a cluster's ingress behind a port-forward, as `curl --resolve` would).
pub fn client() -> Client {
    let mut b = Client::builder();
    if let Ok(spec) = std::env::var("E2E_RESOLVE")
        && let Some((host, addr)) = spec.split_once('=')
        && let Ok(addr) = addr.parse::<std::net::SocketAddr>()
    {
        b = b.resolve(host, addr);
    }
    b.build().unwrap_or_default()
}

/// The platform's first administrator.
#[derive(Debug, Clone)]
pub struct Admin {
    pub email: String,
    pub password: String,
}

pub use helpdesk_testkit::free_port;

/// Kills its processes on drop.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// How long the walk waits for a mail.
const MAIL_WAIT: Duration = Duration::from_secs(30);

/// Waits for a mail to `to` whose subject or body contains `text` (case-insensitive).
pub async fn mail_about(sink: &SmtpSink, to: &str, text: &str) -> Received {
    let needle = text.to_lowercase();
    sink.wait_until(
        MAIL_WAIT,
        &format!("a mail to {to} about {text:?}"),
        |mails| {
            mails
                .iter()
                .find(|m| {
                    m.is_to(to)
                        && format!("{} {}", m.subject, m.body)
                            .to_lowercase()
                            .contains(&needle)
                })
                .cloned()
        },
    )
    .await
}

pub async fn wait_ready(base: &str) {
    let http = Client::new();
    let url = format!("{base}/ready");
    eventually(
        Duration::from_secs(90),
        &format!("{url} to answer 200"),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            }
        },
    )
    .await;
}

pub struct Api {
    pub http: Client,
    pub base: String,
}

impl Api {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let r = http::call(
            &self.http,
            method,
            &format!("{}{path}", self.base),
            token,
            body,
        )
        .await;
        (
            StatusCode::from_u16(r.status).expect("an HTTP status"),
            r.body,
        )
    }

    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (status, v) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {v}");
        v
    }

    /// Asserts the contract's error shape.
    pub async fn fails(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> String {
        let (status, v) = self.call(method.clone(), path, token, body).await;
        assert_eq!(status.as_u16(), want, "{method} {path}: {v}");
        http::assert_error_shape(&v, want);
        v["message"].as_str().unwrap_or_default().to_string()
    }

    pub async fn login(&self, email: &str, password: &str) -> (String, Value) {
        let v = self
            .ok(
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
                200,
            )
            .await;
        (v["token"].as_str().unwrap().to_string(), v["user"].clone())
    }
}

pub fn reset_token(mail: &Received) -> String {
    let body = &mail.body;
    let start = body
        .find("token=")
        .expect("the reset mail carries the link")
        + 6;
    body[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == '>')
        .next()
        .unwrap()
        .to_string()
}

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

    /// Assignment by an ADMIN, its mails, the inbox.
    async fn assignment(&self) {
        let api = &self.api;
        let sink = self.sink;
        let alice_email = self.alice_email.clone();
        let bob_email = self.bob_email.clone();
        let alice_id = self.alice_id.clone();
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
        api.fails(
            Method::PATCH,
            &format!("/tickets/{tid}/assign"),
            Some(&admin),
            Some(json!({"assignedToUserId": alice_id})),
            400,
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
    async fn comments(&self) {
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

    /// A status change and its mail.
    async fn status_change(&self) {
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
    async fn audit_trail(&self) {
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
                // the bus, so an earlier count can be reached before the last one is in).
                let complete = v.as_array().is_some_and(|a| {
                    a.len() >= 5 && a.iter().any(|e| e["action"] == "ticket.status_changed")
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
        assert_eq!(
            actions.first(),
            Some(&"ticket.status_changed"),
            "{actions:?}"
        );
        assert!(
            actions.contains(&"ticket.status_changed") && actions.contains(&"ticket.comment_added")
        );
        assert_eq!(trail[0]["actor"]["id"], bob_user["id"]);
        assert!(actions.contains(&"ticket.assigned"), "{actions:?}");
        api.fails(Method::GET, &path, Some(&alice), None, 403).await;
    }

    /// The dashboard.
    async fn dashboard(&self) {
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

    /// Forgot/reset and change password; other sessions end.
    async fn passwords(&mut self) {
        let api = &self.api;
        let sink = self.sink;
        let alice_email = self.alice_email.clone();
        let alice_id = self.alice_id.clone();
        // Forgot / reset with the link from the mail, then change password.
        let v = api
            .ok(
                Method::POST,
                "/auth/forgot-password",
                None,
                Some(json!({"email": alice_email})),
                200,
            )
            .await;
        assert_eq!(
            v["message"],
            "If the email exists, a reset link has been sent"
        );
        // The reset needs the link from the mail.
        let alice_password = match sink {
            Some(sink) => {
                let mail = mail_about(sink, &alice_email, "token=").await;
                let token = reset_token(&mail);
                api.ok(
                    Method::POST,
                    "/auth/reset-password",
                    None,
                    Some(json!({"token": token, "newPassword": "alice-pass-2"})),
                    200,
                )
                .await;
                let msg = api
                    .fails(
                        Method::POST,
                        "/auth/reset-password",
                        None,
                        Some(json!({"token": token, "newPassword": "alice-pass-3"})),
                        400,
                    )
                    .await;
                assert_eq!(msg, "Invalid or expired reset token");
                let msg = api
                    .fails(
                        Method::POST,
                        "/auth/login",
                        None,
                        Some(json!({"email": alice_email, "password": "alice-pass-1"})),
                        401,
                    )
                    .await;
                assert_eq!(msg, "Invalid credentials");
                "alice-pass-2"
            }
            None => "alice-pass-1",
        };
        let (alice, _) = api.login(&alice_email, alice_password).await;
        let (elsewhere, _) = api.login(&alice_email, alice_password).await;
        api.ok(
            Method::POST,
            "/auth/change-password",
            Some(&alice),
            Some(json!({"oldPassword": alice_password, "newPassword": "alice-pass-4"})),
            200,
        )
        .await;
        // Every other session ends (within seconds in every service); this one stays signed in.
        api.fails(Method::GET, "/auth/me", Some(&elsewhere), None, 401)
            .await;
        eventually(
            Duration::from_secs(30),
            "the other session's token to stop working for tickets",
            || async {
                let (s, _) = api
                    .call(Method::GET, "/tickets", Some(&elsewhere), None)
                    .await;
                (s == 401).then_some(())
            },
        )
        .await;
        api.ok(Method::GET, "/tickets", Some(&alice), None, 200)
            .await;
        let msg = api
            .fails(
                Method::POST,
                "/auth/change-password",
                Some(&alice),
                Some(json!({"oldPassword": "nope-nope", "newPassword": "alice-pass-5"})),
                400,
            )
            .await;
        assert_eq!(msg, "Current password is incorrect");
        let (alice, _) = api.login(&alice_email, "alice-pass-4").await;
        let me = api
            .ok(Method::GET, "/auth/me", Some(&alice), None, 200)
            .await;
        assert_eq!(me["id"], alice_id);
        self.alice = alice;
    }

    /// Deleting a user takes their tickets and token.
    async fn deletion(&self) {
        let api = &self.api;
        let alice_id = self.alice_id.clone();
        let bob_id = self.bob_id.clone();
        let admin = self.admin.clone();
        let admin_user = self.admin_user.clone();
        let alice = self.alice.clone();
        let tid = self.tid.clone();
        // Deletion: yourself is refused; a user's tickets go with them.
        let admin_id = admin_user["id"].as_str().unwrap();
        let msg = api
            .fails(
                Method::DELETE,
                &format!("/admin/users/{admin_id}"),
                Some(&admin),
                None,
                400,
            )
            .await;
        assert_eq!(msg, "You cannot delete your own account");
        let v = api
            .ok(
                Method::DELETE,
                &format!("/admin/users/{alice_id}"),
                Some(&admin),
                None,
                200,
            )
            .await;
        assert_eq!(v["message"], "User deleted successfully");
        api.fails(
            Method::DELETE,
            &format!("/admin/users/{alice_id}"),
            Some(&admin),
            None,
            404,
        )
        .await;
        eventually(
            Duration::from_secs(30),
            "the deleted user's ticket to go",
            || async {
                let (s, _) = api
                    .call(Method::GET, &format!("/tickets/{tid}"), Some(&admin), None)
                    .await;
                (s == 404).then_some(())
            },
        )
        .await;
        api.fails(Method::GET, "/auth/me", Some(&alice), None, 401)
            .await;
        eventually(
            Duration::from_secs(30),
            "the deleted user's token to stop working for tickets",
            || async {
                let (s, _) = api.call(Method::GET, "/tickets", Some(&alice), None).await;
                (s == 401).then_some(())
            },
        )
        .await;
        // Internal routes are not reachable from the public entry point.
        let (s, _) = api
            .call(Method::GET, &format!("/users/{bob_id}"), Some(&admin), None)
            .await;
        assert_eq!(s, 404);
    }
}

/// A syntactically valid UUID that no row has.
pub const UNKNOWN_ID: &str = "00000000-0000-4000-8000-000000000001";

/// Waits until `GET base+path` answers `status` (e.g. a route through an ingress that has no
/// `/ready` of its own).
pub async fn wait_ready_path(base: &str, path: &str, status: u16) {
    let http = Client::new();
    let url = format!("{base}{path}");
    eventually(
        Duration::from_secs(90),
        &format!("{url} to answer {status}"),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().as_u16() == status)
                    .map(|_| ())
            }
        },
    )
    .await;
}
