use ficus_testkit::TestProxy;
use ficus_testkit::upstream::refused_addr;
use serde_json::Value;

use crate::{header, routes_file, upstreams};

fn extracted(fallback: bool, timeout_ms: u64) -> String {
    format!(
        r#"
[[route]]
name = "people"
path = "/api/people/*"
serve = "people"
mode = "extracted"
fallback = {fallback}
timeout_ms = {timeout_ms}
"#
    )
}

async fn metrics(proxy: &TestProxy) -> String {
    reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn idempotent_requests_fall_back_on_5xx_and_timeouts_others_do_not() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &people.url(),
        &extracted(true, 300),
    ))
    .await;
    let http = reqwest::Client::new();

    // A 5xx from the extracted side: the monolith answers a GET.
    let response = http
        .get(proxy.url("/api/people/1?people.status=503"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-upstream"), "monolith");
    assert_eq!(header(&response, "x-ficus-side"), "monolith");

    // ... and a PUT, with its body replayed intact.
    let response = http
        .put(proxy.url("/api/people/1?people.status=500"))
        .body("replay me")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "monolith");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["body_bytes"], 9);

    // A POST is not idempotent: the extracted side's 503 is the answer.
    let response = http
        .post(proxy.url("/api/people?people.status=503"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "x-upstream"), "people");

    // A timeout before the response head: GET falls back, POST gets a 504.
    let response = http
        .get(proxy.url("/api/people/2?people.delay_ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-upstream"), "monolith");
    let response = http
        .post(proxy.url("/api/people?people.delay_ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "timeout");
    assert_eq!(
        error["error"]["message"],
        "the extracted service did not answer within 300 ms"
    );
    assert_eq!(error["error"]["route"], "people");

    let text = metrics(&proxy).await;
    assert!(
        text.contains(r#"ficus_proxy_fallbacks_total{route="people",reason="5xx"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"ficus_proxy_fallbacks_total{route="people",reason="timeout"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"ficus_proxy_upstream_errors_total{route="people",side="extracted",kind="timeout"} 2"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_connection_falls_back_for_reads_and_is_a_502_otherwise() {
    let monolith = ficus_testkit::TestUpstream::start("monolith").await;
    let dead = format!("http://{}", refused_addr());
    let proxy =
        crate::start_proxy(&routes_file(&monolith.url(), &dead, &extracted(true, 1000))).await;
    let http = reqwest::Client::new();
    let response = http.get(proxy.url("/api/people/1")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-upstream"), "monolith");
    let response = http.post(proxy.url("/api/people")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    let body = response.text().await.unwrap();
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "connect");
    assert!(!body.contains("127.0.0.1"), "no internals leak: {body}");
    let text = metrics(&proxy).await;
    assert!(
        text.contains(r#"ficus_proxy_fallbacks_total{route="people",reason="connect"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn without_fallback_failures_are_answered_as_they_are() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &people.url(),
        &extracted(false, 300),
    ))
    .await;
    let http = reqwest::Client::new();
    let response = http
        .get(proxy.url("/api/people/1?people.status=503"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(header(&response, "x-upstream"), "people");
    let response = http
        .get(proxy.url("/api/people/1?people.delay_ms=2000"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(monolith.hits(), 0, "the monolith was never asked");
}
