//! user-service routes over real HTTP with real PostgreSQL and RabbitMQ.

use crate::common;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, error, spawn, spawn_with};
use base64::Engine;
use serde_json::{Value, json};

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn signup_login_me_and_the_user_created_event() {
    let mut app = spawn().await;
    let (user, token) = app.signup("Ada@Example.com", "secret12").await;
    assert_eq!(user["email"], "Ada@Example.com");
    assert_eq!(user["role"], "AGENT", "default signup role");
    assert_eq!(user["firstName"], "Ada");
    assert!(user.get("passwordHash").is_none() && user.get("password").is_none());
    let c = claims(&token);
    assert_eq!(c["sub"], user["id"]);
    assert_eq!(c["email"], "Ada@Example.com");
    assert_eq!(c["role"], "AGENT");
    assert!(
        c["exp"].as_u64().unwrap() > c["iat"].as_u64().unwrap() + 6 * 86_400,
        "about 7 days"
    );

    let res = app.login("ada@example.COM", "secret12").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["role"], "AGENT");
    assert_eq!(body["user"]["id"], user["id"]);

    let me: Value = app
        .get("/auth/me", Some(&token))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "Ada@Example.com");

    // Exactly one user.created for Ada (the bootstrap admin's comes too).
    let env = app
        .event_where("user.created", |e| {
            e.payload["user"]["email"] == "Ada@Example.com"
        })
        .await;
    assert_eq!(env.aggregate_type, "user");
    assert_eq!(env.aggregate_id, user["id"].as_str().unwrap());
    assert_eq!(env.version, 1);
    assert_eq!(
        env.metadata.user_id.map(|u| u.to_string()).as_deref(),
        user["id"].as_str()
    );
    assert!(env.metadata.correlation_id.is_some());
    // The token states the account's revision, as its events do: a read model that has applied
    // less is behind the token.
    assert_eq!(c["rv"], env.payload["user"]["revision"], "{c}");
    app.assert_no_more_events().await;
    app.stop().await;
}

