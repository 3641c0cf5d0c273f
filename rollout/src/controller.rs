//! The controller's loop: every `poll_interval_ms`, read the proxies once (summed), each
//! route's service views, judge each route's step ([`crate::gate`]) and act: promote (edit
//! routes.toml to the next step), roll back (to the step before, then pause until a person
//! resumes), or hold (a ledger line when the kind of hold changes). Every edit goes through the
//! proxy's own flip and check (`ficus_proxy::edit`), written atomically; the proxies reload it.
//!
//! Where each route stands lives in the ledger ([`crate::ledger`]); this loop keeps only the
//! window's baseline counters and when the step began.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ficus_proxy::config::Mode;
use ficus_proxy::edit::{EditError, Flip, flip, write_atomically};
use serde_json::json;
use tracing::{error, info, info_span, warn};

use crate::gate::{ViewsReading, judge};
use crate::ledger::{Action, Entry, Ledger, LedgerError};
use crate::metrics::RolloutMetrics;
use crate::plan::{Plan, RoutePlan, Step};
use crate::readings::{Counters, Source, read_counters, read_views};
use crate::stats::Verdict;

/// Why the controller stopped or refused to start.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("reading {path}: {source}")]
    Routes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the proxy would refuse this routes file: {problems}")]
    Invalid { path: PathBuf, problems: String },
    #[error("route \"{route}\": {message}")]
    Route { route: String, message: String },
    #[error("editing {path} for route \"{route}\": {source}")]
    Edit {
        path: PathBuf,
        route: String,
        #[source]
        source: EditError,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A route's position in routes.toml.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub mode: Mode,
    pub percent_bps: u32,
}

impl Position {
    fn label(self) -> String {
        match self.mode {
            Mode::Canary => format!("canary {}%", f64::from(self.percent_bps) / 100.0),
            other => other.as_str().to_owned(),
        }
    }

    fn is(self, step: Step) -> bool {
        match step {
            Step::Shadow => self.mode == Mode::Shadow,
            Step::Canary(p) => {
                self.mode == Mode::Canary && self.percent_bps == (p * 100.0).round() as u32
            }
            Step::Extracted => self.mode == Mode::Extracted,
        }
    }
}

/// Reads routes.toml through the proxy's check.
pub fn read_routes(path: &Path) -> Result<(String, ficus_proxy::RoutesFile), ControllerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ControllerError::Routes {
        path: path.to_path_buf(),
        source,
    })?;
    let checked = ficus_proxy::check(&text, ficus_proxy::check::base_dir(path)).map_err(|p| {
        ControllerError::Invalid {
            path: path.to_path_buf(),
            problems: p.to_string(),
        }
    })?;
    Ok((text, checked.file))
}

/// The position of `route` in a checked routes file.
pub fn position_of(file: &ficus_proxy::RoutesFile, route: &str) -> Option<Position> {
    file.routes
        .iter()
        .find(|r| r.name == route)
        .map(|r| Position {
            mode: r.mode,
            percent_bps: r.percent.map(|p| p.basis_points).unwrap_or(0),
        })
}

/// The `/views` URL of a route: the plan's, or its `serve` upstream's.
pub fn views_url(plan: &RoutePlan, file: &ficus_proxy::RoutesFile) -> Option<String> {
    match plan.views_url.as_deref() {
        Some("") => None,
        Some(url) => Some(url.to_owned()),
        None => {
            let route = file.routes.iter().find(|r| r.name == plan.name)?;
            let upstream = file.upstreams.get(route.serve.as_deref()?)?;
            Some(format!("{}/views", upstream.url))
        }
    }
}

/// One route's window in memory.
#[derive(Debug, Default)]
struct Window {
    /// Counters when the step's window began (None: begins at the next reading).
    base: Option<Counters>,
    since: Option<Instant>,
    /// The kind of the last hold written for this window (holds are written when it changes).
    last_hold: Option<&'static str>,
    /// A person resumed: a routes file that differs from the ledger's step is set back.
    resumed: bool,
}

/// The rollout controller.
pub struct Controller {
    plan: Plan,
    http: reqwest::Client,
    source: Source,
    ledger: Ledger,
    windows: BTreeMap<String, Window>,
    metrics: RolloutMetrics,
    /// The last reading failure, logged once until readings succeed again.
    read_failing: Option<String>,
}

