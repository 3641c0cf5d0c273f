//! Prometheus metrics of the proxy (`ficus_proxy_*`), served by the admin listener; the last
//! phase of the request path (respond and record) and the fallback phase write them.
//!
//! Per-route handles are made once when a table is compiled, for every label set the request
//! path can use (sides, status classes, failure kinds, authz reasons: all closed sets), so the
//! request path only increments counters it already holds and every series exists (at 0)
//! before its first event.
//!
//! The `side` label says who made the answer: `monolith` or `extracted` when an upstream's
//! answer was passed on, `proxy` when ficus answered itself (a refusal, a limit, a 502/504
//! after an upstream failure). Rollout gates read these: an answer ficus made is never
//! counted as a side's.

use std::sync::Mutex;

use ficus_telemetry::histogram::{LatencyHistogram, r10_bounds};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::authz::Reason;
use crate::authz::cache::CacheMetrics;
use crate::error::Failure;
use crate::shadow::{RecordSkip, SkipReason};
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
pub const AUTHZ_TOKEN_CACHE: &str = "ficus_proxy_authz_token_cache_lookups";
pub const AUTHZ_TOKEN_CACHE_EVICTIONS: &str = "ficus_proxy_authz_token_cache_evictions";
pub const JWKS_FETCHES: &str = "ficus_proxy_jwks_fetches";
pub const JWKS_KEYS: &str = "ficus_proxy_jwks_keys";
// Client connections (`server`).
pub const CONNECTIONS_OPEN: &str = "ficus_proxy_connections_open";
pub const CONNECTIONS_REFUSED: &str = "ficus_proxy_connections_refused";
pub const CONNECTION_DEADLINES: &str = "ficus_proxy_connection_deadlines";
pub const TLS_HANDSHAKE_FAILURES: &str = "ficus_proxy_tls_handshake_failures";
pub const ACCEPT_ERRORS: &str = "ficus_proxy_accept_errors";
// Shadow comparison and recording (`shadow`), per route.
pub const SHADOW_COMPARED: &str = "ficus_shadow_compared";
pub const SHADOW_MATCHED: &str = "ficus_shadow_matched";
pub const SHADOW_MISMATCHED: &str = "ficus_shadow_mismatched";
pub const SHADOW_SKIPPED: &str = "ficus_shadow_skipped";
pub const SHADOW_NOISE_SUPPRESSED: &str = "ficus_shadow_noise_suppressed";
pub const SHADOW_CALIBRATIONS: &str = "ficus_shadow_calibrations";
pub const SHADOW_IN_FLIGHT: &str = "ficus_shadow_in_flight";
pub const SHADOW_RECORDED: &str = "ficus_shadow_recorded";
pub const SHADOW_RECORD_SKIPPED: &str = "ficus_shadow_record_skipped";
// The dashboard (`dashboard`): status URLs it read.
pub const DASHBOARD_PROBES: &str = "ficus_proxy_dashboard_probes";

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
struct ProbeLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeadlineLabels {
    deadline: &'static str,
}

/// The deadline that closed a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// No TLS handshake, or no bytes telling the protocol, in `handshake_timeout_ms`.
    Handshake,
    /// No request in flight for `idle_timeout_ms`.
    Idle,
}

impl Deadline {
    pub fn as_str(self) -> &'static str {
        match self {
            Deadline::Handshake => "handshake",
            Deadline::Idle => "idle",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    route: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    route: String,
    reason: &'static str,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const SIDES: [Side; 2] = [Side::Monolith, Side::Extracted];

/// Who made the answer a client got: one side's upstream (passed on), or the proxy itself.
/// The `side` label of the request counter and the duration histogram, and `x-ficus-side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    Monolith,
    Extracted,
    Proxy,
}

impl Answerer {
    pub const ALL: [Answerer; 3] = [Answerer::Monolith, Answerer::Extracted, Answerer::Proxy];

