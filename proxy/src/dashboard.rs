//! The dashboard, served by the admin listener beside `/routes` and `/shadow`: one page
//! (`GET /dashboard`, `dashboard.html`, embedded) that polls `GET /dashboard/state` every second.
//!
//! ```text
//! GET /dashboard/state (computed on read; the request path only ever increments counters)
//!   ├─ table in force: routes (mode, percent, serve), version, last reload error
//!   ├─ per route and side (monolith | extracted | proxy): RouteMetrics::counts now, minus the
//!   │    oldest sample of the window (samples are taken by these reads, kept per window)
//!   │    ─► rate, 5xx share, mean latency, failed attempts; and the latency histogram's
//!   │    buckets (read from the exposition), now minus the window's oldest ─► p95 per side,
//!   │    by the quantile the rollout's latency gate uses (ficus_telemetry::scrape::quantile)
//!   ├─ per shadow route: compared / matched, the last mismatches and their differences
//!   ├─ [dashboard] cdc: each adapter's /metrics (lag) and /healthz; services: each one's /views
//!   │    (probed concurrently, probe_timeout_ms each; no answer = unreachable, never an error)
//!   └─ the ledger's tail (ledger_tail_bytes at most): the latest decisions, each route's step
//! ```
//!
//! Everything a client or a file wrote (paths, differences, ledger reasons and diffs) reaches
//! the page as JSON data that the page puts in `textContent`, never into markup; the page's
//! Content-Security-Policy allows nothing from anywhere but the admin listener itself.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use ficus_telemetry::scrape::{buckets_since, quantile};
use ficus_telemetry::views::ViewsReport;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::admin::Admin;
use crate::config::{DashboardSection, StatusSource};
use crate::metrics::{Answerer, Metrics, SideCounts, latency_buckets, latency_sums};
use crate::table::Table;

/// The page: inline CSS and JavaScript, no external asset.
const PAGE: &str = include_str!("dashboard.html");

/// Nothing from anywhere but this listener, and no inline code but the page's own script and
/// style, allowed by their digests (so markup that slipped into the page could not run).
static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = |tag: &str| {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let start = PAGE.find(&open).map_or(0, |i| i + open.len());
        let end = PAGE[start..].find(&close).map_or(start, |i| start + i);
        let hash = sha2::Sha256::digest(&PAGE.as_bytes()[start..end]);
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(hash)
        )
    };
    let policy = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        digest("script"),
        digest("style")
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// Mismatches shown per route (the newest).
const MISMATCHES_SHOWN: usize = 3;
/// Ledger decisions shown (the newest).
const DECISIONS_SHOWN: usize = 20;
/// Largest status body read from a probed URL.
const PROBE_BODY_BYTES: usize = 1024 * 1024;
/// Reads closer together than this share one sample.
const SAMPLE_SPACING: Duration = Duration::from_millis(500);

/// The dashboard's own state: the samples the rates are computed from, and the probe client.
pub struct Dashboard {
    samples: Mutex<VecDeque<Sample>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

/// Every route's readings at one instant.
struct Sample {
    at: Instant,
    counts: HashMap<String, [SideReading; 3]>,
}

/// One side of a route at one instant: its counts and its latency histogram (cumulative
/// `(le seconds, count)` buckets).
#[derive(Default)]
struct SideReading {
    counts: SideCounts,
    buckets: Vec<(f64, f64)>,
}

impl Default for Dashboard {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            samples: Mutex::new(VecDeque::new()),
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1)
                .build(connector),
        }
    }
}

/// `GET /dashboard`.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        PAGE,
    )
        .into_response()
}

