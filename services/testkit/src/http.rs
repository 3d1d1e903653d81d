//! Calling a service over HTTP in a test: one request helper, the response as status, headers and
//! JSON, and the contract's error shape checked in one place.

use std::time::Duration;

use reqwest::{Client, Method, Response};
use serde_json::Value;

/// A client that gives up after 20 s (a hung service fails the test instead of hanging it).
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
}

/// A response: status, headers and JSON body (`Null` when empty, a string when not JSON).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The error shape's `message` (empty when absent).
    pub fn message(&self) -> String {
        self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Asserts `status` and the contract's error shape; returns the message.
    pub fn error(&self, status: u16) -> String {
        assert_eq!(self.status, status, "status of {}", self.body);
        assert_error_shape(&self.body, status);
        self.message()
    }
}

/// Sends `method url` with an optional bearer token and JSON body.
pub async fn call(
    http: &Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Resp {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("the request reaches the service");
    read(res).await
}

/// Reads a response into a [`Resp`].
pub async fn read(res: Response) -> Resp {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("the response body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Resp {
        status,
        headers,
        body,
    }
}

/// Asserts `status` and the contract's error shape (`statusCode`, `error`, `message`); returns
/// the message.
pub async fn error(res: Response, status: u16) -> String {
    read(res).await.error(status)
}

/// Asserts the contract's error shape of `body` for `status`.
pub fn assert_error_shape(body: &Value, status: u16) {
    assert_eq!(body["statusCode"], status, "statusCode in {body}");
    assert!(body["error"].is_string(), "error reason in {body}");
    assert!(body["message"].is_string(), "message in {body}");
}
