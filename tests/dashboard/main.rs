//! The dashboard in a real browser: the proxy in-process with real upstreams on loopback, the
//! change-data adapter over a test database, the real `ficus-people` keeping its view from the
//! adapter's topic, headless Chromium driven over WebDriver (`webdriver.rs`). The page must
//! show what the proxy counts (answers, rates, the p95 its latency histogram gives), follow a
//! `ficus routes flip` within seconds, show the ledger's decisions as text, show the adapter's
//! change-data lag as its own `/metrics` gauges give it, show the service's views as its
//! `/views` reports them, and say "unreachable" for a status URL that does not
//! answer. It writes `docs/dashboard.png`, the README's screenshot.

#[allow(dead_code)]
#[path = "../extracted/support.rs"]
mod support;
mod webdriver;

use std::process::Command;
use std::time::Duration;

use ficus_adapters::metrics::{INFLIGHT, LAG_SECONDS, SLOT_LAG};
use ficus_testkit::upstream::refused_addr;
use ficus_testkit::{TestAdapter, TestDatabase, TestProxy, TestUpstream, unique_suffix};
use serde_json::Value;
use support::{ServiceConfig, ServiceProcess};
use webdriver::Browser;

const FICUS: &str = env!("CARGO_BIN_EXE_ficus");

