//! The proxy's per-request metrics count the right side: answers ficus makes itself are the
//! `proxy`'s, a fallback's failed first attempt is the extracted side's, the answer the client got
//! is whoever made it. Each test reads the exact series before and after, so that counting on
//! the wrong side fails it.

use ficus_testkit::upstream::refused_addr;
use ficus_testkit::{TestProxy, TestUpstream};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::{header, routes_file, upstreams};

const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!";

async fn scrape(proxy: &TestProxy) -> String {
    reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one series, `name{labels}` exactly as encoded. Every per-route series exists
/// from the moment the table is compiled, so a missing one fails the test.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

fn requests(text: &str, route: &str, side: &str, status: &str) -> f64 {
    value(
        text,
        &format!(
            r#"ficus_proxy_requests_total{{route="{route}",side="{side}",status="{status}"}}"#
        ),
    )
}

fn observed(text: &str, route: &str, side: &str) -> f64 {
    value(
        text,
        &format!(r#"ficus_proxy_request_duration_seconds_count{{route="{route}",side="{side}"}}"#),
    )
}

fn upstream_errors(text: &str, route: &str, side: &str, kind: &str) -> f64 {
    value(
        text,
        &format!(
            r#"ficus_proxy_upstream_errors_total{{route="{route}",side="{side}",kind="{kind}"}}"#
        ),
    )
}

fn fallbacks(text: &str, route: &str, reason: &str) -> f64 {
    value(
        text,
        &format!(r#"ficus_proxy_fallbacks_total{{route="{route}",reason="{reason}"}}"#),
    )
}

fn decisions(text: &str, route: &str, decision: &str, reason: &str) -> f64 {
    value(
        text,
        &format!(
            r#"ficus_proxy_authz_decisions_total{{route="{route}",decision="{decision}",reason="{reason}"}}"#
        ),
    )
}

/// A routes file with `[auth]` (HS256, the secret in a file), a monolith and a people
/// upstream: `people` needs `people:read`, `open` is public, `closed` is denied to everyone,
/// anything else needs a valid token.
fn auth_file(monolith: &TestUpstream, people: &TestUpstream) -> String {
    let dir =
        std::env::temp_dir().join(format!("ficus-metrics-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    format!(
        r#"
[proxy]
default = "monolith"
expose_headers = true
max_header_bytes = 4096

[auth]
issuer = "https://idp.example"
audience = ["ficus"]
algorithms = ["HS256"]
hs256_secret_file = "{secret}"
default = "authenticated"

[upstreams.monolith]
url = "{monolith}"
[upstreams.people]
url = "{people}"

[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
max_body_bytes = 1024
auth = {{ require = ["people:read"] }}

[[route]]
name = "open"
path = "/open/*"
auth = {{ public = true }}

[[route]]
name = "closed"
path = "/closed/*"
auth = {{ deny = true }}
"#,
        secret = secret_file.display(),
        monolith = monolith.url(),
        people = people.url(),
    )
}

fn token(scope: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({
            "iss": "https://idp.example", "aud": "ficus", "sub": "u1", "scope": scope,
            "iat": now, "exp": now + 600,
        }),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn answers_ficus_makes_itself_are_counted_on_the_proxy_side() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&auth_file(&monolith, &people)).await;
    let http = reqwest::Client::new();
    let bearer = format!("Bearer {}", token("people:read"));

    let before = scrape(&proxy).await;
    for side in ["monolith", "extracted", "proxy"] {
        for class in ["2xx", "4xx", "5xx"] {
            assert_eq!(requests(&before, "people", side, class), 0.0);
        }
    }

    // 401 (no token), 413 (declared body over the route's limit), 431 (headers over the
    // proxy's limit): ficus's answers, on the route the request matched.
    let refused = http.get(proxy.url("/api/people/1")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(header(&refused, "x-ficus-side"), "proxy");
    let too_large = http
        .put(proxy.url("/api/people/1"))
        .header("authorization", &bearer)
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(too_large.status(), 413);
    assert_eq!(header(&too_large, "x-ficus-side"), "proxy");
    let headers = http
        .get(proxy.url("/api/people/1"))
        .header("x-big", "h".repeat(5000))
        .send()
        .await
        .unwrap();
    assert_eq!(headers.status(), 431);

    // An answer the extracted side made.
    let served = http
        .get(proxy.url("/api/people/1"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(header(&served, "x-ficus-side"), "extracted");
    // A 5xx the extracted side made (passed on: its own).
    let failed = http
        .get(proxy.url("/api/people/1?people.status=503"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 503);
    assert_eq!(header(&failed, "x-ficus-side"), "extracted");

    let after = scrape(&proxy).await;
    assert_eq!(requests(&after, "people", "proxy", "4xx"), 3.0);
    assert_eq!(requests(&after, "people", "monolith", "4xx"), 0.0);
    assert_eq!(requests(&after, "people", "extracted", "4xx"), 0.0);
    assert_eq!(requests(&after, "people", "extracted", "2xx"), 1.0);
    assert_eq!(requests(&after, "people", "extracted", "5xx"), 1.0);
    assert_eq!(requests(&after, "people", "proxy", "5xx"), 0.0);
    assert_eq!(monolith.hits(), 0, "the monolith was never asked");
    assert_eq!(people.hits(), 2);
}

#[tokio::test]
async fn a_gateway_error_ficus_makes_is_the_proxys_not_the_sides() {
    let monolith = TestUpstream::start("monolith").await;
    let dead = format!("http://{}", refused_addr());
    let routes = r#"
[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &dead, routes)).await;
    let response = reqwest::get(proxy.url("/api/people/1")).await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(header(&response, "x-ficus-side"), "proxy");
    let text = scrape(&proxy).await;
    assert_eq!(requests(&text, "people", "proxy", "5xx"), 1.0);
    assert_eq!(requests(&text, "people", "extracted", "5xx"), 0.0);
    assert_eq!(requests(&text, "people", "monolith", "5xx"), 0.0);
    assert_eq!(
        upstream_errors(&text, "people", "extracted", "connect"),
        1.0
    );
    assert_eq!(upstream_errors(&text, "people", "monolith", "connect"), 0.0);
}

#[tokio::test]
async fn durations_are_observed_for_whoever_answered() {
    let (monolith, people) = upstreams().await;
    let routes = r#"
[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
timeout_ms = 300
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), routes)).await;
    let http = reqwest::Client::new();
    let before = scrape(&proxy).await;
    for side in ["monolith", "extracted", "proxy"] {
        assert_eq!(observed(&before, "people", side), 0.0);
        assert_eq!(observed(&before, "default", side), 0.0);
    }

    // The extracted side answers; then it is too slow and ficus answers 504.
    assert_eq!(
        http.get(proxy.url("/api/people/1"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(proxy.url("/api/people/1?delay_ms=2000"))
            .send()
            .await
            .unwrap()
            .status(),
        504
    );
    // The default route: the monolith answers.
    assert_eq!(
        http.get(proxy.url("/elsewhere"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let after = scrape(&proxy).await;
    assert_eq!(observed(&after, "people", "extracted"), 1.0);
    assert_eq!(observed(&after, "people", "proxy"), 1.0);
    assert_eq!(observed(&after, "people", "monolith"), 0.0);
    assert_eq!(observed(&after, "default", "monolith"), 1.0);
    assert_eq!(observed(&after, "default", "proxy"), 0.0);
    // The 504 took the route's timeout: its observation is in the proxy's sum, not a side's.
    let proxy_sum = value(
        &after,
        r#"ficus_proxy_request_duration_seconds_sum{route="people",side="proxy"}"#,
    );
    assert!(proxy_sum >= 0.3, "{proxy_sum}");
}

#[tokio::test]
async fn a_fallbacks_failed_attempt_counts_on_the_extracted_side_and_its_answer_on_the_monoliths() {
    let (monolith, people) = upstreams().await;
    let routes = r#"
[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
fallback = true
timeout_ms = 300
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), routes)).await;
    let http = reqwest::Client::new();
    let before = scrape(&proxy).await;
    for reason in ["5xx", "timeout", "connect"] {
        assert_eq!(fallbacks(&before, "people", reason), 0.0);
        assert_eq!(upstream_errors(&before, "people", "extracted", reason), 0.0);
    }

    let response = http
        .get(proxy.url("/api/people/1?people.status=503"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-ficus-side"), "monolith");
    let response = http
        .get(proxy.url("/api/people/1?people.delay_ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let after = scrape(&proxy).await;
    assert_eq!(fallbacks(&after, "people", "5xx"), 1.0);
    assert_eq!(fallbacks(&after, "people", "timeout"), 1.0);
    assert_eq!(upstream_errors(&after, "people", "extracted", "5xx"), 1.0);
    assert_eq!(
        upstream_errors(&after, "people", "extracted", "timeout"),
        1.0
    );
    assert_eq!(upstream_errors(&after, "people", "monolith", "5xx"), 0.0);
    assert_eq!(
        upstream_errors(&after, "people", "monolith", "timeout"),
        0.0
    );
    // The client's answers came from the monolith; the replaced 503 is no answer of anyone's.
    assert_eq!(requests(&after, "people", "monolith", "2xx"), 2.0);
    assert_eq!(requests(&after, "people", "extracted", "5xx"), 0.0);
    assert_eq!(requests(&after, "people", "extracted", "2xx"), 0.0);
    assert_eq!(requests(&after, "people", "proxy", "5xx"), 0.0);
}

#[tokio::test]
async fn a_fallback_that_fails_too_is_counted_on_both_sides_and_answered_by_the_proxy() {
    // The monolith (the default upstream) refuses connections; the extracted side answers 503.
    let people = TestUpstream::start("people").await;
    let dead = format!("http://{}", refused_addr());
    let routes = r#"
[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
fallback = true
"#;
    let proxy = crate::start_proxy(&routes_file(&dead, &people.url(), routes)).await;
    let response = reqwest::get(proxy.url("/api/people/1?status=503"))
        .await
        .unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(header(&response, "x-ficus-side"), "proxy");
    let text = scrape(&proxy).await;
    assert_eq!(fallbacks(&text, "people", "5xx"), 1.0);
    assert_eq!(upstream_errors(&text, "people", "extracted", "5xx"), 1.0);
    assert_eq!(upstream_errors(&text, "people", "monolith", "connect"), 1.0);
    assert_eq!(
        upstream_errors(&text, "people", "extracted", "connect"),
        0.0
    );
    assert_eq!(requests(&text, "people", "proxy", "5xx"), 1.0);
    assert_eq!(requests(&text, "people", "monolith", "5xx"), 0.0);
    assert_eq!(requests(&text, "people", "extracted", "5xx"), 0.0);
}

#[tokio::test]
async fn authz_decisions_are_counted_by_route_and_reason() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&auth_file(&monolith, &people)).await;
    let http = reqwest::Client::new();
    let before = scrape(&proxy).await;
    for route in ["people", "open", "closed", "default"] {
        assert_eq!(decisions(&before, route, "deny", "no_token"), 0.0);
        assert_eq!(decisions(&before, route, "allow", "allowed"), 0.0);
    }

    let call = |path: &str, scope: Option<&str>| {
        let mut request = http.get(proxy.url(path));
        if let Some(scope) = scope {
            request = request.header("authorization", format!("Bearer {}", token(scope)));
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(call("/api/people/1", None).await, 401);
    assert_eq!(call("/api/people/1", Some("tasks:read")).await, 403);
    assert_eq!(call("/api/people/1", Some("people:read")).await, 200);
    assert_eq!(call("/api/people/2", Some("people:read")).await, 200);
    assert_eq!(call("/open/x", None).await, 200);
    assert_eq!(call("/closed/x", Some("people:read")).await, 403);
    assert_eq!(call("/elsewhere", None).await, 401);

    let after = scrape(&proxy).await;
    assert_eq!(decisions(&after, "people", "deny", "no_token"), 1.0);
    assert_eq!(
        decisions(&after, "people", "deny", "insufficient_scope"),
        1.0
    );
    assert_eq!(decisions(&after, "people", "allow", "allowed"), 2.0);
    assert_eq!(decisions(&after, "open", "allow", "public"), 1.0);
    assert_eq!(decisions(&after, "open", "allow", "allowed"), 0.0);
    assert_eq!(decisions(&after, "closed", "deny", "route_denied"), 1.0);
    assert_eq!(decisions(&after, "closed", "allow", "allowed"), 0.0);
    assert_eq!(decisions(&after, "default", "deny", "no_token"), 1.0);
    assert_eq!(decisions(&after, "default", "allow", "allowed"), 0.0);
    // Refusals are the proxy's answers; the allowed requests are the sides'.
    assert_eq!(requests(&after, "people", "proxy", "4xx"), 2.0);
    assert_eq!(requests(&after, "people", "extracted", "2xx"), 2.0);
    assert_eq!(requests(&after, "closed", "proxy", "4xx"), 1.0);
    assert_eq!(requests(&after, "closed", "monolith", "4xx"), 0.0);
    assert_eq!(requests(&after, "open", "monolith", "2xx"), 1.0);
}
