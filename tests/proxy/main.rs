//! The routing proxy end to end: real listeners, real upstreams on loopback, the routes file on
//! disk and watched live.

mod attacks;
mod authz;
mod canary;
mod cli;
mod connections;
mod fallback;
mod limits;
mod metrics;
mod reload;
mod routing;
mod shadow;
mod streaming;
mod tls;
mod websocket;

use ficus_testkit::TestUpstream;
use serde_json::Value;

/// A routes file over a monolith and a people upstream, with `routes` appended.
pub fn routes_file(monolith: &str, people: &str, routes: &str) -> String {
    format!(
        r#"
[proxy]
default = "monolith"
expose_headers = true

[upstreams.monolith]
url = "{monolith}"

[upstreams.people]
url = "{people}"
connect_timeout_ms = 500
{routes}
"#
    )
}

/// Two upstreams, `monolith` and `people`.
pub async fn upstreams() -> (TestUpstream, TestUpstream) {
    (
        TestUpstream::start("monolith").await,
        TestUpstream::start("people").await,
    )
}

/// GET through the proxy; returns (status, upstream name from `x-upstream`, side, body JSON or
/// Null).
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String, Value) {
    let response = client.get(url).send().await.expect("a response");
    let status = response.status().as_u16();
    let upstream = header(&response, "x-upstream");
    let side = header(&response, "x-ficus-side");
    let body = response.json().await.unwrap_or(Value::Null);
    (status, upstream, side, body)
}

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
