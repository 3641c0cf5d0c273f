//! The dashboard in a real browser: the proxy in-process with real upstreams on loopback, the
//! change-data adapter over a test database, headless Chromium driven over WebDriver
//! (`webdriver.rs`). The page must show what the proxy counts, follow a `ficus routes flip`
//! within seconds, show the ledger's decisions as text, and say "unreachable" for a status URL
//! that does not answer. It writes `docs/dashboard.png`, the README's screenshot.

mod webdriver;

use std::process::Command;
use std::time::Duration;

use ficus_testkit::upstream::refused_addr;
use ficus_testkit::{TestAdapter, TestDatabase, TestProxy, TestUpstream};
use serde_json::Value;
use webdriver::Browser;

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

fn routes(
    monolith: &TestUpstream,
    people: &TestUpstream,
    tasks: &TestUpstream,
    cdc: &str,
    dead: &str,
) -> String {
    format!(
        r#"# The dashboard test's routes.
[proxy]
default = "monolith"

[upstreams.monolith]
url = "{monolith}"
[upstreams.people]
url = "{people}"
[upstreams.tasks]
url = "{tasks}"

[[route]]
name = "people-read"
path = "/api/people/{{id}}"
methods = ["GET"]
serve = "people"
mode = "monolith"
sticky = "header:x-user-id"

[[route]]
name = "tasks-read"
path = "/api/tasks/{{id}}"
methods = ["GET"]
serve = "tasks"
mode = "shadow"
parity = {{ ignore = ["header:date", "header:content-length"] }}

[dashboard]
window_seconds = 30
probe_timeout_ms = 300
cdc = [{{ name = "monolith-db", url = "http://{cdc}" }}, {{ name = "billing-db", url = "http://{dead}" }}]
services = [{{ name = "billing", url = "http://{dead}" }}]
"#,
        monolith = monolith.url(),
        people = people.url(),
        tasks = tasks.url(),
    )
}

/// A ledger line as `ficus rollout` writes it; `reason` is given as JSON text.
fn decision(ts: &str, action: &str, step: &str, index: u32, verdict: &str, reason: &str) -> String {
    let line = serde_json::json!({
        "ts": ts,
        "route": "people-read",
        "action": action,
        "step": step,
        "step_index": index,
        "verdict": if verdict.is_empty() { Value::Null } else { Value::from(verdict) },
        "reason": reason,
        "inputs": { "extracted": { "requests": 412, "error_ratio": 0.0 }, "mismatch_ratio": 0.0 },
        "thresholds": { "min_requests": 200, "max_error_ratio": 0.01 },
        "diff": "-mode = \"shadow\"\n+mode = \"canary\"\n+percent = 5",
    });
    format!("{line}\n")
}

async fn state(proxy: &TestProxy) -> Value {
    reqwest::get(proxy.admin_url("/dashboard/state"))
        .await
        .expect("the state endpoint answers")
        .json()
        .await
        .expect("JSON")
}

