//! Password reset and the internal routes for admin-service.

use crate::common::{ADMIN_EMAIL, error, spawn, spawn_with};
use serde_json::{Value, json};

fn token_of(link: &str) -> String {
    link.split("token=")
        .nth(1)
        .expect("link carries the token")
        .to_string()
}

#[tokio::test]
async fn forgot_and_reset_password() {
    let mut app = spawn().await;
    let (user, before_reset) = app.signup("erin@example.com", "secret12").await;
    let answer = "If the email exists, a reset link has been sent";
    let res = app
        .post(
            "/auth/forgot-password",
            json!({"email": "unknown@example.com"}),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["message"], answer);
    let res = app
        .post(
            "/auth/forgot-password",
            json!({"email": "ERIN@example.com"}),
            None,
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["message"], answer);
    let first = app
        .event_where("user.password_reset_requested", |_| true)
        .await;
    assert_eq!(first.payload["userId"], user["id"]);
    let link = first.payload["resetLink"].as_str().unwrap().to_string();
    assert!(link.starts_with("https://helpdesk.test/reset-password?token="));
    app.post(
        "/auth/forgot-password",
        json!({"email": "erin@example.com"}),
        None,
    )
    .await;
    let second = app
        .event_where("user.password_reset_requested", |_| true)
        .await;
    let (t1, t2) = (
        token_of(&link),
        token_of(second.payload["resetLink"].as_str().unwrap()),
    );
    assert_ne!(t1, t2);
    // Only hashes are stored.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM password_reset_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|h| h.len() == 32 && h != t1.as_bytes()));

    let bad = "Invalid or expired reset token";
    let res = app
        .post(
            "/auth/reset-password",
            json!({"token": "unknown", "newPassword": "brandnew1"}),
            None,
        )
        .await;
    assert_eq!(error(res, 400).await, bad);
    let res = app
        .post(
            "/auth/reset-password",
            json!({"token": t1, "newPassword": "brandnew1"}),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Password reset successful"
    );
    assert_eq!(
        app.login("erin@example.com", "brandnew1").await.status(),
        200
    );
    // Every sign-in token issued before the reset stops working (contract).
    let msg = error(app.get("/auth/me", Some(&before_reset)).await, 401).await;
    assert!(msg.contains("sign in again"), "{msg}");
    // Used, and the other outstanding token is void.
    let res = app
        .post(
            "/auth/reset-password",
            json!({"token": t1, "newPassword": "again1234"}),
            None,
        )
        .await;
    assert_eq!(error(res, 400).await, bad);
    let res = app
        .post(
            "/auth/reset-password",
            json!({"token": t2, "newPassword": "again1234"}),
            None,
        )
        .await;
    assert_eq!(error(res, 400).await, bad);

    // Expired.
    app.post(
        "/auth/forgot-password",
        json!({"email": "erin@example.com"}),
        None,
    )
    .await;
    let third = app
        .event_where("user.password_reset_requested", |_| true)
        .await;
    sqlx::query("UPDATE password_reset_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let res = app.post("/auth/reset-password", json!({"token": token_of(third.payload["resetLink"].as_str().unwrap()), "newPassword": "again1234"}), None).await;
    assert_eq!(error(res, 400).await, bad);
    app.stop().await;
}

#[tokio::test]
async fn forgot_password_is_rate_limited() {
    let app = spawn_with(&[("USER_FORGOT_RATE_PER_ACCOUNT", "2")]).await;
    for _ in 0..2 {
        assert_eq!(
            app.post(
                "/auth/forgot-password",
                json!({"email": "x@example.com"}),
                None
            )
            .await
            .status(),
            200
        );
    }
    error(
        app.post(
            "/auth/forgot-password",
            json!({"email": "x@example.com"}),
            None,
        )
        .await,
        429,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn internal_routes_need_a_service_credential() {
    let mut app = spawn().await;
    let (user, token) = app.signup("frank@example.com", "secret12").await;
    let id = user["id"].as_str().unwrap().to_string();
    let svc = app.service_token();
    // User tokens and no token are refused.
    error(app.get(&format!("/users/{id}"), Some(&token)).await, 401).await;
    error(app.get(&format!("/users/{id}"), None).await, 401).await;
    error(
        app.post("/auth/validate", json!({"token": token}), Some(&token))
            .await,
        401,
    )
    .await;

    let got: Value = app
        .get(&format!("/users/{id}"), Some(&svc))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["email"], "frank@example.com");
    let res = app
        .get(&format!("/users/{}", uuid::Uuid::new_v4()), Some(&svc))
        .await;
    assert_eq!(error(res, 404).await, "User not found");
    let v: Value = app
        .post("/auth/validate", json!({"token": token}), Some(&svc))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["user"]["id"], user["id"]);
    error(
        app.post("/auth/validate", json!({"token": "garbage"}), Some(&svc))
            .await,
        401,
    )
    .await;

    let staff: Vec<Value> = app
        .get("/users?roles=AGENT,ADMIN", Some(&svc))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(staff.len(), 2);
    assert_eq!(staff[0]["email"], "frank@example.com", "newest first");
    error(app.get("/users?roles=BOSS", Some(&svc)).await, 400).await;

    // Role change.
    let res = app
        .http
        .patch(app.url(&format!("/users/{id}/role")))
        .bearer_auth(&svc)
        .json(&json!({"role": "BOSS"}))
        .send()
        .await
        .unwrap();
    error(res, 400).await;
    let res = app
        .http
        .patch(app.url(&format!("/users/{id}/role")))
        .bearer_auth(&svc)
        .json(&json!({"role": "USER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["role"], "USER");
    let env = app.event_where("user.role_changed", |_| true).await;
    assert_eq!(env.payload["oldRole"], "AGENT");
    assert_eq!(env.payload["newRole"], "USER");

    // The last admin can be neither demoted nor deleted.
    let admins: Vec<Value> = app
        .get("/users?roles=ADMIN", Some(&svc))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(admins[0]["email"], ADMIN_EMAIL);
    let admin_id = admins[0]["id"].as_str().unwrap();
    let res = app
        .http
        .patch(app.url(&format!("/users/{admin_id}/role")))
        .bearer_auth(&svc)
        .json(&json!({"role": "AGENT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error(res, 400).await,
        "Cannot demote the last administrator"
    );
    let res = app
        .http
        .delete(app.url(&format!("/users/{admin_id}")))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    error(res, 400).await;

    // Deletion: event, and the deleted user's token stops working.
    let res = app
        .http
        .delete(app.url(&format!("/users/{id}")))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "User deleted successfully"
    );
    let env = app.event_where("user.deleted", |_| true).await;
    assert_eq!(env.aggregate_id, id);
    error(app.get("/auth/me", Some(&token)).await, 401).await;
    let res = app
        .http
        .delete(app.url(&format!("/users/{id}")))
        .bearer_auth(&svc)
        .send()
        .await
        .unwrap();
    error(res, 404).await;
    app.stop().await;
}

/// Security review, item 11: internal routes are scoped by caller. Any service's credential used
/// to change roles and delete users; only admin-service's does now.
#[tokio::test]
async fn only_admin_service_administers_users() {
    let app = spawn().await;
    let (user, _) = app.signup("scoped@example.com", "secret12").await;
    let id = user["id"].as_str().unwrap();
    let ticket = app.keys.service_token("ticket-service");
    let http = &app.http;
    let res = http
        .patch(app.url(&format!("/users/{id}/role")))
        .bearer_auth(&ticket)
        .json(&json!({"role": "ADMIN"}))
        .send()
        .await
        .unwrap();
    let msg = error(res, 403).await;
    assert!(msg.contains("ticket-service"), "{msg}");
    let res = http
        .delete(app.url(&format!("/users/{id}")))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        app.get(&format!("/users/{id}"), Some(&ticket))
            .await
            .status(),
        403
    );
    let admin = app.service_token();
    assert_eq!(
        app.get(&format!("/users/{id}"), Some(&admin))
            .await
            .status(),
        200
    );
    app.stop().await;
}
