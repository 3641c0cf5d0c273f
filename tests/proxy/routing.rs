
use crate::{get, routes_file, upstreams};

#[tokio::test]
async fn the_most_specific_route_wins_and_the_rest_go_to_the_default() {
    let (monolith, people) = upstreams().await;
    let routes = r#"
[[route]]
name = "people-all"
path = "/api/people/*"
serve = "people"
mode = "extracted"

[[route]]
name = "people-me"
path = "/api/people/me"
mode = "monolith"

[[route]]
name = "tasks-beta"
path = "/api/tasks/*"
headers = { "x-beta" = "1" }
serve = "people"
mode = "extracted"

[[route]]
name = "task-read"
path = "/api/tasks/{id}"
methods = ["GET"]
mode = "monolith"
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), routes)).await;
    let http = reqwest::Client::new();
    let cases: &[(&str, Option<&str>, &str, &str)] = &[
        ("/api/people/7", None, "people", "people-all"),
        ("/api/people", None, "people", "people-all"),
        ("/api/people/me", None, "monolith", "people-me"),
        ("/api/people/7/tasks", None, "people", "people-all"),
        ("/api/tasks/1", Some("1"), "monolith", "task-read"),
        ("/api/tasks/1/notes", Some("1"), "people", "tasks-beta"),
        ("/api/tasks/1/notes", None, "monolith", "default"),
        ("/api/tasks/1/notes", Some("2"), "monolith", "default"),
        ("/elsewhere", None, "monolith", "default"),
    ];
    for (path, beta, upstream, route) in cases {
        let mut request = http.get(proxy.url(path));
        if let Some(beta) = beta {
            request = request.header("x-beta", *beta);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["x-upstream"],
            *upstream,
            "{path} beta={beta:?}"
        );
        assert_eq!(
            response.headers()["x-ficus-route"],
            *route,
            "{path} beta={beta:?}"
        );
    }
    // Methods: a POST skips the GET-only route and lands on the prefix or default.
    let response = http.post(proxy.url("/api/tasks/1")).send().await.unwrap();
    assert_eq!(response.headers()["x-ficus-route"], "default");
}

#[tokio::test]
async fn requests_arrive_intact_with_forwarding_headers() {
    let (monolith, people) = upstreams().await;
    // 127.0.0.1 (this test) is a trusted proxy here: its X-Forwarded-For is extended.
    let file = routes_file(&monolith.url(), &people.url(), "").replace(
        "expose_headers = true",
        "expose_headers = true\ntrusted_proxies = [\"127.0.0.1/32\"]",
    );
    let proxy = crate::start_proxy(&file).await;
    let http = reqwest::Client::new();
    let response = http
        .get(proxy.url("/api/x?b=2&a=%20one&a=two"))
        .header("x-forwarded-for", "203.0.113.9")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic secret")
        .header("x-custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(request_id.len(), 32, "a generated request id: {request_id}");
    let echo: serde_json::Value = response.json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(echo["query"], "b=2&a=%20one&a=two");
    assert_eq!(echo["path"], "/api/x");
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("{}", proxy.addr));
    assert_eq!(
        headers["host"],
        format!("{}", proxy.addr),
        "the client's Host is kept"
    );
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(headers["x-request-id"], request_id.as_str());
    assert_eq!(headers["x-custom"], "kept");
    for hop in ["x-hop", "keep-alive", "proxy-authorization"] {
        assert!(headers.get(hop).is_none(), "{hop} was forwarded: {headers}");
    }
    // A client's own request id is kept.
    let (_, _, _, echo) = get(&http, &proxy.url("/")).await;
    assert_eq!(echo["headers"]["x-request-id"].as_str().unwrap().len(), 32);
    let response = http
        .get(proxy.url("/"))
        .header("x-request-id", "client-chosen-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-1");
}

#[tokio::test]
async fn forwarding_headers_from_untrusted_clients_are_replaced() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), "")).await;
    let response = reqwest::Client::new()
        .get(proxy.url("/x"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("X_Forwarded_For", "203.0.113.10")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-uri", "/public")
        .header("x-original-url", "/public")
        .header("forwarded", "for=203.0.113.9")
        .header("x-real-ip", "203.0.113.9")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = response.json().await.unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], format!("{}", proxy.addr));
    for forged in [
        "x_forwarded_for",
        "x-forwarded-uri",
        "x-original-url",
        "forwarded",
        "x-real-ip",
    ] {
        assert!(headers.get(forged).is_none(), "{forged} passed: {headers}");
    }
}

