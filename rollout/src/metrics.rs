//! The controller's own metrics (`ficus_rollout_*`), served by its admin listener through
//! `ficus-telemetry`: where each route stands, decisions taken, readings that failed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use ficus_telemetry::MetricsRegistry;

use crate::ledger::Action;

pub const STEP: &str = "ficus_rollout_step_index";
pub const PAUSED: &str = "ficus_rollout_paused";
pub const DECISIONS: &str = "ficus_rollout_decisions";
pub const READ_ERRORS: &str = "ficus_rollout_read_errors";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    action: &'static str,
}

/// Handles of the controller's metrics.
#[derive(Clone, Default)]
pub struct RolloutMetrics {
    step: Family<RouteLabels, Gauge>,
    paused: Family<RouteLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    read_errors: Counter,
}

impl RolloutMetrics {
    /// Registers the families in `registry`.
    pub fn register(registry: &MetricsRegistry) -> Self {
        let metrics = Self::default();
        registry.register(
            STEP,
            "The plan step each route is at (0 = the first)",
            metrics.step.clone(),
        );
        registry.register(
            PAUSED,
            "1 while a route is paused (by a person, or after a rollback)",
            metrics.paused.clone(),
        );
        registry.register(
            DECISIONS,
            "Ledger lines written, by route and action",
            metrics.decisions.clone(),
        );
        registry.register(
            READ_ERRORS,
            "Rounds whose readings (proxies, views, routes file) failed",
            metrics.read_errors.clone(),
        );
        metrics
    }

    pub fn set_step(&self, route: &str, index: usize, paused: bool) {
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        self.step.get_or_create(&labels).set(index as i64);
        self.paused.get_or_create(&labels).set(i64::from(paused));
    }

    pub fn decision(&self, route: &str, action: Action) {
        self.decisions
            .get_or_create(&DecisionLabels {
                route: route.to_owned(),
                action: action.as_str(),
            })
            .inc();
    }

    pub fn read_error(&self) {
        self.read_errors.inc();
    }
}
