//! `/readyz` and `/metrics` for a service's views, behind one function ([`router`]), so the
//! wiring can move to the shared telemetry crate without touching the services.
//!
//! `/readyz`: 200 when every view is ready, else 503; the body is JSON with each view's
//! readiness, lag and applied source position (what the proxy and a rollout read to refuse a
//! route to a service whose view is behind).
//! `/metrics`: Prometheus text, computed from the views' status at each scrape.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::ready::ViewStatus;

/// Metric names, described once.
pub mod names {
    pub const READY: &str = "ficus_view_ready";
    pub const LAG_EVENTS: &str = "ficus_view_lag_events";
    pub const LAG_SECONDS: &str = "ficus_view_lag_seconds";
    pub const APPLIED_LSN: &str = "ficus_view_applied_lsn";
    pub const NEXT_OFFSET: &str = "ficus_view_next_offset";
    pub const BROKER_UP: &str = "ficus_view_broker_up";
    pub const EVENTS: &str = "ficus_view_events";
    pub const BUFFERED_EVENTS: &str = "ficus_view_buffered_events";
}

/// The router serving `/readyz` and `/metrics` for `views`.
pub fn router(views: Vec<Arc<ViewStatus>>) -> Router {
    let views = Arc::new(views);
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ViewsCollector(views.clone())));
    let registry = Arc::new(registry);
    Router::new()
        .route(
            "/readyz",
            get({
                let views = views.clone();
                move || async move { readyz(&views) }
            }),
        )
        .route("/metrics", get(move || async move { metrics(&registry) }))
}

fn readyz(views: &[Arc<ViewStatus>]) -> Response {
    let reports: Vec<_> = views.iter().map(|v| v.report()).collect();
    let ready = reports.iter().all(|r| r.ready);
    let body = json!({
        "ready": ready,
        "views": reports.iter().map(|r| json!({
            "view": r.view,
            "topic": r.topic,
            "ready": r.ready,
            "lag_events": r.lag_events,
            "lag_seconds": r.lag_seconds,
            "broker_up": r.broker_up,
            "buffered_events": r.buffered_events,
            "applied_position": r.position.map(|p| p.to_string()),
            "applied_lsn": r.position.map(|p| p.lsn),
            "source_ts_ms": r.source_ts_ms,
            "failure": r.failure,
            "partitions": r.partitions.iter().map(|(p, s)| json!({
                "partition": p,
                "next_offset": s.next_offset,
                "start_high_watermark": s.start_high,
                "high_watermark": s.high,
                "lag_events": s.lag_events(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

fn metrics(registry: &Registry) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug)]
struct ViewsCollector(Arc<Vec<Arc<ViewStatus>>>);

impl Collector for ViewsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reports: Vec<_> = self.0.iter().map(|v| v.report()).collect();
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     values: Vec<(Vec<(&str, String)>, f64)>|
         -> Result<(), std::fmt::Error> {
            let probe = ConstGauge::new(0.0f64);
            let mut family = encoder.encode_descriptor(name, help, None, probe.metric_type())?;
            for (labels, value) in values {
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        let per_view = |f: &dyn Fn(&crate::ready::StatusReport) -> f64| {
            reports
                .iter()
                .map(|r| (vec![("view", r.view.clone())], f(r)))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut encoder,
            names::READY,
            "1 when the view caught up with its topic and may serve",
            per_view(&|r| f64::from(u8::from(r.ready))),
        )?;
        gauge(
            &mut encoder,
            names::LAG_SECONDS,
            "How far behind the source the view is, in seconds",
            per_view(&|r| r.lag_seconds),
        )?;
        gauge(
            &mut encoder,
            names::APPLIED_LSN,
            "Source WAL position (LSN) of the last change the view applied",
            per_view(&|r| r.position.map_or(0.0, |p| p.lsn as f64)),
        )?;
        gauge(
            &mut encoder,
            names::BROKER_UP,
            "1 when the broker answered the last watermark request",
            per_view(&|r| f64::from(u8::from(r.broker_up))),
        )?;
        gauge(
            &mut encoder,
            names::BUFFERED_EVENTS,
            "Events taken from the broker and not stored yet (bounded: backpressure)",
            per_view(&|r| r.buffered_events as f64),
        )?;
        let per_partition = |f: &dyn Fn(&crate::ready::PartitionStatus) -> f64| {
            reports
                .iter()
                .flat_map(|r| {
                    r.partitions.iter().map(move |(p, s)| {
                        (
                            vec![("view", r.view.clone()), ("partition", p.to_string())],
                            f(s),
                        )
                    })
                })
                .collect::<Vec<_>>()
        };
        gauge(
            &mut encoder,
            names::LAG_EVENTS,
            "Events between the view's stored offset and the partition's high watermark",
            per_partition(&|s| s.lag_events() as f64),
        )?;
        gauge(
            &mut encoder,
            names::NEXT_OFFSET,
            "The next offset the view consumes (stored with its rows)",
            per_partition(&|s| s.next_offset as f64),
        )?;
        let probe = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            names::EVENTS,
            "Events consumed since start, by outcome: applied, or refused by the source-position guard (stale)",
            None,
            probe.metric_type(),
        )?;
        for r in &reports {
            for (outcome, value) in [("applied", r.applied), ("stale", r.stale)] {
                let labels = [("view", r.view.clone()), ("outcome", outcome.to_owned())];
                ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
