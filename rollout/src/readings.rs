//! What the gates read, and how: the proxies' Prometheus text (every instance's admin
//! `/metrics`, or a Prometheus server's `/federate`), reduced to one route's counters, summed
//! over instances as deltas since a step began (a restarted instance's counters count from
//! zero); and the extracted service's `/views` (readiness and lag of each view).

use std::collections::BTreeMap;
use std::time::Duration;

use ficus_proxy::metrics as names;
use ficus_telemetry::scrape::{Sample, parse_text};
use ficus_telemetry::views::ViewsReport;
use serde::Serialize;

/// Why a reading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer JSON of the expected shape: {message}")]
    Shape { url: String, message: String },
}

/// The series of every source a route's gates read, by (source, name, labels) so deltas are
/// taken per instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters(pub BTreeMap<String, (Sample, f64)>);

/// The series names the gates read, as exposed (counters with `_total`).
fn wanted(name: &str) -> bool {
    let requests = format!("{}_total", names::REQUESTS);
    let errors = format!("{}_total", names::UPSTREAM_ERRORS);
    let bucket = format!("{}_bucket", names::DURATION);
    let compared = format!("{}_total", names::SHADOW_COMPARED);
    let mismatched = format!("{}_total", names::SHADOW_MISMATCHED);
    let skipped = format!("{}_total", names::SHADOW_SKIPPED);
    [requests, errors, bucket, compared, mismatched, skipped].contains(&name.to_owned())
}

impl Counters {
    /// Keeps the wanted series of `samples` (read from source `source`).
    pub fn add_source(&mut self, source: usize, samples: Vec<Sample>) {
        for sample in samples {
            if !wanted(&sample.name) {
                continue;
            }
            let labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect();
            let key = format!("{source}|{}|{}", sample.name, labels.join(","));
            let value = sample.value;
            self.0.insert(key, (sample, value));
        }
    }

    /// `self - base` per series; a series that went down (its instance restarted) or is new
    /// counts whole.
    pub fn since(&self, base: &Counters) -> Counters {
        let mut out = BTreeMap::new();
        for (key, (sample, now)) in &self.0 {
            let delta = match base.0.get(key) {
                Some((_, before)) if now >= before => now - before,
                _ => *now,
            };
            out.insert(key.clone(), (sample.clone(), delta));
        }
        Counters(out)
    }

    /// The summed window of `route` over every instance.
    pub fn window(&self, route: &str) -> Window {
        let mut w = Window::default();
        let requests = format!("{}_total", names::REQUESTS);
        let errors = format!("{}_total", names::UPSTREAM_ERRORS);
        let bucket = format!("{}_bucket", names::DURATION);
        let compared = format!("{}_total", names::SHADOW_COMPARED);
        let mismatched = format!("{}_total", names::SHADOW_MISMATCHED);
        let skipped = format!("{}_total", names::SHADOW_SKIPPED);
        let mut buckets: [BTreeMap<u64, (f64, f64)>; 2] = Default::default();
        for (sample, delta) in self.0.values() {
            if sample.labels.get("route").map(String::as_str) != Some(route) {
                continue;
            }
            let delta = delta.max(0.0).round() as u64;
            let side = match sample.labels.get("side").map(String::as_str) {
                Some("monolith") => Some(0),
                Some("extracted") => Some(1),
                _ => None,
            };
            let name = sample.name.as_str();
            if name == requests {
                if let Some(s) = side {
                    w.sides[s].answers += delta;
                    if sample.labels.get("status").map(String::as_str) == Some("5xx") {
                        w.sides[s].errors += delta;
                    }
                }
            } else if name == errors {
                if let Some(s) = side {
                    w.sides[s].failed_attempts += delta;
                }
            } else if name == bucket {
                if let (Some(s), Some(le)) = (side, sample.le()) {
                    // Keyed by the bound's bits: bounds are the same floats on every instance.
                    let entry = buckets[s].entry(le.to_bits()).or_insert((le, 0.0));
                    entry.1 += delta as f64;
                }
            } else if name == compared {
                w.compared += delta;
            } else if name == mismatched {
                w.mismatched += delta;
            } else if name == skipped
                && matches!(
                    sample.labels.get("reason").map(String::as_str),
                    Some("candidate_error" | "candidate_timeout")
                )
            {
                w.candidate_failures += delta;
            }
        }
        for (s, map) in buckets.into_iter().enumerate() {
            let mut list: Vec<(f64, f64)> = map.into_values().collect();
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
            w.sides[s].duration_buckets = list;
        }
        w
    }
}