/// `GET /dashboard/state`: everything the page shows, as JSON.
pub async fn state(State(admin): State<Admin>) -> Response {
    let table = admin.proxy.table();
    let settings = table.file.dashboard.clone();
    let window = Duration::from_secs(settings.window_seconds);
    let (rates, span) = admin.dashboard.rates(&table, &admin.proxy.metrics, window);
    let (cdc, services, ledger) = tokio::join!(
        admin.dashboard.probe_cdc(&settings),
        admin.dashboard.probe_services(&settings),
        read_ledger(&settings.ledger_file, settings.ledger_tail_bytes),
    );
    for (kind, list) in [("cdc", &cdc), ("service", &services)] {
        for probe in list {
            let reachable = probe["reachable"].as_bool().unwrap_or(false);
            admin.proxy.metrics.dashboard_probe(kind, reachable);
        }
    }
    let last = admin.loader.last_attempt();
    let routes = routes(&table, rates, &ledger.latest);
    let body = json!({
        "now_unix": unix(SystemTime::now()),
        "version": table.version,
        "loaded_at_unix": unix(table.loaded_at),
        "file": admin.loader.path().display().to_string(),
        "last_reload_error": last.error,
        "window_seconds": settings.window_seconds,
        "measured_seconds": span.map(|d| d.as_secs_f64()),
        "routes": routes,
        "cdc": cdc,
        "services": services,
        "ledger": {
            "file": settings.ledger_file.display().to_string(),
            "error": ledger.error,
            "unreadable_lines": ledger.unreadable,
            "decisions": ledger.newest,
        },
    });
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// One side's numbers over the window: `now` minus the window's oldest sample (`base`).
fn side_json(reading: &SideReading, base: Option<&SideReading>, span: Option<Duration>) -> Value {
    let now = &reading.counts;
    let recent = match (base, span) {
        (Some(base_reading), Some(span)) if !span.is_zero() => {
            let base = &base_reading.counts;
            let answers = now.total().saturating_sub(base.total());
            let errors = now.errors().saturating_sub(base.errors());
            let failed = now.failed_attempts.saturating_sub(base.failed_attempts);
            let seconds = (now.seconds - base.seconds).max(0.0);
            let per_second = |n: u64| n as f64 / span.as_secs_f64();
            // The upper bound of the bucket holding the 95th percentile; past the last finite
            // bound, that bound is shown as a floor.
            let p95 = quantile(
                &buckets_since(&reading.buckets, &base_reading.buckets),
                0.95,
            );
            let last_finite = reading
                .buckets
                .iter()
                .rev()
                .map(|b| b.0)
                .find(|le| le.is_finite());
            json!({
                "answers": answers,
                "rate_per_second": per_second(answers),
                "error_ratio": (answers > 0).then(|| errors as f64 / answers as f64),
                "mean_latency_ms": (answers > 0).then(|| seconds * 1000.0 / answers as f64),
                "p95_latency_ms": p95.filter(|v| v.is_finite()).map(|v| v * 1000.0),
                "p95_latency_over_ms": p95
                    .filter(|v| v.is_infinite())
                    .and(last_finite)
                    .map(|v| v * 1000.0),
                "failed_attempts_per_second": per_second(failed),
            })
        }
        _ => Value::Null,
    };
    json!({
        "total": now.total(),
        "errors_total": now.errors(),
        "failed_attempts_total": now.failed_attempts,
        "recent": recent,
    })
}

impl Dashboard {
    /// Every route's counts now and at the start of the window (taking a sample of now).
    fn rates(
        &self,
        table: &Table,
        metrics: &Metrics,
        window: Duration,
    ) -> (HashMap<String, Value>, Option<Duration>) {
        let now = Instant::now();
        let exposition = metrics.encode();
        let seconds = latency_sums(&exposition);
        let mut buckets = latency_buckets(&exposition);
        let counts: HashMap<String, [SideReading; 3]> = table
            .routes
            .iter()
            .chain(std::iter::once(&table.default_route))
            .map(|r| {
                let sides = r.metrics.counts();
                let readings = std::array::from_fn(|i| {
                    let key = (r.name.to_string(), Answerer::ALL[i].as_str().to_owned());
                    let mut counts = sides[i];
                    counts.seconds = seconds.get(&key).copied().unwrap_or_default();
                    SideReading {
                        counts,
                        buckets: buckets.remove(&key).unwrap_or_default(),
                    }
                });
                (r.name.to_string(), readings)
            })
            .collect();
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        while samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > window)
        {
            samples.pop_front();
        }
        let base = samples.front();
        let span = base.map(|b| now.duration_since(b.at));
        let rates = counts
            .iter()
            .map(|(name, sides)| {
                let before = base.and_then(|b| b.counts.get(name));
                let by_side: serde_json::Map<String, Value> = Answerer::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, by)| {
                        (
                            by.as_str().to_owned(),
                            side_json(&sides[i], before.map(|b| &b[i]), span),
                        )
                    })
                    .collect();
                (name.clone(), Value::Object(by_side))
            })
            .collect();
        if samples
            .back()
            .is_none_or(|s| now.duration_since(s.at) >= SAMPLE_SPACING)
        {
            samples.push_back(Sample { at: now, counts });
        }
        (rates, span)
    }

    async fn get(&self, url: &str, timeout: Duration) -> Result<(u16, Bytes), String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
        let exchange = async {
            let response = self.client.get(uri).await.map_err(|e| {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    text = format!("{text}: {cause}");
                    source = cause.source();
                }
                text
            })?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), PROBE_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer in {} ms", timeout.as_millis())),
        }
    }

    /// Each change-data adapter: its lag gauges (`/metrics`) and its pipeline's health
    /// (`/healthz`).
    async fn probe_cdc(&self, settings: &DashboardSection) -> Vec<Value> {
        let timeout = Duration::from_millis(settings.probe_timeout_ms);
        let probes = settings.cdc.iter().map(|source| async move {
            let (metrics_url, health_url) =
                (source.url.join("/metrics"), source.url.join("/healthz"));
            let (metrics, health) = tokio::join!(
                self.get(&metrics_url, timeout),
                self.get(&health_url, timeout),
            );
            match metrics {
                Err(error) => unreachable(source, &error),
                Ok((status, _)) if status != 200 => {
                    unreachable(source, &format!("/metrics answered {status}"))
                }
                Ok((_, text)) => {
                    let text = String::from_utf8_lossy(&text);
                    let health = health.ok().map(|(status, body)| {
                        let report: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        json!({
                            "ok": status == 200,
                            "class": report.get("class"),
                            "cause": report.get("cause"),
                        })
                    });
                    json!({
                        "name": source.name,
                        "url": source.url.0.to_string(),
                        "reachable": true,
                        "lag_seconds": gauge(&text, "ficus_cdc_lag_seconds"),
                        "slot_lag_bytes": gauge(&text, "ficus_cdc_slot_lag_bytes"),
                        "inflight_events": gauge(&text, "ficus_cdc_inflight_events"),
                        "health": health,
                    })
                }
            }
        });
        join_all(probes).await
    }

    /// Each extracted service's views (`/views`: ready, lag in events and seconds, failure),
    /// as the rollout reads them ([`ViewsReport`]).
    async fn probe_services(&self, settings: &DashboardSection) -> Vec<Value> {
        let timeout = Duration::from_millis(settings.probe_timeout_ms);
        let probes = settings.services.iter().map(|source| async move {
            let answer = self.get(&source.url.join("/views"), timeout).await;
            match answer.and_then(|(status, body)| {
                ViewsReport::from_answer(status, &body).map_err(|e| format!("/views {e}"))
            }) {
                Err(error) => unreachable(source, &error),
                Ok(report) => json!({
                    "name": source.name,
                    "url": source.url.0.to_string(),
                    "reachable": true,
                    "ready": report.ready,
                    "views": report.views,
                }),
            }
        });
        join_all(probes).await
    }
}