    pub fn as_str(self) -> &'static str {
        match self {
            Answerer::Monolith => "monolith",
            Answerer::Extracted => "extracted",
            Answerer::Proxy => "proxy",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Side> for Answerer {
    fn from(side: Side) -> Self {
        match side {
            Side::Monolith => Answerer::Monolith,
            Side::Extracted => Answerer::Extracted,
        }
    }
}

/// The proxy's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<SideLabels, LatencyHistogram>,
    upstream_errors: Family<ErrorLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    token_cache: CacheMetrics,
    jwks_fetches: Family<ResultLabels, Counter>,
    pub jwks_keys: Gauge,
    pub reloads: Counter,
    pub reload_failures: Counter,
    pub table_version: Gauge,
    pub websockets: Gauge,
    /// Client connections open (from accept until their socket closes, tunnels included).
    pub connections_open: Gauge,
    /// Client connections closed at accept because `max_connections` were open.
    pub connections_refused: Counter,
    deadlines: Family<DeadlineLabels, Counter>,
    pub tls_handshake_failures: Counter,
    /// Failed `accept` calls (out of descriptors and the like).
    pub accept_errors: Counter,
    shadow: ShadowFamilies,
    dashboard_probes: Family<ProbeLabels, Counter>,
}

/// The families of shadow comparison and recording.
struct ShadowFamilies {
    compared: Family<RouteLabels, Counter>,
    matched: Family<RouteLabels, Counter>,
    mismatched: Family<RouteLabels, Counter>,
    skipped: Family<ReasonLabels, Counter>,
    suppressed: Family<RouteLabels, Counter>,
    calibrations: Family<RouteLabels, Counter>,
    in_flight: Family<RouteLabels, Gauge>,
    recorded: Family<RouteLabels, Counter>,
    record_skipped: Family<ReasonLabels, Counter>,
}

impl ShadowFamilies {
    fn register(registry: &mut Registry) -> Self {
        let families = Self {
            compared: Family::default(),
            matched: Family::default(),
            mismatched: Family::default(),
            skipped: Family::default(),
            suppressed: Family::default(),
            calibrations: Family::default(),
            in_flight: Family::default(),
            recorded: Family::default(),
            record_skipped: Family::default(),
        };
        registry.register(
            SHADOW_COMPARED,
            "Shadowed requests whose two answers were compared, by route",
            families.compared.clone(),
        );
        registry.register(
            SHADOW_MATCHED,
            "Compared answers the extracted side gave alike (within the monolith's noise), by route",
            families.matched.clone(),
        );
        registry.register(
            SHADOW_MISMATCHED,
            "Compared answers that differed beyond the monolith's noise, by route",
            families.mismatched.clone(),
        );
        registry.register(
            SHADOW_SKIPPED,
            "Requests of shadow routes not compared, by route and reason",
            families.skipped.clone(),
        );
        registry.register(
            SHADOW_NOISE_SUPPRESSED,
            "Differences not counted because the monolith differs from itself there, by route",
            families.suppressed.clone(),
        );
        registry.register(
            SHADOW_CALIBRATIONS,
            "Requests sent twice to the monolith to learn its noise, by route",
            families.calibrations.clone(),
        );
        registry.register(
            SHADOW_IN_FLIGHT,
            "Shadow copies in flight, by route",
            families.in_flight.clone(),
        );
        registry.register(
            SHADOW_RECORDED,
            "Requests written to a route's corpus file, by route",
            families.recorded.clone(),
        );
        registry.register(
            SHADOW_RECORD_SKIPPED,
            "Sampled requests not recorded, by route and reason",
            families.record_skipped.clone(),
        );
        families
    }
}

/// A route's shadow and recording handles, every label set made when the table is compiled.
#[derive(Clone)]
pub struct ShadowMetrics {
    pub compared: Counter,
    pub matched: Counter,
    pub mismatched: Counter,
    skipped: [Counter; SkipReason::ALL.len()],
    pub suppressed: Counter,
    pub calibrations: Counter,
    pub in_flight: Gauge,
    pub recorded: Counter,
    record_skipped: [Counter; RecordSkip::ALL.len()],
}

impl ShadowMetrics {
    pub fn skipped(&self, reason: SkipReason) {
        self.skipped[reason as usize].inc();
    }

