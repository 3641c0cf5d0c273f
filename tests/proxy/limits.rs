use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ficus_proxy::ServerSettings;
use serde_json::Value;

use crate::{routes_file, upstreams};

const LIMITED: &str = r#"
[[route]]
name = "small"
path = "/small/*"
mode = "monolith"
max_body_bytes = 1024
timeout_ms = 200
"#;

#[tokio::test]
async fn oversize_bodies_get_413_and_oversize_headers_431() {
    let (monolith, people) = upstreams().await;
    let file = routes_file(&monolith.url(), &people.url(), LIMITED).replace(
        "expose_headers = true",
        "expose_headers = true\nmax_header_bytes = 2048",
    );
    let proxy = crate::start_proxy(&file).await;
    let http = reqwest::Client::new();

    let fits = http
        .post(proxy.url("/small/x"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), 200);

    let declared = http
        .post(proxy.url("/small/x"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    let error: Value = declared.json().await.unwrap();
    assert_eq!(error["error"]["code"], "body_too_large");
    assert_eq!(error["error"]["route"], "small");

    // Streamed without a length: cut off once past the limit.
    let pieces = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'b'; 512]))),
    );
    let streamed = http
        .post(proxy.url("/small/x"))
        .body(reqwest::Body::wrap_stream(pieces))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 413);

    // Other routes take the proxy's default limit.
    let elsewhere = http
        .post(proxy.url("/big"))
        .body(vec![b'a'; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 200);

    let headers = http
        .get(proxy.url("/small/x"))
        .header("x-big", "h".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(headers.status(), 431);
    let error: Value = headers.json().await.unwrap();
    assert_eq!(error["error"]["code"], "headers_too_large");
}

#[tokio::test]
async fn slow_upstreams_get_504_and_slow_clients_are_cut_off() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy_with(
        &routes_file(&monolith.url(), &people.url(), LIMITED),
        ServerSettings {
            header_read_timeout: Duration::from_millis(300),
            ..ServerSettings::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let slow = http
        .get(proxy.url("/small/x?delay_ms=1000"))
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 504);
    let body = slow.text().await.unwrap();
    assert!(body.contains("\"code\":\"timeout\""), "{body}");
    assert!(!body.contains("127.0.0.1"), "no internals leak: {body}");

    // A client that never finishes its headers is disconnected after the header read timeout.
    let addr = proxy.addr;
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(b"GET /small/x HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        let mut buffer = Vec::new();
        let _ = stream.read_to_end(&mut buffer);
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(
        closed_after < Duration::from_secs(2),
        "the slow client was cut off after {closed_after:?}"
    );
}

#[tokio::test]
async fn an_upstream_that_does_not_accept_connections_in_time_is_a_504() {
    // A listener with a full accept queue never completes a new handshake: connects hang.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(stream);
        }
    }
    let monolith = ficus_testkit::TestUpstream::start("monolith").await;
    let routes = r#"
[[route]]
name = "stuck"
path = "/stuck"
serve = "people"
mode = "extracted"
timeout_ms = 5000
"#;
    let proxy = crate::start_proxy(&routes_file(
        &monolith.url(),
        &format!("http://{addr}"),
        routes,
    ))
    .await;
    let start = Instant::now();
    let response = reqwest::get(proxy.url("/stuck")).await.unwrap();
    assert_eq!(response.status(), 504);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "connect_timeout");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "the connect timeout (500 ms) applied"
    );
    drop(listener);
}

/// A head over the hard limit on a kept-alive connection is refused with 431 and nothing else:
/// the request served before it is not served again (on the lean path the connection then
/// goes to hyper, with only the bytes not yet served).
#[tokio::test]
async fn an_oversize_head_after_a_kept_alive_request_is_refused_and_nothing_is_replayed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy_with(
        &routes_file(&monolith.url(), &people.url(), LIMITED),
        ServerSettings {
            max_header_bytes_hard: 8192,
            ..ServerSettings::default()
        },
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /first HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16384];
    while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the first answer");
        seen.extend_from_slice(&buf[..n]);
    }
    let first = String::from_utf8_lossy(&seen).into_owned();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Let the first body arrive whole before the next request.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rest = Vec::new();
    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"), "{rest:?}");

    // Past the limit before its end: the lean path hands the connection to hyper, which
    // answers 431 (the rest of the head never comes).
    let oversize = format!("GET /second HTTP/1.1\r\nhost: x\r\nx-big: {}", "h".repeat(9000));
    stream.write_all(oversize.as_bytes()).await.unwrap();
    let mut after = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => after.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open 5 s after an oversize head"),
        }
    }
    let after = String::from_utf8_lossy(&after);
    assert!(!after.contains("HTTP/1.1 200"), "the first request was served again: {after}");
    if crate::HTTP1 == ficus_proxy::Http1Path::Lean {
        assert!(after.starts_with("HTTP/1.1 431"), "{after}");
    }
}