#[tokio::test]
async fn admin_shows_the_table_metrics_and_health() {
    let (monolith, people) = upstreams().await;
    let routes = r#"
[[route]]
name = "people-read"
path = "/api/people/{id}"
serve = "people"
mode = "canary"
percent = 10
sticky = "header:x-user-id"
"#;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), routes)).await;
    let http = reqwest::Client::new();
    get(&http, &proxy.url("/api/people/1")).await;
    let table: serde_json::Value = http
        .get(proxy.admin_url("/routes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["version"], 1);
    assert!(table["loaded_at_unix"].as_f64().unwrap() > 1.0e9);
    assert_eq!(table["routes"][0]["name"], "people-read");
    assert_eq!(table["routes"][0]["mode"], "canary");
    assert_eq!(table["routes"][0]["percent"], 10.0);
    assert_eq!(table["last_reload_error"], serde_json::Value::Null);
    let metrics = http
        .get(proxy.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"ficus_proxy_requests_total{route="people-read",side="monolith",status="2xx"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("ficus_proxy_request_duration_seconds_bucket{"));
    assert!(metrics.contains("ficus_proxy_table_version 1"));
    assert_eq!(
        http.get(proxy.admin_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn h2c_clients_are_served_and_upstreams_get_http_1_1() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&routes_file(&monolith.url(), &people.url(), "")).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = h2
            .post(proxy.url("/api/h2?x=1"))
            .body("hello over h2")
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["version"], "HTTP/1.1");
        assert_eq!(echo["body_bytes"], 13);
        assert_eq!(echo["query"], "x=1");
        assert_eq!(echo["headers"]["host"], format!("{}", proxy.addr));
    }
}

/// A raw upstream for one request: sends the request head's bytes to the receiver, answers
/// `answer` as written.
async fn raw_upstream(
    answer: &'static [u8],
) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            head.extend_from_slice(&buffer[..n]);
        }
        let _ = seen_tx.send(String::from_utf8_lossy(&head).into_owned());
        stream.write_all(answer).await.unwrap();
    });
    (upstream, seen_rx)
}

#[tokio::test]
async fn header_case_reaches_the_upstream_as_the_client_wrote_it() {
    use tokio::io::AsyncWriteExt;
    let (upstream, seen_rx) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let proxy = crate::start_proxy(&format!(
        "[proxy]\ndefault = \"monolith\"\n[upstreams.monolith]\nurl = \"http://{upstream}\"\n"
    ))
    .await;
    let addr = proxy.addr;
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client
        .write_all(b"GET /case HTTP/1.1\r\nHost: legacy.example\r\nX-Legacy-Session: abc\r\nCONTENT-type: text/plain\r\n\r\n")
        .await
        .unwrap();
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), seen_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(head.contains("X-Legacy-Session: abc\r\n"), "{head}");
    assert!(head.contains("CONTENT-type: text/plain\r\n"), "{head}");
    assert!(head.contains("Host: legacy.example\r\n"), "{head}");
}

#[tokio::test]
async fn response_hop_by_hop_headers_and_those_connection_names_stop_at_the_proxy() {
    // A raw upstream whose answer lists a header of its own in `Connection`.
    let (upstream, _seen) = raw_upstream(
        b"HTTP/1.1 200 Fine\r\nConnection: keep-alive, X-Upstream-Hop\r\n\
          X-Upstream-Hop: secret\r\nKeep-Alive: timeout=5\r\nTrailer: x-t\r\n\
          X-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
    )
    .await;
    let proxy = crate::start_proxy(&format!(
        "[proxy]\ndefault = \"monolith\"\n[upstreams.monolith]\nurl = \"http://{upstream}\"\n"
    ))
    .await;
    let response = reqwest::get(proxy.url("/hop")).await.unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers.get("x-kept").unwrap(), "yes");
    for hop in ["x-upstream-hop", "keep-alive", "trailer"] {
        assert!(!headers.contains_key(hop), "{hop} passed: {headers:?}");
    }
    assert_eq!(response.text().await.unwrap(), "ok");
}
