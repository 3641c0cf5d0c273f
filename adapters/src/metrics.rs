//! Prometheus metrics of the adapter (`ficus_cdc_*`), served on `metrics_listen` at `/metrics`,
//! with `/healthz` and `/readyz` beside them: the exposition is `ficus-telemetry`'s, the health
//! body is the adapter's own failure report ([`crate::health`]: class, cause, refused record),
//! which `ficus cdc status` reads back. Names are constants, described once here.
//!
//! | metric | type | what |
//! |---|---|---|
//! | `ficus_cdc_events_total{table,op}` | counter | events sent (op: c, u, d, tombstone, t, r, outbox, heartbeat) |
//! | `ficus_cdc_acked_events_total` | counter | events the broker acknowledged |
//! | `ficus_cdc_sent_bytes_total` | counter | key and value bytes of the events sent |
//! | `ficus_cdc_inflight_events` | gauge | sent, not yet acknowledged |
//! | `ficus_cdc_confirmed_lsn_bytes` | gauge | the WAL position confirmed to PostgreSQL |
//! | `ficus_cdc_slot_lag_bytes` | gauge | WAL between the server's insert position (`pg_current_wal_insert_lsn()`) and the slot's confirmed position |
//! | `ficus_cdc_lag_seconds` | gauge | commit time of the last confirmed transaction to its acknowledgement |
//! | `ficus_cdc_commit_to_ack_seconds` | histogram | per transaction: PostgreSQL commit to the broker's acknowledgement of its last event |
//! | `ficus_cdc_snapshot_rows_total{table}` | counter | snapshot rows sent |
//! | `ficus_cdc_snapshot_progress_ratio{table}` | gauge | rows done / estimated rows (1 when the table is done) |
//! | `ficus_cdc_broker_errors_total{kind}` | counter | client-level broker errors (transport, delivery) |
//! | `ficus_cdc_restarts_total{reason,cause}` | counter | pipeline restarts after a retriable failure (reason: postgres, kafka, other; cause: connection, slot_in_use, broker_down, ...) |
//! | `ficus_cdc_failed{class,cause}` | gauge | 1 once a failure no retry fixes stopped the pipeline (class: operator, never; cause: wal_level, slot_plugin, record_too_large, ...) |
//! | `ficus_cdc_heartbeats_total` | counter | heartbeats written |
//! | `ficus_cdc_refused_record_bytes{table,topic,key,cause}` | gauge | the size of the record that stopped capture (`errors.tolerance = "none"`), naming its table and key |
//! | `ficus_cdc_dead_letters_total{table,cause}` | counter | records sent to the dead-letter topic, a placeholder in their place (`errors.tolerance = "all"`) |

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::health::Health;

pub const EVENTS: &str = "ficus_cdc_events";
pub const ACKED_EVENTS: &str = "ficus_cdc_acked_events";
pub const SENT_BYTES: &str = "ficus_cdc_sent_bytes";
pub const INFLIGHT: &str = "ficus_cdc_inflight_events";
pub const CONFIRMED_LSN: &str = "ficus_cdc_confirmed_lsn_bytes";
pub const SLOT_LAG: &str = "ficus_cdc_slot_lag_bytes";
pub const LAG_SECONDS: &str = "ficus_cdc_lag_seconds";
pub const COMMIT_TO_ACK: &str = "ficus_cdc_commit_to_ack_seconds";
pub const SNAPSHOT_ROWS: &str = "ficus_cdc_snapshot_rows";
pub const SNAPSHOT_PROGRESS: &str = "ficus_cdc_snapshot_progress_ratio";
pub const BROKER_ERRORS: &str = "ficus_cdc_broker_errors";
pub const RESTARTS: &str = "ficus_cdc_restarts";
pub const HEARTBEATS: &str = "ficus_cdc_heartbeats";
pub const FAILED: &str = "ficus_cdc_failed";
pub const REFUSED_RECORD: &str = "ficus_cdc_refused_record_bytes";
pub const DEAD_LETTERS: &str = "ficus_cdc_dead_letters";

