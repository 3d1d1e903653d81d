//! The contract's error shape: `{"statusCode": 400, "message": "...", "error": "Bad Request"}`.
//!
//! 4xx errors carry the user-facing message; 5xx details are logged and hidden.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

/// PostgreSQL errors that only a value from the request can cause (a NUL character, a time or
/// number out of range): the extractors and checks refuse these first, naming the field; this is
/// the backstop for a value they do not know about, so it is a 400 and not a 500.
const INPUT_DATA_ERRORS: [&str; 4] = [
    "22021", // character_not_in_repertoire (NUL in text)
    "22P05", // untranslatable_character (\u0000 in jsonb)
    "22008", // datetime_field_overflow
    "22003", // numeric_value_out_of_range
];

/// A value the database refuses is the request's fault (400); a database that cannot be used
/// right now (unreachable, no connection within the pool's acquire timeout, restarting:
/// [`crate::db::is_unavailable`]) is a 503 with `Retry-After`; anything else is a 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(db) = e.as_database_error()
            && db
                .code()
                .is_some_and(|c| INPUT_DATA_ERRORS.contains(&c.as_ref()))
        {
            tracing::warn!(error = %e, "a value in the request was refused by the database");
            return ApiError::bad_request(
                "A value in the request is out of range or contains invalid characters",
            );
        }
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
///
/// Text that PostgreSQL cannot store is refused here, for every route at once: a string (or key)
/// with a NUL character (`\u0000`) anywhere in the body is a 400 naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(mut value) =
            axum::Json::<serde_json::Value>::from_request(req, state).await?;
        // Unknown fields are ignored (the contract), whatever they hold.
        if let (Some(known), Some(map)) = (struct_fields::<T>(), value.as_object_mut()) {
            map.retain(|key, _| known.contains(&key.as_str()));
        }
        if let Some(field) = field_with_nul(&value, "") {
            return Err(nul_in(&field));
        }
        serde_path_to_error::deserialize(value)
            .map(ApiJson)
            // The field's path and serde's problem ("actorId: UUID parsing failed ...",
            // "missing field `email`").
            .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The field names of `T` when it deserializes from a struct (what `#[derive(Deserialize)]`
/// declares, after renaming), found without any input.
fn struct_fields<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{Deserializer, Error, Visitor};

    /// Answers every request with an error, remembering the fields a struct asked for.
    struct Probe<'a>(&'a std::cell::Cell<Option<&'static [&'static str]>>);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0.set(Some(fields));
            Err(Self::Error::custom("probed"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let fields = std::cell::Cell::new(None);
    let _ = T::deserialize(Probe(&fields));
    fields.get()
}

/// The error for a NUL character in `field`.
fn nul_in(field: &str) -> ApiError {
    ApiError::bad_request(format!("{field} must not contain NUL characters"))
}

/// A name to show for a client-chosen key (printable, bounded).
fn shown(name: &str) -> String {
    let shown: String = name.escape_debug().take(100).collect();
    if shown.is_empty() {
        "(empty name)".into()
    } else {
        shown
    }
}

/// The path (`title`, `metadata.note`, `items[2]`) of the first string or key holding a NUL.
fn field_with_nul(value: &serde_json::Value, at: &str) -> Option<String> {
    let join = |key: &str| {
        if at.is_empty() {
            shown(key)
        } else {
            format!("{at}.{}", shown(key))
        }
    };
    match value {
        serde_json::Value::String(s) => s.contains('\0').then(|| {
            if at.is_empty() {
                "body".to_string()
            } else {
                at.to_string()
            }
        }),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| {
            field_with_nul(
                v,
                &format!("{}[{i}]", if at.is_empty() { "body" } else { at }),
            )
        }),
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(k))
            } else {
                field_with_nul(v, &join(k))
            }
        }),
        _ => None,
    }
}

/// `axum::extract::Path` with contract-shaped rejections (a malformed id is a 400, never a 500;
/// a segment with a NUL character is a 400 naming the parameter).
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|r| {
                ApiError::bad_request(format!("Invalid path parameter: {}", r.body_text()))
            })?;
        if let Some((name, _)) = raw.iter().find(|(_, value)| value.contains('\0')) {
            return Err(nul_in(&shown(name)));
        }
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `axum::extract::Query` with contract-shaped rejections; a parameter with a NUL character is a
/// 400 naming it.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let known = struct_fields::<T>();
        if let Ok(axum::extract::Query(pairs)) =
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            && let Some((name, _)) = pairs.iter().find(|(name, value)| {
                // Unknown parameters are ignored, whatever they hold.
                known.is_none_or(|known| known.contains(&name.as_str()))
                    && (name.contains('\0') || value.contains('\0'))
            })
        {
            return Err(nul_in(&shown(name)));
        }
        let axum::extract::Query(value) = axum::extract::Query::<T>::try_from_uri(&parts.uri)?;
        Ok(ApiQuery(value))
    }
}

/// Whether a time can be stored and compared by the platform: years 1 to 9999, the range of
/// RFC 3339 (PostgreSQL's `timestamptz` fails on years before 4713 BC, which chrono accepts).
pub fn timestamp_in_range(t: &DateTime<Utc>) -> bool {
    (1..=9999).contains(&t.year())
}

/// Checks a time given by the client; the error names the field.
pub fn check_timestamp(field: &str, value: Option<&DateTime<Utc>>) -> ApiResult<()> {
    match value {
        Some(t) if !timestamp_in_range(t) => Err(ApiError::bad_request(format!(
            "{field} must be a time between the years 1 and 9999"
        ))),
        _ => Ok(()),
    }
}

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

/// A pragmatic email check (one `@`, a non-empty local part, a dotted domain, no spaces): the
/// contract's, so the operator refuses exactly the addresses the services would.
pub use helpdesk_contract::is_valid_email;

#[cfg(test)]
mod tests;
