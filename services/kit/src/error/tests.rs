use super::*;

#[test]
fn emails() {
    assert!(is_valid_email("a@b.co"));
    assert!(is_valid_email("first.last+tag@example.com"));
    assert!(!is_valid_email("nope"));
    assert!(!is_valid_email("a@b"));
    assert!(!is_valid_email("a b@c.com"));
    assert!(!is_valid_email("@c.com"));
    assert!(!is_valid_email("a@@c.com"));
}

async fn parts(e: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
    let res = e.into_response();
    let status = res.status();
    let retry = res
        .headers()
        .get(axum::http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let body = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, retry, serde_json::from_slice(&body).unwrap())
}

/// Reliability, item 2: a database that cannot be used is a 503 with `Retry-After` in the
/// contract's shape; an error of the statement itself stays a 500.
#[tokio::test]
async fn an_unavailable_database_is_a_503_with_retry_after() {
    let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    for e in [sqlx::Error::PoolTimedOut, sqlx::Error::Io(io())] {
        let (status, retry, body) = parts(ApiError::from(e)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["statusCode"], 503);
        assert_eq!(body["error"], "Service Unavailable");
        assert!(body["message"].as_str().unwrap().contains("try again"));
    }
    // Through anyhow's context too.
    let wrapped = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("loading the ticket");
    assert_eq!(
        parts(ApiError::from(wrapped)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (status, retry, body) = parts(ApiError::from(sqlx::Error::RowNotFound)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(retry, None);
    assert_eq!(body["message"], "Internal server error");
    // Every 503 tells the client when to come back.
    let (_, retry, _) = parts(ApiError::unavailable("peer down")).await;
    assert_eq!(retry.as_deref(), Some("1"));
}

/// Security review, item 9: NUL characters (which PostgreSQL cannot store) are refused by
/// the extractors, for every route, with a 400 naming the field.
#[tokio::test]
async fn extractors_refuse_nul_characters_naming_the_field() {
    use axum::body::Body;
    use axum::routing::{get, post};
    use tower::ServiceExt;

    #[derive(serde::Deserialize)]
    struct Body1 {
        #[allow(dead_code)]
        title: String,
        #[allow(dead_code)]
        meta: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Q {
        #[allow(dead_code)]
        q: Option<String>,
    }
    let app = axum::Router::new()
        .route("/json", post(|ApiJson(_): ApiJson<Body1>| async { "ok" }))
        .route("/query", get(|ApiQuery(_): ApiQuery<Q>| async { "ok" }))
        .route(
            "/path/{kind}/{id}",
            get(|ApiPath(_): ApiPath<(String, String)>| async { "ok" }),
        );
    let call = |req: axum::http::Request<Body>| {
        let app = app.clone();
        async move {
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&bytes).to_string();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(text);
            (status, message)
        }
    };
    let json = |body: &str| {
        axum::http::Request::post("/json")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let get_ = |uri: &str| axum::http::Request::get(uri).body(Body::empty()).unwrap();
    for (req, field) in [
        (
            json(r#"{"title": "a\u0000b"}"#),
            "title must not contain NUL",
        ),
        (
            json(r#"{"title": "ok", "meta": {"list": ["x", "\u0000"]}}"#),
            "meta.list[1] must not",
        ),
        (
            json(r#"{"title": "ok", "meta": {"k\u0000": 1}}"#),
            "meta.k\\0 must not",
        ),
        (get_("/query?q=a%00b"), "q must not contain NUL"),
        (get_("/path/ticket/a%00b"), "id must not contain NUL"),
    ] {
        let (status, message) = call(req).await;
        assert_eq!(status, 400, "{message}");
        assert!(
            message.contains(field),
            "{message:?} should contain {field:?}"
        );
    }
    assert_eq!(
        call(json(r#"{"title": "a\\u0000"}"#)).await.0,
        200,
        "an escaped backslash is text"
    );
    assert_eq!(call(get_("/query?q=fine")).await.0, 200);
    assert_eq!(
        call(get_("/query?unknown=a%00b")).await.0,
        200,
        "unknown parameters are ignored"
    );
    assert_eq!(
        call(json(r#"{"title": "ok", "unknown\u0000": "\u0000"}"#))
            .await
            .0,
        200,
        "unknown fields are ignored"
    );
    assert_eq!(call(get_("/path/ticket/42")).await.0, 200);
    let (status, message) = call(json(r#"{"meta": 1}"#)).await;
    assert_eq!(status, 400);
    assert!(message.contains("missing field `title`"), "{message}");
    let (status, message) = call(json(r#"{"title": 1}"#)).await;
    assert_eq!(status, 400);
    assert!(message.contains("title: invalid type"), "{message}");
}

#[test]
fn timestamps_outside_the_years_1_to_9999_are_refused() {
    let t = |s: &str| serde_json::from_value::<DateTime<Utc>>(serde_json::json!(s)).unwrap();
    assert!(check_timestamp("from", Some(&t("2026-01-01T00:00:00Z"))).is_ok());
    assert!(check_timestamp("from", None).is_ok());
    let err = check_timestamp("from", Some(&t("-10000-01-01T00:00:00Z"))).unwrap_err();
    assert_eq!(err.status, 400);
    assert!(err.message.contains("from"));
}

#[test]
fn lengths_name_the_field() {
    assert!(
        check_length("title", "", 1, 200)
            .unwrap_err()
            .message
            .contains("title")
    );
    assert!(check_length("title", &"x".repeat(201), 1, 200).is_err());
    assert!(check_length("title", "ok", 1, 200).is_ok());
}