/// Buckets of the latency histogram: fine below 100 ms, where the goal is.
pub const LATENCY_BUCKETS: [f64; 22] = [
    0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableOpLabels {
    pub table: String,
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestartLabels {
    pub reason: &'static str,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    pub class: &'static str,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub table: String,
    pub topic: String,
    pub key: String,
    pub cause: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub table: String,
    pub cause: &'static str,
}

/// The adapter's metric families.
pub struct Metrics {
    registry: Mutex<Registry>,
    pub events: Family<TableOpLabels, Counter>,
    pub acked_events: Counter,
    pub sent_bytes: Counter,
    pub inflight: Gauge,
    pub confirmed_lsn: Gauge,
    pub slot_lag_bytes: Gauge,
    pub lag_seconds: Gauge<f64, AtomicU64>,
    pub commit_to_ack: Histogram,
    pub snapshot_rows: Family<TableLabels, Counter>,
    pub snapshot_progress: Family<TableLabels, Gauge<f64, AtomicU64>>,
    pub broker_errors: Family<KindLabels, Counter>,
    pub restarts: Family<RestartLabels, Counter>,
    pub heartbeats: Counter,
    pub failed: Family<FailedLabels, Gauge>,
    pub refused_record: Family<RefusedLabels, Gauge>,
    pub dead_letters: Family<DeadLetterLabels, Counter>,
    /// What `/healthz` reports.
    pub health: Health,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let events = Family::<TableOpLabels, Counter>::default();
        registry.register(EVENTS, "Events sent, by table and op", events.clone());
        let acked_events = Counter::default();
        registry.register(
            ACKED_EVENTS,
            "Events the broker acknowledged",
            acked_events.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register(
            SENT_BYTES,
            "Key and value bytes of the events sent",
            sent_bytes.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            INFLIGHT,
            "Events sent and not yet acknowledged",
            inflight.clone(),
        );
        let confirmed_lsn = Gauge::default();
        registry.register(
            CONFIRMED_LSN,
            "The WAL position confirmed to PostgreSQL",
            confirmed_lsn.clone(),
        );
        let slot_lag_bytes = Gauge::default();
        registry.register(
            SLOT_LAG,
            "WAL bytes between the server's insert position and the slot's confirmed position",
            slot_lag_bytes.clone(),
        );
        let lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            LAG_SECONDS,
            "Seconds from the commit of the last confirmed transaction to its acknowledgement",
            lag_seconds.clone(),
        );
        let commit_to_ack = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            COMMIT_TO_ACK,
            "Per transaction, PostgreSQL commit to the broker's acknowledgement of its last event",
            commit_to_ack.clone(),
        );
        let snapshot_rows = Family::<TableLabels, Counter>::default();
        registry.register(
            SNAPSHOT_ROWS,
            "Snapshot rows sent, by table",
            snapshot_rows.clone(),
        );
        let snapshot_progress = Family::<TableLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            SNAPSHOT_PROGRESS,
            "Snapshot progress by table: rows done over estimated rows, 1 when done",
            snapshot_progress.clone(),
        );
        let broker_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            BROKER_ERRORS,
            "Broker errors, by kind",
            broker_errors.clone(),
        );
        let restarts = Family::<RestartLabels, Counter>::default();
        registry.register(
            RESTARTS,
            "Pipeline restarts after a retriable failure, by reason and cause",
            restarts.clone(),
        );
        let heartbeats = Counter::default();
        registry.register(HEARTBEATS, "Heartbeats written", heartbeats.clone());
        let failed = Family::<FailedLabels, Gauge>::default();
        registry.register(
            FAILED,
            "1 once a failure no retry fixes stopped the pipeline, by class and cause",
            failed.clone(),
        );
        let refused_record = Family::<RefusedLabels, Gauge>::default();
        registry.register(
            REFUSED_RECORD,
            "Bytes of the record the broker never takes that stopped capture, by table, topic, key and cause",
            refused_record.clone(),
        );
        let dead_letters = Family::<DeadLetterLabels, Counter>::default();
        registry.register(
            DEAD_LETTERS,
            "Records sent to the dead-letter topic with a placeholder in their place, by table and cause",
            dead_letters.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            events,
            acked_events,
            sent_bytes,
            inflight,
            confirmed_lsn,
            slot_lag_bytes,
            lag_seconds,
            commit_to_ack,
            snapshot_rows,
            snapshot_progress,
            broker_errors,
            restarts,
            heartbeats,
            failed,
            refused_record,
            dead_letters,
            health: Health::default(),
        }
    }
}

/// `value` escaped for a label of the text exposition (`\\`, `\"`, `\n`): prometheus-client
/// 0.24 writes label values verbatim, and a record key is JSON, full of quotes.
pub fn label_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Metrics {
    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().expect("metrics registry");
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// The counter of `(table, op)`: callers keep the handle, the hot path only increments.
    pub fn events_counter(&self, table: &str, op: &'static str) -> Counter {
        self.events
            .get_or_create(&TableOpLabels {
                table: table.to_owned(),
                op,
            })
            .clone()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
/// `/healthz` and `/readyz` answer the adapter's [`crate::health::HealthReport`]: 200 while the
/// pipeline runs or retries, 503 once a failure no retry fixes stopped it.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::routing::get;
    let health = metrics.clone();
    let report = move || {
        let report = health.health.report();
        async move {
            (
                axum::http::StatusCode::from_u16(report.http_status())
                    .unwrap_or(axum::http::StatusCode::SERVICE_UNAVAILABLE),
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                report.body(),
            )
        }
    };
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { ficus_telemetry::admin::exposition(&move || metrics.encode()) }
            }),
        )
        .route("/healthz", get(report.clone()))
        .route("/readyz", get(report));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "metrics listener failed");
    }
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, crate::CdcError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::CdcError::Listen { addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_key_in_a_label_is_escaped() {
        let metrics = Metrics::default();
        metrics
            .refused_record
            .get_or_create(&RefusedLabels {
                table: label_value("public.t"),
                topic: label_value("p.public.t"),
                key: label_value("{\"id\":\"a\\b\"}"),
                cause: "record_too_large",
            })
            .set(5);
        let text = metrics.encode();
        assert!(text.contains(r#"key="{\"id\":\"a\\b\"}""#), "{text}");
    }
}