/// Runs the probes concurrently, in order.
async fn join_all<F: std::future::Future<Output = Value>>(
    probes: impl Iterator<Item = F>,
) -> Vec<Value> {
    let mut pinned: Vec<_> = probes.map(Box::pin).collect();
    let mut results: Vec<Option<Value>> = vec![None; pinned.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (probe, result) in pinned.iter_mut().zip(results.iter_mut()) {
            if result.is_none() {
                match probe.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *result = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

fn unreachable(source: &StatusSource, error: &str) -> Value {
    tracing::debug!(source = %source.name, url = %source.url.0, %error, "dashboard: status URL unreachable");
    json!({
        "name": source.name,
        "url": source.url.0.to_string(),
        "reachable": false,
        "error": error,
    })
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// The tail of the ledger, read.
#[derive(Default)]
struct Ledger {
    /// The newest decisions first, at most [`DECISIONS_SHOWN`].
    newest: Vec<Value>,
    /// Each route's latest decision in the tail (its current step).
    latest: HashMap<String, Value>,
    unreadable: usize,
    error: Option<String>,
}

/// Reads at most `tail_bytes` of the ledger's end; a line cut by the bound is skipped, a line
/// that is not a JSON object counted. No file yet is no error: no rollout has run.
async fn read_ledger(path: &Path, tail_bytes: u64) -> Ledger {
    let mut ledger = Ledger::default();
    let text = match read_tail(path, tail_bytes).await {
        Ok(Some(text)) => text,
        Ok(None) => return ledger,
        Err(error) => {
            ledger.error = Some(format!("{}: {error}", path.display()));
            return ledger;
        }
    };
    let mut decisions = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(entry) if entry.get("route").is_some_and(Value::is_string) => {
                decisions.push(entry);
            }
            _ => ledger.unreadable += 1,
        }
    }
    for entry in &decisions {
        if let Some(route) = entry["route"].as_str() {
            ledger.latest.insert(route.to_owned(), entry.clone());
        }
    }
    ledger.newest = decisions.into_iter().rev().take(DECISIONS_SHOWN).collect();
    ledger
}

async fn read_tail(path: &Path, tail_bytes: u64) -> std::io::Result<Option<String>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let start = len.saturating_sub(tail_bytes);
    file.seek(std::io::SeekFrom::Start(start)).await?;
    let mut bytes = Vec::with_capacity(usize::try_from(len - start).unwrap_or(0));
    (&mut file).take(tail_bytes).read_to_end(&mut bytes).await?;
    if start > 0 {
        // The first line is cut unless the bound fell just after a newline.
        let mut before = [0u8; 1];
        file.seek(std::io::SeekFrom::Start(start - 1)).await?;
        file.read_exact(&mut before).await?;
        if before[0] != b'\n' {
            let cut = bytes
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// The routes as the page lists them: the file's order, then the default route.
fn routes(
    table: &Table,
    mut rates: HashMap<String, Value>,
    latest: &HashMap<String, Value>,
) -> Vec<Value> {
    let compiled: HashMap<&str, &crate::table::Route> =
        table.routes.iter().map(|r| (&*r.name, r)).collect();
    let mut list: Vec<Value> = table
        .file
        .routes
        .iter()
        .map(|config| {
            let route = compiled.get(config.name.as_str());
            let parity = route
                .and_then(|r| r.parity.as_ref())
                .map(|p| parity(&p.status(config.mode.as_str())));
            let step = latest.get(&config.name).map(|entry| {
                json!({
                    "step": entry.get("step"),
                    "step_index": entry.get("step_index"),
                    "action": entry.get("action"),
                    "verdict": entry.get("verdict"),
                    "ts": entry.get("ts"),
                })
            });
            json!({
                "name": config.name,
                "path": config.path,
                "mode": config.mode.as_str(),
                "percent": config.percent,
                "serve": config.serve,
                "monolith": table.file.monolith_of(config),
                "step": step,
                "sides": rates.remove(&config.name),
                "parity": parity,
            })
        })
        .collect();
    list.push(json!({
        "name": "default",
        "path": "(no route matched)",
        "mode": "monolith",
        "serve": Value::Null,
        "monolith": table.file.proxy.default,
        "percent": Value::Null,
        "step": Value::Null,
        "sides": rates.remove("default"),
        "parity": Value::Null,
    }));
    list
}

/// A shadow route's parity, from its admin status: counts, match rate, the newest mismatches.
fn parity(status: &Value) -> Value {
    let compared = status["compared"].as_u64().unwrap_or(0);
    let matched = status["matched"].as_u64().unwrap_or(0);
    let mismatches: Vec<Value> = status["mismatches"]
        .as_array()
        .map(|list| {
            list.iter()
                .rev()
                .take(MISMATCHES_SHOWN)
                .map(|m| {
                    let differences: Vec<Value> = m["verdict"]["differences"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        // As compared: a side without a value there has no key.
                        .cloned()
                        .collect();
                    json!({
                        "at_ms": m.get("at_ms"),
                        "method": m["request"].get("method"),
                        "path": m["request"].get("path"),
                        "query": m["request"].get("query"),
                        "monolith_status": m["monolith"].get("status"),
                        "extracted_status": m["extracted"].get("status"),
                        "differences": differences,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "compared": compared,
        "matched": matched,
        "mismatched": status["mismatched"],
        "match_ratio": (compared > 0).then(|| matched as f64 / compared as f64),
        "mismatches": mismatches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ficus-dashboard-{}-{}", std::process::id(), name));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("rollout.ledger.jsonl")
    }

    #[tokio::test]
    async fn the_ledger_tail_skips_the_cut_line_and_keeps_each_routes_latest_step() {
        let path = temp("tail");
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&format!(
                "{{\"ts\":\"2026-11-28T03:00:{i:02}Z\",\"route\":\"r{}\",\"action\":\"promote\",\"step\":\"canary {i}%\",\"step_index\":{i},\"verdict\":\"pass\",\"reason\":\"ok\"}}\n",
                i % 2
            ));
        }
        text.push_str("not json\n");
        std::fs::write(&path, &text).unwrap();
        // A bound that falls inside a line: that line is skipped, never misread.
        let ledger = read_ledger(&path, 1000).await;
        assert_eq!(ledger.error, None);
        assert_eq!(ledger.unreadable, 1, "the last line is not JSON");
        assert_eq!(ledger.newest[0]["step"], "canary 49%");
        assert_eq!(ledger.latest["r0"]["step_index"], 48);
        assert_eq!(ledger.latest["r1"]["step_index"], 49);
        let read = ledger.newest.len();
        assert!(read < 20 && read > 3, "{read} lines in 1000 bytes");

        let whole = read_ledger(&path, 1 << 20).await;
        assert_eq!(whole.newest.len(), DECISIONS_SHOWN);
        assert_eq!(whole.latest["r0"]["step"], "canary 48%");

        let missing = read_ledger(&path.with_file_name("none.jsonl"), 1000).await;
        assert!(missing.error.is_none() && missing.newest.is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn rates_are_over_the_window_and_ratios_need_answers() {
        let mut before = SideReading::default();
        before.counts.answers[1] = 10;
        before.counts.seconds = 1.0;
        // 10 answers under 1 ms before the window.
        before.buckets = vec![(0.001, 10.0), (0.002, 10.0), (f64::INFINITY, 10.0)];
        let mut now = SideReading {
            counts: before.counts,
            buckets: before.buckets.clone(),
        };
        now.counts.answers[1] = 28;
        now.counts.answers[4] = 2;
        now.counts.seconds = 1.5;
        now.counts.failed_attempts = 4;
        // In the window: 18 under 1 ms, 2 between 1 and 2 ms: the p95 (rank 19 of 20) is in
        // the second bucket, though over the whole history it would be in the first.
        now.buckets = vec![(0.001, 28.0), (0.002, 30.0), (f64::INFINITY, 30.0)];
        let side = side_json(&now, Some(&before), Some(Duration::from_secs(2)));
        assert_eq!(side["total"], 30);
        let recent = &side["recent"];
        assert_eq!(recent["answers"], 20);
        assert_eq!(recent["rate_per_second"], 10.0);
        assert_eq!(recent["error_ratio"], 0.1);
        assert_eq!(recent["mean_latency_ms"], 25.0);
        assert_eq!(recent["failed_attempts_per_second"], 2.0);
        assert_eq!(recent["p95_latency_ms"], 2.0);
        assert_eq!(recent["p95_latency_over_ms"], Value::Null);
        // Past the last finite bound: no number, that bound as a floor.
        let mut slow = SideReading {
            counts: now.counts,
            buckets: vec![(0.001, 10.0), (0.002, 10.0), (f64::INFINITY, 30.0)],
        };
        slow.counts.seconds = 100.0;
        let slow = side_json(&slow, Some(&before), Some(Duration::from_secs(2)));
        assert_eq!(slow["recent"]["p95_latency_ms"], Value::Null);
        assert_eq!(slow["recent"]["p95_latency_over_ms"], 2.0);
        let idle = side_json(&before, Some(&before), Some(Duration::from_secs(2)));
        assert_eq!(idle["recent"]["error_ratio"], Value::Null);
        assert_eq!(idle["recent"]["p95_latency_ms"], Value::Null);
        assert_eq!(side_json(&now, None, None)["recent"], Value::Null);
    }

    #[test]
    fn latency_buckets_are_read_per_route_and_side() {
        let metrics = Metrics::default();
        let route = metrics.route("people-read");
        for _ in 0..19 {
            route.answered(Answerer::Monolith, 200, 0.0003);
        }
        route.answered(Answerer::Monolith, 200, 0.03);
        let buckets = latency_buckets(&metrics.encode());
        let monolith = &buckets[&("people-read".to_owned(), "monolith".to_owned())];
        assert_eq!(monolith.last(), Some(&(f64::INFINITY, 20.0)));
        assert!(
            monolith
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        // Each answer counts in the first bucket whose bound holds it (whatever the bounds
        // are): the p95 (19 of 20 at 0.3 ms) is the first bound at least 0.3 ms, the
        // maximum the first at least 30 ms.
        let first_at_least = |v: f64| monolith.iter().map(|b| b.0).find(|le| *le >= v);
        assert_eq!(quantile(monolith, 0.95), first_at_least(0.0003));
        assert_eq!(quantile(monolith, 1.0), first_at_least(0.03));
        assert!(first_at_least(0.0003) < first_at_least(0.03));
        let extracted = &buckets[&("people-read".to_owned(), "extracted".to_owned())];
        assert_eq!(quantile(extracted, 0.95), None);
    }

    #[test]
    fn latency_sums_are_read_per_route_and_side() {
        let metrics = Metrics::default();
        let route = metrics.route("people-read");
        route.answered(Answerer::Extracted, 200, 0.25);
        route.answered(Answerer::Extracted, 503, 0.5);
        route.answered(Answerer::Proxy, 401, 0.125);
        let sums = latency_sums(&metrics.encode());
        let sum = |side: &str| sums[&("people-read".to_owned(), side.to_owned())];
        assert_eq!(sum("extracted"), 0.75);
        assert_eq!(sum("proxy"), 0.125);
        assert_eq!(sum("monolith"), 0.0);
        let counts = route.counts();
        assert_eq!(counts[1].total(), 2);
        assert_eq!(counts[1].errors(), 1);
        assert_eq!(counts[2].answers[3], 1);
    }

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# TYPE ficus_cdc_lag_seconds gauge\nficus_cdc_lag_seconds 0.25\nficus_cdc_lag_seconds_other 9\n";
        assert_eq!(gauge(text, "ficus_cdc_lag_seconds"), Some(0.25));
        assert_eq!(gauge(text, "ficus_cdc_slot_lag_bytes"), None);
    }
}
