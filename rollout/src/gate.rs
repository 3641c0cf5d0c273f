//! Judging one step, pure: a route's window (counts since the step began, summed over the
//! proxies), the service's views and the plan's thresholds in, a verdict with a one-line
//! reason, the measured inputs and the thresholds out (what the ledger records).
//!
//! - No decision of any kind before the step's minimum sample; no promotion before its minimum
//!   duration (a clear failure may roll back earlier, once the sample is there).
//! - Parity: the mismatch rate (mismatches and the candidate's failures among the shadow
//!   comparisons) against its ceiling, by Wilson bounds. In canary steps only when the route
//!   is still compared.
//! - Errors: the extracted side's error rate minus the monolith's over the same window, by
//!   Newcombe's bounds, against the tolerated increase.
//! - Latency: the extracted side's p95 against the monolith's times a ratio plus a slack.
//! - Views: ready and not behind, or no promotion (hold).

use ficus_telemetry::scrape::quantile;
use serde_json::{Value, json};

use crate::plan::{RoutePlan, Step};
use crate::readings::{Views, Window};
use crate::stats::{Verdict, increase_verdict, rate_verdict};

/// What a step's judgement says.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// What kind of verdict: `sample` (too few), `fail`, `wait` (a gate inconclusive),
    /// `duration` (all pass, held for the minimum), `pass`. Holds are written when it changes.
    pub kind: &'static str,
    pub reason: String,
    pub inputs: Value,
    pub thresholds: Value,
}

/// The service's views as read (or why they could not be).
pub type ViewsReading = Option<Result<Views, String>>;

