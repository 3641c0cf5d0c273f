//! The legacy monolith's API, end to end over HTTP against the real PostgreSQL that
//! `scripts/services` starts: every endpoint, the error cases, the WebSocket rooms and the login +
//! JWKS round trip. Each test owns its database and its in-process monolith.

mod auth;
mod documents;
mod errors;
mod people;
mod realtime;
mod tasks;

use reqwest::StatusCode;
use serde_json::Value;

/// Asserts the JSON error shape every 4xx promises, and returns the error object.
pub async fn expect_error(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let got = response.status();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(got, status, "status; body: {body}");
    assert_eq!(body["error"]["code"], code, "error code; body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error message; body: {body}"
    );
    body["error"].clone()
}
