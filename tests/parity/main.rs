//! `ficus parity` end to end, against real components: the monolith over its PostgreSQL, the
//! change-data adapter into the broker, the people service (`ficus-people`) serving from its
//! view behind the proxy (which forwards the verified identity), and the `ficus` binary itself.
//!
//! The corpus is written with the engine's `CorpusWriter` from real requests the test makes to
//! the monolith (the bearer token redacted on write). Then:
//! - the real extracted service: green, both reports say so, nothing secret in any file;
//! - a divergent candidate (a small server answering the monolith's JSON with `display_name`
//!   changed in single-person answers): red, the JUnit XML, the HTML report and the mismatch log
//!   name `$.display_name`, the other routes still pass;
//! - an extracted side that refuses connections: red, the error named;
//! - both sides behind a server that stamps every answer with a fresh `served_at` and
//!   `trace_id` (a timestamp, a generated id): red without calibration, green with it, the noise
//!   learned shown.

#[path = "../extracted/support.rs"]
#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request as AxumRequest, State};
use axum::response::{IntoResponse, Response};
use ficus_parity::{CorpusWriter, Record, Redaction, Request, Written};
use ficus_testkit::{TestAdapter, TestMonolith, TestProxy, unique_suffix};
use serde_json::{Value, json};

use crate::support::{ServiceConfig, ServiceProcess};

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

/// How a stand-in server changes the answers it relays.
#[derive(Clone, Copy)]
enum Change {
    /// `display_name` of a single person (`/api/people/{id}`) gets a `!`.
    DisplayName,
    /// Every JSON object answer, and each of its `items`, gets a fresh `served_at` and
    /// `trace_id`.
    Stamp,
}

#[derive(Clone)]
struct Relay {
    base: String,
    change: Change,
    http: reqwest::Client,
}

/// A small HTTP server relaying every request to `base` and changing the answer.
async fn relay(base: String, change: Change) -> SocketAddr {
    let state = Relay {
        base,
        change,
        http: reqwest::Client::new(),
    };
    let app = axum::Router::new().fallback(relay_one).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn relay_one(State(relay): State<Relay>, request: AxumRequest) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut upstream = relay
        .http
        .request(parts.method.clone(), format!("{}{target}", relay.base))
        .body(body);
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name, value);
        }
    }
    let answer = upstream.send().await.unwrap();
    let status = answer.status();
    let mut headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap();
    let changed = match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            match relay.change {
                Change::DisplayName => {
                    let single = parts.uri.path().starts_with("/api/people/");
                    if let (true, Some(Value::String(name))) =
                        (single, value.get_mut("display_name"))
                    {
                        name.push('!');
                    }
                }
                Change::Stamp => stamp(&mut value),
            }
            Bytes::from(serde_json::to_vec(&value).unwrap())
        }
        Err(_) => bytes,
    };
    headers.remove("content-length");
    headers.remove("transfer-encoding");
    let mut response = (status, changed).into_response();
    for (name, value) in &headers {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

fn stamp(value: &mut Value) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    if let Value::Object(map) = value {
        map.insert("served_at".into(), json!(now.to_string()));
        map.insert(
            "trace_id".into(),
            json!(format!("{:016x}", rand::random::<u64>())),
        );
        if let Some(Value::Array(items)) = map.get_mut("items") {
            for item in items {
                stamp(item);
            }
        }
    }
}

/// The routes file `ficus parity` reads: the people routes, their extracted side at `people`
/// (the proxy in front of the service, which forwards the verified identity), rules per route.
fn parity_routes(monolith: SocketAddr, people: &str) -> String {
    format!(
        r#"
[proxy]
default = "monolith"

[upstreams.monolith]
url = "http://{monolith}"

[upstreams.people]
url = "{people}"

[[route]]
name = "people-list"
path = "/api/people"
methods = ["GET", "POST"]
serve = "people"
mode = "extracted"

[[route]]
name = "people-read"
path = "/api/people/{{id}}"
methods = ["GET"]
serve = "people"
mode = "extracted"
[route.parity]
redact = ["$.email"]
"#
    )
}

/// One run of the `ficus` binary's `parity`.
struct ParityRun {
    code: i32,
    stdout: String,
    junit: String,
    html: String,
    mismatches: String,
}

