//! Every client connection has a deadline, and their number a cap: silent sockets, a partial
//! HTTP/2 preface, an idle HTTP/2 connection, an idle HTTP/1 keep-alive, each closed by its own
//! deadline (short ones, configured in `[proxy.connections]`); a full descriptor table does not
//! stop the real `ficus proxy` from serving a control client.

use std::time::{Duration, Instant};

use ficus_testkit::TestUpstream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{routes_file, upstreams};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

/// A routes file whose `[proxy.connections]` is `connections`.
fn with_connections(monolith: &TestUpstream, people: &TestUpstream, connections: &str) -> String {
    format!(
        "{}\n[proxy.connections]\n{connections}\n",
        routes_file(&monolith.url(), &people.url(), "")
    )
}

/// Reads until the peer closes (or resets); returns what was read and when it ended. Panics if
/// the socket is still open after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Instant) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the connection was still open after {limit:?} ({} bytes read)",
                seen.len()
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, Instant::now()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The types of the HTTP/2 frames in `bytes` (a server's side of a connection).
fn frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let length = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        types.push(bytes[at + 3]);
        at += 9 + length;
    }
    types
}

const GOAWAY: u8 = 0x7;
const PING: u8 = 0x6;

#[tokio::test]
async fn silent_sockets_and_a_partial_preface_are_closed_by_the_handshake_deadline() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&with_connections(
        &monolith,
        &people,
        "handshake_timeout_ms = 300\nidle_timeout_ms = 30000",
    ))
    .await;

    let opened = Instant::now();
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut partial = TcpStream::connect(proxy.addr).await.unwrap();
    partial.write_all(&PREFACE[..16]).await.unwrap();

    for stream in [&mut silent, &mut partial] {
        let (read, closed) = read_until_closed(stream, Duration::from_secs(5)).await;
        let after = closed - opened;
        assert!(read.is_empty(), "the proxy answered {read:?}");
        assert!(
            after >= Duration::from_millis(250),
            "closed after {after:?}, before the deadline"
        );
        assert!(
            after < Duration::from_secs(3),
            "closed after {after:?}, long past the deadline"
        );
    }
    assert!(
        proxy
            .metric("ficus_proxy_connection_deadlines_total{deadline=\"handshake\"}")
            .await
            >= 2.0
    );
    // A client that speaks is served as before.
    let answer = reqwest::get(proxy.url("/x")).await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn an_idle_http2_connection_gets_a_goaway_at_the_idle_deadline() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&with_connections(
        &monolith,
        &people,
        // The GOAWAY's PING is never acknowledged: the close is cut after the PING timeout.
        "handshake_timeout_ms = 200\nidle_timeout_ms = 700\n\
         http2_keepalive_interval_ms = 30000\nhttp2_keepalive_timeout_ms = 500",
    ))
    .await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let opened = Instant::now();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS).await.unwrap();
    let (read, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let after = closed - opened;
    let types = frame_types(&read);
    assert!(types.contains(&GOAWAY), "no GOAWAY in {types:?}");
    // Past the handshake deadline: the preface was complete, the idle deadline closed it.
    assert!(
        after >= Duration::from_millis(650),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
    assert!(
        proxy
            .metric("ficus_proxy_connection_deadlines_total{deadline=\"idle\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn http2_pings_unanswered_close_the_connection() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&with_connections(
        &monolith,
        &people,
        "idle_timeout_ms = 30000\nhttp2_keepalive_interval_ms = 200\nhttp2_keepalive_timeout_ms = 300",
    ))
    .await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let opened = Instant::now();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(SETTINGS).await.unwrap();
    // The PINGs are never acknowledged: the peer looks gone.
    let (read, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let types = frame_types(&read);
    assert!(types.contains(&PING), "no PING in {types:?}");
    assert!(
        closed - opened < Duration::from_secs(3),
        "{:?}",
        closed - opened
    );
}

/// Reads one HTTP/1.1 response with a `content-length` from `stream`; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response");
        seen.extend_from_slice(&buf[..n]);
        let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        if seen.len() >= end + 4 + length {
            return head;
        }
    }
}

#[tokio::test]
async fn an_idle_http1_keep_alive_is_closed_and_a_slow_request_is_not() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&with_connections(
        &monolith,
        &people,
        "handshake_timeout_ms = 5000\nidle_timeout_ms = 500",
    ))
    .await;

    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // In flight longer than the idle deadline: a request is not idleness.
    stream
        .write_all(b"GET /slow?delay_ms=1200 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Then kept alive, idle: closed at the idle deadline, not the header read timeout (10 s).
    let answered = Instant::now();
    let (read, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(read.is_empty(), "{read:?}");
    let after = closed - answered;
    assert!(
        after >= Duration::from_millis(400),
        "closed after {after:?}"
    );
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
}

/// Between HTTP/1 keep-alive requests the header read timeout runs too: with it shorter than the
/// idle deadline, an idle connection goes at the header read timeout.
#[tokio::test]
async fn between_http1_requests_the_header_read_timeout_runs() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy_with(
        &with_connections(&monolith, &people, "idle_timeout_ms = 60000"),
        ficus_proxy::ServerSettings {
            header_read_timeout: Duration::from_millis(400),
            ..ficus_proxy::ServerSettings::default()
        },
    )
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut stream).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let answered = Instant::now();
    let (read, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(read.is_empty(), "{read:?}");
    let after = closed - answered;
    assert!(after >= Duration::from_millis(300), "closed after {after:?}");
    assert!(after < Duration::from_secs(3), "closed after {after:?}");
}

