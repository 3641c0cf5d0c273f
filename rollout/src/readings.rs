//! What the gates read, and how: the proxies' Prometheus text (every instance's admin
//! `/metrics`, or a Prometheus server's `/federate`), reduced to one route's counters, summed
//! over instances as deltas since a step began (a restarted instance's counters count from
//! zero); and the extracted service's `/views` (readiness and lag of each view).

use std::collections::BTreeMap;
use std::time::Duration;

use ficus_proxy::metrics as names;
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

/// One sample of the text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus / OpenMetrics text: `name{label="value",...} value [timestamp]` lines;
/// comments and lines it cannot read are skipped.
pub fn parse_text(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end = loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            let (start, first) = chars.next()?;
            if first == '}' {
                break start;
            }
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let key = body[start..eq?].trim();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            loop {
                let (_, c) = chars.next()?;
                match (escaped, c) {
                    (true, 'n') => value.push('\n'),
                    (true, other) => value.push(other),
                    (false, '\\') => {
                        escaped = true;
                        continue;
                    }
                    (false, '"') => break,
                    (false, other) => value.push(other),
                }
                escaped = false;
            }
            labels.insert(key.to_owned(), value);
        };
        rest = body.get(end + 1..)?;
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
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
                if let (Some(s), Some(le)) = (side, sample.labels.get("le")) {
                    let le: f64 = match le.as_str() {
                        "+Inf" => f64::INFINITY,
                        other => other.parse().unwrap_or(f64::INFINITY),
                    };
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
    match source {
        Source::Admin(urls) => {
            for (i, url) in urls.iter().enumerate() {
                let url = format!("{}/metrics", url.trim_end_matches('/'));
                let text = get_text(http, &url, timeout).await?;
                counters.add_source(i, parse_text(&text));
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
            let response = http
                .get(&url)
                .query(&[("match[]", selector)])
                .timeout(timeout)
                .send()
                .await
                .map_err(|source| ReadError::Http {
                    url: url.clone(),
                    source,
                })?;
            let text = text_of(response, &url).await?;
            counters.add_source(0, parse_text(&text));
        }
    }
    Ok(counters)
}

async fn get_text(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<String, ReadError> {
    let response = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| ReadError::Http {
            url: url.to_owned(),
            source,
        })?;
    text_of(response, url).await
}

async fn text_of(response: reqwest::Response, url: &str) -> Result<String, ReadError> {
    if !response.status().is_success() {
        return Err(ReadError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    response.text().await.map_err(|source| ReadError::Http {
        url: url.to_owned(),
        source,
    })
}

/// A service's views as its `/views` reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Views {
    pub ready: bool,
    /// The view furthest behind (name), when any.
    pub worst: Option<String>,
    pub max_lag_events: i64,
    pub max_lag_seconds: f64,
}

/// Reads a service's `/views` (200 ready, 503 not: both carry the JSON).
pub async fn read_views(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Views, ReadError> {
    let response = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|source| ReadError::Http {
            url: url.to_owned(),
            source,
        })?;
    let status = response.status().as_u16();
    if status != 200 && status != 503 {
        return Err(ReadError::Status {
            url: url.to_owned(),
            status,
        });
    }
    let body: serde_json::Value = response.json().await.map_err(|source| ReadError::Http {
        url: url.to_owned(),
        source,
    })?;
    views_of(&body).map_err(|message| ReadError::Shape {
        url: url.to_owned(),
        message,
    })
}

/// The summary of a `/views` body.
pub fn views_of(body: &serde_json::Value) -> Result<Views, String> {
    let ready = body["ready"].as_bool().ok_or("no boolean `ready`")?;
    let list = body["views"].as_array().ok_or("no array `views`")?;
    let mut views = Views {
        ready,
        ..Views::default()
    };
    for view in list {
        let lag = view["lag_events"].as_i64().unwrap_or(0);
        let seconds = view["lag_seconds"].as_f64().unwrap_or(0.0);
        if lag > views.max_lag_events || views.worst.is_none() {
            views.worst = view["view"].as_str().map(str::to_owned);
        }
        views.max_lag_events = views.max_lag_events.max(lag);
        views.max_lag_seconds = views.max_lag_seconds.max(seconds);
    }
    Ok(views)
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
    fn the_text_parses_with_labels_and_escapes() {
        let samples = parse_text(
            "a_total{x=\"1\",y=\"q\\\"uote\"} 3\nb 4.5 1700000000\n# comment\nc{} 1\nd{le=\"+Inf\",} +Inf\n",
        );
        assert_eq!(samples.len(), 4, "{samples:#?}");
        assert_eq!(samples[0].labels["y"], "q\"uote");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].name, "b");
        assert_eq!(samples[1].value, 4.5);
        assert!(samples[3].value.is_infinite());
        assert_eq!(samples[3].labels["le"], "+Inf");
    }

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
        let body = serde_json::json!({"ready": false, "views": [
            {"view": "people", "ready": true, "lag_events": 3, "lag_seconds": 0.5},
            {"view": "teams", "ready": false, "lag_events": 900, "lag_seconds": 12.0},
        ]});
        let v = views_of(&body).unwrap();
        assert!(!v.ready);
        assert_eq!(v.worst.as_deref(), Some("teams"));
        assert_eq!(v.max_lag_events, 900);
        assert_eq!(v.max_lag_seconds, 12.0);
        assert!(views_of(&serde_json::json!({"views": []})).is_err());
    }
}
