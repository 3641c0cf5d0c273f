//! What the kit's tests need beside `ficus-testkit`: the change-data adapter in-process over a
//! test database (slot and publication of its own, dropped afterwards), a minimal topic reader,
//! a producer of hand-made change events, and stores of both kinds.

#![allow(dead_code)] // Each test binary uses its part.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ficus_adapters::metrics::Metrics;
use ficus_adapters::{CancellationToken, CdcConfig, CdcError};
use ficus_testkit::{TestDatabase, kafka, unique_suffix};
use ficus_view::Store;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};

/// The adapter running in this process over a test database.
pub struct Adapter {
    pub db: TestDatabase,
    pub slot: String,
    pub prefix: String,
    /// Partitions of the topics the adapter creates.
    pub partitions: i32,
    /// Debezium's `provide.transaction.metadata` (BEGIN/END on `<prefix>.transaction`).
    pub transaction_metadata: bool,
    task: Option<tokio::task::JoinHandle<Result<(), CdcError>>>,
    shutdown: CancellationToken,
}

impl Adapter {
    /// A fresh database with `schema` applied; the adapter not started yet.
    pub async fn new(schema: &str) -> Self {
        ficus_testkit::init_tracing();
        let db = TestDatabase::new().await;
        sqlx::raw_sql(schema)
            .execute(&db.pool)
            .await
            .expect("applying the test schema");
        let suffix = unique_suffix();
        Self {
            db,
            slot: format!("ficus_v_{suffix}"),
            prefix: format!("v{suffix}"),
            partitions: 3,
            transaction_metadata: false,
            task: None,
            shutdown: CancellationToken::new(),
        }
    }

    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.prefix)
    }

    pub fn heartbeat_topic(&self) -> String {
        format!("__debezium-heartbeat.{}", self.prefix)
    }

    /// Starts `ficus cdc` (snapshot `initial`, heartbeats every second) in this process.
    pub async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut env = HashMap::from([
            ("FICUS_CDC__DATABASE_URL".to_owned(), self.db.url.clone()),
            ("FICUS_CDC__KAFKA__BROKERS".to_owned(), kafka::brokers()),
            ("FICUS_CDC__SLOT".to_owned(), self.slot.clone()),
            ("FICUS_CDC__PUBLICATION".to_owned(), self.slot.clone()),
            ("FICUS_CDC__TOPIC_PREFIX".to_owned(), self.prefix.clone()),
            // The kit applies truncates; Debezium's default skips them.
            (
                "FICUS_CDC__DEBEZIUM__SKIPPED_OPERATIONS".to_owned(),
                "none".to_owned(),
            ),
            // The kit reads numeric as exact strings (schemaless JSON carries no scale).
            (
                "FICUS_CDC__DEBEZIUM__DECIMAL_HANDLING_MODE".to_owned(),
                "string".to_owned(),
            ),
            (
                "FICUS_CDC__METRICS_LISTEN".to_owned(),
                listener.local_addr().unwrap().to_string(),
            ),
            (
                "FICUS_CDC__FEEDBACK_INTERVAL_MS".to_owned(),
                "200".to_owned(),
            ),
            (
                "FICUS_CDC__HEARTBEAT__INTERVAL_MS".to_owned(),
                "1000".to_owned(),
            ),
            (
                "FICUS_CDC__KAFKA__TOPIC_PARTITIONS".to_owned(),
                self.partitions.to_string(),
            ),
        ]);
        if self.transaction_metadata {
            env.insert(
                "FICUS_CDC__DEBEZIUM__PROVIDE_TRANSACTION_METADATA".to_owned(),
                "true".to_owned(),
            );
        }
        let config = CdcConfig::load(None, env).expect("a valid adapter configuration");
        self.task = Some(tokio::spawn(ficus_adapters::run_with_listener(
            config,
            listener,
            Arc::new(Metrics::default()),
            self.shutdown.clone(),
        )));
    }

    /// Waits until everything written so far is in the broker (the slot confirmed it). The
    /// insert position, not `pg_current_wal_lsn()` (the write position, which can lie below
    /// commits just made with `synchronous_commit = off`, so the wait could end early).
    pub async fn wait_caught_up(&self) {
        let (target,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let reached: Option<(Option<bool>,)> = sqlx::query_as(
                "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .bind(&target)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap();
            if reached == Some((Some(true),)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the adapter did not reach {target}"
            );
            if let Some(task) = &self.task {
                assert!(!task.is_finished(), "the adapter stopped");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the snapshot is recorded complete.
    pub async fn wait_snapshot_complete(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done: Option<(bool,)> = sqlx::query_as(
                "SELECT completed_at IS NOT NULL FROM _ficus.snapshots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_optional(&self.db.pool)
            .await
            .unwrap_or(None);
            if done == Some((true,)) {
                return;
            }
            assert!(Instant::now() < deadline, "the snapshot did not complete");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn execute(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.db.pool).await.unwrap();
    }

    /// Stops the adapter and drops its slot (a slot keeps its database from being dropped).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        let mut conn = PgConnection::connect(&self.db.url).await.unwrap();
        for _ in 0..50 {
            let _ = conn
                .execute(
                    format!(
                        "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                         WHERE slot_name = '{}' AND active_pid IS NOT NULL",
                        self.slot
                    )
                    .as_str(),
                )
                .await;
            let dropped = conn
                .execute(
                    format!(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                         WHERE slot_name = '{}' AND NOT active",
                        self.slot
                    )
                    .as_str(),
                )
                .await;
            let (left,): (i64,) =
                sqlx::query_as("SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1")
                    .bind(&self.slot)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            if dropped.is_ok() && left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A record read back from the broker: the testkit's reader, shared with the CDC tests.
pub type Record = kafka::Msg;

/// Every record of `topic` up to its high watermarks now (offset order per partition).
pub fn read_topic(topic: &str) -> Vec<Record> {
    kafka::read_topic(&kafka::brokers(), topic)
}

/// Reads `topic` until `ready` holds, for at most 60 s.
pub async fn wait_records(topic: &str, ready: impl Fn(&[Record]) -> bool) -> Vec<Record> {
    kafka::wait_for_messages(&kafka::brokers(), topic, Duration::from_secs(60), ready).await
}

/// A producer to the test broker.
pub fn producer() -> FutureProducer {
    producer_to(&kafka::brokers())
}

/// A producer to `brokers`.
pub fn producer_to(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("a producer")
}

/// Sends records in order (one partition per key by the default partitioner), waiting for each
/// batch of acknowledgements.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    records: &[(Option<String>, Option<String>)],
) {
    for chunk in records.chunks(1000) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|(key, value)| {
                let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic);
                if let Some(key) = key {
                    record = record.key(key.as_str());
                }
                if let Some(value) = value {
                    record = record.payload(value.as_str());
                }
                producer.send(record, Duration::from_secs(30))
            })
            .collect();
        for send in sends {
            send.await.expect("delivered");
        }
    }
}

/// A hand-made change event of table `people(id, name, n)` as the adapter writes it.
pub fn change(
    op: &str,
    id: i64,
    name: &str,
    n: i64,
    commit: Option<u64>,
    lsn: u64,
) -> (Option<String>, Option<String>) {
    row_change(
        "people",
        op,
        json!({"id": id}),
        json!({"id": id, "name": name, "n": n}),
        commit,
        lsn,
    )
}

/// A hand-made change event of `table` as the adapter writes it: `key` the primary key as
/// JSON, `row` the row after the change (a delete's `before` is its key).
pub fn row_change(
    table: &str,
    op: &str,
    key: Value,
    row: Value,
    commit: Option<u64>,
    lsn: u64,
) -> (Option<String>, Option<String>) {
    let (before, after) = match op {
        "d" => (key.clone(), Value::Null),
        _ => (Value::Null, row),
    };
    let sequence = match commit {
        Some(c) => format!("[\"{c}\",\"{lsn}\"]"),
        None => format!("[null,\"{lsn}\"]"),
    };
    let value = json!({
        "before": before,
        "after": after,
        "source": {"version": "ficus-test", "connector": "postgresql", "name": "t", "ts_ms": 1_700_000_000_000i64 + lsn as i64,
                   "snapshot": if op == "r" {"true"} else {"false"}, "db": "app", "sequence": sequence,
                   "schema": "public", "table": table, "txId": lsn, "lsn": lsn, "xmin": null},
        "op": op,
        "ts_ms": 1_700_000_000_000i64,
        "transaction": null
    });
    (Some(key.to_string()), Some(value.to_string()))
}

/// A truncate of `people` at `lsn`.
pub fn truncate(commit: Option<u64>, lsn: u64) -> (Option<String>, Option<String>) {
    let (_, value) = change("t", 0, "", 0, commit, lsn);
    let mut value: Value = serde_json::from_str(&value.unwrap()).unwrap();
    value["after"] = Value::Null;
    (None, Some(value.to_string()))
}

/// The tombstone of `id`.
pub fn tombstone(id: i64) -> (Option<String>, Option<String>) {
    (Some(json!({"id": id}).to_string()), None)
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// A store of `kind` that lives as long as the value.
pub struct TestStore {
    pub store: Store,
    pub location: String,
    _db: Option<TestDatabase>,
    dir: Option<PathBuf>,
}

impl TestStore {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => {
                let dir = std::env::temp_dir().join(format!("ficus-view-{}", unique_suffix()));
                std::fs::create_dir_all(&dir).unwrap();
                let location = dir.join("view.db").display().to_string();
                let store = Store::open(&location).await.expect("a SQLite store");
                Self {
                    store,
                    location,
                    _db: None,
                    dir: Some(dir),
                }
            }
            Kind::Postgres => {
                let db = TestDatabase::new().await;
                let location = db.url.clone();
                let store = Store::open(&location).await.expect("a PostgreSQL store");
                Self {
                    store,
                    location,
                    _db: Some(db),
                    dir: None,
                }
            }
        }
    }

    /// The same store opened again (as a restarted process would).
    pub async fn reopen(&self) -> Store {
        Store::open(&self.location).await.expect("the store again")
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Rows of the view table `people(id, name, n)`, by id.
pub async fn people_rows(store: &Store, table: &str) -> HashMap<i64, (String, i64)> {
    let sql = format!("SELECT id, name, n FROM {table}");
    let rows: Vec<(i64, Option<String>, Option<i64>)> = match store {
        Store::Sqlite(pool) => sqlx::query_as(&sql).fetch_all(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(&sql).fetch_all(pool).await.unwrap(),
    };
    rows.into_iter()
        .map(|(id, name, n)| (id, (name.unwrap_or_default(), n.unwrap_or_default())))
        .collect()
}

/// A client config for tests that need one.
pub fn client_config() -> ClientConfig {
    kafka::client_config()
}

/// Creates a topic on `brokers` (a private broker).
pub async fn create_topic_on(brokers: &str, name: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&topic], &options).await.unwrap() {
        result.expect("topic created");
    }
}

/// A broker of the test's own (the testkit's): stopping it disturbs no other test.
#[allow(unused_imports)] // Each test binary uses its part.
pub use ficus_testkit::PrivateBroker;