#[tokio::test]
async fn past_the_cap_new_connections_are_refused_and_counted() {
    let (monolith, people) = upstreams().await;
    let proxy = crate::start_proxy(&with_connections(
        &monolith,
        &people,
        "handshake_timeout_ms = 3000\nmax_connections = 3",
    ))
    .await;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(proxy.addr).await.unwrap());
    }
    proxy
        .wait_for_metric_above("ficus_proxy_connections_open", 2.0)
        .await;
    // The fourth is closed at once, long before the handshake deadline.
    let mut refused = TcpStream::connect(proxy.addr).await.unwrap();
    let started = Instant::now();
    let (read, closed) = read_until_closed(&mut refused, Duration::from_secs(5)).await;
    assert!(read.is_empty());
    assert!(
        closed - started < Duration::from_millis(1500),
        "{:?}",
        closed - started
    );
    assert!(proxy.metric("ficus_proxy_connections_refused_total").await >= 1.0);
    // The silent ones go at their deadline, and a client is served again.
    for stream in &mut held {
        read_until_closed(stream, Duration::from_secs(5)).await;
    }
    let answer = reqwest::get(proxy.url("/x")).await.unwrap();
    assert_eq!(answer.status(), 200);
}

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of `series` in a Prometheus text exposition.
fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `ficus proxy` as a child process with at most `descriptors` open files, over `routes`.
struct LimitedProxy {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _dir: std::path::PathBuf,
}

impl LimitedProxy {
    async fn start(descriptors: u32, routes: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ficus-fd-{}", ficus_testkit::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("routes.toml");
        std::fs::write(&path, routes).unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        // `prlimit` sets the limit of the process it runs (no unsafe pre_exec here).
        let child = tokio::process::Command::new("prlimit")
            .arg(format!("--nofile={descriptors}:{descriptors}"))
            .arg(FICUS)
            .args(["proxy", "--workers", "2", "--routes"])
            .arg(&path)
            .args(["--listen", &addr.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .env("RUST_LOG", "warn")
            .env("FICUS_PROXY__HTTP1", crate::HTTP1.as_str())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("prlimit and ficus run");
        let proxy = Self {
            child,
            addr,
            admin,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(format!("http://{}/readyz", proxy.admin))
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "ficus proxy did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy
    }

    /// Stops the proxy; returns what it logged.
    async fn stop(mut self) -> String {
        let _ = self.child.start_kill();
        let mut logged = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut logged).await;
        }
        let _ = self.child.wait().await;
        logged
    }

    async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, series).unwrap_or(0.0)
    }

    /// Sends GET requests on fresh connections until one is answered 200; returns how long it
    /// took. Panics after `limit`.
    async fn control_client(&self, limit: Duration) -> Duration {
        let started = Instant::now();
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(limit)
            .build()
            .unwrap();
        loop {
            if let Ok(answer) = client
                .get(format!("http://{}/control", self.addr))
                .send()
                .await
                && answer.status() == 200
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "the control client was not served within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LimitedProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Opens `count` connections that never send a byte (some may be refused or wait in the
/// backlog: all the proxy sees is a flood).
async fn flood(addr: std::net::SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut silent = Vec::with_capacity(count);
    for _ in 0..count {
        if let Ok(stream) = TcpStream::connect(addr).await {
            silent.push(stream);
        }
    }
    silent
}

#[tokio::test]
async fn with_descriptors_exhausted_the_real_proxy_backs_off_and_serves_a_control_client() {
    let (monolith, people) = upstreams().await;
    // A cap above the descriptor limit: accept itself runs out of descriptors (EMFILE).
    let routes = with_connections(
        &monolith,
        &people,
        "handshake_timeout_ms = 600\nmax_connections = 1000",
    );
    let proxy = LimitedProxy::start(64, &routes).await;
    let silent = flood(proxy.addr, 150).await;
    let waited = proxy.control_client(Duration::from_secs(15)).await;
    let accept_errors = proxy.metric("ficus_proxy_accept_errors_total").await;
    assert!(
        accept_errors >= 1.0,
        "accept never ran out of descriptors: the test proves nothing"
    );
    // Backing off, accept fails a few times per streak, not in a busy loop.
    assert!(accept_errors < 200.0, "{accept_errors} failed accepts");
    assert!(
        proxy
            .metric("ficus_proxy_connection_deadlines_total{deadline=\"handshake\"}")
            .await
            >= 40.0
    );
    eprintln!("control client served after {waited:?} behind 150 silent connections");
    drop(silent);
    let logged = proxy.stop().await;
    let warnings = logged.matches("accept failed").count();
    assert!(
        warnings <= 2,
        "{warnings} accept warnings in a few seconds: a log flood\n{logged}"
    );
}

#[tokio::test]
async fn with_the_default_cap_the_real_proxy_refuses_the_flood_and_serves_a_control_client() {
    let (monolith, people) = upstreams().await;
    // No max_connections: half the descriptor limit, so the proxy keeps descriptors for its
    // upstream connections and its admin listener.
    let routes = with_connections(&monolith, &people, "handshake_timeout_ms = 600");
    let proxy = LimitedProxy::start(64, &routes).await;
    let silent = flood(proxy.addr, 150).await;
    let waited = proxy.control_client(Duration::from_secs(15)).await;
    let refused = proxy.metric("ficus_proxy_connections_refused_total").await;
    assert!(refused >= 50.0, "only {refused} refused");
    assert_eq!(
        proxy.metric("ficus_proxy_accept_errors_total").await,
        0.0,
        "the cap keeps accept from running out of descriptors"
    );
    eprintln!("control client served after {waited:?}; {refused} connections refused");
    drop(silent);
}