impl Controller {
    /// Opens the ledger and starts every planned route that the ledger does not know yet
    /// (a `start` line, and the edit to its first step).
    pub fn new(plan: Plan, metrics: RolloutMetrics) -> Result<Self, ControllerError> {
        let source = match &plan.controller.prometheus_url {
            Some(url) => Source::Prometheus(url.clone()),
            None => Source::Admin(plan.controller.proxy_admin_urls.clone()),
        };
        let ledger = Ledger::open(&plan.controller.ledger_file)?;
        let mut controller = Self {
            http: reqwest::Client::new(),
            source,
            ledger,
            windows: BTreeMap::new(),
            metrics,
            read_failing: None,
            plan,
        };
        let routes: Vec<RoutePlan> = controller.plan.routes.clone();
        for route in &routes {
            controller.start(route)?;
        }
        Ok(controller)
    }

    fn routes_path(&self) -> PathBuf {
        self.plan.controller.routes_file.clone()
    }

    fn start(&mut self, plan: &RoutePlan) -> Result<(), ControllerError> {
        let (_, file) = read_routes(&self.routes_path())?;
        let position = position_of(&file, &plan.name).ok_or_else(|| ControllerError::Route {
            route: plan.name.clone(),
            message: format!("not in {}", self.routes_path().display()),
        })?;
        let steps = plan.steps();
        self.windows.insert(plan.name.clone(), Window::default());
        if let Some(state) = self.ledger.states.get(&plan.name).cloned() {
            // Known: continue where the ledger says, unless a person moved the route by hand.
            let step = steps.get(state.step_index).copied();
            info!(route = %plan.name, step = %state.step, paused = state.paused, "continuing");
            if !state.done
                && !state.paused
                && let Some(step) = step
                && !position.is(step)
            {
                self.write(plan, Action::Pause, state.step_index, None, format!(
                    "routes.toml has {} but the ledger's step is {}: changed by hand? `ficus rollout resume {}` sets it back and continues",
                    position.label(), step.label(), plan.name
                ), json!({}), json!({}), None, true)?;
            }
            self.metrics
                .set_step(&plan.name, state.step_index, state.paused);
            return Ok(());
        }
        let index = match position.mode {
            Mode::Monolith | Mode::Shadow => 0,
            Mode::Extracted => {
                self.write(
                    plan,
                    Action::Done,
                    steps.len() - 1,
                    None,
                    "already extracted in routes.toml".into(),
                    json!({}),
                    json!({}),
                    None,
                    false,
                )?;
                return Ok(());
            }
            Mode::Canary => steps.iter().position(|s| position.is(*s)).ok_or_else(|| {
                ControllerError::Route {
                    route: plan.name.clone(),
                    message: format!(
                        "routes.toml has it at {}, not a step of the plan ({}); flip it to a step first (ficus routes flip) or add the step",
                        position.label(),
                        steps.iter().map(|s| s.label()).collect::<Vec<_>>().join(", ")
                    ),
                }
            })?,
        };
        let diff = self.apply(&plan.name, steps[index])?;
        self.write(
            plan,
            Action::Start,
            index,
            None,
            format!("started from {} in routes.toml", position.label()),
            json!({}),
            json!({}),
            diff,
            false,
        )?;
        Ok(())
    }