    pub fn skipped_count(&self, reason: SkipReason) -> u64 {
        self.skipped[reason as usize].get()
    }

    pub fn record_skipped(&self, reason: RecordSkip) {
        self.record_skipped[reason as usize].inc();
    }

    pub fn record_skipped_count(&self, reason: RecordSkip) -> u64 {
        self.record_skipped[reason as usize].get()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        registry.register(
            REQUESTS,
            "Answers sent to clients, by route, side that made the answer (monolith, extracted, proxy) and status class",
            requests.clone(),
        );
        // 0.1 ms .. 10 s, ten bounds a decade (R10: each at most 28 % above the one before),
        // so the p95 the dashboard shows and the rollout's latency gate judges moves a small
        // step at a time; observed by binary search, without a lock.
        let duration = Family::<SideLabels, LatencyHistogram>::new_with_constructor(|| {
            LatencyHistogram::new(r10_bounds(-4, 1))
        });
        registry.register(
            DURATION,
            "Time from request to response head, by route and side that made the answer (monolith, extracted, proxy)",
            duration.clone(),
        );
        let upstream_errors = Family::default();
        registry.register(
            UPSTREAM_ERRORS,
            "Failed attempts on an upstream, by route, side and kind (connect, connect_timeout, timeout, protocol; 5xx when a fallback replaced it)",
            upstream_errors.clone(),
        );
        let fallbacks = Family::default();
        registry.register(
            FALLBACKS,
            "Requests replayed on the monolith after their attempt on the extracted side failed, by reason",
            fallbacks.clone(),
        );
        let decisions = Family::default();
        registry.register(
            AUTHZ_DECISIONS,
            "Edge authorization decisions, by route, decision and reason",
            decisions.clone(),
        );
        let lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            AUTHZ_TOKEN_CACHE,
            "Verified-token cache lookups of edge authorization, by result (hit: verified before and still valid; miss: verified now)",
            lookups.clone(),
        );
        let evictions = Counter::default();
        registry.register(
            AUTHZ_TOKEN_CACHE_EVICTIONS,
            "Verified tokens dropped from a full cache to keep a newer one",
            evictions.clone(),
        );
        // One statement each: `get_or_create` returns a read guard, alive to the statement's end.
        let hits = lookups
            .get_or_create(&ResultLabels { result: "hit" })
            .clone();
        let misses = lookups
            .get_or_create(&ResultLabels { result: "miss" })
            .clone();
        let token_cache = CacheMetrics {
            hits,
            misses,
            evictions,
        };
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
        let connections_open = Gauge::default();
        registry.register(
            CONNECTIONS_OPEN,
            "Client connections open, tunnels included",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            CONNECTIONS_REFUSED,
            "Client connections closed at accept because max_connections were open",
            connections_refused.clone(),
        );
        let deadlines = Family::<DeadlineLabels, Counter>::default();
        for deadline in [Deadline::Handshake, Deadline::Idle] {
            let _ = deadlines.get_or_create(&DeadlineLabels {
                deadline: deadline.as_str(),
            });
        }
        registry.register(
            CONNECTION_DEADLINES,
            "Client connections closed by a deadline, by deadline (handshake, idle)",
            deadlines.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            TLS_HANDSHAKE_FAILURES,
            "TLS handshakes with clients that failed",
            tls_handshake_failures.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            ACCEPT_ERRORS,
            "Failed accepts on the client listener (out of descriptors and the like); accepting backs off",
            accept_errors.clone(),
        );
        let shadow = ShadowFamilies::register(&mut registry);
        let dashboard_probes = Family::<ProbeLabels, Counter>::default();
        registry.register(
            DASHBOARD_PROBES,
            "Status URLs the dashboard read, by kind (cdc, service) and result (ok, unreachable)",
            dashboard_probes.clone(),
        );
        Self {
            dashboard_probes,
            shadow,
            registry: Mutex::new(registry),
            requests,
            duration,
            upstream_errors,
            fallbacks,
            decisions,
            token_cache,
            jwks_fetches,
            jwks_keys,
            reloads,
            reload_failures,
            table_version,
            websockets,
            connections_open,
            connections_refused,
            deadlines,
            tls_handshake_failures,
            accept_errors,
        }
    }
}

impl Metrics {
    /// The dashboard read a status URL of `kind` (`cdc`, `service`).
    pub fn dashboard_probe(&self, kind: &'static str, reachable: bool) {
        let result = if reachable { "ok" } else { "unreachable" };
        self.dashboard_probes
            .get_or_create(&ProbeLabels { kind, result })
            .inc();
    }