/// Judges `step` of `plan` after `elapsed_ms` in it.
pub fn judge(
    plan: &RoutePlan,
    step: Step,
    window: &Window,
    views: &ViewsReading,
    elapsed_ms: u64,
    confidence_percent: f64,
) -> Judgement {
    let z = crate::stats::z_one_sided(confidence_percent / 100.0);
    let g = &plan.gates;
    let mut fails: Vec<String> = Vec::new();
    let mut waits: Vec<String> = Vec::new();
    let mut passes: Vec<String> = Vec::new();
    let mut inputs = json!({ "elapsed_ms": elapsed_ms });
    let mut thresholds = json!({
        "confidence_percent": confidence_percent,
        "max_mismatch_rate": g.max_mismatch_rate,
    });

    let (min_duration_ms, sample, min_sample, sample_name) = match step {
        Step::Shadow => {
            let s = plan.shadow.as_ref().expect("a shadow step is planned");
            let n = window.compared + window.candidate_failures;
            (s.min_duration_ms, n, s.min_compared, "compared")
        }
        _ => (
            plan.canary.min_duration_ms,
            window.sides[1].attempts(),
            plan.canary.min_requests,
            "requests to the extracted side",
        ),
    };
    thresholds["min_duration_ms"] = min_duration_ms.into();
    thresholds[if matches!(step, Step::Shadow) {
        "min_compared"
    } else {
        "min_requests"
    }] = min_sample.into();

    // Parity.
    let parity_n = window.compared + window.candidate_failures;
    let parity_k = window.mismatched + window.candidate_failures;
    inputs["compared"] = window.compared.into();
    inputs["mismatched"] = window.mismatched.into();
    inputs["candidate_failures"] = window.candidate_failures.into();
    // In a canary step the route is judged on parity only if it is still compared, on at
    // least the step's minimum sample (the copies still in flight when the shadow step ended
    // finish in the canary's window: a handful that must neither block nor decide).
    if matches!(step, Step::Shadow) || parity_n >= min_sample {
        let (verdict, low, high) = rate_verdict(parity_k, parity_n, g.max_mismatch_rate, z);
        inputs["mismatch_rate"] = rate(parity_k, parity_n).into();
        inputs["mismatch_rate_low"] = round(low).into();
        inputs["mismatch_rate_high"] = round(high).into();
        let what = format!(
            "mismatch rate {} ({parity_k} of {parity_n}; {confidence_percent}% bounds {}..{})",
            pct(rate(parity_k, parity_n)),
            pct(low),
            pct(high)
        );
        match verdict {
            Verdict::Fail => fails.push(format!(
                "{what} over the {} ceiling",
                pct(g.max_mismatch_rate)
            )),
            Verdict::Inconclusive => waits.push(format!(
                "inconclusive: {what}, not yet surely under {}",
                pct(g.max_mismatch_rate)
            )),
            Verdict::Pass => passes.push(format!(
                "mismatch rate under {} ({parity_k} of {parity_n})",
                pct(g.max_mismatch_rate)
            )),
        }
    }

    // Errors and latency: canary steps, where both sides answer users.
    if !matches!(step, Step::Shadow) {
        let [mono, ext] = &window.sides;
        thresholds["max_error_rate_increase"] = g.max_error_rate_increase.into();
        thresholds["max_p95_ratio"] = g.max_p95_ratio.into();
        thresholds["p95_slack_ms"] = g.p95_slack_ms.into();
        inputs["extracted"] = side_inputs(ext);
        inputs["monolith"] = side_inputs(mono);
        let (n1, f1, n0, f0) = (
            ext.attempts(),
            ext.failures(),
            mono.attempts(),
            mono.failures(),
        );
        let (verdict, low, high) = increase_verdict(f1, n1, f0, n0, g.max_error_rate_increase, z);
        inputs["error_rate_increase_low"] = round(low).into();
        inputs["error_rate_increase_high"] = round(high).into();
        let what = format!(
            "extracted error rate {} ({f1} of {n1}) against the monolith's {} ({f0} of {n0}); increase bounds {}..{}",
            pct(rate(f1, n1)),
            pct(rate(f0, n0)),
            pct(low),
            pct(high)
        );
        match verdict {
            Verdict::Fail => fails.push(format!(
                "{what}: over the tolerated {}",
                pct(g.max_error_rate_increase)
            )),
            Verdict::Inconclusive => waits.push(format!("inconclusive: {what}")),
            Verdict::Pass => passes.push(format!(
                "error rate within {} of the monolith's",
                pct(g.max_error_rate_increase)
            )),
        }
        let p95 = |s: &crate::readings::SideWindow| quantile(&s.duration_buckets, 0.95);
        match (p95(ext), p95(mono)) {
            (Some(e), Some(m)) => {
                let bound = m * g.max_p95_ratio + g.p95_slack_ms / 1000.0;
                if e > bound {
                    fails.push(format!(
                        "extracted p95 {} over {} (the monolith's {} × {} + {} ms)",
                        ms(e),
                        ms(bound),
                        ms(m),
                        g.max_p95_ratio,
                        g.p95_slack_ms
                    ));
                } else {
                    passes.push(format!("p95 {} within {}", ms(e), ms(bound)));
                }
            }
            _ => waits.push("no latency of both sides yet".to_owned()),
        }
    }

    // Views.
    match views {
        None => {}
        Some(Err(error)) => waits.push(format!("views unreadable: {error}")),
        Some(Ok(v)) => {
            thresholds["max_view_lag_events"] = g.max_view_lag_events.into();
            thresholds["max_view_lag_seconds"] = g.max_view_lag_seconds.into();
            inputs["views"] = json!(v);
            if !v.ready {
                waits.push(format!(
                    "the service's views are not ready ({} behind by {} events)",
                    v.worst.as_deref().unwrap_or("a view"),
                    v.max_lag_events
                ));
            } else if v.max_lag_events > g.max_view_lag_events
                || v.max_lag_seconds > g.max_view_lag_seconds
            {
                waits.push(format!(
                    "the service's view {} is behind: {} events, {:.1} s",
                    v.worst.as_deref().unwrap_or("?"),
                    v.max_lag_events,
                    v.max_lag_seconds
                ));
            } else {
                passes.push("views ready".to_owned());
            }
        }
    }

    let (verdict, kind, reason) = if sample < min_sample {
        (
            Verdict::Inconclusive,
            "sample",
            format!("too few samples: {sample} of {min_sample} {sample_name}; no decision yet"),
        )
    } else if !fails.is_empty() {
        (Verdict::Fail, "fail", fails.join("; "))
    } else if !waits.is_empty() {
        (Verdict::Inconclusive, "wait", waits.join("; "))
    } else if elapsed_ms < min_duration_ms {
        (
            Verdict::Inconclusive,
            "duration",
            format!(
                "holding for the minimum duration: {:.1} of {:.1} s ({})",
                elapsed_ms as f64 / 1000.0,
                min_duration_ms as f64 / 1000.0,
                passes.join(", ")
            ),
        )
    } else {
        (Verdict::Pass, "pass", passes.join(", "))
    };
    Judgement {
        verdict,
        kind,
        reason,
        inputs,
        thresholds,
    }
}

fn side_inputs(s: &crate::readings::SideWindow) -> Value {
    json!({
        "answers": s.answers,
        "errors_5xx": s.errors,
        "failed_attempts": s.failed_attempts,
        "error_rate": rate(s.failures(), s.attempts()),
        "p95_ms": quantile(&s.duration_buckets, 0.95).filter(|v| v.is_finite()).map(|v| round(v * 1000.0)),
    })
}

fn rate(k: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        round(k as f64 / n as f64)
    }
}

