//! The rollout plan (`rollout.toml`, beside `routes.toml`): where the controller reads the
//! proxies, and per route the steps (shadow, canary percents, extracted), how long and on how
//! many requests each is held, and the gates' thresholds. Parsed once into typed values; every
//! problem is reported at once with its dotted key.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One problem of a plan, at its dotted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem of a plan.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(Problem::to_string).collect();
        f.write_str(&all.join("; "))
    }
}

/// `[controller]`: where the readings come from, how often, the ledger.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// Admin URLs of every proxy instance (`http://host:port`); their counters are summed.
    #[serde(default)]
    pub proxy_admin_urls: Vec<String>,
    /// Or a Prometheus server scraping them: its `/federate` is read (every instance's series,
    /// summed the same way).
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// How often the controller reads and decides.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Time allowed to each reading (a proxy, a service's `/views`).
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// The decision ledger (JSON lines); relative to this file's directory.
    #[serde(default = "default_ledger_file")]
    pub ledger_file: PathBuf,
    /// The routes file the steps edit; relative to this file's directory.
    #[serde(default = "default_routes_file")]
    pub routes_file: PathBuf,
    /// One-sided confidence of the statistical gates, in percent (e.g. 95).
    #[serde(default = "default_confidence_percent")]
    pub confidence_percent: f64,
}

fn default_poll_interval_ms() -> u64 {
    5_000
}
fn default_read_timeout_ms() -> u64 {
    2_000
}
fn default_ledger_file() -> PathBuf {
    PathBuf::from("rollout.ledger.jsonl")
}
fn default_routes_file() -> PathBuf {
    PathBuf::from("routes.toml")
}
fn default_confidence_percent() -> f64 {
    95.0
}

/// `[route.shadow]`: the first step, parity only (the monolith serves everyone).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowStep {
    /// Minimum time in the step.
    pub min_duration_ms: u64,
    /// Minimum comparisons in the step before any decision.
    pub min_compared: u64,
}

/// `[route.canary]`: the canary steps, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanarySteps {
    /// Shares of users on the extracted side, increasing, each in (0, 100).
    pub percents: Vec<f64>,
    /// Minimum time in each step.
    pub min_duration_ms: u64,
    /// Minimum answers by the extracted side in each step before any decision.
    pub min_requests: u64,
}

/// `[route.gates]`: the thresholds every step is judged by.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Highest parity mismatch rate (0..1) tolerated (mismatches and the candidate's failures
    /// among the comparisons).
    pub max_mismatch_rate: f64,
    /// Highest excess of the extracted side's error rate over the monolith's (0..1).
    #[serde(default = "default_max_error_rate_increase")]
    pub max_error_rate_increase: f64,
    /// The extracted side's p95 may be at most this multiple of the monolith's ...
    #[serde(default = "default_max_p95_ratio")]
    pub max_p95_ratio: f64,
    /// ... plus this slack (small latencies are all noise).
    #[serde(default = "default_p95_slack_ms")]
    pub p95_slack_ms: f64,
    /// Most events a service's view may be behind for the route to move onto it.
    #[serde(default = "default_max_view_lag_events")]
    pub max_view_lag_events: i64,
    /// Most seconds a service's view may be behind.
    #[serde(default = "default_max_view_lag_seconds")]
    pub max_view_lag_seconds: f64,
}

fn default_max_error_rate_increase() -> f64 {
    0.01
}
fn default_max_p95_ratio() -> f64 {
    1.5
}
fn default_p95_slack_ms() -> f64 {
    20.0
}
fn default_max_view_lag_events() -> i64 {
    100
}
fn default_max_view_lag_seconds() -> f64 {
    5.0
}

/// `[[route]]`: one route's plan.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePlan {
    /// The route's `name` in routes.toml.
    pub name: String,
    /// The service's `/views` (readiness and lag); default: the route's `serve` upstream URL
    /// + `/views`. `""` turns the view gate off (a service without views).
    #[serde(default)]
    pub views_url: Option<String>,
    /// The shadow step; absent: the route starts at the first canary step.
    #[serde(default)]
    pub shadow: Option<ShadowStep>,
    pub canary: CanarySteps,
    pub gates: Gates,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    controller: toml::Value,
    #[serde(default)]
    route: Vec<toml::Value>,
}

/// A checked plan; relative paths resolved against the plan's directory.
#[derive(Debug, Clone)]
pub struct Plan {
    pub controller: ControllerSection,
    pub routes: Vec<RoutePlan>,
}

/// One step of a route's rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Shadow,
    Canary(f64),
    Extracted,
}

impl Step {
    /// The ledger's label: `shadow`, `canary 5%`, `extracted`.
    pub fn label(self) -> String {
        match self {
            Step::Shadow => "shadow".to_owned(),
            Step::Canary(p) => format!("canary {p}%"),
            Step::Extracted => "extracted".to_owned(),
        }
    }
}

impl RoutePlan {
    /// The route's steps in order: shadow (when planned), each canary percent, extracted.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.shadow.is_some() {
            steps.push(Step::Shadow);
        }
        steps.extend(self.canary.percents.iter().map(|p| Step::Canary(*p)));
        steps.push(Step::Extracted);
        steps
    }
}