#[tokio::test]
async fn signup_validation_and_duplicate_email_in_another_case() {
    let app = spawn().await;
    app.signup("dup@example.com", "secret12").await;
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "DUP@example.com", "password": "secret12"}),
            None,
        )
        .await;
    assert_eq!(error(res, 409).await, "Email already exists");
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "not-an-email", "password": "secret12"}),
            None,
        )
        .await;
    assert!(error(res, 400).await.contains("email"));
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "short@example.com", "password": "12345"}),
            None,
        )
        .await;
    assert!(error(res, 400).await.contains("password"));
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "long@example.com", "password": "x".repeat(129)}),
            None,
        )
        .await;
    assert!(error(res, 400).await.contains("password"));
    let res = app
        .post("/auth/signup", json!({"password": "secret12"}), None)
        .await;
    assert!(
        error(res, 400).await.contains("email"),
        "missing field is named"
    );
    // Unknown fields are ignored.
    let res = app
        .post(
            "/auth/signup",
            json!({"email": "extra@example.com", "password": "secret12", "shoeSize": 44}),
            None,
        )
        .await;
    assert_eq!(res.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn malformed_oversized_and_unknown_requests_get_the_error_shape() {
    let app = spawn().await;
    let res = app
        .http
        .post(app.url("/auth/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error(res, 400).await, "Malformed JSON in request body");
    let big = json!({"email": "a@b.co", "password": "x".repeat(70_000)});
    let res = app.post("/auth/signup", big, None).await;
    assert_eq!(error(res, 413).await, "Request body is too large");
    let res = app.get("/no/such/route", None).await;
    error(res, 404).await;
    let res = app
        .http
        .delete(app.url("/auth/login"))
        .send()
        .await
        .unwrap();
    error(res, 405).await;
    let res = app
        .http
        .post(app.url("/auth/login"))
        .body("email=a")
        .send()
        .await
        .unwrap();
    error(res, 415).await;
    let res = app
        .get("/users/not-a-uuid", Some(&app.service_token()))
        .await;
    error(res, 400).await;
    app.stop().await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = spawn().await;
    let res = app
        .http
        .get(app.url("/health"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.get("/health", None).await;
    assert!(!res.headers()["x-request-id"].is_empty());
    let res = app.get("/nowhere", None).await;
    assert!(res.headers().contains_key("x-request-id"), "errors too");
    app.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_are_the_same_401_and_rate_limited() {
    let app = spawn_with(&[("USER_LOGIN_RATE_PER_ACCOUNT", "3")]).await;
    app.signup("bob@example.com", "secret12").await;
    // Only failures count: signing in with the right password again and again is never refused.
    for _ in 0..6 {
        assert_eq!(app.login("bob@example.com", "secret12").await.status(), 200);
    }
    let wrong = error(app.login("bob@example.com", "nope-nope").await, 401).await;
    let unknown = error(app.login("nobody@example.com", "nope-nope").await, 401).await;
    assert_eq!(wrong, "Invalid credentials");
    assert_eq!(unknown, wrong);
    app.login("bob@example.com", "nope-nope").await;
    app.login("bob@example.com", "nope-nope").await;
    let res = app.login("bob@example.com", "secret12").await;
    assert!(error(res, 429).await.contains("Too many"));
    app.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401() {
    let app = spawn().await;
    let (user, token) = app.signup("carol@example.com", "secret12").await;
    assert_eq!(
        error(app.get("/auth/me", None).await, 401).await,
        "Authentication required"
    );
    error(app.get("/auth/me", Some("not.a.jwt")).await, 401).await;
    let res = app
        .http
        .get(app.url("/auth/me"))
        .header("authorization", format!("Basic {token}"))
        .send()
        .await
        .unwrap();
    error(res, 401).await;
    // Signed by another key.
    let other = helpdesk_testkit::TestKeys::generate();
    let id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let forged = other
        .keys
        .issue_user_token(id, "carol@example.com", helpdesk_kit::auth::Role::Admin)
        .unwrap();
    error(app.get("/auth/me", Some(&forged)).await, 401).await;
    // alg: none.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","typ":"JWT"}"#),
        token.split('.').nth(1).unwrap()
    );
    error(app.get("/auth/me", Some(&none)).await, 401).await;
    // Expired.
    let expired_keys = helpdesk_kit::auth::JwtKeys::from_pem(
        &app.keys.public_pem,
        Some(&app.keys.private_pem),
        helpdesk_kit::auth::DEFAULT_ISSUER,
        std::time::Duration::ZERO,
    )
    .unwrap();
    let mut c = claims(
        &expired_keys
            .issue_user_token(id, "carol@example.com", helpdesk_kit::auth::Role::Agent)
            .unwrap(),
    );
    assert!(c["exp"].as_u64().is_some());
    c["exp"] = json!(1_000_000);
    let header = jsonwebtoken::Header {
        alg: jsonwebtoken::Algorithm::EdDSA,
        ..Default::default()
    };
    let expired = jsonwebtoken::encode(
        &header,
        &c,
        &jsonwebtoken::EncodingKey::from_ed_pem(app.keys.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    error(app.get("/auth/me", Some(&expired)).await, 401).await;
    // A service credential is not a user token.
    error(app.get("/auth/me", Some(&app.service_token())).await, 401).await;
    app.stop().await;
}

#[tokio::test]
async fn change_password() {
    let mut app = spawn().await;
    let (_, token) = app.signup("dave@example.com", "secret12").await;
    let res = app
        .post(
            "/auth/change-password",
            json!({"oldPassword": "wrong-one", "newPassword": "newsecret1"}),
            Some(&token),
        )
        .await;
    assert_eq!(error(res, 400).await, "Current password is incorrect");
    let res = app
        .post(
            "/auth/change-password",
            json!({"oldPassword": "secret12", "newPassword": "123"}),
            Some(&token),
        )
        .await;
    assert!(error(res, 400).await.contains("newPassword"));
    let res = app
        .post(
            "/auth/change-password",
            json!({"oldPassword": "secret12", "newPassword": "newsecret1"}),
            Some(&token),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Password changed successfully"
    );
    error(app.login("dave@example.com", "secret12").await, 401).await;
    assert_eq!(
        app.login("dave@example.com", "newsecret1").await.status(),
        200
    );
    let env = app
        .event_where("user.updated", |e| {
            e.payload["user"]["email"] == "dave@example.com"
        })
        .await;
    assert_eq!(env.payload["changes"], json!(["password"]));
    assert!(
        !env.payload.to_string().contains("argon2"),
        "no hash in events"
    );
    error(
        app.post(
            "/auth/change-password",
            json!({"oldPassword": "a", "newPassword": "bbbbbbbb"}),
            None,
        )
        .await,
        401,
    )
    .await;
    app.stop().await;
}

#[tokio::test]
async fn bootstrap_admin_and_jwks() {
    let app = spawn().await;
    let res = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["role"], "ADMIN");
    let jwks: Value = app
        .get("/.well-known/jwks.json", None)
        .await
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    // The published key verifies the token.
    let decoding =
        jsonwebtoken::DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["helpdesk"]);
    let decoded =
        jsonwebtoken::decode::<Value>(body["token"].as_str().unwrap(), &decoding, &v).unwrap();
    assert_eq!(decoded.claims["role"], "ADMIN");
    // A second start finds the admin and creates no other.
    let cfg_count: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'ADMIN'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(cfg_count, 1);
    let docs = app.get("/api/openapi.json", None).await;
    assert_eq!(docs.status(), 200);
    let spec: Value = docs.json().await.unwrap();
    assert!(spec["paths"]["/auth/login"].is_object());
    assert_eq!(app.get("/api/docs/", None).await.status(), 200);
    let health: Value = app.get("/health", None).await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(app.get("/ready", None).await.status(), 200);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("helpdesk_http_requests_total"),
        "{metrics}"
    );
    app.stop().await;
}

/// Security review, High 1, made deterministic: a password change reads the account, hashes
/// (tens of milliseconds), then writes. A demotion that commits in between must not be undone
/// in the read models by the `user.updated` it publishes: the event carries the row as the
/// password change wrote it (the current role) and a revision newer than the demotion's.
#[tokio::test]
async fn a_password_change_racing_a_demotion_announces_the_demoted_role() {
    let mut app = spawn().await;
    let res = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let id: uuid::Uuid = body["user"]["id"].as_str().unwrap().parse().unwrap();

    // Hold the row so the password change blocks right before its write.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *blocker)
        .await
        .unwrap();
    let change = {
        let (http, url, token) = (
            app.http.clone(),
            app.url("/auth/change-password"),
            token.clone(),
        );
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"oldPassword": ADMIN_PASSWORD, "newPassword": "another-secret-2"}))
                .send()
                .await
                .unwrap()
                .status()
        })
    };
    let pool = app.pool.clone();
    helpdesk_testkit::eventually(
        std::time::Duration::from_secs(20),
        "the password change waiting for the row lock",
        || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                 AND query LIKE 'UPDATE users SET password_hash%'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
            (waiting > 0).then_some(())
        },
    )
    .await;
    // The demotion commits while the password change is past its read.
    let demoted_revision: i64 = sqlx::query_scalar(
        "UPDATE users SET role = 'USER', revision = revision + 1 WHERE id = $1 RETURNING revision",
    )
    .bind(id)
    .fetch_one(&mut *blocker)
    .await
    .unwrap();
    blocker.commit().await.unwrap();
    assert_eq!(change.await.unwrap(), 200);

    let env = app
        .event_where("user.updated", |e| e.payload["user"]["id"] == json!(id))
        .await;
    assert_eq!(env.payload["user"]["role"], "USER", "{}", env.payload);
    assert!(
        env.payload["user"]["revision"].as_i64().unwrap() > demoted_revision,
        "{}",
        env.payload
    );
    app.stop().await;
}

