//! `ficus rollout status`: where each planned route stands and why, from the ledger (its step,
//! pause, last decision with its reason) and live readings (routes.toml, the service's views,
//! the proxies' totals per side).

use std::fmt::Write as _;
use std::time::Duration;

use crate::controller::{position_of, read_routes, views_url};
use crate::ledger::Ledger;
use crate::plan::Plan;
use crate::readings::{Source, read_counters, read_views};

/// The report, one block per route.
pub async fn report(plan: &Plan) -> Result<String, crate::ControllerError> {
    let ledger = Ledger::open(&plan.controller.ledger_file)?;
    let (_, file) = read_routes(&plan.controller.routes_file)?;
    let http = reqwest::Client::new();
    let timeout = Duration::from_millis(plan.controller.read_timeout_ms);
    let source = match &plan.controller.prometheus_url {
        Some(url) => Source::Prometheus(url.clone()),
        None => Source::Admin(plan.controller.proxy_admin_urls.clone()),
    };
    let counters = read_counters(&http, &source, timeout).await;
    let mut out = String::new();
    for route in &plan.routes {
        let steps: Vec<String> = route.steps().iter().map(|s| s.label()).collect();
        let _ = writeln!(out, "{}", route.name);
        match ledger.states.get(&route.name) {
            None => {
                let _ = writeln!(out, "  not started (plan: {})", steps.join(" → "));
            }
            Some(state) => {
                let status = if state.done {
                    "done"
                } else if state.paused {
                    "paused"
                } else {
                    "running"
                };
                let _ = writeln!(
                    out,
                    "  step {}/{}: {} ({status}); plan: {}",
                    state.step_index + 1,
                    steps.len(),
                    state.step,
                    steps.join(" → ")
                );
                let last = &state.last;
                let _ = writeln!(
                    out,
                    "  last: {} {}{} — {}",
                    last.ts,
                    last.action.as_str(),
                    last.verdict
                        .as_deref()
                        .map(|v| format!(" ({v})"))
                        .unwrap_or_default(),
                    last.reason
                );
                if let Some(decision) = &state.last_decision
                    && decision != last
                {
                    let _ = writeln!(
                        out,
                        "  last decision: {} {} ({}) — {}",
                        decision.ts,
                        decision.action.as_str(),
                        decision.verdict.as_deref().unwrap_or("-"),
                        decision.reason
                    );
                }
            }
        }
        match position_of(&file, &route.name) {
            Some(p) => {
                let percent = if p.mode == ficus_proxy::config::Mode::Canary {
                    format!(" {}%", f64::from(p.percent_bps) / 100.0)
                } else {
                    String::new()
                };
                let _ = writeln!(out, "  routes.toml: {}{percent}", p.mode.as_str());
            }
            None => {
                let _ = writeln!(out, "  routes.toml: no such route");
            }
        }
        if let Some(url) = views_url(route, &file) {
            match read_views(&http, &url, timeout).await {
                Ok(v) => {
                    let _ = writeln!(
                        out,
                        "  views: {} (most behind: {} events, {:.1} s)",
                        if v.ready { "ready" } else { "NOT ready" },
                        v.max_lag_events,
                        v.max_lag_seconds
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  views: unreadable: {e}");
                }
            }
        }
        match &counters {
            Ok(c) => {
                let w = c.window(&route.name);
                let _ = writeln!(
                    out,
                    "  proxies (totals since start): monolith {} answers, {} failed; extracted {} answers, {} failed; shadow {} compared, {} mismatched",
                    w.sides[0].answers,
                    w.sides[0].failures(),
                    w.sides[1].answers,
                    w.sides[1].failures(),
                    w.compared,
                    w.mismatched
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  proxies: unreadable: {e}");
            }
        }
    }
    Ok(out)
}
