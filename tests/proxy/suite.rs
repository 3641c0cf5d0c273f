// The proxy's behaviour tests, included by `tests/proxy/main.rs` (the lean HTTP/1 path) and
// `tests/proxy_hyper/main.rs` (hyper for every connection), each of which defines `HTTP1`:
// one set of tests, run against both paths. The `#[path]`s let both targets find the modules.

#[path = "../proxy/attacks.rs"]
mod attacks;
#[path = "../proxy/authz.rs"]
mod authz;
#[path = "../proxy/canary.rs"]
mod canary;
#[path = "../proxy/cli.rs"]
mod cli;
#[path = "../proxy/connections.rs"]
mod connections;
#[path = "../proxy/fallback.rs"]
mod fallback;
#[path = "../proxy/limits.rs"]
mod limits;
#[path = "../proxy/metrics.rs"]
mod metrics;
#[path = "../proxy/reload.rs"]
mod reload;
#[path = "../proxy/routing.rs"]
mod routing;
#[path = "../proxy/shadow.rs"]
mod shadow;
#[path = "../proxy/streaming.rs"]
mod streaming;
#[path = "../proxy/tls.rs"]
mod tls;
#[path = "../proxy/websocket.rs"]
mod websocket;

use ficus_proxy::ServerSettings;
use ficus_testkit::{TestProxy, TestUpstream};
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

/// Starts the proxy under test on the suite's HTTP/1 path ([`HTTP1`]).
pub async fn start_proxy(routes: &str) -> TestProxy {
    start_proxy_with(routes, ServerSettings::default()).await
}

/// Starts the proxy under test with `settings`, on the suite's HTTP/1 path ([`HTTP1`]).
pub async fn start_proxy_with(routes: &str, settings: ServerSettings) -> TestProxy {
    TestProxy::start_with(
        routes,
        ServerSettings {
            http1: HTTP1,
            ..settings
        },
    )
    .await
}
