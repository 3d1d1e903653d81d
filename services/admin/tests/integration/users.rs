//! User administration through the real user-service: listings, role changes and deletions take
//! effect there; the last-admin and self-delete rules; access by current role; user-service down.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{Platform, http};
use helpdesk_kit::auth::Role;
use helpdesk_testkit::eventually;
use helpdesk_testkit::http::error;

const ADMIN: (&str, &str) = ("root@helpdesk.test", "admin-password-1");

struct Client {
    c: reqwest::Client,
    users: String,
    admin: String,
}

impl Client {
    async fn signup(&self, name: &str) -> (String, String, String) {
        let email = format!("{name}-{}@example.com", Uuid::new_v4().simple());
        let res = self
            .c
            .post(format!("{}/auth/signup", self.users))
            .json(&json!({"email": email, "password": "password-1", "firstName": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        (
            body["user"]["id"].as_str().unwrap().to_string(),
            body["token"].as_str().unwrap().to_string(),
            email,
        )
    }

    async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.c
            .post(format!("{}/auth/login", self.users))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.c
            .get(format!("{}{path}", self.admin))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn set_role(&self, id: &str, role: &str, token: &str) -> reqwest::Response {
        self.c
            .patch(format!("{}/admin/users/{id}/role", self.admin))
            .bearer_auth(token)
            .json(&json!({ "role": role }))
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, id: &str, token: &str) -> reqwest::Response {
        self.c
            .delete(format!("{}/admin/users/{id}", self.admin))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn role_changes_and_deletions_take_effect_in_user_service_with_the_contract_rules() {
    let mut p = Platform::new().await;
    let users = p.start_user_service(ADMIN).await;
    let (admin, _pool) = p.start_admin(&users, &[]).await;
    let c = Client {
        c: http(),
        users,
        admin,
    };

    let login: Value = c.login(ADMIN.0, ADMIN.1).await.json().await.unwrap();
    let root = login["token"].as_str().unwrap().to_string();
    let root_id = login["user"]["id"].as_str().unwrap().to_string();
    let (bob, bob_token, bob_email) = c.signup("bob").await;
    let (cat, cat_token, cat_email) = c.signup("cat").await;

    // Listings: all users newest first for ADMIN; staff for staff.
    let res = c.get("/admin/users", &root).await;
    assert_eq!(res.status(), 200);
    let all: Vec<Value> = res.json().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![cat.as_str(), bob.as_str(), root_id.as_str()]);
    assert!(
        all.iter()
            .all(|u| u.get("passwordHash").is_none() && u["createdAt"].is_string())
    );
    assert_eq!(
        error(c.get("/admin/users", &bob_token).await, 403).await,
        "Admin access required"
    );
    assert_eq!(
        c.get("/admin/agents", &bob_token).await.status(),
        200,
        "agents are staff"
    );
    assert_eq!(
        c.get("/admin/dashboard/statistics", &bob_token)
            .await
            .status(),
        403
    );
    assert_eq!(
        c.c.get(format!("{}/admin/users", c.admin))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // Role change: validated, applied in user-service.
    assert!(
        error(c.set_role(&bob, "SUPERUSER", &root).await, 400)
            .await
            .contains("role")
    );
    assert_eq!(
        error(
            c.set_role(&Uuid::new_v4().to_string(), "USER", &root).await,
            404
        )
        .await,
        "User not found"
    );
    assert_eq!(c.set_role("not-a-uuid", "USER", &root).await.status(), 400);
    let res = c.set_role(&bob, "USER", &root).await;
    assert_eq!(res.status(), 200);
    let changed: Value = res.json().await.unwrap();
    assert_eq!(
        (changed["id"].as_str(), changed["role"].as_str()),
        (Some(bob.as_str()), Some("USER"))
    );
    let relogin: Value = c
        .login(&bob_email, "password-1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        relogin["user"]["role"], "USER",
        "user-service has the new role"
    );
    let agents: Vec<Value> = c.get("/admin/agents", &root).await.json().await.unwrap();
    assert!(
        agents
            .iter()
            .all(|u| u["id"] != bob.as_str() && u["role"] != "USER")
    );
    // Bob's old token still says AGENT, but his current role counts (via user.role_changed).
    eventually(
        Duration::from_secs(10),
        "the demotion to reach admin-service",
        || async { (c.get("/admin/agents", &bob_token).await.status() == 403).then_some(()) },
    )
    .await;

    // The last ADMIN cannot be demoted; with a second ADMIN it can.
    assert_eq!(
        error(c.set_role(&root_id, "AGENT", &root).await, 400).await,
        "Cannot demote the last administrator"
    );
    assert_eq!(c.set_role(&cat, "ADMIN", &root).await.status(), 200);
    eventually(
        Duration::from_secs(10),
        "the promotion to reach admin-service",
        || async { (c.get("/admin/users", &cat_token).await.status() == 200).then_some(()) },
    )
    .await;

    // Deletion: not yourself; unknown is 404; otherwise gone from user-service.
    assert_eq!(
        error(c.delete(&root_id, &root).await, 400).await,
        "You cannot delete your own account"
    );
    assert_eq!(
        error(c.delete(&Uuid::new_v4().to_string(), &root).await, 404).await,
        "User not found"
    );
    let res = c.delete(&cat, &root).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"message": "User deleted successfully"})
    );
    assert_eq!(c.login(&cat_email, "password-1").await.status(), 401);
    let all: Vec<Value> = c.get("/admin/users", &root).await.json().await.unwrap();
    assert!(all.iter().all(|u| u["id"] != cat.as_str()));
    // Cat's ADMIN token no longer opens anything once the deletion has reached admin-service.
    eventually(
        Duration::from_secs(10),
        "the deletion to reach admin-service",
        || async {
            (c.get("/admin/dashboard/statistics", &cat_token)
                .await
                .status()
                == 401)
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        error(c.delete(&cat, &root).await, 404).await,
        "User not found"
    );
    p.finish().await;
}

#[tokio::test]
async fn a_hanging_user_service_times_out_to_503_and_the_breaker_then_answers_at_once() {
    let mut p = Platform::new().await;
    // A peer that accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = format!("http://{}", hang.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    let (admin, _pool) = p
        .start_admin(
            &peer,
            &[("ADMIN_PEER_TIMEOUT", "1s"), ("ADMIN_PEER_RETRIES", "2")],
        )
        .await;
    let c = http();
    let root = p
        .keys
        .keys
        .issue_user_token(Uuid::new_v4(), "r@example.com", Role::Admin)
        .unwrap();
    // Two listings: three timed-out attempts each, then 503 in the contract's shape.
    for _ in 0..2 {
        let started = Instant::now();
        let res = c
            .get(format!("{admin}/admin/users"))
            .bearer_auth(&root)
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(8),
            "bounded by timeout and retries: {took:?}"
        );
        let message = error(res, 503).await;
        assert!(message.contains("user-service"), "{message}");
    }
    // Six failures opened the breaker: the next call does not wait for the peer at all.
    let started = Instant::now();
    let res = c
        .patch(format!("{admin}/admin/users/{}/role", Uuid::new_v4()))
        .bearer_auth(&root)
        .json(&json!({"role": "USER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "open breaker answers at once: {:?}",
        started.elapsed()
    );
    let res = c
        .get(format!("{admin}/admin/dashboard/statistics"))
        .bearer_auth(&root)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        200,
        "statistics do not depend on user-service"
    );
    p.finish().await;
}
