//! Shadow mode end to end against small real servers: what is copied (safe methods, the sticky
//! sample), what a difference looks like (counted, its JSON path, the admin API, the JSON-lines
//! log with its curl, secrets redacted), noise learned from the monolith and suppressed, bodies
//! over the limit counted as skipped, and a candidate that is slow, refuses, resets or answers
//! garbage changing nothing for the client. The real people service is shadowed in
//! `tests/extracted/shadow.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ficus_testkit::upstream::refused_addr;
use ficus_testkit::{TestProxy, TestUpstream};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A JSON server: each request gets `answer(n)` (n counts requests from 0); counts what it got.
struct JsonServer {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    /// `x-ficus-shadow` headers seen.
    marked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl JsonServer {
    async fn start(answer: impl Fn(u64) -> Value + Send + Sync + 'static) -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let marked = Arc::new(AtomicU64::new(0));
        let answer = Arc::new(answer);
        let (h, m) = (hits.clone(), marked.clone());
        let app = Router::new().fallback(any(move |headers: HeaderMap| {
            let (h, m, answer) = (h.clone(), m.clone(), answer.clone());
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst);
                if headers.contains_key("x-ficus-shadow") {
                    m.fetch_add(1, Ordering::SeqCst);
                }
                axum::Json(answer(n)).into_response()
            }
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            hits,
            marked,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JsonServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a broken candidate misbehaves.
#[derive(Clone, Copy)]
enum Broken {
    /// Reads the request, then resets the connection (RST).
    Reset,
    /// Answers bytes that are not HTTP.
    Garbage,
}

/// A raw TCP server that misbehaves on every connection.
async fn broken_server(how: Broken) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                match how {
                    Broken::Reset => {
                        let _ = socket.set_zero_linger();
                        drop(socket);
                    }
                    Broken::Garbage => {
                        let _ = socket
                            .write_all(b"\x00\x13garbage \xff\xfe not http\r\n\r\n")
                            .await;
                        let _ = socket.shutdown().await;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A routes file: `people-read` on `/api/people/*` in `mode` with `extra` appended to the route
/// (its `shadow`, its `[route.parity]`).
fn routes(monolith: &str, people: &str, mode: &str, extra: &str) -> String {
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

[[route]]
name = "people-read"
path = "/api/people/*"
serve = "people"
mode = "{mode}"
{extra}
"#
    )
}

/// The route's entry of the admin API's `/shadow`.
async fn status(proxy: &TestProxy) -> Value {
    let all: Value = reqwest::get(proxy.admin_url("/shadow"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "people-read")
        .cloned()
        .unwrap_or_else(|| panic!("people-read in {all:#}"))
}

/// Waits until the jobs of `count` requests have ended (compared or skipped); the status then.
async fn settled(proxy: &TestProxy, count: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = status(proxy).await;
        let skipped: u64 = now["skipped"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let done = now["compared"].as_u64().unwrap() + skipped;
        if done >= count && now["in_flight"] == 0 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {count} shadow jobs ended: {now:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn person(name: &str) -> Value {
    json!({"id": 7, "display_name": name, "email": "ada@example.test", "tags": ["a", "b"]})
}

#[tokio::test]
async fn a_matching_candidate_is_compared_and_matches_and_the_copy_is_marked() {
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let people = JsonServer::start(|_| person("Ada")).await;
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", "")).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let response = http.get(proxy.url("/api/people/7")).send().await.unwrap();
        assert_eq!(response.headers()["x-ficus-side"], "monolith");
        assert_eq!(response.json::<Value>().await.unwrap(), person("Ada"));
    }
    let now = settled(&proxy, 20).await;
    assert_eq!(now["compared"], 20, "{now:#}");
    assert_eq!(now["matched"], 20, "{now:#}");
    assert_eq!(now["mismatched"], 0, "{now:#}");
    assert_eq!(people.hits(), 20);
    assert_eq!(
        people.marked.load(Ordering::SeqCst),
        20,
        "every copy is marked"
    );
    // The monolith's own answers are not copies; its calibration copies (10 % by default) are.
    assert_eq!(
        monolith.hits() - monolith.marked.load(Ordering::SeqCst),
        20,
        "the client's requests reached the monolith once each"
    );
    assert_eq!(
        proxy
            .metric("ficus_shadow_compared_total{route=\"people-read\"}")
            .await,
        20.0
    );
    assert_eq!(
        proxy
            .metric("ficus_shadow_matched_total{route=\"people-read\"}")
            .await,
        20.0
    );
}

#[tokio::test]
async fn a_field_that_differs_is_a_mismatch_at_its_path_with_a_redacted_curl_in_the_log() {
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let people = JsonServer::start(|_| person("Ada Lovelace")).await;
    let dir = std::env::temp_dir().join(format!("ficus-shadow-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("mismatches.jsonl");
    let extra = format!(
        "shadow = {{ log_file = \"{}\", mismatches_kept = 3 }}\n[route.parity]\ncalibrate_percent = 0\n",
        log.display()
    );
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", &extra)).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let response = http
            .get(proxy.url(&format!("/api/people/7?page={i}&token=s3cret-query")))
            .bearer_auth("s3cret-bearer")
            .send()
            .await
            .unwrap();
        // The client gets the monolith's answer, whatever the candidate said.
        assert_eq!(response.json::<Value>().await.unwrap(), person("Ada"));
    }
    let now = settled(&proxy, 5).await;
    assert_eq!(now["compared"], 5, "{now:#}");
    assert_eq!(now["mismatched"], 5, "{now:#}");
    assert_eq!(now["matched"], 0, "{now:#}");
    let kept = now["mismatches"].as_array().unwrap();
    assert_eq!(kept.len(), 3, "the last 3 kept: {now:#}");
    let text = now["mismatches"].to_string();
    assert!(text.contains("$.display_name"), "{text}");
    assert!(!text.contains("s3cret"), "secrets are redacted: {text}");
    assert_eq!(
        proxy
            .metric("ficus_shadow_mismatched_total{route=\"people-read\"}")
            .await,
        5.0
    );

    // The log: one line per mismatch, each with the differing path and a curl for both sides.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 5 || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines.lines().count(), 5, "{lines}");
    assert!(!lines.contains("s3cret"), "secrets are redacted: {lines}");
    let first: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    let shown = first.to_string();
    assert!(shown.contains("$.display_name"), "{first:#}");
    assert!(shown.contains("curl"), "{first:#}");
    assert!(shown.contains(&monolith.addr.to_string()), "{first:#}");
    assert!(shown.contains(&people.addr.to_string()), "{first:#}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn noise_the_monolith_makes_itself_is_learned_and_not_counted() {
    // `generated_at` changes on every answer of both sides; `display_name` never does.
    let noisy = |n: u64| {
        let mut p = person("Ada");
        p["generated_at"] = json!(format!("2026-11-28T00:00:{:02}Z", n % 60));
        p["request"] = json!({"id": format!("r-{n}")});
        p
    };
    let monolith = JsonServer::start(noisy).await;
    let people = JsonServer::start(move |n| noisy(n + 1000)).await;
    let extra = "[route.parity]\ncalibrate_percent = 100\n";
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", extra)).await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        http.get(proxy.url(&format!("/api/people/{i}")))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let now = settled(&proxy, 10).await;
    assert_eq!(now["compared"], 10, "{now:#}");
    assert_eq!(now["matched"], 10, "{now:#}");
    assert_eq!(now["calibrations"], 10, "{now:#}");
    assert!(now["noise_suppressed"].as_u64().unwrap() >= 20, "{now:#}");
    let learned = now["noise"]["paths"].as_object().unwrap();
    assert!(learned.contains_key("$.generated_at"), "{now:#}");
    assert!(learned.contains_key("$.request.id"), "{now:#}");
    assert!(!learned.contains_key("$.display_name"), "{now:#}");

    // Without calibration the same differences count.
    let proxy = crate::start_proxy(&routes(
        &monolith.url(),
        &people.url(),
        "shadow",
        "[route.parity]\ncalibrate_percent = 0\n",
    ))
    .await;
    for _ in 0..3 {
        http.get(proxy.url("/api/people/1"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let now = settled(&proxy, 3).await;
    assert_eq!(now["mismatched"], 3, "{now:#}");
}

#[tokio::test]
async fn writes_are_not_copied_unless_the_route_says_so_and_the_sample_is_the_canarys() {
    let (monolith, people) = (
        TestUpstream::start("monolith").await,
        TestUpstream::start("people").await,
    );
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", "")).await;
    let http = reqwest::Client::new();
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let response = http
            .request(method, proxy.url("/api/people/1"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-upstream"], "monolith");
    }
    let now = settled(&proxy, 3).await;
    assert_eq!(now["skipped"]["unsafe_method"], 3, "{now:#}");
    assert_eq!(people.hits(), 0, "no write reached the extracted side");

    // Named explicitly, POST is copied (body and all).
    proxy
        .write_routes(&routes(
            &monolith.url(),
            &people.url(),
            "shadow",
            "shadow = { methods = [\"POST\"] }",
        ))
        .await;
    http.post(proxy.url("/api/people"))
        .body("{\"a\": 1}")
        .send()
        .await
        .unwrap();
    people.wait_for_hits(1).await;

    // A 40 % sample by `x-user-id`: the users copied are those whose canary bucket is below 40.
    proxy
        .write_routes(&routes(
            &monolith.url(),
            &people.url(),
            "shadow",
            "sticky = \"header:x-user-id\"\nshadow = { sample = 40 }",
        ))
        .await;
    let users: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let expected = users
        .iter()
        .filter(|u| ficus_proxy::table::bucket("people", u.as_bytes()) < 4000)
        .count() as u64;
    let before = people.hits();
    for user in &users {
        http.get(proxy.url("/api/people/1"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let now = settled(&proxy, 3 + 1 + 200).await;
    assert_eq!(people.hits() - before, expected, "{now:#}");
    assert_eq!(
        now["skipped"]["sampled_out"].as_u64().unwrap(),
        200 - expected,
        "{now:#}"
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_counted_as_skipped_and_still_reach_the_client() {
    let (monolith, people) = (
        TestUpstream::start("monolith").await,
        TestUpstream::start("people").await,
    );
    let extra = "shadow = { max_body_bytes = 1000, methods = [\"GET\", \"PUT\"] }";
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", extra)).await;
    let http = reqwest::Client::new();
    // The monolith's answer is 300 kB: the client gets every byte; the copy is not compared.
    let body = http
        .get(proxy.url("/api/people/1?monolith.bytes=300000"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 300_000);
    // The monolith's answer is small, the extracted side's 300 kB: not compared either.
    let echo: Value = http
        .get(proxy.url("/api/people/1?people.bytes=300000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["upstream"], "monolith");
    // A request body of 5 kB: forwarded whole to the monolith, not copied.
    let response = http
        .put(proxy.url("/api/people/1"))
        .body(vec![b'x'; 5000])
        .send()
        .await
        .unwrap();
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["upstream"], "monolith");
    assert_eq!(echo["body_bytes"], 5000);
    let now = settled(&proxy, 3).await;
    assert_eq!(now["skipped"]["response_too_large"], 2, "{now:#}");
    assert_eq!(now["skipped"]["request_too_large"], 1, "{now:#}");
    assert_eq!(now["compared"], 0, "{now:#}");
}

/// Sends one GET of `/api/people/7` per user (`x-user-id`); the side that served each, checked
/// against the body that side answers.
async fn each_user_once(proxy: &TestProxy, users: &[String]) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut sides = Vec::new();
    for user in users {
        let response = http
            .get(proxy.url("/api/people/7"))
            .header("x-user-id", user)
            .send()
            .await
            .unwrap();
        let side = response.headers()["x-ficus-side"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        let name = if side == "extracted" {
            "Ada Lovelace"
        } else {
            "Ada"
        };
        assert_eq!(body, person(name), "{user} served by {side}");
        sides.push(side);
    }
    sides
}

#[tokio::test]
async fn a_comparing_canary_copies_each_user_to_the_side_that_did_not_serve_them() {
    // The two sides differ in one field: every comparison is a mismatch at that path, whoever
    // served; the monolith's answer is the reference either way.
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let people = JsonServer::start(|_| person("Ada Lovelace")).await;
    let canary = |extra: &str| {
        routes(
            &monolith.url(),
            &people.url(),
            "canary",
            &format!(
                "percent = 50\nsticky = \"header:x-user-id\"\n{extra}\n[route.parity]\ncalibrate_percent = 0\n"
            ),
        )
    };
    let proxy = crate::start_proxy(&canary("shadow = { in_canary = true }")).await;
    let users: Vec<String> = (0..60).map(|i| format!("user-{i}")).collect();
    let sides = each_user_once(&proxy, &users).await;
    let on_extracted = sides.iter().filter(|s| *s == "extracted").count() as u64;
    assert_eq!(on_extracted, canary_users(&users), "the canary's users");
    assert!(on_extracted > 0 && on_extracted < 60, "both sides serve");
    let now = settled(&proxy, 60).await;
    assert_eq!(now["compared"], 60, "every user compared: {now:#}");
    assert_eq!(now["mismatched"], 60, "{now:#}");
    assert!(now["mismatches"].to_string().contains("$.display_name"), "{now:#}");
    // Each user's request reached each side once: served on one, copied (marked) to the other.
    assert_eq!(monolith.hits(), 60);
    assert_eq!(people.hits(), 60);
    assert_eq!(monolith.marked.load(Ordering::SeqCst), on_extracted);
    assert_eq!(people.marked.load(Ordering::SeqCst), 60 - on_extracted);
    // The monolith's answer is the reference, whoever served.
    for kept in now["mismatches"].as_array().unwrap() {
        let name = |side: &str| -> Value {
            let body = kept[side]["body"]["utf8"].as_str().unwrap_or_default();
            serde_json::from_str::<Value>(body).unwrap_or_default()["display_name"].clone()
        };
        assert_eq!(name("monolith"), "Ada", "{kept:#}");
        assert_eq!(name("extracted"), "Ada Lovelace", "{kept:#}");
    }

    // Without `in_canary` a canary copies nothing.
    proxy.write_routes(&canary("")).await;
    each_user_once(&proxy, &users).await;
    assert_eq!(monolith.hits() + people.hits(), 180, "no copies");
    assert_eq!(
        proxy
            .metric("ficus_shadow_compared_total{route=\"people-read\"}")
            .await,
        60.0
    );
}

/// How many of `users` a 50 % canary of `people-read` (sticky `x-user-id`) sends to the
/// extracted side.
fn canary_users(users: &[String]) -> u64 {
    users
        .iter()
        .filter(|u| ficus_proxy::table::bucket("people", u.as_bytes()) < 5000)
        .count() as u64
}

#[tokio::test]
async fn a_comparing_canary_counts_a_failed_extracted_answer_against_the_candidate() {
    // The extracted side refuses: its users fall back to the monolith (their answer is the
    // monolith's, not a candidate's: not compared, counted as the candidate's failure); the
    // monolith's users' copies to it fail the same way.
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let refused = format!("http://{}", refused_addr());
    let extra = "percent = 50\nsticky = \"header:x-user-id\"\nfallback = true\n\
                 shadow = { in_canary = true }\n[route.parity]\ncalibrate_percent = 0\n";
    let proxy = crate::start_proxy(&routes(&monolith.url(), &refused, "canary", extra)).await;
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    let sides = each_user_once(&proxy, &users).await;
    assert!(sides.iter().all(|s| s == "monolith"), "{sides:?}");
    let now = settled(&proxy, 40).await;
    assert_eq!(now["compared"], 0, "{now:#}");
    assert_eq!(now["skipped"]["candidate_error"], 40, "{now:#}");
    assert_eq!(now["skipped"]["monolith_error"], 0, "{now:#}");
    // The copy waits for the served answer: a fallen-back request is not copied.
    let on_extracted = canary_users(&users);
    assert!(on_extracted > 0 && on_extracted < 40);
    assert_eq!(monolith.marked.load(Ordering::SeqCst), 0);
    assert_eq!(monolith.hits(), 40, "each user's request reached the monolith once");
}

/// A raw HTTP/1.1 server answering every request with `person(name)`, where `name` is the
/// query's `<prefix>name` (default "Ada"), framed as the query's `<prefix>framing` says:
/// `length`, `chunked` (three chunks, an extension and a trailer) or `close` (no length, the
/// connection closed after the body). Keeps connections alive otherwise.
async fn framing_server(prefix: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buffer[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                    seen.drain(..end + 4);
                    let target = head.split(' ').nth(1).unwrap_or("/");
                    let query = target.split_once('?').map_or("", |(_, q)| q);
                    let param = |key: &str| {
                        query.split('&').find_map(|pair| {
                            pair.strip_prefix(prefix)?
                                .strip_prefix(key)?
                                .strip_prefix('=')
                                .map(str::to_owned)
                        })
                    };
                    let body = person(&param("name").unwrap_or_else(|| "Ada".into())).to_string();
                    let framing = param("framing").unwrap_or_else(|| "length".into());
                    let mut out = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n".to_vec();
                    match framing.as_str() {
                        "chunked" => {
                            out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                            let third = body.len() / 3;
                            for (i, piece) in [&body[..third], &body[third..2 * third], &body[2 * third..]]
                                .iter()
                                .enumerate()
                            {
                                let ext = if i == 1 { ";ext=1" } else { "" };
                                out.extend_from_slice(
                                    format!("{:x}{ext}\r\n{piece}\r\n", piece.len()).as_bytes(),
                                );
                            }
                            out.extend_from_slice(b"0\r\nx-trailer: t\r\n\r\n");
                        }
                        "close" => {
                            out.extend_from_slice(b"connection: close\r\n\r\n");
                            out.extend_from_slice(body.as_bytes());
                            let _ = socket.write_all(&out).await;
                            let _ = socket.shutdown().await;
                            return;
                        }
                        _ => {
                            out.extend_from_slice(
                                format!("content-length: {}\r\n\r\n{body}", body.len()).as_bytes(),
                            );
                        }
                    }
                    if socket.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn answers_in_every_framing_are_compared_whole_on_both_sides() {
    let (monolith, monolith_task) = framing_server("m").await;
    let (people, people_task) = framing_server("c").await;
    let extra = "[route.parity]\ncalibrate_percent = 0\n";
    let proxy = crate::start_proxy(&routes(
        &format!("http://{monolith}"),
        &format!("http://{people}"),
        "shadow",
        extra,
    ))
    .await;
    let http = reqwest::Client::new();
    let framings = ["length", "chunked", "close"];
    let mut sent = 0;
    for m in framings {
        for c in framings {
            // Twice each: the second goes over a kept-alive connection where there is one.
            for _ in 0..2 {
                let url = proxy.url(&format!("/api/people/7?mframing={m}&cframing={c}"));
                let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
                assert_eq!(answer, person("Ada"), "monolith {m}, candidate {c}");
                sent += 1;
            }
        }
    }
    let now = settled(&proxy, sent).await;
    assert_eq!(now["compared"], sent, "{now:#}");
    assert_eq!(now["matched"], sent, "{now:#}");
    // A difference inside any framing is found at its path.
    for m in framings {
        for c in framings {
            let url = proxy.url(&format!("/api/people/7?mframing={m}&cframing={c}&cname=Grace"));
            let answer: Value = http.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(answer, person("Ada"), "monolith {m}, candidate {c}");
        }
    }
    let now = settled(&proxy, sent + 9).await;
    assert_eq!(now["mismatched"], 9, "{now:#}");
    let kept = now["mismatches"].to_string();
    assert!(kept.contains("$.display_name"), "{kept}");
    monolith_task.abort();
    people_task.abort();
}

/// Latencies of `count` GETs through each proxy, taken in turns (one on `plain`, one on
/// `shadowed`) so that both see the same load on a shared machine; sorted. Every answer must be
/// `expected`.
async fn timed_in_turns(
    plain: &TestProxy,
    shadowed: &TestProxy,
    count: usize,
    expected: &Value,
) -> (Vec<Duration>, Vec<Duration>) {
    let http = reqwest::Client::new();
    let mut took = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        for (proxy, into) in [(plain, &mut took.0), (shadowed, &mut took.1)] {
            let start = Instant::now();
            let response = http
                .get(proxy.url(&format!("/api/people/{i}")))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.headers()["x-ficus-side"], "monolith");
            assert_eq!(&response.json::<Value>().await.unwrap(), expected);
            into.push(start.elapsed());
        }
    }
    took.0.sort();
    took.1.sort();
    took
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refusing_resetting_or_garbage_candidate_changes_nothing_for_the_client() {
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let expected = person("Ada");
    // The baseline: the same route without a shadow, measured in turns with each case.
    let plain = crate::start_proxy(&routes(
        &monolith.url(),
        "http://127.0.0.1:9",
        "monolith",
        "",
    ))
    .await;

    // A candidate that takes 3 s (past the shadow timeout of 300 ms), at most 4 copies at once.
    let slow_app = Router::new().fallback(any(|| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(axum::body::Body::from("late"))
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = listener.local_addr().unwrap();
    let slow_task = tokio::spawn(async move {
        let _ = axum::serve(listener, slow_app).await;
    });
    let (reset, reset_task) = broken_server(Broken::Reset).await;
    let (garbage, garbage_task) = broken_server(Broken::Garbage).await;
    let cases = [
        ("slow", format!("http://{slow_addr}"), "candidate_timeout"),
        (
            "refused",
            format!("http://{}", refused_addr()),
            "candidate_error",
        ),
        ("reset", format!("http://{reset}"), "candidate_error"),
        ("garbage", format!("http://{garbage}"), "candidate_error"),
    ];
    let extra = "shadow = { timeout_ms = 300, max_concurrent = 4 }\n[route.parity]\ncalibrate_percent = 0\n";
    for (name, candidate, reason) in cases {
        let proxy = crate::start_proxy(&routes(&monolith.url(), &candidate, "shadow", extra)).await;
        timed_in_turns(&plain, &proxy, 10, &expected).await;
        let (baseline, shadowed) = timed_in_turns(&plain, &proxy, 150, &expected).await;
        let (base50, base95) = (pct(&baseline, 50), pct(&baseline, 95));
        let (got50, got95) = (pct(&shadowed, 50), pct(&shadowed, 95));
        let (base99, got99) = (pct(&baseline, 99), pct(&shadowed, 99));
        println!(
            "{name}: p50 {got50:?} (plain {base50:?}), p95 {got95:?} (plain {base95:?}), \
             p99 {got99:?} (plain {base99:?})"
        );
        // Generous (the machine is shared), but a client that waited for the candidate would
        // take its 300 ms timeout on every request. p95, not p99: of 150 requests p99 is the
        // second slowest, and one scheduling stall of a loaded CI machine decides it (seen once:
        // 299 ms on the reset case, hyper path, load 20); a coupling that delays more than one
        // request in twenty still fails here.
        assert!(
            got50 <= base50 * 2 + Duration::from_millis(10),
            "{name}: p50 {got50:?} against {base50:?}"
        );
        assert!(
            got95 <= base95 * 3 + Duration::from_millis(100),
            "{name}: p95 {got95:?} against {base95:?}"
        );
        let now = settled(&proxy, 160).await;
        assert_eq!(now["compared"], 0, "{name}: {now:#}");
        let failed = now["skipped"][reason].as_u64().unwrap();
        let crowded = now["skipped"]["concurrency"].as_u64().unwrap();
        assert_eq!(failed + crowded, 160, "{name}: {now:#}");
        assert!(failed >= 4, "{name}: {now:#}");
        if name == "slow" {
            assert!(crowded > 0, "4 copies at once, each 300 ms: {now:#}");
        }
    }
    slow_task.abort();
    reset_task.abort();
    garbage_task.abort();
}

#[tokio::test]
async fn recording_writes_a_redacted_bounded_corpus() {
    let (monolith, people) = (
        TestUpstream::start("monolith").await,
        TestUpstream::start("people").await,
    );
    let dir = std::env::temp_dir().join(format!("ficus-record-{}", ficus_testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let corpus = dir.join("corpus.jsonl");
    let extra = format!(
        "record = {{ file = \"{}\", max_bytes = 4000 }}",
        corpus.display()
    );
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "monolith", &extra)).await;
    let http = reqwest::Client::new();
    futures_util::stream::iter(0..40)
        .for_each_concurrent(8, |i| {
            let http = http.clone();
            let url = proxy.url(&format!("/api/people/{i}?api_key=s3cret-{i}"));
            async move {
                http.get(url)
                    .bearer_auth("s3cret-bearer")
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (recorded, full) = loop {
        let now = status(&proxy).await;
        let recorded = now["record"]["recorded"].as_u64().unwrap();
        let full = now["record"]["skipped"]["full"].as_u64().unwrap();
        if recorded + full >= 40 || Instant::now() > deadline {
            break (recorded, full);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(recorded + full, 40);
    assert!(
        full > 0 && recorded > 0,
        "{recorded} recorded, {full} past the bound"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&corpus).unwrap();
    assert!(text.len() <= 4000, "{} bytes", text.len());
    assert_eq!(text.lines().count() as u64, recorded);
    assert!(!text.contains("s3cret"), "{text}");
    let records: Vec<ficus_parity::Record> = ficus_parity::CorpusReader::open(&corpus)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len() as u64, recorded);
    assert!(
        records
            .iter()
            .all(|r| r.route.as_deref() == Some("people-read"))
    );
    assert_eq!(records[0].request.method, "GET");
    assert!(records[0].request.path.starts_with("/api/people/"));
    // As the client sent it: what the edge adds is not recorded.
    assert_eq!(records[0].request.header("x-forwarded-for"), None);
    assert_eq!(
        records[0].request.header("authorization").as_deref(),
        Some("[redacted]")
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The copy leaves once the client has its whole answer, and `shadow.delay_ms` after it: the
/// monolith sends half its body, waits, then the rest; the candidate notes when the copy reached
/// it, which must be at least the delay after the monolith's last byte (sent at once, it would
/// arrive while the monolith still waits).
#[tokio::test]
async fn the_copy_leaves_once_the_client_has_its_answer() {
    // The default: 1 ms.
    let (gap, now) = copy_after_answer("").await;
    assert!(gap >= Duration::from_millis(1), "the copy left {gap:?} after");
    assert_eq!(now["shadow"]["delay_ms"], 1, "{now:#}");
    let (gap, now) = copy_after_answer("shadow = { delay_ms = 250 }\n").await;
    assert!(gap >= Duration::from_millis(250), "the copy left {gap:?} after");
    assert_eq!(now["shadow"]["delay_ms"], 250, "{now:#}");
    // At once: still never before the answer is whole.
    let (_, now) = copy_after_answer("shadow = { delay_ms = 0 }\n").await;
    assert_eq!(now["shadow"]["delay_ms"], 0, "{now:#}");
}

/// Copies waiting out their delay together, from concurrent clients on two threads, are each
/// sent and compared once: none lost or doubled as the route's queue fills, is started and
/// empties again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_copies_are_each_compared_once() {
    let monolith = JsonServer::start(|_| person("Ada")).await;
    let people = JsonServer::start(|_| person("Ada")).await;
    let extra = "shadow = { delay_ms = 20, max_concurrent = 1000 }\n\
                 [route.parity]\ncalibrate_percent = 0\n";
    let proxy = crate::start_proxy(&routes(&monolith.url(), &people.url(), "shadow", extra)).await;
    let http = reqwest::Client::new();
    for burst in 0..3 {
        futures_util::stream::iter(0..100)
            .for_each_concurrent(32, |_| {
                let request = http.get(proxy.url("/api/people/7")).send();
                async move {
                    let answer: Value = request.await.unwrap().json().await.unwrap();
                    assert_eq!(answer, person("Ada"));
                }
            })
            .await;
        let now = settled(&proxy, 100 * (burst + 1)).await;
        assert_eq!(now["compared"], 100 * (burst + 1), "{now:#}");
        assert_eq!(now["matched"], 100 * (burst + 1), "{now:#}");
        assert_eq!(people.hits(), 100 * (burst + 1));
    }
}

/// One request through a shadow route (`shadow`: its TOML) whose monolith pauses in the middle
/// of its body: how long after the monolith's last byte the copy reached the candidate (it must
/// not come before), and the route's status once its job ended (matched).
async fn copy_after_answer(shadow: &str) -> (Duration, Value) {
    let body = person("Ada").to_string();
    let finished = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let monolith = listener.local_addr().unwrap();
    let (done, answer) = (finished.clone(), body.clone());
    let monolith_task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (done, answer) = (done.clone(), answer.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buffer = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buffer[..n]),
                    }
                }
                let (first, rest) = answer.split_at(answer.len() / 2);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                let _ = socket.write_all(format!("{head}{first}").as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = socket.write_all(rest.as_bytes()).await;
                *done.lock().unwrap() = Some(Instant::now());
                // Kept open: the pool may keep the connection.
                let _ = socket.read(&mut buffer).await;
            });
        }
    });
    let copied = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let seen = copied.clone();
    let app = Router::new().fallback(any(move || {
        let seen = seen.clone();
        async move {
            *seen.lock().unwrap() = Some(Instant::now());
            axum::Json(person("Ada")).into_response()
        }
    }));
    let people = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let people_addr = people.local_addr().unwrap();
    let people_task = tokio::spawn(async move {
        let _ = axum::serve(people, app).await;
    });
    let extra = format!("{shadow}[route.parity]\ncalibrate_percent = 0\n");
    let proxy = crate::start_proxy(&routes(
        &format!("http://{monolith}"),
        &format!("http://{people_addr}"),
        "shadow",
        &extra,
    ))
    .await;
    let answer: Value = reqwest::get(proxy.url("/api/people/7"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer, person("Ada"));
    let now = settled(&proxy, 1).await;
    let finished = finished.lock().unwrap().expect("the monolith answered");
    let copied = copied.lock().unwrap().expect("the copy arrived");
    assert!(
        copied >= finished,
        "the copy arrived {:?} before the monolith's answer was whole",
        finished - copied
    );
    assert_eq!(now["matched"], 1, "{now:#}");
    monolith_task.abort();
    people_task.abort();
    (copied - finished, now)
}