    /// Edits routes.toml to `step` for `route` through the proxy's flip and check; returns the
    /// diff, or None when the file already says so.
    fn apply(&self, route: &str, step: Step) -> Result<Option<String>, ControllerError> {
        let path = self.routes_path();
        let (text, _) = read_routes(&path)?;
        let change = match step {
            Step::Shadow => Flip {
                mode: Some(Mode::Shadow),
                ..Flip::default()
            },
            Step::Canary(p) => Flip {
                mode: Some(Mode::Canary),
                percent: Some(p),
                ..Flip::default()
            },
            Step::Extracted => Flip {
                mode: Some(Mode::Extracted),
                ..Flip::default()
            },
        };
        let edited =
            flip(&text, route, &change, ficus_proxy::check::base_dir(&path)).map_err(|source| {
                ControllerError::Edit {
                    path: path.clone(),
                    route: route.to_owned(),
                    source,
                }
            })?;
        if edited == text {
            return Ok(None);
        }
        write_atomically(&path, &edited).map_err(|source| ControllerError::Write {
            path: path.clone(),
            source,
        })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Some(crate::diff::unified(&name, &text, &edited)))
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        plan: &RoutePlan,
        action: Action,
        index: usize,
        verdict: Option<Verdict>,
        reason: String,
        inputs: serde_json::Value,
        thresholds: serde_json::Value,
        diff: Option<String>,
        paused: bool,
    ) -> Result<(), ControllerError> {
        let steps = plan.steps();
        let entry = Entry {
            ts: Entry::now(),
            route: plan.name.clone(),
            action,
            step: steps[index].label(),
            step_index: index,
            verdict: verdict.map(|v| v.as_str().to_owned()),
            reason,
            inputs,
            thresholds,
            diff,
            by: "controller".into(),
            paused,
        };
        match action {
            Action::Rollback => {
                warn!(route = %entry.route, step = %entry.step, reason = %entry.reason, "rollback")
            }
            Action::Hold => {
                info!(route = %entry.route, step = %entry.step, verdict = ?entry.verdict, reason = %entry.reason, "hold")
            }
            _ => {
                info!(route = %entry.route, step = %entry.step, action = action.as_str(), reason = %entry.reason, "decision")
            }
        }
        self.ledger.append(&entry)?;
        self.metrics.decision(&plan.name, action);
        self.metrics.set_step(&plan.name, index, paused);
        Ok(())
    }

    /// Whether every planned route reached `done` (nothing is left for this controller: a
    /// paused route is not finished, a person may resume it).
    pub fn finished(&self) -> bool {
        self.plan
            .routes
            .iter()
            .all(|r| self.ledger.states.get(&r.name).is_some_and(|s| s.done))
    }

    /// Runs until `shutdown` completes, or every planned route is done.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ControllerError> {
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.plan.controller.poll_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return Ok(()),
                _ = tick.tick() => self.poll().await?,
            }
            if self.finished() {
                info!("every route of the plan is done; the controller stops");
                return Ok(());
            }
        }
    }

    /// One round: read, judge, act, for every route.
    pub async fn poll(&mut self) -> Result<(), ControllerError> {
        // Pauses and resumes written by people since the last round.
        for entry in self.ledger.refresh()? {
            if entry.action == Action::Resume
                && let Some(window) = self.windows.get_mut(&entry.route)
            {
                *window = Window {
                    resumed: true,
                    ..Window::default()
                };
            }
        }
        let timeout = Duration::from_millis(self.plan.controller.read_timeout_ms);
        let counters = match read_counters(&self.http, &self.source, timeout).await {
            Ok(counters) => {
                if let Some(was) = self.read_failing.take() {
                    info!(was = %was, "reading the proxies again");
                }
                counters
            }
            Err(e) => {
                self.metrics.read_error();
                let text = e.to_string();
                if self.read_failing.as_deref() != Some(&text) {
                    error!(error = %text, "reading the proxies failed; no decisions until it succeeds");
                    self.read_failing = Some(text);
                }
                return Ok(());
            }
        };
        let routes: Vec<RoutePlan> = self.plan.routes.clone();
        for plan in &routes {
            let span = info_span!("rollout", route = %plan.name);
            let _entered = span.enter();
            if let Err(e) = self.poll_route(plan, &counters, timeout).await {
                // Logged once per round and route; the route is left where it is.
                error!(error = %e, "this round's decision failed");
                self.metrics.read_error();
            }
        }
        Ok(())
    }

    async fn poll_route(
        &mut self,
        plan: &RoutePlan,
        counters: &Counters,
        timeout: Duration,
    ) -> Result<(), ControllerError> {
        let Some(state) = self.ledger.states.get(&plan.name).cloned() else {
            return Ok(());
        };
        if state.done {
            return Ok(());
        }
        if state.paused {
            // Whatever window was open is over; the next one begins at the resume.
            self.windows.insert(
                plan.name.clone(),
                Window {
                    resumed: true,
                    ..Window::default()
                },
            );
            return Ok(());
        }
        let steps = plan.steps();
        let index = state.step_index.min(steps.len() - 1);
        let step = steps[index];
        let (_, file) = read_routes(&self.routes_path())?;
        let position = position_of(&file, &plan.name).ok_or_else(|| ControllerError::Route {
            route: plan.name.clone(),
            message: "no longer in routes.toml".into(),
        })?;
        let window = self.windows.entry(plan.name.clone()).or_default();
        if !position.is(step) {
            if window.resumed {
                let diff = self.apply(&plan.name, step)?;
                self.write(
                    plan,
                    Action::Hold,
                    index,
                    None,
                    format!(
                        "resumed: routes.toml had {}, set back to {}",
                        position.label(),
                        step.label()
                    ),
                    json!({}),
                    json!({}),
                    diff,
                    false,
                )?;
            } else {
                let reason = format!(
                    "routes.toml has {} but the ledger's step is {}: changed by hand? `ficus rollout resume {}` sets it back and continues",
                    position.label(),
                    step.label(),
                    plan.name
                );
                self.write(
                    plan,
                    Action::Pause,
                    index,
                    None,
                    reason,
                    json!({}),
                    json!({}),
                    None,
                    true,
                )?;
            }
            return Ok(());
        }
        let window = self.windows.entry(plan.name.clone()).or_default();
        window.resumed = false;
        let Some(base) = &window.base else {
            // The window of this step begins now.
            window.base = Some(counters.clone());
            window.since = Some(Instant::now());
            return Ok(());
        };
        let elapsed_ms = window
            .since
            .map(|s| s.elapsed().as_millis() as u64)
            .unwrap_or_default();
        let measured = counters.since(base).window(&plan.name);
        let views: ViewsReading = match views_url(plan, &file) {
            Some(url) => Some(
                read_views(&self.http, &url, timeout)
                    .await
                    .map_err(|e| e.to_string()),
            ),
            None => None,
        };
        let judgement = judge(
            plan,
            step,
            &measured,
            &views,
            elapsed_ms,
            self.plan.controller.confidence_percent,
        );
        match judgement.verdict {
            Verdict::Pass => {
                let next = index + 1;
                let diff = self.apply(&plan.name, steps[next])?;
                self.write(
                    plan,
                    Action::Promote,
                    next,
                    Some(Verdict::Pass),
                    format!("{} passed: {}", step.label(), judgement.reason),
                    judgement.inputs,
                    judgement.thresholds,
                    diff,
                    false,
                )?;
                if next == steps.len() - 1 {
                    self.write(
                        plan,
                        Action::Done,
                        next,
                        None,
                        "extracted: the service serves every request of the route".into(),
                        json!({}),
                        json!({}),
                        None,
                        false,
                    )?;
                }
                self.windows.insert(plan.name.clone(), Window::default());
            }
            Verdict::Fail if index > 0 => {
                let back = index - 1;
                let diff = self.apply(&plan.name, steps[back])?;
                self.write(
                    plan,
                    Action::Rollback,
                    back,
                    Some(Verdict::Fail),
                    format!(
                        "{} failed: {}; back to {}, paused until `ficus rollout resume {}`",
                        step.label(),
                        judgement.reason,
                        steps[back].label(),
                        plan.name
                    ),
                    judgement.inputs,
                    judgement.thresholds,
                    diff,
                    true,
                )?;
                self.windows.insert(plan.name.clone(), Window::default());
            }
            verdict => {
                // A failure at the first step has no safer step to go back to: it holds there
                // (shadow serves everyone from the monolith).
                let kind = judgement.kind;
                let window = self.windows.entry(plan.name.clone()).or_default();
                if window.last_hold != Some(kind) {
                    window.last_hold = Some(kind);
                    let reason = if verdict == Verdict::Fail {
                        format!(
                            "{} failed, holding (no earlier step): {}",
                            step.label(),
                            judgement.reason
                        )
                    } else {
                        judgement.reason
                    };
                    self.write(
                        plan,
                        Action::Hold,
                        index,
                        Some(verdict),
                        reason,
                        judgement.inputs,
                        judgement.thresholds,
                        None,
                        false,
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// A person's pause or resume, written to the ledger (the running controller reads it on its
/// next round; a restarted one reads it at start).
pub fn set_paused(
    plan: &Plan,
    route: &str,
    paused: bool,
    reason: &str,
    by: &str,
) -> Result<Entry, ControllerError> {
    let route_plan = plan.route(route).ok_or_else(|| ControllerError::Route {
        route: route.to_owned(),
        message: "not in the plan".into(),
    })?;
    let mut ledger = Ledger::open(&plan.controller.ledger_file)?;
    let state = ledger
        .states
        .get(route)
        .cloned()
        .ok_or_else(|| ControllerError::Route {
            route: route.to_owned(),
            message: "not started yet (no line in the ledger)".into(),
        })?;
    let steps = route_plan.steps();
    let index = state.step_index.min(steps.len() - 1);
    let entry = Entry {
        ts: Entry::now(),
        route: route.to_owned(),
        action: if paused {
            Action::Pause
        } else {
            Action::Resume
        },
        step: steps[index].label(),
        step_index: index,
        verdict: None,
        reason: reason.to_owned(),
        inputs: json!({}),
        thresholds: json!({}),
        diff: None,
        by: by.to_owned(),
        paused,
    };
    ledger.append(&entry)?;
    Ok(entry)
}