async fn get(url: &str, user: &str) -> u16 {
    let client = reqwest::Client::new();
    client
        .get(url)
        .header("x-user-id", user)
        .send()
        .await
        .expect("the proxy answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_proxys_numbers_follows_a_flip_and_the_ledger() {
    let db = TestDatabase::migrated().await;
    let adapter = TestAdapter::start(&db.url, &["public.people"], 1).await;
    let monolith = TestUpstream::start("monolith").await;
    let people = TestUpstream::start("people").await;
    let tasks = TestUpstream::start("tasks").await;
    let dead = refused_addr();
    let text = routes(
        &monolith,
        &people,
        &tasks,
        &adapter.metrics_addr.to_string(),
        &dead.to_string(),
    );
    let proxy = TestProxy::start(&text).await;

    // The page and its policy: nothing loads from anywhere but the admin listener.
    let page = reqwest::get(proxy.admin_url("/dashboard")).await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-") && csp.contains("connect-src 'self'"));
    assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    let browser = Browser::start(1440, 1500).await;
    browser.goto(&proxy.admin_url("/dashboard")).await;
    browser
        .wait_text("#status", Duration::from_secs(10), |t| {
            t.starts_with("live")
        })
        .await;
    let monolith_total = r#"tr[data-route="people-read"][data-side="monolith"] .total"#;
    browser
        .wait_text(monolith_total, Duration::from_secs(5), |t| t == "0")
        .await;

    // N requests through the real proxy to the real monolith: the page shows N.
    const N: u64 = 37;
    for i in 0..N {
        let status = get(&proxy.url(&format!("/api/people/{i}")), &format!("u{i}")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(monolith.hits(), N);
    let (shown, _) = browser
        .wait_text(monolith_total, Duration::from_secs(5), |t| t == "37")
        .await;
    assert_eq!(shown, N.to_string());
    let rate_cell = r#"tr[data-route="people-read"][data-side="monolith"] .rate"#;
    let (rate, _) = browser
        .wait_text(rate_cell, Duration::from_secs(5), |t| {
            t.parse::<f64>().is_ok_and(|r| r > 0.0)
        })
        .await;
    // The rate is the window's answers over its span, as the state endpoint says.
    let now = state(&proxy).await;
    let people_read = now["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "people-read")
        .unwrap();
    let recent = &people_read["sides"]["monolith"]["recent"];
    assert_eq!(recent["answers"], N, "{recent}");
    let span = now["measured_seconds"].as_f64().unwrap();
    let expected = N as f64 / span;
    let per_second = recent["rate_per_second"].as_f64().unwrap();
    assert!(
        (per_second - expected).abs() < 1e-6,
        "{per_second} vs {expected}"
    );
    assert_eq!(people_read["sides"]["extracted"]["total"], 0);
    println!("page rate {rate} req/s for {N} answers");

    // A flip by the operator's command: the page follows within seconds.
    let flipped = Command::new(FICUS)
        .args([
            "routes",
            "flip",
            "people-read",
            "--mode",
            "canary",
            "--percent",
            "25",
            "--file",
        ])
        .arg(&proxy.routes_path)
        .output()
        .unwrap();
    assert!(flipped.status.success(), "{flipped:?}");
    let mode = r#"tr[data-route="people-read"] .mode"#;
    let (_, took) = browser
        .wait_text(mode, Duration::from_secs(5), |t| t == "canary")
        .await;
    println!("the page showed the flip {took:?} after `ficus routes flip` returned");
    assert_eq!(
        browser
            .text(r#"tr[data-route="people-read"] .percent"#)
            .await
            .as_deref(),
        Some("25")
    );

    // Canary traffic counts on the extracted side; 5xx answers show as the side's errors.
    for i in 0..60 {
        get(
            &proxy.url(&format!("/api/people/{i}")),
            &format!("user-{i}"),
        )
        .await;
    }
    for i in 0..4 {
        get(&proxy.url(&format!("/api/people/{i}?status=500")), "user-7").await;
    }
    let extracted = people.hits();
    assert!(
        extracted > 0,
        "a 25% canary of 60 users sent none to the service"
    );
    browser
        .wait_text(
            r#"tr[data-route="people-read"][data-side="extracted"] .total"#,
            Duration::from_secs(5),
            |t| t == extracted.to_string(),
        )
        .await;

    // Shadow comparisons: the match rate and the differences of the last mismatches.
    for i in 0..5 {
        get(&proxy.url(&format!("/api/tasks/{i}")), "u1").await;
    }
    let (diff, _) = browser
        .wait_text(
            r#"[data-parity="tasks-read"] .diff"#,
            Duration::from_secs(10),
            |t| t.contains("$.upstream"),
        )
        .await;
    assert!(
        diff.contains("\"monolith\"") && diff.contains("\"tasks\""),
        "{diff}"
    );
    browser
        .wait_text(
            r#"[data-parity="tasks-read"] .match-rate"#,
            Duration::from_secs(5),
            |t| t == "0.0%",
        )
        .await;

    // The ledger, beside the routes file: the newest decision first, the route's step from
    // it, and a reason with markup shown as text, never run or parsed.
    let ledger = proxy.routes_path.with_file_name("rollout.ledger.jsonl");
    let hostile = "<img src=x onerror=\"document.title='owned'\"> held: 3 mismatches";
    let lines = decision(
        "2026-11-28T04:10:00Z",
        "start",
        "shadow",
        0,
        "",
        "plan started",
    ) + &decision(
        "2026-11-28T04:12:00Z",
        "promote",
        "canary 5%",
        1,
        "pass",
        "shadow: 412 compared, 0 mismatches",
    ) + &decision(
        "2026-11-28T04:14:00Z",
        "hold",
        "canary 5%",
        1,
        "inconclusive",
        hostile,
    );
    std::fs::write(&ledger, lines).unwrap();
    browser
        .wait_text(
            r#"tr[data-route="people-read"] .step"#,
            Duration::from_secs(5),
            |t| t == "canary 5% (hold, inconclusive)",
        )
        .await;
    let (reason, _) = browser
        .wait_text("#ledger tbody tr .reason", Duration::from_secs(5), |t| {
            t.contains("held")
        })
        .await;
    assert_eq!(reason, hostile, "the reason is shown as the file wrote it");
    assert_eq!(
        browser.count("#ledger img").await,
        0,
        "markup from the ledger became an element"
    );
    assert_eq!(browser.count("#ledger tbody tr").await, 3);
    assert_eq!(
        browser.text("#ledger tbody tr .action").await.as_deref(),
        Some("hold")
    );

    // Change-data lag from the real adapter; the dead URLs show as unreachable.
    adapter
        .wait_snapshot_complete(Duration::from_secs(30))
        .await;
    browser
        .wait_text(
            r#"[data-source="monolith-db"] .reachability"#,
            Duration::from_secs(5),
            |t| t == "reachable",
        )
        .await;
    browser
        .wait_text(
            r#"[data-source="monolith-db"] .lag"#,
            Duration::from_secs(5),
            |t| t.contains("pipeline ok"),
        )
        .await;
    for source in ["billing-db", "billing"] {
        browser
            .wait_text(
                &format!(r#"[data-source="{source}"] .reachability"#),
                Duration::from_secs(5),
                |t| t == "unreachable",
            )
            .await;
    }
    assert!(
        browser.text("#status").await.unwrap().starts_with("live"),
        "unreachable sources failed the page"
    );

    // The README's screenshot.
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dashboard.png");
    std::fs::write(&path, &png).unwrap();
    println!("wrote {} ({} bytes)", path.display(), png.len());
    browser.close().await;
    adapter.stop().await;
}