fn routes(
    monolith: &TestUpstream,
    people: &TestUpstream,
    tasks: &TestUpstream,
    cdc: &str,
    service: &str,
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
services = [{{ name = "people", url = "http://{service}" }}, {{ name = "billing", url = "http://{dead}" }}]
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

/// The p95 of `route`'s `side` as the proxy's `/metrics` histogram gives it, in ms: the upper
/// bound of the first bucket whose cumulative count reaches 95 % of all (read here on its own,
/// not by the code under test), and the bound below it (0 for the first bucket): the bounds
/// are read, whatever they are.
async fn p95_from_metrics(proxy: &TestProxy, route: &str, side: &str) -> (f64, f64) {
    let text = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("route=\"{route}\",side=\"{side}\"");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("ficus_proxy_request_duration_seconds_bucket{") && l.contains(&series)
        })
        .map(|l| {
            let le = l.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().unwrap().1;
    assert!(total > 0.0, "no observation of {route} {side}");
    let at = buckets
        .iter()
        .position(|(_, count)| *count >= 0.95 * total)
        .unwrap();
    let below = if at == 0 { 0.0 } else { buckets[at - 1].0 };
    (below * 1000.0, buckets[at].0 * 1000.0)
}

/// The adapter's lag gauges as its own `/metrics` exposes them (read with the shared text
/// parser, not the dashboard's): `[ficus_cdc_lag_seconds, ficus_cdc_slot_lag_bytes,
/// ficus_cdc_inflight_events]`, NaN for a missing one.
async fn cdc_gauges(metrics_url: &str) -> [f64; 3] {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = ficus_telemetry::scrape::parse_text(&text);
    [LAG_SECONDS, SLOT_LAG, INFLIGHT].map(|name| {
        samples
            .iter()
            .find(|s| s.name == name && s.labels.is_empty())
            .map_or(f64::NAN, |s| s.value)
    })
}

/// A view's line as the page writes it, from the service's own `/views` report.
fn view_line(view: &Value) -> String {
    format!(
        "{}: {}, {} events / {:.3} s behind{}",
        view["view"].as_str().unwrap(),
        if view["ready"] == true {
            "ready"
        } else {
            "NOT READY"
        },
        view["lag_events"],
        view["lag_seconds"].as_f64().unwrap(),
        match view["failure"].as_str() {
            Some(failure) => format!(", failed: {failure}"),
            None => String::new(),
        }
    )
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
    // The real people service, its view fed from the adapter's topic. (It verifies identities
    // with keys it fetches on first use; this test reads only its `/views`.)
    let store = std::env::temp_dir().join(format!("ficus-dashboard-{}", unique_suffix()));
    std::fs::create_dir_all(&store).unwrap();
    let service = ServiceProcess::start(
        "people",
        &ServiceConfig {
            store: store.join("people.db").display().to_string(),
            topic_prefix: adapter.prefix.clone(),
            jwks_url: format!("http://{dead}/.well-known/jwks.json"),
            batch_max_events: 1000,
            brokers: ficus_testkit::kafka::brokers(),
        },
    );
    let text = routes(
        &monolith,
        &people,
        &tasks,
        &adapter.metrics_addr.to_string(),
        &service.addr.to_string(),
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

    // N requests through the real proxy to the real monolith: the page shows N. The last
    // SLOW of them wait DELAY_MS at the monolith: the 95th percentile falls among them.
    const N: u64 = 37;
    const SLOW: u64 = 3;
    const DELAY_MS: u64 = 30;
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let slow = i >= N - SLOW;
        let query = if slow {
            format!("?delay_ms={DELAY_MS}")
        } else {
            String::new()
        };
        let started = std::time::Instant::now();
        let status = get(
            &proxy.url(&format!("/api/people/{i}{query}")),
            &format!("u{i}"),
        )
        .await;
        assert_eq!(status, 200);
        if slow {
            slowest = slowest.max(started.elapsed());
        }
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

    // The p95 the page shows is the one the proxy's histogram gives, and the slow answers'
    // time lies within its bucket: over the bound below it, at most the bound itself.
    let p95_cell = r#"tr[data-route="people-read"][data-side="monolith"] .p95"#;
    let (shown, _) = browser
        .wait_text(p95_cell, Duration::from_secs(5), |t| {
            t.parse::<f64>().is_ok()
        })
        .await;
    let shown: f64 = shown.parse().unwrap();
    let (below, histogram) = p95_from_metrics(&proxy, "people-read", "monolith").await;
    assert_eq!(
        format!("{shown:.1}"),
        format!("{histogram:.1}"),
        "page p95 vs /metrics"
    );
    assert!(
        shown >= DELAY_MS as f64,
        "p95 {shown} ms under the {DELAY_MS} ms of the slowest {SLOW} answers of {N}"
    );
    assert!(
        below < slowest.as_secs_f64() * 1000.0,
        "p95 {shown} ms: its bucket starts at {below} ms, above the slowest answer's {slowest:?}"
    );
    println!(
        "page p95 {shown} ms, bucket ({below}, {histogram}] ms (the slow answers took {DELAY_MS} ms at the monolith, {slowest:?} at the client)"
    );

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
    // The 4 failures landed on user-7's side: its 5xx share is the window's, as counted.
    let now = state(&proxy).await;
    let sides = &now["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "people-read")
        .unwrap()["sides"];
    let failing = ["monolith", "extracted"]
        .into_iter()
        .find(|side| sides[side]["errors_total"] == 4)
        .unwrap_or_else(|| panic!("no side counted the 4 failures: {sides:#}"));
    let recent = &sides[failing]["recent"];
    let ratio = recent["error_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0, "{recent}");
    browser
        .wait_text(
            &format!(r#"tr[data-route="people-read"][data-side="{failing}"] .errors"#),
            Duration::from_secs(5),
            |t| {
                t.strip_suffix('%')
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(|shown| (shown - ratio * 100.0).abs() <= 0.05 + 1e-9)
            },
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

    // The lag figures are the adapter's own gauges at the same moment: a change streams (so
    // the commit-to-acknowledgement lag is measured), then the adapter's `/metrics` is read
    // before and after `/dashboard/state`; once both readings agree (the gauges did not move
    // meanwhile), the state's figures are exactly theirs.
    sqlx::query("INSERT INTO people (email, display_name) VALUES ($1, $2)")
        .bind(format!("lag-{}@example.test", unique_suffix()))
        .bind("Lag Probe")
        .execute(&db.pool)
        .await
        .unwrap();
    // Writes outside the publication keep the server's WAL ahead of the slot's confirmed
    // position, so the slot lag (sampled every 5 s by the adapter) is seldom zero.
    sqlx::query("CREATE TABLE lag_scratch (n integer)")
        .execute(&db.pool)
        .await
        .unwrap();
    let scratch = {
        let pool = db.pool.clone();
        tokio::spawn(async move {
            loop {
                let _ = sqlx::query("INSERT INTO lag_scratch VALUES (1)")
                    .execute(&pool)
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let metrics_url = format!("http://{}/metrics", adapter.metrics_addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (own, shown) = loop {
        let before = cdc_gauges(&metrics_url).await;
        let now = state(&proxy).await;
        let after = cdc_gauges(&metrics_url).await;
        let source = now["cdc"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "monolith-db")
            .unwrap()
            .clone();
        let shown = ["lag_seconds", "slot_lag_bytes", "inflight_events"]
            .map(|key| source[key].as_f64().unwrap_or(f64::NAN));
        // Steady (the state was computed between two equal readings) and telling: a lag
        // measured, a slot lag that is not the in-flight count's zero. Then the first such
        // reading decides: no retrying until the figures happen to coincide.
        let telling = before[0] > 0.0 && before[1] > 0.0 && before[1] != before[2];
        if telling && before == after {
            assert_eq!(
                shown, before,
                "the state's change-data lag (lag s, slot lag bytes, in flight) is not the \
                 adapter's own /metrics: {source:#}"
            );
            break (before, shown);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no steady reading of the adapter's lag gauges with a lag measured: {before:?} / \
             {after:?}; the state showed {shown:?}: {source:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    scratch.abort();
    println!("the state's change-data lag {shown:?} = the adapter's /metrics {own:?}");
    // The page shows those figures (the state it polls, rounded as it writes them).
    browser
        .wait_text(
            r#"[data-source="monolith-db"] .lag"#,
            Duration::from_secs(5),
            |t| t.starts_with("lag ") && t.contains(" s, slot lag ") && t.contains(" bytes"),
        )
        .await;

    // The people service's views, as its `/views` reports them: caught up with the snapshot,
    // ready, each view's lag; the page follows the report.
    service.wait_ready(Duration::from_secs(60)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (report, lines) = loop {
        let report: Value = reqwest::get(service.url("/views"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let views = report["views"].as_array().unwrap().clone();
        let mut lines = Vec::new();
        for view in &views {
            let css = format!(
                r#"[data-source="people"] [data-view="{}"]"#,
                view["view"].as_str().unwrap()
            );
            lines.push((view_line(view), browser.text(&css).await));
        }
        let same = !views.is_empty()
            && lines
                .iter()
                .all(|(want, shown)| Some(want) == shown.as_ref())
            && browser.count(r#"[data-source="people"] [data-view]"#).await == views.len();
        if same {
            break (report, lines);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page's views are not the service's: {lines:?} for {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(report["ready"], true, "{report:#}");
    assert_eq!(
        browser
            .text(r#"[data-source="people"] .ready"#)
            .await
            .as_deref(),
        Some("every view ready")
    );
    assert_eq!(
        browser
            .text(r#"[data-source="people"] .reachability"#)
            .await
            .as_deref(),
        Some("reachable")
    );
    println!("the page shows the people service's views: {lines:?}");

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
