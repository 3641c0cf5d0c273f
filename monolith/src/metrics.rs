//! Prometheus metrics of the monolith, counted by the [`track`] middleware and served at
//! `GET /metrics` by `ficus-telemetry`'s admin router (merged into the app's router).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ficus_telemetry::MetricsRegistry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::AppState;

/// `ficus_monolith_http_requests_total`
pub const REQUESTS: &str = "ficus_monolith_http_requests";
/// `ficus_monolith_http_request_duration_seconds`
pub const DURATION: &str = "ficus_monolith_http_request_duration_seconds";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The monolith's metric families and their registry.
pub struct Metrics {
    pub(crate) registry: MetricsRegistry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = MetricsRegistry::new();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            REQUESTS,
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            DURATION,
            "Time to the response head, by method and route template",
            duration.clone(),
        );
        Self {
            registry,
            requests,
            duration,
        }
    }
}

/// Middleware counting every request by its route template (never the raw path: ids would
/// explode the label space).
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