impl Plan {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Problems(vec![Problem {
                key: path.display().to_string(),
                message: format!("cannot be read: {e}"),
            }])
        })?;
        let mut plan = Self::parse(&text)?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        for file in [
            &mut plan.controller.ledger_file,
            &mut plan.controller.routes_file,
        ] {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        Ok(plan)
    }

    /// Parses and checks a plan's text: every problem at once, each at its dotted key.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        let raw: RawPlan = typed(toml::from_str::<toml::Value>(text), "")
            .and_then(|value| typed(RawPlan::deserialize(value), ""))
            .map_err(|p| Problems(vec![p]))?;
        let mut problems = Vec::new();
        let controller = typed_value::<ControllerSection>(raw.controller, "controller")
            .map_err(|p| problems.push(p))
            .ok();
        let mut routes = Vec::new();
        for (i, value) in raw.route.into_iter().enumerate() {
            match typed_value::<RoutePlan>(value, &format!("route[{i}]")) {
                Ok(route) => routes.push((i, route)),
                Err(p) => problems.push(p),
            }
        }
        if let Some(controller) = &controller {
            validate_controller(controller, &mut problems);
        }
        let mut names = BTreeSet::new();
        for (i, route) in &routes {
            validate_route(*i, route, &mut problems);
            if !names.insert(route.name.clone()) {
                problems.push(problem(
                    format!("route[{i}].name"),
                    format!("\"{}\" is planned twice", route.name),
                ));
            }
        }
        match controller {
            Some(controller) if problems.is_empty() => Ok(Plan {
                controller,
                routes: routes.into_iter().map(|(_, r)| r).collect(),
            }),
            _ => Err(Problems(problems)),
        }
    }

    pub fn route(&self, name: &str) -> Option<&RoutePlan> {
        self.routes.iter().find(|r| r.name == name)
    }
}

/// `value` as a `T`, or the problem at the failing field's dotted key under `prefix`
/// (`route[0].canary.percents[1]`, `route[1].gates.hold_s` for an unknown key).
fn typed_value<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
) -> Result<T, Problem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        let text = e.inner().to_string();
        Problem {
            key,
            message: text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_owned(),
        }
    })
}

/// A serde result with the failing field's dotted key under `prefix`.
fn typed<T, E: std::fmt::Display>(result: Result<T, E>, prefix: &str) -> Result<T, Problem> {
    result.map_err(|e| {
        let text = e.to_string();
        // toml's messages name the key in backticks; keep the first line.
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let key = if prefix.is_empty() {
            "rollout.toml".to_owned()
        } else {
            prefix.to_owned()
        };
        Problem {
            key,
            message: line
                .trim_start_matches("TOML parse error at ")
                .trim()
                .to_owned()
                + &detail(&text),
        }
    })
}

/// toml puts the message proper on a later line of its report; keep it.
fn detail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() > 1 {
        format!(
            ": {}",
            lines.last().map(|l| l.trim()).unwrap_or_default().trim()
        )
    } else {
        String::new()
    }
}

fn problem(key: String, message: String) -> Problem {
    Problem { key, message }
}

fn validate_controller(c: &ControllerSection, problems: &mut Vec<Problem>) {
    if c.proxy_admin_urls.is_empty() && c.prometheus_url.is_none() {
        problems.push(problem(
            "controller.proxy_admin_urls".into(),
            "name at least one proxy admin URL (or controller.prometheus_url)".into(),
        ));
    }
    if !c.proxy_admin_urls.is_empty() && c.prometheus_url.is_some() {
        problems.push(problem(
            "controller.prometheus_url".into(),
            "read either the proxies' admin URLs or a Prometheus, not both (counts would double)"
                .into(),
        ));
    }
    for (i, url) in c.proxy_admin_urls.iter().enumerate() {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(problem(
                format!("controller.proxy_admin_urls[{i}]"),
                format!("`{url}` is not an http(s) URL"),
            ));
        }
    }
    if c.poll_interval_ms == 0 {
        problems.push(problem(
            "controller.poll_interval_ms".into(),
            "must be positive".into(),
        ));
    }
    if c.read_timeout_ms == 0 {
        problems.push(problem(
            "controller.read_timeout_ms".into(),
            "must be positive".into(),
        ));
    }
    if !(50.0..100.0).contains(&c.confidence_percent) {
        problems.push(problem(
            "controller.confidence_percent".into(),
            format!("must be in 50..100, got {}", c.confidence_percent),
        ));
    }
}

