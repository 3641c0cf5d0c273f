//! The convergence lag under sustained load (a benchmark, run by `scripts/bench-lag`; ignored in
//! ordinary test runs): RATE writes/s (1000) for DURATION_S (30) committed into the monolith's
//! PostgreSQL (`INSERT INTO people`, the monolith's schema, each write its own transaction, from
//! WRITERS connections on a fixed schedule), streamed by the real adapter (`ficus cdc`,
//! in-process) through the broker into the real `ficus-people` process's view (its SQLite
//! store). A write is visible once its row is in the service's view store (what the service
//! answers from), seen by a reader polling the store every millisecond; the lag is from the
//! write's commit (its `INSERT` answered) to then. Prints the achieved rate and p50/p90/p99/max.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ficus_testkit::{TestAdapter, TestDatabase, unique_suffix};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection, SqlitePool};

use crate::support::{ServiceConfig, ServiceProcess, percentile};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: scripts/bench-lag"]
async fn convergence_lag_under_sustained_writes() {
    let rate = env_num("RATE", 1000).max(1);
    let seconds = env_num("DURATION_S", 30).max(1);
    let writers = env_num("WRITERS", 8).max(1);
    let total = rate * seconds;

    let db = TestDatabase::migrated().await;
    let adapter = TestAdapter::start(&db.url, &["public.people"], 3).await;
    adapter
        .wait_snapshot_complete(Duration::from_secs(180))
        .await;
    let dir = std::env::temp_dir().join(format!("ficus-lag-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let store_path = dir.join("people.db");
    let people = ServiceProcess::start(
        "people",
        &ServiceConfig {
            store: store_path.display().to_string(),
            topic_prefix: adapter.prefix.clone(),
            jwks_url: "http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
            batch_max_events: 1000,
            brokers: ficus_testkit::kafka::brokers(),
        },
    );
    people.wait_ready(Duration::from_secs(120)).await;
    let store = SqlitePool::connect_with(
        SqliteConnectOptions::new()
            .filename(&store_path)
            .read_only(true),
    )
    .await
    .unwrap();
    let (first,): (i64,) = sqlx::query_as("SELECT COALESCE(max(id), 0) + 1 FROM people")
        .fetch_one(&db.pool)
        .await
        .unwrap();

    // The writers: write k at start + k / rate, each on its writer's own connection.
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let (committed_tx, mut committed_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for w in 0..writers {
        // A connection of each writer's own (the test database's pool is small).
        let url = db.url.clone();
        let committed = committed_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.unwrap();
            // As production databases commit (the test cluster runs with it off): a walsender
            // sends only flushed WAL, so with it off a commit waits for the WAL writer's round.
            sqlx::query("SET synchronous_commit = on")
                .execute(&mut conn)
                .await
                .unwrap();
            for k in (w..total).step_by(writers as usize) {
                tokio::time::sleep_until(start + period * k as u32).await;
                let (id,): (i64,) = sqlx::query_as(
                    "INSERT INTO people (email, display_name) VALUES ($1, $2) RETURNING id",
                )
                .bind(format!("lag{k}@example.test"))
                .bind(format!("Lag {k}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                let _ = committed.send((id, Instant::now()));
            }
        }));
    }
    drop(committed_tx);

    // The reader of the service's store: every new row's first sighting.
    let mut seen: HashMap<i64, Instant> = HashMap::new();
    let mut floor = first - 1;
    let deadline = Instant::now() + Duration::from_secs(seconds + 120);
    while (seen.len() as u64) < total {
        let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM people WHERE id > ? ORDER BY id")
            .bind(floor)
            .fetch_all(&store)
            .await
            .unwrap();
        let now = Instant::now();
        for (id,) in ids {
            seen.entry(id).or_insert(now);
        }
        while seen.contains_key(&(floor + 1)) {
            floor += 1;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {total} writes became visible",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut committed = Vec::new();
    while let Some(write) = committed_rx.recv().await {
        committed.push(write);
    }
    let began = committed.iter().map(|(_, t)| *t).min().unwrap();
    let ended = committed.iter().map(|(_, t)| *t).max().unwrap();
    let achieved = committed.len() as f64 / ended.duration_since(began).as_secs_f64();
    let mut lags: Vec<Duration> = committed
        .iter()
        .map(|(id, at)| seen[id].saturating_duration_since(*at))
        .collect();
    lags.sort();
    println!(
        "convergence lag, {} writes at {achieved:.0} writes/s (target {rate}/s, {writers} writers): \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        lags.len(),
        percentile(&lags, 50).as_secs_f64() * 1e3,
        percentile(&lags, 90).as_secs_f64() * 1e3,
        percentile(&lags, 99).as_secs_f64() * 1e3,
        lags.last().unwrap().as_secs_f64() * 1e3,
    );
    assert!(
        achieved >= rate as f64 * 0.9,
        "the writers did not sustain the rate: {achieved:.0}/s"
    );
    drop(people);
    adapter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
