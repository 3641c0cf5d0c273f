//! A service's process, assembled once for all: open the store, start the views, serve the
//! service's routes behind the kit's layers, plus `/healthz`, `/readyz`, `/views` and `/metrics`.
//!
//! ```text
//! request -> metrics (route template, status) -> readiness gate (503 not_ready until every
//!            view caught up) -> service handler (Caller, Query, PathParam) -> view store -> JSON
//! /readyz -> ficus-telemetry Health: serving flag + one check per view (ready, lag, position)
//! /views  -> each view's status: lag, applied source position, partitions and offsets
//! /metrics-> ficus_service_http_* of the kit, then ficus_view_* of the views
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ficus_telemetry::health::Scope;
use ficus_telemetry::{Admin, Exposition, Health, MetricsRegistry, Shutdown};
use ficus_view::{
    ConsumerConfig, Store, TransactionalViews, ViewHandle, ViewSpec, ViewStatus, ViewsHandle,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tower::ServiceExt as _;

use crate::error::ApiError;
use crate::identity::{IdentityConfig, Keys};
use crate::settings::Settings;

/// `ficus_service_http_requests_total{service,method,route,status}`
pub const REQUESTS: &str = "ficus_service_http_requests";
/// `ficus_service_http_request_duration_seconds{service,method,route}`
pub const DURATION: &str = "ficus_service_http_request_duration_seconds";

/// What a service is: its name (settings section, metrics label, default store file), its
/// default listener, its views and its routes. A service's `main` hands this to [`crate::main`].
pub struct Service {
    pub name: &'static str,
    pub default_listen: SocketAddr,
    /// The views the service keeps, given its settings (topic names come from them).
    pub views: fn(&Settings) -> Vec<ViewSpec>,
    /// The service's API routes, served with [`Ctx`] as state.
    pub routes: fn() -> Router<Ctx>,
    /// The default of `views.whole_transactions`: on where the service's views must agree
    /// with each other within a monolith transaction (it then needs the adapter's transaction
    /// metadata).
    pub whole_transactions: bool,
}

/// What handlers share: the views' store and the proxy's identity keys.
#[derive(Clone)]
pub struct Ctx {
    pub store: Store,
    pub keys: Arc<Keys>,
}

impl FromRef<Ctx> for Arc<Keys> {
    fn from_ref(ctx: &Ctx) -> Self {
        ctx.keys.clone()
    }
}

impl FromRef<Ctx> for Store {
    fn from_ref(ctx: &Ctx) -> Self {
        ctx.store.clone()
    }
}

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("settings: {0}")]
    Settings(String),
    #[error("view: {0}")]
    View(#[from] ficus_view::ViewError),
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
}

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    pub views: Vec<Arc<ViewStatus>>,
    pub health: Health,
    shutdown: Shutdown,
    handles: Vec<ViewHandle>,
    /// With `views.whole_transactions`: the views, applied a source transaction at a time.
    group: Option<ViewsHandle>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// The signal that stops it.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits for the server to end (after [`Running::shutdown`] is triggered), then stops the
    /// views after the batch each is writing.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let served = self
            .server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        for handle in self.handles {
            handle.stop().await?;
        }
        if let Some(group) = self.group {
            group.stop().await?;
        }
        served.map_err(ServiceError::Listener)
    }

    /// Stops serving and consuming.
    pub async fn stop(self) -> Result<(), ServiceError> {
        self.shutdown.trigger();
        self.wait().await
    }
}

/// The kit's request metrics.
#[derive(Clone)]
struct Metrics {
    service: &'static str,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: &'static str,
    method: String,
    route: String,
}

impl Metrics {
    fn register(service: &'static str, registry: &MetricsRegistry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            REQUESTS,
            "HTTP requests answered by an extracted service, by method, route template and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            DURATION,
            "Time to the response head, by method and route template",
            duration.clone(),
        );
        Self {
            service,
            requests,
            duration,
        }
    }
}

/// With `views.whole_transactions` (or the service's default): the service's views as one
/// group, consumed with the adapter's transaction topic, so a monolith transaction shows in all
/// of them at once.
pub(crate) fn transactional_views(
    service: &Service,
    settings: &Settings,
) -> Option<TransactionalViews> {
    let whole_transactions = settings
        .views
        .whole_transactions
        .unwrap_or(service.whole_transactions);
    whole_transactions.then(|| {
        (service.views)(settings).into_iter().fold(
            TransactionalViews::new(service.name, settings.transaction_topic())
                .settle_ms(settings.views.transaction_settle_ms),
            TransactionalViews::view,
        )
    })
}