fn validate_route(i: usize, r: &RoutePlan, problems: &mut Vec<Problem>) {
    let key = |k: &str| format!("route[{i}].{k}");
    if r.name.is_empty() {
        problems.push(problem(key("name"), "must not be empty".into()));
    }
    if let Some(shadow) = &r.shadow
        && shadow.min_compared == 0
    {
        problems.push(problem(
            key("shadow.min_compared"),
            "must be positive: no decision without a sample".into(),
        ));
    }
    let mut last = 0.0;
    for (j, p) in r.canary.percents.iter().enumerate() {
        if !(*p > 0.0 && *p < 100.0) {
            problems.push(problem(
                key(&format!("canary.percents[{j}]")),
                format!("must be in (0, 100), got {p}"),
            ));
        } else if *p <= last {
            problems.push(problem(
                key(&format!("canary.percents[{j}]")),
                format!("must be above the step before ({last}), got {p}"),
            ));
        } else if (p * 100.0).fract() != 0.0 {
            problems.push(problem(
                key(&format!("canary.percents[{j}]")),
                format!("the proxy counts hundredths of a percent, got {p}"),
            ));
        }
        last = *p;
    }
    if r.canary.min_requests == 0 {
        problems.push(problem(
            key("canary.min_requests"),
            "must be positive: no decision without a sample".into(),
        ));
    }
    let g = &r.gates;
    for (name, value) in [
        ("gates.max_mismatch_rate", g.max_mismatch_rate),
        ("gates.max_error_rate_increase", g.max_error_rate_increase),
    ] {
        if !(0.0..1.0).contains(&value) || value == 0.0 {
            problems.push(problem(
                key(name),
                format!("must be in (0, 1): a rate, not a percent; got {value}"),
            ));
        }
    }
    if g.max_p95_ratio < 1.0 {
        problems.push(problem(
            key("gates.max_p95_ratio"),
            format!("must be at least 1, got {}", g.max_p95_ratio),
        ));
    }
    if g.p95_slack_ms < 0.0 {
        problems.push(problem(
            key("gates.p95_slack_ms"),
            "must not be negative".into(),
        ));
    }
    if g.max_view_lag_events < 0 {
        problems.push(problem(
            key("gates.max_view_lag_events"),
            "must not be negative".into(),
        ));
    }
    if g.max_view_lag_seconds < 0.0 {
        problems.push(problem(
            key("gates.max_view_lag_seconds"),
            "must not be negative".into(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
[controller]
proxy_admin_urls = ["http://127.0.0.1:9901", "http://127.0.0.1:9911"]
poll_interval_ms = 1000

[[route]]
name = "people-read"
shadow = { min_duration_ms = 60000, min_compared = 500 }
canary = { percents = [1, 5, 25, 50], min_duration_ms = 120000, min_requests = 200 }
gates = { max_mismatch_rate = 0.01 }
"#;

    #[test]
    fn a_plan_parses_with_defaults_and_its_steps_in_order() {
        let plan = Plan::parse(PLAN).unwrap();
        assert_eq!(plan.controller.proxy_admin_urls.len(), 2);
        assert_eq!(plan.controller.confidence_percent, 95.0);
        assert_eq!(
            plan.controller.ledger_file,
            PathBuf::from("rollout.ledger.jsonl")
        );
        let route = plan.route("people-read").unwrap();
        assert_eq!(route.gates.max_error_rate_increase, 0.01);
        let labels: Vec<String> = route.steps().into_iter().map(Step::label).collect();
        assert_eq!(
            labels,
            [
                "shadow",
                "canary 1%",
                "canary 5%",
                "canary 25%",
                "canary 50%",
                "extracted"
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_dotted_key() {
        let text = r#"
[controller]
proxy_admin_urls = ["127.0.0.1:9901"]
confidence_percent = 100

[[route]]
name = "people-read"
shadow = { min_duration_ms = 1, min_compared = 0 }
canary = { percents = [5, 5, 120], min_duration_ms = 1, min_requests = 0 }
gates = { max_mismatch_rate = 1.5 }

[[route]]
name = "people-list"
canary = { percents = [5], min_duration_ms = 1, min_requests = 1, hold_s = 3 }
gates = { max_mismatch_rate = 0.1 }

[[route]]
name = "people-read"
canary = { percents = [5], min_duration_ms = 1, min_requests = 1 }
gates = { max_mismatch_rate = 0.1 }
"#;
        let problems = Plan::parse(text).unwrap_err().0;
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for expected in [
            "controller.proxy_admin_urls[0]",
            "controller.confidence_percent",
            "route[0].shadow.min_compared",
            "route[0].canary.percents[1]",
            "route[0].canary.percents[2]",
            "route[0].canary.min_requests",
            "route[0].gates.max_mismatch_rate",
            "route[1].canary.hold_s",
            "route[2].name",
        ] {
            assert!(
                keys.contains(&expected),
                "{expected} missing in {problems:#?}"
            );
        }
        let unknown = problems
            .iter()
            .find(|p| p.key == "route[1].canary.hold_s")
            .unwrap();
        assert!(unknown.message.contains("hold_s"), "{unknown}");
    }

    #[test]
    fn a_plan_without_proxies_or_with_both_sources_is_refused() {
        let none = "[controller]\n";
        let problems = Plan::parse(none).unwrap_err();
        assert_eq!(problems.0[0].key, "controller.proxy_admin_urls");
        let both = "[controller]\nproxy_admin_urls = [\"http://a:1\"]\nprometheus_url = \"http://p:9090\"\n";
        let problems = Plan::parse(both).unwrap_err();
        assert_eq!(problems.0[0].key, "controller.prometheus_url");
    }
}