fn round(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn ms(seconds: f64) -> String {
    if seconds.is_infinite() {
        "∞".to_owned()
    } else {
        format!("{:.1} ms", seconds * 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::readings::SideWindow;

    fn plan() -> RoutePlan {
        Plan::parse(
            r#"
[controller]
proxy_admin_urls = ["http://127.0.0.1:1"]
[[route]]
name = "r"
shadow = { min_duration_ms = 1000, min_compared = 30 }
canary = { percents = [10, 50], min_duration_ms = 1000, min_requests = 30 }
gates = { max_mismatch_rate = 0.1, max_error_rate_increase = 0.1, max_p95_ratio = 2, p95_slack_ms = 10 }
"#,
        )
        .unwrap()
        .routes
        .remove(0)
    }

    fn ready() -> ViewsReading {
        Some(Ok(Views {
            ready: true,
            worst: Some("people".into()),
            max_lag_events: 0,
            max_lag_seconds: 0.0,
        }))
    }

    fn shadow(compared: u64, mismatched: u64) -> Window {
        Window {
            compared,
            mismatched,
            ..Window::default()
        }
    }

    fn side(answers: u64, errors: u64, p95_bucket: f64) -> SideWindow {
        SideWindow {
            answers,
            errors,
            failed_attempts: 0,
            duration_buckets: vec![
                (p95_bucket, answers as f64),
                (f64::INFINITY, answers as f64),
            ],
        }
    }

    #[test]
    fn shadow_promotes_only_with_the_sample_the_duration_and_the_bound() {
        let p = plan();
        let few = judge(&p, Step::Shadow, &shadow(10, 0), &ready(), 5000, 95.0);
        assert_eq!(few.verdict, Verdict::Inconclusive);
        assert!(few.reason.contains("too few samples"), "{}", few.reason);
        // 30 clean comparisons: the upper bound (8.3 %) is under 10 %; duration not yet.
        let early = judge(&p, Step::Shadow, &shadow(30, 0), &ready(), 500, 95.0);
        assert_eq!(early.verdict, Verdict::Inconclusive);
        assert!(
            early.reason.contains("minimum duration"),
            "{}",
            early.reason
        );
        let ok = judge(&p, Step::Shadow, &shadow(30, 0), &ready(), 1000, 95.0);
        assert_eq!(ok.verdict, Verdict::Pass, "{}", ok.reason);
        // One mismatch in 30: can't say it is under 10 %: hold.
        let unsure = judge(&p, Step::Shadow, &shadow(30, 1), &ready(), 1000, 95.0);
        assert_eq!(unsure.verdict, Verdict::Inconclusive, "{}", unsure.reason);
        assert!(
            unsure.reason.starts_with("inconclusive"),
            "{}",
            unsure.reason
        );
        // All mismatched: fail, with the numbers.
        let bad = judge(&p, Step::Shadow, &shadow(30, 30), &ready(), 100, 95.0);
        assert_eq!(bad.verdict, Verdict::Fail);
        assert!(
            bad.reason.contains("mismatch rate 100.0% (30 of 30"),
            "{}",
            bad.reason
        );
        assert_eq!(bad.inputs["mismatched"], 30);
        assert_eq!(bad.thresholds["max_mismatch_rate"], 0.1);
    }

    #[test]
    fn a_view_behind_never_promotes() {
        let p = plan();
        let behind = Some(Ok(Views {
            ready: true,
            worst: Some("people".into()),
            max_lag_events: 5000,
            max_lag_seconds: 1.0,
        }));
        let j = judge(&p, Step::Shadow, &shadow(100, 0), &behind, 10_000, 95.0);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.reason.contains("behind: 5000 events"), "{}", j.reason);
        let unreadable = Some(Err("connection refused".to_owned()));
        let j = judge(&p, Step::Shadow, &shadow(100, 0), &unreadable, 10_000, 95.0);
        assert_eq!(j.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn a_canary_fails_on_errors_or_latency_and_passes_when_alike() {
        let p = plan();
        let step = Step::Canary(10.0);
        let good = Window {
            sides: [side(300, 0, 0.004), side(40, 0, 0.004)],
            ..Window::default()
        };
        let j = judge(&p, step, &good, &ready(), 2000, 95.0);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
        let failing = Window {
            sides: [side(300, 0, 0.004), side(40, 20, 0.004)],
            ..Window::default()
        };
        let j = judge(&p, step, &failing, &ready(), 100, 95.0);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reason.contains("extracted error rate 50.0% (20 of 40)"),
            "{}",
            j.reason
        );
        let slow = Window {
            sides: [side(300, 0, 0.004), side(40, 0, 0.512)],
            ..Window::default()
        };
        let j = judge(&p, step, &slow, &ready(), 2000, 95.0);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(
            j.reason.contains("p95 512.0 ms over 18.0 ms"),
            "{}",
            j.reason
        );
        // A shadow copy that finished after the step changed does not hold the canary.
        let straggler = Window {
            compared: 1,
            ..good.clone()
        };
        let j = judge(&p, step, &straggler, &ready(), 2000, 95.0);
        assert_eq!(j.verdict, Verdict::Pass, "{}", j.reason);
        let few = Window {
            sides: [side(300, 0, 0.004), side(5, 5, 0.004)],
            ..Window::default()
        };
        let j = judge(&p, step, &few, &ready(), 2000, 95.0);
        assert_eq!(
            j.verdict,
            Verdict::Inconclusive,
            "no decision on 5 requests"
        );
    }
}