    /// A client connection closed by `deadline`.
    pub fn deadline(&self, deadline: Deadline) {
        self.deadlines
            .get_or_create(&DeadlineLabels {
                deadline: deadline.as_str(),
            })
            .inc();
    }

    /// The verified-token cache's counters (shared by the caches of every table).
    pub fn token_cache(&self) -> CacheMetrics {
        self.token_cache.clone()
    }

    /// Counts a JWKS fetch.
    pub fn jwks_fetch(&self, result: &'static str) {
        self.jwks_fetches
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// The handles of one route, every label set made now (the table is being compiled).
    pub fn route(&self, route: &str) -> RouteMetrics {
        let requests = Answerer::ALL.map(|side| {
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
        let duration = Answerer::ALL.map(|side| {
            self.duration
                .get_or_create(&SideLabels {
                    route: route.to_owned(),
                    side: side.as_str(),
                })
                .clone()
        });
        let upstream_errors = SIDES.map(|side| {
            Failure::ALL.map(|kind| {
                self.upstream_errors
                    .get_or_create(&ErrorLabels {
                        route: route.to_owned(),
                        side: side.as_str(),
                        kind: kind.as_str(),
                    })
                    .clone()
            })
        });
        let fallbacks = Failure::ALL.map(|reason| {
            self.fallbacks
                .get_or_create(&FallbackLabels {
                    route: route.to_owned(),
                    reason: reason.as_str(),
                })
                .clone()
        });
        let decisions = Reason::ALL.map(|reason| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    route: route.to_owned(),
                    decision: reason.decision(),
                    reason: reason.as_str(),
                })
                .clone()
        });
        RouteMetrics {
            requests,
            duration,
            upstream_errors,
            fallbacks,
            decisions,
        }
    }

    /// The shadow and recording handles of one route.
    pub fn shadow(&self, route: &str) -> ShadowMetrics {
        let families = &self.shadow;
        let labels = RouteLabels {
            route: route.to_owned(),
        };
        let reason = |reason: &'static str| ReasonLabels {
            route: route.to_owned(),
            reason,
        };
        ShadowMetrics {
            compared: families.compared.get_or_create(&labels).clone(),
            matched: families.matched.get_or_create(&labels).clone(),
            mismatched: families.mismatched.get_or_create(&labels).clone(),
            skipped: SkipReason::ALL
                .map(|r| families.skipped.get_or_create(&reason(r.as_str())).clone()),
            suppressed: families.suppressed.get_or_create(&labels).clone(),
            calibrations: families.calibrations.get_or_create(&labels).clone(),
            in_flight: families.in_flight.get_or_create(&labels).clone(),
            recorded: families.recorded.get_or_create(&labels).clone(),
            record_skipped: RecordSkip::ALL.map(|r| {
                families
                    .record_skipped
                    .get_or_create(&reason(r.as_str()))
                    .clone()
            }),
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

/// A route's metric handles: the request path only increments them.
pub struct RouteMetrics {
    requests: [[Counter; CLASSES.len()]; Answerer::ALL.len()],
    duration: [LatencyHistogram; Answerer::ALL.len()],
    upstream_errors: [[Counter; Failure::ALL.len()]; SIDES.len()],
    fallbacks: [Counter; Failure::ALL.len()],
    decisions: [Counter; Reason::ALL.len()],
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Monolith => 0,
        Side::Extracted => 1,
    }
}

impl RouteMetrics {
    /// An answer sent to the client, by whoever made it.
    pub fn answered(&self, by: Answerer, status: u16, seconds: f64) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.requests[by.index()][class].inc();
        self.duration[by.index()].observe(seconds);
    }

