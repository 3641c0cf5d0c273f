//! The admin router every component serves: `GET /metrics` (Prometheus text), `GET /healthz`
//! (liveness), `GET /readyz` (readiness), plus the component's own routes (the proxy adds
//! `/routes` and its JWKS).
//!
//! `/healthz` and `/readyz` answer 200 or 503 with the [`Report`] as JSON:
//! `{"ok":false,"checks":[{"name":"postgres","ok":false,"reason":"..."}]}`.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::health::{Health, Report};
use crate::metrics::{CONTENT_TYPE, Exposition};

/// Builds the admin router of a component.
pub struct Admin {
    health: Health,
    metrics: Option<Arc<dyn Exposition>>,
    routes: Router,
}

impl Admin {
    /// Health endpoints over `health`; no metrics until [`Admin::metrics`].
    pub fn new(health: Health) -> Self {
        Self {
            health,
            metrics: None,
            routes: Router::new(),
        }
    }

    /// Serves `exposition` at `/metrics`.
    pub fn metrics(mut self, exposition: impl Exposition) -> Self {
        self.metrics = Some(Arc::new(exposition));
        self
    }

    /// Adds the component's own routes (state already applied).
    pub fn routes(mut self, routes: Router) -> Self {
        self.routes = self.routes.merge(routes);
        self
    }

    /// The router: the component's routes, `/healthz`, `/readyz` and `/metrics`.
    pub fn router(self) -> Router {
        let live = self.health.clone();
        let ready = self.health;
        let mut router = self
            .routes
            .route(
                "/healthz",
                get(move || {
                    let health = live.clone();
                    async move { report(health.liveness().await) }
                }),
            )
            .route(
                "/readyz",
                get(move || {
                    let health = ready.clone();
                    async move { report(health.readiness().await) }
                }),
            );
        if let Some(metrics) = self.metrics {
            router = router.route(
                "/metrics",
                get(move || {
                    let metrics = metrics.clone();
                    async move { exposition(metrics.as_ref()) }
                }),
            );
        }
        router
    }

    /// Serves the router on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// `/metrics`: the exposition with its content type.
pub fn exposition(metrics: &dyn Exposition) -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        metrics.encode(),
    )
        .into_response()
}

fn report(report: Report) -> Response {
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::metrics::MetricsRegistry;

    async fn fetch(router: &Router, path: &str) -> (StatusCode, Option<String>, String) {
        let response = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn serves_metrics_health_readiness_and_the_components_routes() {
        let health = Health::new();
        let registry = MetricsRegistry::new();
        let counter = prometheus_client::metrics::counter::Counter::<u64>::default();
        registry.register("ficus_test_hits", "Hits", counter.clone());
        counter.inc();
        let router = Admin::new(health.clone())
            .metrics(registry)
            .routes(Router::new().route("/routes", get(|| async { "table" })))
            .router();

        let (status, content_type, body) = fetch(&router, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(content_type.as_deref(), Some(CONTENT_TYPE));
        assert!(body.contains("ficus_test_hits_total 1"), "{body}");

        assert_eq!(fetch(&router, "/routes").await.2, "table");
        assert_eq!(fetch(&router, "/healthz").await.0, 200);
        let (status, _, body) = fetch(&router, "/readyz").await;
        assert_eq!(status, 503, "not ready before set_ready");
        assert!(body.contains("not serving"), "{body}");
        health.set_ready(true);
        assert_eq!(fetch(&router, "/readyz").await.0, 200);

        health.failing("kafka", "topic authorization failed");
        let (status, content_type, body) = fetch(&router, "/healthz").await;
        assert_eq!(status, 503);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][0]["name"], "kafka");
        assert_eq!(json["checks"][0]["reason"], "topic authorization failed");
        assert_eq!(fetch(&router, "/readyz").await.0, 503);
    }

    #[tokio::test]
    async fn no_metrics_route_without_an_exposition() {
        let router = Admin::new(Health::new()).router();
        assert_eq!(fetch(&router, "/metrics").await.0, 404);
    }
}
