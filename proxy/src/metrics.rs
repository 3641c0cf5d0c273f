//! Prometheus metrics of the proxy (`ficus_proxy_*`), served by the admin listener.
//!
//! Per-route handles are made once when a table is compiled, so the request path only
//! increments counters it already holds.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::table::Side;

pub const REQUESTS: &str = "ficus_proxy_requests";
pub const DURATION: &str = "ficus_proxy_request_duration_seconds";
pub const UPSTREAM_ERRORS: &str = "ficus_proxy_upstream_errors";
pub const FALLBACKS: &str = "ficus_proxy_fallbacks";
pub const RELOADS: &str = "ficus_proxy_reloads";
pub const RELOAD_FAILURES: &str = "ficus_proxy_reload_failures";
pub const TABLE_VERSION: &str = "ficus_proxy_table_version";
pub const WEBSOCKETS: &str = "ficus_proxy_websockets_open";
pub const AUTHZ_DECISIONS: &str = "ficus_proxy_authz_decisions";
pub const JWKS_FETCHES: &str = "ficus_proxy_jwks_fetches";
pub const JWKS_KEYS: &str = "ficus_proxy_jwks_keys";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    side: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabels {
    route: String,
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    route: String,
    side: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    route: String,
    decision: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    route: String,
    reason: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const SIDES: [Side; 2] = [Side::Legacy, Side::Extracted];

/// The proxy's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<SideLabels, Histogram>,
    upstream_errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    jwks_fetches: Family<ResultLabels, Counter>,
    pub jwks_keys: Gauge,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub table_version: Gauge,
    pub websockets: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            REQUESTS,
            "Requests answered, by route, side and status class",
            requests.clone(),
        );
        let duration = Family::<SideLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            DURATION,
            "Time from request to response head, by route and side",
            duration.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            UPSTREAM_ERRORS,
            "Upstream failures, by route, side and kind (connect, timeout, protocol, 5xx)",
            upstream_errors.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            FALLBACKS,
            "Requests the legacy side answered after the extracted side failed, by reason",
            fallbacks.clone(),
        );
        let decisions = Family::default();
        registry.register(
            AUTHZ_DECISIONS,
            "Edge authorization decisions, by route, decision and reason",
            decisions.clone(),
        );
        let jwks_fetches = Family::default();
        registry.register(
            JWKS_FETCHES,
            "JWKS fetches, by result (ok, error)",
            jwks_fetches.clone(),
        );
        let jwks_keys = Gauge::default();
        registry.register(
            JWKS_KEYS,
            "Keys in the last fetched JWKS",
            jwks_keys.clone(),
        );
        let reloads = Counter::default();
        registry.register(RELOADS, "Route tables loaded", reloads.clone());
        let reload_failures = Counter::default();
        registry.register(
            RELOAD_FAILURES,
            "Route files refused (the previous table stayed)",
            reload_failures.clone(),
        );
        let table_version = Gauge::default();
        registry.register(
            TABLE_VERSION,
            "Version of the live route table",
            table_version.clone(),
        );
        let websockets = Gauge::default();
        registry.register(WEBSOCKETS, "Open WebSocket tunnels", websockets.clone());
        Self {
            registry: Mutex::new(registry),
            requests,
            duration,
            upstream_errors,
            fallbacks,
            decisions,
            jwks_fetches,
            jwks_keys,
            reloads,
            reload_failures,
            table_version,
            websockets,
        }
    }
}

impl Metrics {
    /// Counts a JWKS fetch.
    pub fn jwks_fetch(&self, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The handles of one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        let requests = SIDES.map(|side| {
            CLASSES.map(|status| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.to_owned(),
                        side: side.as_str(),
                        status,
                    })
                    .clone()
            })
        });
        let duration = SIDES.map(|side| {
            self.duration
                .get_or_create(&SideLabels {
                    route: route.to_owned(),
                    side: side.as_str(),
                })
                .clone()
        });
        RouteMetrics {
            route: route.to_owned(),
            requests,
            duration,
            upstream_errors: self.upstream_errors.clone(),
            fallbacks: self.fallbacks.clone(),
            decisions: self.decisions.clone(),
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

/// A route's metric handles.
pub struct RouteMetrics {
    route: String,
    requests: [[Counter; 5]; 2],
    duration: [Histogram; 2],
    upstream_errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Legacy => 0,
        Side::Extracted => 1,
    }
}

impl RouteMetrics {
    pub fn answered(&self, side: Side, status: u16, seconds: f64) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.requests[side_index(side)][class].inc();
        self.duration[side_index(side)].observe(seconds);
    }

    pub fn upstream_error(&self, side: Side, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&ErrorLabels {
                route: self.route.clone(),
                side: side.as_str(),
                kind,
            })
            .inc();
    }

    pub fn decision(&self, decision: &'static str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                route: self.route.clone(),
                decision,
                reason,
            })
            .inc();
    }

    pub fn fallback(&self, reason: &'static str) {
        self.fallbacks
            .get_or_create(&FallbackLabels {
                route: self.route.clone(),
                reason,
            })
            .inc();
    }
}