/// One side's counts over a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SideWindow {
    /// Answers the side made (passed on to clients).
    pub answers: u64,
    /// Of those, 5xx.
    pub errors: u64,
    /// Attempts that failed without an answer of the side (connect, timeout, broken; a 5xx a
    /// fallback replaced): the client got the other side's answer or ficus's own.
    pub failed_attempts: u64,
    /// Cumulative `(le seconds, count)` of the answers' durations.
    #[serde(skip)]
    pub duration_buckets: Vec<(f64, f64)>,
}

impl SideWindow {
    /// Requests the side was asked: its answers and its failed attempts (disjoint counts).
    pub fn attempts(&self) -> u64 {
        self.answers + self.failed_attempts
    }
    /// Attempts that failed: 5xx answers and failed attempts.
    pub fn failures(&self) -> u64 {
        self.errors + self.failed_attempts
    }
}

/// A route's counts over a window, summed over the proxies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    /// `[monolith, extracted]`.
    pub sides: [SideWindow; 2],
    pub compared: u64,
    pub mismatched: u64,
    /// Shadow copies the extracted side failed (error, timeout): as bad as a mismatch.
    pub candidate_failures: u64,
}

/// Where the proxies' counters are read.
#[derive(Debug, Clone)]
pub enum Source {
    /// Each instance's admin listener (`/metrics`).
    Admin(Vec<String>),
    /// A Prometheus server scraping them (`/federate`).
    Prometheus(String),
}

/// Reads every source once.
pub async fn read_counters(
    http: &reqwest::Client,
    source: &Source,
    timeout: Duration,
) -> Result<Counters, ReadError> {
    let mut counters = Counters::default();
    let success = |status: u16| (200..300).contains(&status);
    match source {
        Source::Admin(urls) => {
            for (i, url) in urls.iter().enumerate() {
                let url = format!("{}/metrics", url.trim_end_matches('/'));
                let (_, body) = get(http, &url, &[], timeout, success).await?;
                counters.add_source(i, parse_text(&String::from_utf8_lossy(&body)));
            }
        }
        Source::Prometheus(base) => {
            let selector = format!(
                "{{__name__=~\"{}_total|{}_total|{}_bucket|{}_total|{}_total|{}_total\"}}",
                names::REQUESTS,
                names::UPSTREAM_ERRORS,
                names::DURATION,
                names::SHADOW_COMPARED,
                names::SHADOW_MISMATCHED,
                names::SHADOW_SKIPPED
            );
            let url = format!("{}/federate", base.trim_end_matches('/'));
            let query = [("match[]", selector.as_str())];
            let (_, body) = get(http, &url, &query, timeout, success).await?;
            counters.add_source(0, parse_text(&String::from_utf8_lossy(&body)));
        }
    }
    Ok(counters)
}

