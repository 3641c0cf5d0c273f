//! Liveness and readiness state of a component, read by `/healthz` and `/readyz`.
//!
//! A [`Health`] holds named checks, each ok or failing with a reason. A check is either pushed
//! (the component calls [`Health::ok`] / [`Health::failing`] when it learns something: the
//! adapter's error classification) or pulled (a [`Probe`] run on each request: the monolith
//! pings its database). `/healthz` fails while any check of scope [`Scope::Live`] fails;
//! `/readyz` also needs the ready flag (set once serving, cleared when shutdown begins) and the
//! [`Scope::Ready`] probes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use serde::Serialize;

/// Which endpoint a probe answers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/healthz` and `/readyz`: the process is broken while it fails.
    Live,
    /// `/readyz` only: the process should get no traffic while it fails.
    Ready,
}

type ProbeFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A check run when health is asked: `Ok(())` or the reason it fails.
pub type Probe = Arc<dyn Fn() -> ProbeFuture + Send + Sync>;

/// A component's health, cheap to clone (every clone is the same state).
#[derive(Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    ready: AtomicBool,
    checks: RwLock<BTreeMap<String, Result<(), String>>>,
    probes: RwLock<Vec<(String, Scope, Probe)>>,
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub name: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What `/healthz` or `/readyz` answers (as JSON), in name order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ok: bool,
    pub checks: Vec<CheckReport>,
}

/// The name of the ready flag in readiness reports.
pub const SERVING: &str = "serving";

impl Health {
    /// No checks, not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the component as serving (or not: starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Check `name` passes.
    pub fn ok(&self, name: &str) {
        self.set(name, Ok(()));
    }

    /// Check `name` fails for `reason`.
    pub fn failing(&self, name: &str, reason: impl Into<String>) {
        self.set(name, Err(reason.into()));
    }

    /// Sets check `name` from a result.
    pub fn set(&self, name: &str, state: Result<(), String>) {
        self.inner
            .checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), state);
    }

    /// Forgets check `name`.
    pub fn remove(&self, name: &str) {
        self.inner
            .checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Adds a check that `probe` answers each time health is asked.
    pub fn probe<F, Fut>(&self, name: &str, scope: Scope, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || Box::pin(probe()));
        self.inner
            .probes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), scope, probe));
    }

    /// What `/healthz` answers: the pushed checks and the live probes.
    pub async fn liveness(&self) -> Report {
        self.report(false).await
    }

    /// What `/readyz` answers: the ready flag, the pushed checks and every probe.
    pub async fn readiness(&self) -> Report {
        self.report(true).await
    }

    async fn report(&self, readiness: bool) -> Report {
        let mut checks: Vec<CheckReport> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(name, state)| CheckReport {
                name: name.clone(),
                ok: state.is_ok(),
                reason: state.clone().err(),
            })
            .collect();
        // The lock is not held across the probes' awaits.
        let probes: Vec<(String, Probe)> = self
            .inner
            .probes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, scope, _)| readiness || *scope == Scope::Live)
            .map(|(name, _, probe)| (name.clone(), probe.clone()))
            .collect();
        for (name, probe) in probes {
            let state = probe().await;
            checks.push(CheckReport {
                name,
                ok: state.is_ok(),
                reason: state.err(),
            });
        }
        if readiness {
            let ready = self.is_ready();
            checks.push(CheckReport {
                name: SERVING.to_owned(),
                ok: ready,
                reason: (!ready).then(|| "not serving (starting or shutting down)".to_owned()),
            });
        }
        checks.sort_by(|a, b| a.name.cmp(&b.name));
        Report {
            ok: checks.iter().all(|c| c.ok),
            checks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_check_fails_both_and_names_its_reason() {
        let health = Health::new();
        health.set_ready(true);
        health.ok("broker");
        assert!(health.liveness().await.ok);
        assert!(health.readiness().await.ok);
        health.failing("postgres", "wal_level is replica");
        let live = health.liveness().await;
        assert!(!live.ok);
        assert_eq!(
            live.checks,
            vec![
                CheckReport {
                    name: "broker".into(),
                    ok: true,
                    reason: None
                },
                CheckReport {
                    name: "postgres".into(),
                    ok: false,
                    reason: Some("wal_level is replica".into())
                },
            ]
        );
        assert!(!health.readiness().await.ok);
        health.remove("postgres");
        assert!(health.liveness().await.ok);
    }

    #[tokio::test]
    async fn the_ready_flag_and_ready_probes_only_affect_readiness() {
        let health = Health::new();
        assert!(health.liveness().await.ok);
        assert!(!health.readiness().await.ok, "not ready until set");
        health.set_ready(true);
        assert!(health.readiness().await.ok);
        let up = Arc::new(AtomicBool::new(false));
        let probe_up = up.clone();
        health.probe("database", Scope::Ready, move || {
            let up = probe_up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("unreachable".into())
                }
            }
        });
        assert!(
            health.liveness().await.ok,
            "a ready probe leaves liveness alone"
        );
        let ready = health.readiness().await;
        assert!(!ready.ok);
        assert!(ready.checks.iter().any(|c| c.name == "database" && !c.ok));
        up.store(true, Ordering::SeqCst);
        assert!(health.readiness().await.ok, "probes run on each ask");
    }

    #[tokio::test]
    async fn a_live_probe_fails_liveness() {
        let health = Health::new();
        health.probe("loop", Scope::Live, || async { Err("stopped".to_owned()) });
        assert!(!health.liveness().await.ok);
    }
}
