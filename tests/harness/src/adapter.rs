//! The change-data adapter (`ficus cdc`) in-process over a test database: a slot, publication
//! and topic prefix of its own, started as `ficus cdc run` starts it, and its slot dropped when
//! it stops (a logical slot would keep the database from being dropped and hold WAL).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ficus_adapters::metrics::Metrics;
use ficus_adapters::{CancellationToken, CdcConfig, CdcError};
use sqlx::{Connection, Executor, PgConnection};

use crate::{kafka, unique_suffix};

/// The settings of [`TestAdapter::start`]: the form ficus's services are fed.
pub const SERVICE_FORM: &[(&str, &str)] = &[
    ("CONNECT__KEY_CONVERTER_SCHEMAS_ENABLE", "false"),
    ("CONNECT__VALUE_CONVERTER_SCHEMAS_ENABLE", "false"),
    ("CONNECT__HEADER_CONVERTER_SCHEMAS_ENABLE", "false"),
    ("DEBEZIUM__EXTENDED_HEADERS_ENABLED", "false"),
];

/// A running adapter. Dropping it stops it and drops its slot.
pub struct TestAdapter {
    pub database_url: String,
    pub slot: String,
    /// Topics are `<prefix>.public.<table>`.
    pub prefix: String,
    pub partitions: i32,
    /// Its `metrics_listen` address: `/metrics` (lag gauges) and `/healthz`.
    pub metrics_addr: std::net::SocketAddr,
    task: Option<tokio::task::JoinHandle<Result<(), CdcError>>>,
    shutdown: CancellationToken,
}

impl TestAdapter {
    /// Starts streaming `tables` (`schema.table`; empty: every table) of `database_url`
    /// (snapshot `initial`, heartbeats every second) into topics of a fresh prefix with
    /// `partitions` partitions each, in the form ficus's own services are fed (the demo's):
    /// schemaless JSON (`[connect]` `*.converter.schemas.enable = false`) and no
    /// `__debezium.context.*` headers. Debezium's defaults put a ~2 KB schema and four headers
    /// on every record, which a service that knows the contract as types does not need (and
    /// which Tansu 0.6 fetches slowly); [`TestAdapter::start_with`] sets them back.
    pub async fn start(database_url: &str, tables: &[&str], partitions: i32) -> Self {
        Self::start_with(database_url, tables, partitions, SERVICE_FORM).await
    }

    /// [`TestAdapter::start`] with `settings` (`FICUS_CDC__` variables without the prefix, e.g.
    /// `("CONNECT__VALUE_CONVERTER_SCHEMAS_ENABLE", "true")`) set over the defaults; `&[]` is
    /// the adapter's own defaults (Debezium's: schema-wrapped, context headers).
    pub async fn start_with(
        database_url: &str,
        tables: &[&str],
        partitions: i32,
        settings: &[(&str, &str)],
    ) -> Self {
        crate::init_tracing();
        let suffix = unique_suffix();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut adapter = Self {
            metrics_addr: listener.local_addr().unwrap(),
            database_url: database_url.to_owned(),
            slot: format!("ficus_t_{suffix}"),
            prefix: format!("t{suffix}"),
            partitions,
            task: None,
            shutdown: CancellationToken::new(),
        };
        let mut env = HashMap::from([
            (
                "FICUS_CDC__DATABASE_URL".to_owned(),
                adapter.database_url.clone(),
            ),
            ("FICUS_CDC__KAFKA__BROKERS".to_owned(), kafka::brokers()),
            ("FICUS_CDC__SLOT".to_owned(), adapter.slot.clone()),
            ("FICUS_CDC__PUBLICATION".to_owned(), adapter.slot.clone()),
            ("FICUS_CDC__TOPIC_PREFIX".to_owned(), adapter.prefix.clone()),
            (
                "FICUS_CDC__METRICS_LISTEN".to_owned(),
                listener.local_addr().unwrap().to_string(),
            ),
            (
                "FICUS_CDC__FEEDBACK_INTERVAL_MS".to_owned(),
                "100".to_owned(),
            ),
            (
                "FICUS_CDC__HEARTBEAT__INTERVAL_MS".to_owned(),
                "1000".to_owned(),
            ),
            (
                "FICUS_CDC__KAFKA__TOPIC_PARTITIONS".to_owned(),
                partitions.to_string(),
            ),
        ]);
        if !tables.is_empty() {
            env.insert("FICUS_CDC__TABLES".to_owned(), tables.join(","));
        }
        for (key, value) in settings {
            env.insert(format!("FICUS_CDC__{key}"), (*value).to_owned());
        }
        let config = CdcConfig::load(None, env).expect("a valid adapter configuration");
        adapter.task = Some(tokio::spawn(ficus_adapters::run_with_listener(
            config,
            listener,
            Arc::new(Metrics::default()),
            adapter.shutdown.clone(),
        )));
        adapter
    }

    /// `<prefix>.public.<table>`
    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.prefix)
    }

    /// Waits until the initial snapshot is recorded complete (changes after it stream as c/u/d);
    /// panics after `timeout`.
    pub async fn wait_snapshot_complete(&self, timeout: Duration) {
        let mut conn = PgConnection::connect(&self.database_url).await.unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            let done: Option<(bool,)> = sqlx::query_as(
                "SELECT completed_at IS NOT NULL FROM _ficus.snapshots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_optional(&mut conn)
            .await
            .unwrap_or(None);
            if done == Some((true,)) {
                return;
            }
            assert!(Instant::now() < deadline, "the snapshot did not complete");
            if let Some(task) = &self.task {
                assert!(!task.is_finished(), "the adapter stopped");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the adapter and drops its slot.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        drop_slot(&self.database_url, &self.slot).await;
    }
}

impl Drop for TestAdapter {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else {
            return;
        };
        self.shutdown.cancel();
        task.abort();
        let (url, slot) = (self.database_url.clone(), self.slot.clone());
        // Outside any runtime we could borrow: a thread of its own, as TestDatabase does.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime")
                .block_on(drop_slot(&url, &slot));
        })
        .join();
    }
}

async fn drop_slot(url: &str, slot: &str) {
    let Ok(mut conn) = PgConnection::connect(url).await else {
        return;
    };
    for _ in 0..100 {
        let _ = conn
            .execute(
                format!(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                     WHERE slot_name = '{slot}' AND active_pid IS NOT NULL"
                )
                .as_str(),
            )
            .await;
        let _ = conn
            .execute(
                format!(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = '{slot}' AND NOT active"
                )
                .as_str(),
            )
            .await;
        let left: Result<(i64,), _> =
            sqlx::query_as("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_one(&mut conn)
                .await;
        if matches!(left, Ok((0,))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("the replication slot {slot} could not be dropped");
}