/// One GET of `url` (with `query`) within `timeout`: the status and body of an answer whose
/// status is `accepted`, or why there is none.
async fn get(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    timeout: Duration,
    accepted: impl Fn(u16) -> bool,
) -> Result<(u16, Vec<u8>), ReadError> {
    let failed = |source| ReadError::Http {
        url: url.to_owned(),
        source,
    };
    let response = http
        .get(url)
        .query(query)
        .timeout(timeout)
        .send()
        .await
        .map_err(failed)?;
    let status = response.status().as_u16();
    if !accepted(status) {
        return Err(ReadError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let body = response.bytes().await.map_err(failed)?;
    Ok((status, body.to_vec()))
}

/// A service's views as the gates weigh them: ready, and how far the furthest behind is.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Views {
    pub ready: bool,
    /// The view furthest behind (name), when any.
    pub worst: Option<String>,
    pub max_lag_events: i64,
    pub max_lag_seconds: f64,
}

impl From<&ViewsReport> for Views {
    fn from(report: &ViewsReport) -> Self {
        Views {
            ready: report.ready,
            worst: report.worst().map(|v| v.view.clone()),
            max_lag_events: report.max_lag_events(),
            max_lag_seconds: report.max_lag_seconds(),
        }
    }
}

/// Reads a service's `/views` (200 ready, 503 not: both carry the report).
pub async fn read_views(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Views, ReadError> {
    let report = |status| status == 200 || status == 503;
    let (status, body) = get(http, url, &[], timeout, report).await?;
    ViewsReport::from_answer(status, &body)
        .map(|report| Views::from(&report))
        .map_err(|error| ReadError::Shape {
            url: url.to_owned(),
            message: error.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROXY_A: &str = r#"# HELP ficus_proxy_requests Answers.
# TYPE ficus_proxy_requests counter
ficus_proxy_requests_total{route="people-read",side="monolith",status="2xx"} 90
ficus_proxy_requests_total{route="people-read",side="monolith",status="5xx"} 1
ficus_proxy_requests_total{route="people-read",side="extracted",status="2xx"} 8
ficus_proxy_requests_total{route="people-read",side="extracted",status="5xx"} 2
ficus_proxy_requests_total{route="other",side="extracted",status="5xx"} 50
ficus_proxy_upstream_errors_total{route="people-read",side="extracted",kind="timeout"} 1
ficus_proxy_request_duration_seconds_bucket{route="people-read",side="extracted",le="0.001"} 5
ficus_proxy_request_duration_seconds_bucket{route="people-read",side="extracted",le="0.002"} 10
ficus_proxy_request_duration_seconds_bucket{route="people-read",side="extracted",le="+Inf"} 10
ficus_shadow_compared_total{route="people-read"} 40
ficus_shadow_mismatched_total{route="people-read"} 3
ficus_shadow_skipped_total{route="people-read",reason="candidate_timeout"} 2
ficus_shadow_skipped_total{route="people-read",reason="sampled_out"} 7
# EOF
"#;

    #[test]
    fn a_route_window_sums_instances_and_counts_resets_whole() {
        let mut base = Counters::default();
        base.add_source(0, parse_text(PROXY_A));
        base.add_source(1, parse_text(PROXY_A));
        let mut now = Counters::default();
        now.add_source(0, parse_text(&PROXY_A.replace("} 90", "} 190")));
        // Instance 1 restarted: its counters started over, at 8 extracted 2xx and 90 monolith.
        let restarted = PROXY_A.replace("status=\"2xx\"} 8", "status=\"2xx\"} 4");
        now.add_source(1, parse_text(&restarted));
        let w = now.since(&base).window("people-read");
        // Instance 0: +100 monolith 2xx; instance 1: went down 8 -> 4, so 4 counted whole.
        assert_eq!(w.sides[0].answers, 100);
        assert_eq!(w.sides[1].answers, 4);
        assert_eq!(w.sides[1].errors, 0);
        let whole = {
            let mut c = Counters::default();
            c.add_source(0, parse_text(PROXY_A));
            c.add_source(1, parse_text(PROXY_A));
            c.window("people-read")
        };
        assert_eq!(whole.sides[1].answers, 20);
        assert_eq!(whole.sides[1].errors, 4);
        assert_eq!(whole.sides[1].failed_attempts, 2);
        assert_eq!(whole.sides[1].attempts(), 22);
        assert_eq!(whole.sides[1].failures(), 6);
        assert_eq!(whole.compared, 80);
        assert_eq!(whole.mismatched, 6);
        assert_eq!(whole.candidate_failures, 4);
        assert_eq!(
            whole.sides[1].duration_buckets,
            vec![(0.001, 10.0), (0.002, 20.0), (f64::INFINITY, 20.0)]
        );
    }

    #[test]
    fn views_are_summarised_by_the_worst() {
        let body = br#"{"ready": false, "views": [
            {"view": "people", "ready": true, "lag_events": 3, "lag_seconds": 0.5},
            {"view": "teams", "ready": false, "lag_events": 900, "lag_seconds": 12.0}
        ]}"#;
        let v = Views::from(&ViewsReport::from_answer(503, body).unwrap());
        assert!(!v.ready);
        assert_eq!(v.worst.as_deref(), Some("teams"));
        assert_eq!(v.max_lag_events, 900);
        assert_eq!(v.max_lag_seconds, 12.0);
    }
}
