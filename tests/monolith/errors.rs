//! Bad input across the API: each gets the right 4xx with a JSON error naming the problem.

use ficus_testkit::TestMonolith;
use reqwest::StatusCode;
use serde_json::json;

use crate::expect_error;

#[tokio::test]
async fn malformed_wrong_type_oversize_and_unknown_routes() {
    let m = TestMonolith::start().await;
    let token = m.admin_token().await;
    let http = m.http();

    let malformed = http
        .post(m.url("/api/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"title": "unterminated"#)
        .send()
        .await
        .unwrap();
    let error = expect_error(malformed, StatusCode::BAD_REQUEST, "malformed_json").await;
    assert!(
        error["message"].as_str().unwrap().contains("line 1"),
        "{error}"
    );

    let trailing = http
        .post(m.url("/api/tasks"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(r#"{"title": "a"} {"title": "b"}"#)
        .send()
        .await
        .unwrap();
    expect_error(trailing, StatusCode::BAD_REQUEST, "malformed_json").await;

    let not_json = http
        .post(m.url("/api/tasks"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(r#"{"title": "a"}"#)
        .send()
        .await
        .unwrap();
    expect_error(
        not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;

    let wrong_type = http
        .post(m.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&json!({ "title": ["not", "a", "string"] }))
        .send()
        .await
        .unwrap();
    let error = expect_error(
        wrong_type,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "title");

    let huge = json!({ "title": "t", "description": "x".repeat(2 * 1024 * 1024) });
    let oversize = http
        .post(m.url("/api/tasks"))
        .bearer_auth(&token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    expect_error(oversize, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    let no_route = http.get(m.url("/api/nowhere")).send().await.unwrap();
    expect_error(no_route, StatusCode::NOT_FOUND, "not_found").await;
    let wrong_method = http.put(m.url("/api/people")).send().await.unwrap();
    expect_error(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;

    // Nothing was written by any of them.
    let list: serde_json::Value = http
        .get(m.url("/api/tasks"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let m = TestMonolith::start().await;
    let http = m.http();
    assert_eq!(
        http.get(m.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(m.url("/readyz")).send().await.unwrap().status(),
        200
    );
    let response = http.get(m.url("/api/people")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers().contains_key("x-request-id"),
        "a request id is generated"
    );
    let given = http
        .get(m.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(
        given.headers()["x-request-id"],
        "abc-123",
        "a given request id is kept"
    );
    let metrics = http
        .get(m.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"ficus_monolith_http_requests_total{method="GET",route="/api/people",status="401"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("ficus_monolith_http_request_duration_seconds_bucket"));
}
