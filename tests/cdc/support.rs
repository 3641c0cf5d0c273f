//! What every CDC test needs: a database, slot, publication and topic prefix of its own, the
//! adapter in-process or as the real binary, a broker reader, and cleanup (a leftover slot
//! pins WAL and keeps its database from being dropped).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ficus_adapters::metrics::Metrics;
use ficus_adapters::{CancellationToken, CdcConfig, CdcError};
pub use ficus_testkit::kafka::{Msg, read_topic};
use ficus_testkit::kafka::{last_by_key, wait_for_messages};
use ficus_testkit::{TestDatabase, kafka, unique_suffix};
use rand::SeedableRng;
use sqlx::{Connection, Executor, PgConnection};

/// One test's world: its database, and the names of its slot, publication and topics.
pub struct CdcTest {
    /// The test database's URL, a pool on it, its name.
    pub url: String,
    pub pool: sqlx::PgPool,
    pub db_name: String,
    _db: Option<TestDatabase>,
    pub slot: String,
    pub prefix: String,
    pub brokers: String,
    /// Extra `FICUS_CDC__*` settings.
    pub extra: Vec<(String, String)>,
    pub work_dir: PathBuf,
    /// A configuration file under the environment (for lists of tables such as outboxes).
    pub file: Option<PathBuf>,
}

impl CdcTest {
    /// A fresh database with `schema` (SQL) applied.
    pub async fn new(schema: &str) -> Self {
        ficus_testkit::init_tracing();
        let db = TestDatabase::new().await;
        let (url, pool, name) = (db.url.clone(), db.pool.clone(), db.name.clone());
        Self::with_database(url, pool, name, Some(db), kafka::brokers(), schema).await
    }

    /// A fresh database on another server (a private cluster), with `schema` applied.
    pub async fn on_server(server_url: &str, brokers: &str, schema: &str) -> Self {
        ficus_testkit::init_tracing();
        let name = format!("ficus_t_{}", unique_suffix());
        let mut admin = PgConnection::connect(server_url).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap();
        admin.close().await.ok();
        let base = server_url.rsplit_once('/').unwrap().0;
        let url = format!("{base}/{name}");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .connect(&url)
            .await
            .unwrap();
        Self::with_database(url, pool, name, None, brokers.to_owned(), schema).await
    }

    async fn with_database(
        url: String,
        pool: sqlx::PgPool,
        db_name: String,
        db: Option<TestDatabase>,
        brokers: String,
        schema: &str,
    ) -> Self {
        if !schema.is_empty() {
            sqlx::raw_sql(schema)
                .execute(&pool)
                .await
                .expect("applying the test schema");
        }
        let suffix = unique_suffix();
        let work_dir = std::env::temp_dir().join(format!("ficus-cdc-test-{suffix}"));
        std::fs::create_dir_all(&work_dir).unwrap();
        Self {
            url,
            pool,
            db_name,
            _db: db,
            slot: format!("ficus_t_{suffix}"),
            prefix: format!("t{suffix}"),
            brokers,
            // Debezium's context headers (`extended.headers.enabled`, on by default) off in
            // tests: Tansu 0.6's SQLite storage fetches each record's headers with a query of
            // its own on a `header` table without an index (a full scan per record, over every
            // topic's headers), so reading thousands of records that carry headers takes
            // minutes and keeps the broker busy. Tests about headers turn them back on
            // (`test.set("DEBEZIUM__EXTENDED_HEADERS_ENABLED", true)`): conformance.rs,
            // roundtrip.rs's commit-order test.
            extra: vec![(
                "DEBEZIUM__EXTENDED_HEADERS_ENABLED".to_owned(),
                "false".to_owned(),
            )],
            work_dir,
            file: None,
        }
    }