async fn ficus_parity(dir: &Path, label: &str, args: &[&str]) -> ParityRun {
    let junit = dir.join(format!("{label}.xml"));
    let html = dir.join(format!("{label}.html"));
    let mismatches = dir.join(format!("{label}-mismatches.jsonl"));
    let output = tokio::process::Command::new(FICUS)
        .arg("parity")
        .args(args)
        .arg("--junit")
        .arg(&junit)
        .arg("--html")
        .arg(&html)
        .arg("--mismatches")
        .arg(&mismatches)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("running ficus parity");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    println!("--- ficus parity ({label}):\n{stdout}{stderr}");
    let read = |path: &PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    ParityRun {
        code: output.status.code().expect("an exit code"),
        stdout,
        junit: read(&junit),
        html: read(&html),
        mismatches: read(&mismatches),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ficus_parity_replays_a_corpus_against_the_real_service_and_names_what_differs() {
    let monolith = TestMonolith::start().await;
    let token = monolith.admin_token().await;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (email, name) in [
        ("ann@example.test", "Ann"),
        ("bob@example.test", "Bob"),
        ("cy@example.test", "Cy"),
        ("dee@example.test", "Dee"),
    ] {
        let person = monolith.create_person(&token, email, name, None).await;
        ids.push(person["id"].as_i64().unwrap());
    }

    // The chain: the adapter streams people into the broker, the service keeps its view, the
    // proxy serves the people routes from it.
    let adapter = TestAdapter::start(&monolith.db.url, &["public.people"], 1).await;
    adapter
        .wait_snapshot_complete(Duration::from_secs(180))
        .await;
    let proxy = TestProxy::start(&support::routes(
        monolith.addr,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "monolith",
    ))
    .await;
    let dir = std::env::temp_dir().join(format!("ficus-parity-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let people = ServiceProcess::start(
        "people",
        &ServiceConfig {
            store: dir.join("people.db").display().to_string(),
            topic_prefix: adapter.prefix.clone(),
            jwks_url: proxy.admin_url("/.well-known/jwks.json"),
            batch_max_events: 1000,
            brokers: ficus_testkit::kafka::brokers(),
        },
    );
    proxy
        .write_routes(&support::routes(
            monolith.addr,
            &people.url(""),
            "http://127.0.0.1:9",
            "extracted",
        ))
        .await;
    people.wait_ready(Duration::from_secs(60)).await;
    // Caught up: the list answers alike.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let get = |url: String| {
            let request = http.get(url).bearer_auth(&token);
            async move { request.send().await.unwrap().text().await.unwrap() }
        };
        let path = "/api/people?per_page=100";
        if get(monolith.url(path)).await == get(proxy.url(path)).await {
            break;
        }
        assert!(Instant::now() < deadline, "the service did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The corpus: real requests to the monolith, recorded with the engine's writer.
    let corpus = dir.join("corpus.jsonl");
    let mut writer = CorpusWriter::append(&corpus, 1 << 20).unwrap();
    let targets = support::people_reads(&ids);
    for target in &targets {
        let response = http
            .get(monolith.url(target))
            .bearer_auth(&token)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 500, "{target}");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: "GET".into(),
            path: path.into(),
            query: query.into(),
            headers: vec![
                ("accept".into(), b"application/json".to_vec()),
                (
                    "authorization".into(),
                    format!("Bearer {token}").into_bytes(),
                ),
            ],
            ..Request::default()
        };
        let record = Record::request(None, request, Some(1));
        assert_eq!(
            writer.write(&record, &Redaction::default()).unwrap(),
            Written::Kept
        );
    }
    // A write: recorded, never replayed by default.
    let post = Request {
        method: "POST".into(),
        path: "/api/people".into(),
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from_static(
            br#"{"email":"eve@example.test","display_name":"Eve","password":"hunter2hunter2"}"#,
        ),
        ..Request::default()
    };
    writer
        .write(&Record::request(None, post, Some(2)), &Redaction::default())
        .unwrap();
    writer.flush().unwrap();
    drop(writer);
    let corpus_text = std::fs::read_to_string(&corpus).unwrap();
    assert!(!corpus_text.contains(&token), "the token was recorded");
    assert!(!corpus_text.contains("hunter2"), "a password was recorded");

    let routes = dir.join("routes.toml");
    std::fs::write(&routes, parity_routes(monolith.addr, &proxy.url(""))).unwrap();
    let auth = format!("authorization: Bearer {token}");
    let base_args = [
        "--corpus",
        corpus.to_str().unwrap(),
        "--routes",
        routes.to_str().unwrap(),
        "--header",
        &auth,
    ];

    // 1. The real service: green.
    let green = ficus_parity(&dir, "green", &base_args).await;
    assert_eq!(green.code, 0, "{}", green.stdout);
    assert!(
        green
            .stdout
            .contains("people-read: 6 compared, 6 matched, 0 mismatched"),
        "{}",
        green.stdout
    );
    assert!(
        green
            .stdout
            .contains("people-list: 5 compared, 5 matched, 0 mismatched"),
        "{}",
        green.stdout
    );
    assert!(green.junit.contains("<testsuites name=\"ficus parity\" tests=\"12\" failures=\"0\" errors=\"0\" skipped=\"1\""), "{}", green.junit);
    assert!(
        green
            .junit
            .contains("<skipped message=\"POST is not a safe method"),
        "{}",
        green.junit
    );
    assert!(
        green
            .html
            .contains("<h1>ficus parity <span class=\"pass\">pass</span>"),
        "{}",
        green.html
    );
    assert!(green.mismatches.is_empty());
    for text in [&green.stdout, &green.junit, &green.html] {
        assert!(!text.contains(&token), "the token leaked into a report");
    }

    // 2. A candidate that changes one field: red, and every report names its path.
    let divergent = relay(proxy.url(""), Change::DisplayName).await;
    let divergent_url = format!("http://{divergent}");
    let mut args = base_args.to_vec();
    args.extend(["--extracted", &divergent_url]);
    let red = ficus_parity(&dir, "red", &args).await;
    assert_eq!(red.code, 1, "{}", red.stdout);
    assert!(
        red.stdout
            .contains("people-read: 6 compared, 2 matched, 4 mismatched"),
        "{}",
        red.stdout
    );
    assert!(
        red.stdout
            .contains("people-list: 5 compared, 5 matched, 0 mismatched"),
        "{}",
        red.stdout
    );
    assert!(
        red.stdout
            .contains("$.display_name: monolith \"Ann\" / extracted \"Ann!\""),
        "{}",
        red.stdout
    );
    assert!(
        red.junit
            .contains("<failure type=\"mismatch\" message=\"1 difference: $.display_name\">"),
        "{}",
        red.junit
    );
    assert!(red.junit.contains("failures=\"4\""), "{}", red.junit);
    assert!(
        red.html.contains("<td class=\"path\">$.display_name</td>"),
        "{}",
        red.html
    );
    assert!(red.html.contains("<span class=\"fail\">FAIL</span>"));
    // The mismatch log: one line per mismatch, redacted, with a curl per side.
    let logged: Vec<Value> = red
        .mismatches
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(logged.len(), 4);
    let first = &logged[0];
    assert_eq!(first["verdict"]["differences"][0]["path"], "$.display_name");
    assert_eq!(first["route"], "people-read");
    let curl = first["curl"]["extracted"].as_str().unwrap();
    assert!(
        curl.starts_with(&format!("curl -sS -i -g '{divergent_url}/api/people/")),
        "{curl}"
    );
    assert!(
        curl.contains("-H \"authorization: $AUTHORIZATION\""),
        "{curl}"
    );
    // `$.email` is redacted for this route, in the answers kept.
    let answer = first["monolith"]["body"]["utf8"].as_str().unwrap();
    assert!(answer.contains("\"email\":\"[redacted]\""), "{answer}");
    for text in [&red.mismatches, &red.junit, &red.html] {
        assert!(!text.contains(&token));
        assert!(
            !text.contains("ann@example.test"),
            "a redacted email leaked"
        );
    }

    // 3. An extracted side that refuses connections: red, with the error.
    let mut args = base_args.to_vec();
    args.extend(["--extracted", "http://127.0.0.1:9"]);
    let refused = ficus_parity(&dir, "refused", &args).await;
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused
            .stdout
            .contains("people-read: 6 compared, 0 matched, 6 mismatched"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.junit.contains(
            "<failure type=\"extracted\" message=\"extracted: http://127.0.0.1:9/api/people/"
        ),
        "{}",
        refused.junit
    );

    // 4. Noise: both sides stamp their answers with a timestamp and a generated id.
    let noisy_monolith = relay(format!("http://{}", monolith.addr), Change::Stamp).await;
    let noisy_extracted = relay(proxy.url(""), Change::Stamp).await;
    let (m, e) = (
        format!("http://{noisy_monolith}"),
        format!("http://{noisy_extracted}"),
    );
    let mut args = base_args.to_vec();
    args.extend(["--monolith", &m, "--extracted", &e]);
    let mut uncalibrated = args.clone();
    uncalibrated.extend(["--calibrate-percent", "0"]);
    let noisy = ficus_parity(&dir, "uncalibrated", &uncalibrated).await;
    assert_eq!(noisy.code, 1, "{}", noisy.stdout);
    assert!(noisy.junit.contains("$.served_at"), "{}", noisy.junit);
    assert!(noisy.junit.contains("$.trace_id"), "{}", noisy.junit);
    let calibrated = ficus_parity(&dir, "calibrated", &args).await;
    assert_eq!(calibrated.code, 0, "{}", calibrated.stdout);
    assert!(
        calibrated
            .stdout
            .contains("people-read: 6 compared, 6 matched"),
        "{}",
        calibrated.stdout
    );
    assert!(
        calibrated
            .stdout
            .contains("people-list: 5 compared, 5 matched"),
        "{}",
        calibrated.stdout
    );
    // What was learned: the stamps, in the list's items too (one index generalizes to all).
    assert!(
        calibrated
            .junit
            .contains("<property name=\"noise $.served_at\""),
        "{}",
        calibrated.junit
    );
    assert!(
        calibrated
            .junit
            .contains("<property name=\"noise $.items[*].trace_id\""),
        "{}",
        calibrated.junit
    );
    assert!(
        calibrated
            .html
            .contains("<td class=\"path\">$.trace_id</td>"),
        "{}",
        calibrated.html
    );

    drop(people);
    adapter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
