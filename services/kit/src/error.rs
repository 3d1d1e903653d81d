//! The contract's error shape: `{"statusCode": 400, "message": "...", "error": "Bad Request"}`.
//!
//! 4xx errors carry the user-facing message; 5xx details are logged and hidden.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

/// An HTTP error in the contract's shape.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Logged, never sent to the client.
    pub detail: Option<String>,
    /// Seconds the client should wait before trying again (`Retry-After`); set on 503s.
    pub retry_after: Option<u32>,
}

/// The `Retry-After` of a 503: a dependency (the database, a peer) is down for now, and the
/// platform recovers by itself within seconds of its return.
pub const RETRY_AFTER_SECS: u32 = 1;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status_code: u16,
    message: &'a str,
    error: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            detail: None,
            retry_after: (status == StatusCode::SERVICE_UNAVAILABLE).then_some(RETRY_AFTER_SECS),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn too_many_requests(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// A server-side failure: the detail is logged, the client sees a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "Internal server error".into(),
            detail: Some(detail.to_string()),
            retry_after: None,
        }
    }
    /// The database (or another dependency) cannot be used right now: 503 with `Retry-After`,
    /// the detail logged.
    pub fn dependency_down(detail: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(detail.to_string()),
            ..Self::unavailable("Temporarily unavailable, please try again shortly")
        }
    }
}

/// Renders an error body in the contract's shape.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    let body = ErrorBody {
        status_code: status.as_u16(),
        message,
        error: status.canonical_reason().unwrap_or("Error"),
    };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = self.status.as_u16(), detail = ?self.detail, "request failed");
        }
        let mut res = error_response(self.status, &self.message);
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

/// A database that cannot be used right now (unreachable, no connection within the pool's
/// acquire timeout, restarting: [`crate::db::is_unavailable`]) is a 503 with `Retry-After`, not
/// the request's fault and not a bug; any other database error is a 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            ApiError::dependency_down(format!("database: {e}"))
        } else {
            ApiError::internal(format!("database: {e}"))
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        let unavailable = e
            .chain()
            .filter_map(|cause| cause.downcast_ref::<sqlx::Error>())
            .any(crate::db::is_unavailable);
        if unavailable {
            ApiError::dependency_down(format!("{e:#}"))
        } else {
            ApiError::internal(format!("{e:#}"))
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => {
                // serde names the field and the problem ("missing field `email`", "invalid type ...").
                let inner = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| e.body_text());
                ApiError::bad_request(format!("Invalid request body: {inner}"))
            }
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("Malformed JSON in request body")
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Expected a JSON body with Content-Type: application/json",
            ),
            JsonRejection::BytesRejection(e) => {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
                } else {
                    ApiError::bad_request("Could not read request body")
                }
            }
            other => ApiError::new(other.status(), other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("Invalid path parameter: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("Invalid query parameter: {}", r.body_text()))
    }
}

/// `axum::Json` whose rejections are [`ApiError`]s in the contract's shape.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` with contract-shaped rejections (a malformed id is a 400, never a 500).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with contract-shaped rejections.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Checks a trimmed text's length in characters; the error names the field.
pub fn check_length(field: &str, value: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = value.chars().count();
    if n < min {
        if min == 1 {
            return Err(ApiError::bad_request(format!(
                "{field} should not be empty"
            )));
        }
        return Err(ApiError::bad_request(format!(
            "{field} must be at least {min} characters"
        )));
    }
    if n > max {
        return Err(ApiError::bad_request(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(())
}

/// A pragmatic email check: one `@`, a non-empty local part, a dotted domain, no spaces.
pub fn is_valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
}

#[cfg(test)]
mod tests {
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
}