/// Security review, item 4: 40 concurrent wrong-password logins for one account all got 401 and
/// none 429, because failures were counted only after hashing. Attempts are now reserved before
/// the hash: with a limit of 5 per account, at most 5 of them reach the password check.
#[tokio::test]
async fn concurrent_wrong_passwords_cannot_escape_the_login_limit() {
    let app = spawn_with(&[
        ("USER_LOGIN_RATE_PER_ACCOUNT", "5"),
        ("USER_LOGIN_RATE_PER_IP", "0"),
    ])
    .await;
    app.signup("target@example.com", "right-password-1").await;
    let attempts = (0..40).map(|i| {
        let (http, url) = (app.http.clone(), app.url("/auth/login"));
        async move {
            http.post(url)
                .json(&json!({"email": "target@example.com", "password": format!("wrong-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(unauthorized + limited, 40, "{statuses:?}");
    assert!(
        unauthorized <= 5,
        "at most the allowance is tried: {statuses:?}"
    );
    assert!(limited >= 35, "{statuses:?}");
    // The right password is refused too while the account is blocked (no oracle).
    let res = app.login("target@example.com", "right-password-1").await;
    assert_eq!(res.status(), 429);
    app.stop().await;
}

/// Security review, item 5 (contract): after a password change every other session's token is
/// refused; the one that made the change stays signed in; the event carries the sessions.
#[tokio::test]
async fn a_password_change_ends_every_other_session() {
    let mut app = spawn().await;
    let (_, first) = app.signup("sessions@example.com", "old-password-1").await;
    let login = |app: &common::TestApp| {
        let (http, url) = (app.http.clone(), app.url("/auth/login"));
        async move {
            let v: Value = http
                .post(url)
                .json(&json!({"email": "sessions@example.com", "password": "old-password-1"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["token"].as_str().unwrap().to_string()
        }
    };
    let second = login(&app).await;
    assert_ne!(
        claims(&first)["sid"],
        claims(&second)["sid"],
        "one session per sign-in"
    );
    let res = app
        .post(
            "/auth/change-password",
            json!({"oldPassword": "old-password-1", "newPassword": "new-password-2"}),
            Some(&second),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.get("/auth/me", Some(&second)).await.status(),
        200,
        "the changing session stays"
    );
    let msg = error(app.get("/auth/me", Some(&first)).await, 401).await;
    assert!(msg.contains("sign in again"), "{msg}");
    let res = app.login("sessions@example.com", "new-password-2").await;
    assert_eq!(res.status(), 200);
    let fresh: Value = res.json().await.unwrap();
    let fresh = fresh["token"].as_str().unwrap();
    assert_eq!(app.get("/auth/me", Some(fresh)).await.status(), 200);
    let env = app
        .event_where("user.updated", |e| {
            e.payload["user"]["email"] == "sessions@example.com"
        })
        .await;
    assert_eq!(env.payload["user"]["tokenEpoch"], 1);
    assert_eq!(env.payload["user"]["keptSession"], claims(&second)["sid"]);
    app.stop().await;
}

/// Changing the default argon2id parameters locks nobody out, and moves each account to the new
/// ones at its next login: the stored hash is replaced, the sessions stay, a wrong password
/// changes nothing.
#[tokio::test]
async fn a_login_moves_a_hash_of_older_parameters_to_the_current_ones() {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher as _, Version};
    let app = spawn().await; // configured: m = 1024 KiB, t = 1
    let (user, token) = app.signup("older@example.com", "secret12").await;
    let id: uuid::Uuid = user["id"].as_str().unwrap().parse().unwrap();
    // As an earlier release stored it, with other parameters.
    let old = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(512, 2, 1, None).unwrap(),
    )
    .hash_password(b"secret12")
    .unwrap()
    .to_string();
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(&old)
        .execute(&app.pool)
        .await
        .unwrap();
    let stored = || async {
        sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };

    assert_eq!(
        app.login("older@example.com", "secret13").await.status(),
        401
    );
    assert_eq!(stored().await, old, "a wrong password changes nothing");

    assert_eq!(
        app.login("older@example.com", "secret12").await.status(),
        200
    );
    let new = stored().await;
    assert!(
        new.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
        "the login stored a hash of the current parameters: {new}"
    );
    assert_eq!(
        app.login("older@example.com", "secret12").await.status(),
        200
    );
    assert_eq!(stored().await, new, "a current hash stays as it is");
    assert_eq!(
        app.login("older@example.com", "secret1").await.status(),
        401
    );
    assert_eq!(
        app.get("/auth/me", Some(&token)).await.status(),
        200,
        "moving the hash ends no session"
    );
    app.stop().await;
}