    /// Adds a `FICUS_CDC__<KEY>` setting (key without the prefix, e.g. `SNAPSHOT__CHUNK_ROWS`).
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.extra.push((key.to_owned(), value.to_string()));
    }

    /// The adapter's environment.
    pub fn env(&self, metrics: SocketAddr) -> HashMap<String, String> {
        let mut env = HashMap::from([
            ("FICUS_CDC__DATABASE_URL".to_owned(), self.url.clone()),
            ("FICUS_CDC__KAFKA__BROKERS".to_owned(), self.brokers.clone()),
            ("FICUS_CDC__SLOT".to_owned(), self.slot.clone()),
            ("FICUS_CDC__PUBLICATION".to_owned(), self.slot.clone()),
            ("FICUS_CDC__TOPIC_PREFIX".to_owned(), self.prefix.clone()),
            ("FICUS_CDC__METRICS_LISTEN".to_owned(), metrics.to_string()),
            (
                "FICUS_CDC__FEEDBACK_INTERVAL_MS".to_owned(),
                "200".to_owned(),
            ),
            ("FICUS_CDC__MAX_BACKOFF_MS".to_owned(), "2000".to_owned()),
            (
                "FICUS_CDC__HEARTBEAT__INTERVAL_MS".to_owned(),
                "1000".to_owned(),
            ),
        ]);
        for (key, value) in &self.extra {
            env.insert(format!("FICUS_CDC__{key}"), value.clone());
        }
        env
    }

    pub fn config(&self, metrics: SocketAddr) -> CdcConfig {
        CdcConfig::load(self.file.as_deref(), self.env(metrics))
            .expect("a valid test configuration")
    }

    /// Puts `toml` in a configuration file the environment overrides.
    pub fn with_file(&mut self, toml: &str) {
        let path = self.work_dir.join("cdc.toml");
        std::fs::write(&path, toml).unwrap();
        self.file = Some(path);
    }

    /// `<prefix>.public.<table>`
    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.prefix)
    }

    /// The adapter in this process.
    pub async fn start(&self) -> Adapter {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = self.config(addr);
        let metrics = Arc::new(Metrics::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(ficus_adapters::run_with_listener(
            config,
            listener,
            metrics,
            shutdown.clone(),
        ));
        Adapter {
            task: Some(task),
            shutdown,
            metrics_addr: addr,
        }
    }

    /// The adapter in this process, once its (empty-table) snapshot is done and it streams:
    /// what the test writes next arrives as change events.
    pub async fn start_streaming(&self) -> Adapter {
        let adapter = self.start().await;
        self.wait_snapshot_complete(Duration::from_secs(120)).await;
        self.wait_caught_up(Duration::from_secs(120)).await;
        adapter
    }

    /// The real `ficus cdc run`, configured through the environment.
    pub fn spawn(&self, name: &str) -> AdapterProcess {
        self.spawn_with(name, &[])
    }

    /// The real `ficus cdc run` with extra environment variables (e.g. armed fail points).
    pub fn spawn_with(&self, name: &str, extra: &[(&str, &str)]) -> AdapterProcess {
        let metrics = free_addr();
        let log = self.work_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ficus"))
            .args(["cdc", "run"])
            .args(
                self.file
                    .iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--config"), f.as_os_str()]),
            )
            .envs(self.env(metrics))
            .env("RUST_LOG", "info,pg_walstream=warn,librdkafka=warn")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning ficus cdc run");
        AdapterProcess {
            child,
            log,
            metrics,
        }
    }

    /// `ficus cdc status` (with `--json` when asked) against this test's database and the
    /// adapter listening on `metrics`: its standard output and whether it succeeded.
    pub fn status_cli(&self, metrics: SocketAddr, json: bool) -> (String, bool) {
        let output = Command::new(env!("CARGO_BIN_EXE_ficus"))
            .args(["cdc", "status"])
            .args(json.then_some("--json"))
            .args(
                self.file
                    .iter()
                    .flat_map(|f| [std::ffi::OsStr::new("--config"), f.as_os_str()]),
            )
            .envs(self.env(metrics))
            .stderr(Stdio::inherit())
            .output()
            .expect("running ficus cdc status");
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            output.status.success(),
        )
    }

    /// A connection to the test database.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url).await.unwrap()
    }

    /// Waits until the slot exists and its confirmed position reached the server's WAL
    /// insert position as it is now: everything committed so far is in the broker.
    ///
    /// The insert position, not `pg_current_wal_lsn()` (the write position): with
    /// `synchronous_commit = off` (the test cluster's setting) a commit is inserted but written
    /// only at the WAL writer's next round, so the write position can lie below commits already
    /// made, and a wait for it ended before they were sent.
    pub async fn wait_caught_up(&self, timeout: Duration) {
        let (target,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
            .fetch_one(&self.pool)
            .await
            .unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            // NULL while the slot is still being created (waiting for running transactions).
            let reached: Option<(Option<bool>,)> = sqlx::query_as(
                "SELECT confirmed_flush_lsn >= $2::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .bind(&target)
            .fetch_optional(&self.pool)
            .await
            .unwrap();
            if reached == Some((Some(true),)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slot {} did not reach {target} within {timeout:?} (now {reached:?})",
                self.slot
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads `topic` from this test's broker until `ready` holds (see [`wait_for_messages`]).
    pub async fn wait_messages(
        &self,
        topic: &str,
        timeout: Duration,
        ready: impl Fn(&[Msg]) -> bool,
    ) -> Vec<Msg> {
        wait_for_messages(&self.brokers, topic, timeout, ready).await
    }

    /// Every message of `topic` now.
    pub async fn messages(&self, topic: &str) -> Vec<Msg> {
        let (brokers, topic) = (self.brokers.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || read_topic(&brokers, &topic))
            .await
            .unwrap()
    }

    /// Asserts that the last state per key of `topic` equals table `table` (`t(id, n, note)`),
    /// reading the topic once: call it after [`CdcTest::wait_caught_up`] (every commit
    /// acknowledged by the broker) or a completed snapshot. Returns the messages read.
    pub async fn assert_topic_matches_table(&self, topic: &str, table: &str) -> Vec<Msg> {
        let rows = table_state(&self.pool, table).await;
        let messages = self.messages(topic).await;
        assert_same_state_with(&topic_state(&messages), &rows, &messages);
        messages
    }

    /// Waits until the snapshot of the slot is recorded complete.
    pub async fn wait_snapshot_complete(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let done: Option<(bool,)> = sqlx::query_as(
                "SELECT completed_at IS NOT NULL FROM _ficus.snapshots WHERE slot_name = $1",
            )
            .bind(&self.slot)
            .fetch_optional(&self.pool)
            .await
            .unwrap_or(None);
            if done == Some((true,)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "snapshot not complete within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The slot's confirmed position.
    pub async fn confirmed_lsn(&self) -> Option<String> {
        sqlx::query_as::<_, (Option<String>,)>(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
        )
        .bind(&self.slot)
        .fetch_optional(&self.pool)
        .await
        .unwrap()
        .and_then(|(l,)| l)
    }
}

impl Drop for CdcTest {
    fn drop(&mut self) {
        // Before the database goes: a database with a replication slot cannot be dropped, and
        // a leftover slot pins WAL for good.
        let url = self.url.clone();
        let slot = self.slot.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let Ok(mut conn) = PgConnection::connect(&url).await else {
                    return;
                };
                for _ in 0..50 {
                    let _ = conn
                        .execute(
                            format!(
                                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots \
                                 WHERE slot_name LIKE '{slot}%' AND active_pid IS NOT NULL"
                            )
                            .as_str(),
                        )
                        .await;
                    let result = conn
                        .execute(
                            format!(
                                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                                 WHERE slot_name LIKE '{slot}%' AND NOT active"
                            )
                            .as_str(),
                        )
                        .await;
                    let left: (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE $1",
                    )
                    .bind(format!("{slot}%"))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or((1,));
                    if result.is_ok() && left.0 == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        });
        let _ = cleanup.join();
        if std::thread::panicking() {
            eprintln!("adapter logs kept in {}", self.work_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// The adapter running in this process.
pub struct Adapter {
    task: Option<tokio::task::JoinHandle<Result<(), CdcError>>>,
    shutdown: CancellationToken,
    pub metrics_addr: SocketAddr,
}

impl Adapter {
    /// Stops it gracefully; panics if it had failed.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the adapter stops within 30 s")
                .expect("the adapter task")
                .expect("the adapter ran without a fatal error");
        }
    }

    /// Stops it and returns how its run ended (an error after a failure no retry fixes).
    pub async fn stop_result(mut self) -> Result<(), CdcError> {
        self.shutdown.cancel();
        let task = self.task.take().expect("a running adapter");
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the adapter stops within 30 s")
            .expect("the adapter task")
    }

    /// Whether the adapter is still running (it never exits on its own for retriable failures).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The metrics text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `ficus cdc run` as a child process.
pub struct AdapterProcess {
    child: Child,
    pub log: PathBuf,
    pub metrics: SocketAddr,
}

impl AdapterProcess {
    /// SIGKILL: no shutdown path runs.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ficus cdc run ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own (at a fail point, say).
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ficus cdc run still running after {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Polls `/healthz` until it answers non-200 (the pipeline stopped), for at most `timeout`.
pub async fn wait_unhealthy(metrics: SocketAddr, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(response) = reqwest::get(format!("http://{metrics}/healthz")).await
            && response.status().as_u16() != 200
        {
            assert_eq!(response.status().as_u16(), 503);
            let body = response.text().await.unwrap();
            return serde_json::from_str(&body).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "/healthz on {metrics} still healthy (or silent) after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/metrics` of an adapter.
pub async fn metrics_text(metrics: SocketAddr) -> String {
    reqwest::get(format!("http://{metrics}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of metric `name` whose line starts with `name` followed by `{` or a
/// space and contains every one of `labels` (e.g. `cause="slot_plugin"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels.iter().all(|l| line.contains(l))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address with nothing listening (bound and released).
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The value of table `t(id bigint primary key, n bigint, note text)` as the topic says, key by
/// key: `Some((n, note))` for a row, `None` when its last event is a delete or tombstone.
pub fn topic_state(messages: &[Msg]) -> HashMap<i64, Option<(i64, String)>> {
    let mut state = HashMap::new();
    for (_, m) in last_by_key(messages) {
        let id = m.key_json()["id"].as_i64().expect("an id key");
        let value = m.json();
        let row = match value["op"].as_str() {
            None | Some("d") => None,
            Some(_) => Some((
                value["after"]["n"].as_i64().expect("n"),
                value["after"]["note"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )),
        };
        state.insert(id, row);
    }
    state
}

/// The rows of `t(id, n, note)`.
pub async fn table_state(pool: &sqlx::PgPool, table: &str) -> HashMap<i64, (i64, String)> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(&format!("SELECT id, n, note FROM {table}"))
        .fetch_all(pool)
        .await
        .unwrap();
    rows.into_iter()
        .map(|(id, n, note)| (id, (n, note)))
        .collect()
}

/// Compares the topic's last state per key with the table (every row present with its values,
/// every key the topic has that the table lacks deleted), printing the events of the first
/// differing keys from `messages`.
pub fn assert_same_state_with(
    topic: &HashMap<i64, Option<(i64, String)>>,
    table: &HashMap<i64, (i64, String)>,
    messages: &[Msg],
) {
    let mut problems = Vec::new();
    for (id, row) in table {
        match topic.get(id) {
            None => problems.push(format!("row {id} missing from the topic")),
            Some(None) => problems.push(format!(
                "row {id} deleted in the topic, present in the table"
            )),
            Some(Some(t)) if t != row => {
                problems.push(format!("row {id}: topic {t:?}, table {row:?}"))
            }
            _ => {}
        }
    }
    for (id, row) in topic {
        if row.is_some() && !table.contains_key(id) {
            problems.push(format!(
                "row {id} present in the topic, deleted in the table"
            ));
        }
    }
    problems.sort();
    let mut history = String::new();
    for problem in problems.iter().take(3) {
        let id: i64 = problem
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.trim_end_matches(':').parse().ok())
            .unwrap_or(-1);
        history.push_str(&format!("\nevents of {id}:"));
        for (offset, m) in messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.key_json()["id"] == id)
        {
            let v = m.json();
            history.push_str(&format!(
                "\n  @{offset} {} lsn={} tx={} snapshot={} ts={} after={}",
                m.op(),
                v["source"]["lsn"],
                v["source"]["txId"],
                v["source"]["snapshot"],
                v["source"]["ts_ms"],
                v["after"]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} differences, first ones:\n{}{history}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A writer: random inserts, updates and deletes on `t(id, n, note)` over `keys` ids, in
/// transactions of 1-5 statements, until `stop` is cancelled. Returns the number of
/// transactions.
pub fn spawn_writer(
    url: String,
    table: &'static str,
    keys: i64,
    stop: CancellationToken,
    pause: Duration,
) -> tokio::task::JoinHandle<u64> {
    spawn_counted_writer(url, table, keys, stop, pause, Default::default())
}

/// [`spawn_writer`], counting its committed transactions into `committed` as it goes.
pub fn spawn_counted_writer(
    url: String,
    table: &'static str,
    keys: i64,
    stop: CancellationToken,
    pause: Duration,
    committed: Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        use rand::Rng;
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let mut transactions = 0;
        let mut rng = rand::rngs::StdRng::from_entropy();
        while !stop.is_cancelled() {
            let statements = rng.gen_range(1..=5);
            let mut tx = conn.begin().await.unwrap();
            for _ in 0..statements {
                let id: i64 = rng.gen_range(1..=keys);
                let n: i64 = rng.r#gen::<u32>() as i64;
                let sql = match rng.gen_range(0..10) {
                    0 | 1 => format!("DELETE FROM {table} WHERE id = $1 AND $2::int8 IS NOT NULL"),
                    2..=5 => format!(
                        "INSERT INTO {table} (id, n, note) VALUES ($1, $2, 'w' || $2) \
                         ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n, note = EXCLUDED.note"
                    ),
                    _ => format!("UPDATE {table} SET n = $2, note = 'u' || $2 WHERE id = $1"),
                };
                sqlx::query(&sql)
                    .bind(id)
                    .bind(n)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
            transactions += 1;
            committed.store(transactions, std::sync::atomic::Ordering::Relaxed);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        transactions
    })
}

/// A private PostgreSQL and broker from `scripts/services`, in a state directory of their own.
pub struct PrivateServices {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl PrivateServices {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "ficus-cdc-services-{}",
            ficus_testkit::unique_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let env = vec![
            ("FICUS_STATE_DIR".to_owned(), dir.display().to_string()),
            ("FICUS_PG_PORT".to_owned(), free_addr().port().to_string()),
            (
                "FICUS_KAFKA_PORT".to_owned(),
                free_addr().port().to_string(),
            ),
        ];
        let services = Self { dir, env };
        services.run("start");
        services
    }

    pub fn run(&self, command: &str) -> String {
        let output = Command::new(script())
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("running scripts/services");
        assert!(
            output.status.success(),
            "scripts/services {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `pg_ctl restart` of the private cluster (as the postgres user when root, as the
    /// script runs it).
    pub fn restart_postgres(&self) {
        let data = [
            self.dir.join("pg/data"),
            pg_fallback_dir(&self.dir).join("data"),
        ]
        .into_iter()
        .find(|d| d.join("PG_VERSION").exists())
        .expect("the private cluster's data directory");
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin/pg_ctl"))
            .filter(|p| p.exists())
            .max()
            .expect("pg_ctl");
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let output = command
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60", "restart"])
            .arg("-l")
            .arg(data.parent().unwrap().join("postgres.log"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl restart: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn var(&self, name: &str) -> String {
        let env = self.run("env");
        let line = env.lines().find(|l| l.contains(name)).unwrap();
        line.split_once('=')
            .unwrap()
            .1
            .trim_matches('\'')
            .to_owned()
    }
}

impl Drop for PrivateServices {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(pg_fallback_dir(&self.dir));
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services")
}

/// Where the script puts the cluster when the postgres user cannot enter `dir`.
fn pg_fallback_dir(dir: &Path) -> PathBuf {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{}' | cksum | cut -d' ' -f1",
            dir.display()
        ))
        .output()
        .unwrap();
    PathBuf::from(format!(
        "/var/tmp/ficus-pg-{}",
        String::from_utf8_lossy(&output.stdout).trim()
    ))
}