/// Opens the store, starts the views and serves on `listener` until the returned service's
/// shutdown is triggered. The listener is bound by the caller (tests bind `127.0.0.1:0`).
pub async fn start(
    service: &Service,
    settings: &Settings,
    listener: tokio::net::TcpListener,
) -> Result<Running, ServiceError> {
    settings
        .validate()
        .map_err(|problems| ServiceError::Settings(problems.join("; ")))?;
    let store = Store::open(&settings.store_location(service.name)).await?;
    let mut config = ConsumerConfig::new(settings.kafka.brokers.clone());
    config.max_lag_events = settings.views.max_lag_events;
    config.batch_max_events = settings.views.batch_max_events;
    config.batch_max_ms = settings.views.batch_max_ms;
    config.watermark_interval_ms = settings.views.watermark_interval_ms;
    config.properties.push((
        "fetch.wait.max.ms".to_owned(),
        settings.views.fetch_wait_max_ms.to_string(),
    ));
    let mut handles = Vec::new();
    let mut group = None;
    let views: Vec<Arc<ViewStatus>> = if let Some(views) = transactional_views(service, settings) {
        let handle = ficus_view::start_transactional(store.clone(), views, config.clone()).await?;
        let statuses = handle.statuses.clone();
        group = Some(handle);
        statuses
    } else {
        for spec in (service.views)(settings) {
            handles.push(ficus_view::start(store.clone(), spec, config.clone()).await?);
        }
        handles.iter().map(|h| h.status.clone()).collect()
    };

    let header = axum::http::HeaderName::try_from(settings.identity.header.as_str())
        .map_err(|e| ServiceError::Settings(format!("identity.header: {e}")))?;
    let keys = Arc::new(Keys::new(IdentityConfig {
        jwks_url: settings.identity.jwks_url.clone(),
        audience: settings.identity.audience.clone(),
        header,
    }));
    let ctx = Ctx { store, keys };
    let health = Health::new();
    for status in &views {
        let status = status.clone();
        health.probe(
            &format!("view {}", status.report().view),
            Scope::Ready,
            move || {
                let report = status.report();
                async move { view_check(&report) }
            },
        );
    }
    let router = router(service, ctx, &views, health.clone());
    let addr = listener.local_addr().map_err(ServiceError::Listener)?;
    let shutdown = Shutdown::new();
    let stop = shutdown.wait();
    let draining = health.clone();
    health.set_ready(true);
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                stop.await;
                draining.set_ready(false);
            })
            .await
    });
    tracing::info!(service = service.name, %addr, "serving");
    Ok(Running {
        addr,
        views,
        health,
        shutdown,
        handles,
        group,
        server,
    })
}

/// A view's readiness as a health check: ok, or why not with its lag and applied position.
fn view_check(report: &ficus_view::StatusReport) -> Result<(), String> {
    if report.ready {
        return Ok(());
    }
    let position = report
        .position
        .map_or_else(|| "nothing applied".to_owned(), |p| format!("applied {p}"));
    Err(match &report.failure {
        Some(failure) => format!("failed: {failure}"),
        None if !report.broker_up => format!("broker unreachable; {position}"),
        None => format!(
            "catching up: {} events behind; {position}",
            report.lag_events
        ),
    })
}

fn router(service: &Service, ctx: Ctx, views: &[Arc<ViewStatus>], health: Health) -> Router {
    let registry = MetricsRegistry::new();
    let metrics = Metrics::register(service.name, &registry);
    let views_router = ficus_view::telemetry::router(views.to_vec());
    let gate = Arc::new(views.to_vec());
    let api = (service.routes)()
        .with_state(ctx)
        .route_layer(axum::middleware::from_fn_with_state(gate, readiness_gate));
    let status_router = views_router.clone();
    let admin = Admin::new(health)
        .routes(
            Router::new()
                .route(
                    "/views",
                    get(move || forward(status_router.clone(), "/readyz")),
                )
                .route(
                    "/metrics",
                    get(move || all_metrics(registry.clone(), views_router.clone())),
                ),
        )
        .router();
    api.merge(admin)
        .route_layer(axum::middleware::from_fn_with_state(metrics, track))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

/// 503 `not_ready` while a view has not caught up: an answer from a view behind the monolith
/// would be stale, and the proxy's fallback takes a 503 to the monolith instead.
async fn readiness_gate(
    State(views): State<Arc<Vec<Arc<ViewStatus>>>>,
    request: Request,
    next: Next,
) -> Response {
    let behind: Vec<String> = views
        .iter()
        .map(|v| v.report())
        .filter(|r| !r.ready)
        .map(|r| format!("{} ({} events behind)", r.view, r.lag_events))
        .collect();
    if behind.is_empty() {
        next.run(request).await
    } else {
        ApiError::unavailable(
            "not_ready",
            format!(
                "this service's views are catching up: {}",
                behind.join(", ")
            ),
        )
        .into_response()
    }
}

/// Counts every request by route template (never the raw path: ids would explode the labels).
async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    metrics
        .duration
        .get_or_create(&RouteLabels {
            service: metrics.service,
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            service: metrics.service,
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// One request to an in-process router (the views' status and metrics).
async fn forward(router: Router, path: &'static str) -> Response {
    let request = Request::get(path)
        .body(Body::empty())
        .expect("a static request");
    match router.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The kit's families, then the views' (`ficus_view::telemetry`), as one exposition.
async fn all_metrics(registry: MetricsRegistry, views: Router) -> Response {
    let mut text = registry.encode();
    if let Some(stripped) = text.strip_suffix("# EOF\n") {
        text.truncate(stripped.len());
    }
    let response = forward(views, "/metrics").await;
    match axum::body::to_bytes(response.into_body(), 16 << 20).await {
        Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
        Err(error) => {
            tracing::warn!(%error, "encoding the views' metrics");
            text.push_str("# EOF\n");
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ficus_telemetry::metrics::CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found("route", request.uri().path())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
}