    /// A failed attempt on `side`.
    pub fn upstream_error(&self, side: Side, failure: Failure) {
        self.upstream_errors[side_index(side)][failure.index()].inc();
    }

    /// An edge authorization decision.
    pub fn decision(&self, reason: Reason) {
        self.decisions[reason.index()].inc();
    }

    /// A request replayed on the monolith after `reason` on the extracted side.
    pub fn fallback(&self, reason: Failure) {
        self.fallbacks[reason.index()].inc();
    }
}

/// What one side of a route has counted so far (read by the dashboard; the request path never
/// sees it).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SideCounts {
    /// Answers sent, by status class (1xx..5xx).
    pub answers: [u64; CLASSES.len()],
    /// Seconds from request to response head, summed over the answers (not filled by
    /// [`RouteMetrics::counts`]: the histogram shows its sum only in the exposition, which
    /// [`latency_sums`] reads).
    pub seconds: f64,
    /// Failed attempts on the side's upstream (zero for `proxy`).
    pub failed_attempts: u64,
}

impl SideCounts {
    pub fn total(&self) -> u64 {
        self.answers.iter().sum()
    }

    /// Answers in class 5xx.
    pub fn errors(&self) -> u64 {
        self.answers[4]
    }
}

impl RouteMetrics {
    /// The counts of each answerer (`Answerer::ALL` order: monolith, extracted, proxy).
    pub fn counts(&self) -> [SideCounts; 3] {
        Answerer::ALL.map(|by| {
            let failed_attempts = match by {
                Answerer::Monolith => self.upstream_errors[side_index(Side::Monolith)].iter(),
                Answerer::Extracted => self.upstream_errors[side_index(Side::Extracted)].iter(),
                Answerer::Proxy => [].iter(),
            }
            .map(Counter::get)
            .sum();
            SideCounts {
                answers: self.requests[by.index()].each_ref().map(Counter::get),
                seconds: 0.0,
                failed_attempts,
            }
        })
    }
}

/// `(route, side) -> seconds` summed by `ficus_proxy_request_duration_seconds`, read from a text
/// exposition of these metrics ([`Metrics::encode`]).
pub fn latency_sums(exposition: &str) -> std::collections::HashMap<(String, String), f64> {
    let prefix = format!("{DURATION}_sum{{");
    exposition
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let label = |name: &str| {
                let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
                let end = labels[start..].find('"')? + start;
                Some(labels[start..end].to_owned())
            };
            Some((
                (label("route")?, label("side")?),
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

/// `(route, side) -> cumulative (le seconds, count)` buckets of
/// `ficus_proxy_request_duration_seconds` in increasing `le`, read from a text exposition of
/// these metrics ([`Metrics::encode`]); [`ficus_telemetry::scrape::quantile`] reads a quantile
/// from them (of two readings' difference, [`ficus_telemetry::scrape::buckets_since`], for a
/// window), as the rollout's latency gate does from the proxies' `/metrics`.
pub fn latency_buckets(
    exposition: &str,
) -> std::collections::HashMap<(String, String), Vec<(f64, f64)>> {
    let name = format!("{DURATION}_bucket");
    let mut buckets: std::collections::HashMap<(String, String), Vec<(f64, f64)>> =
        std::collections::HashMap::new();
    for sample in ficus_telemetry::scrape::parse_text(exposition) {
        if sample.name != name {
            continue;
        }
        if let (Some(route), Some(side), Some(le)) =
            (sample.label("route"), sample.label("side"), sample.le())
        {
            buckets
                .entry((route.to_owned(), side.to_owned()))
                .or_default()
                .push((le, sample.value));
        }
    }
    for list in buckets.values_mut() {
        list.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    buckets
}
