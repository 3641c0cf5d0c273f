//! Backpressure, shown to hold: a view whose store is slower than its topic (here: stopped by a
//! lock the test holds on the view's table, on PostgreSQL and on SQLite) takes from the broker
//! only what fits between the poller and the store: `ficus_view_buffered_events` (events taken
//! from the broker, not stored yet) rises to `ConsumerConfig::buffer_bound_events` and never
//! above, while thousands of events (16 times the bound) wait in the topic; once the lock goes, every event is
//! applied and nothing stays buffered.

mod support;

use std::time::{Duration, Instant};

use ficus_testkit::kafka;
use ficus_view::{ColumnType, ConsumerConfig, ViewSpec};
use sqlx::Connection;

use support::{Kind, TestStore, change, people_rows, produce, producer};

const EVENTS: i64 = 5_000;
const KEYS: i64 = 250;

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

fn events(from: i64, to: i64) -> Vec<(Option<String>, Option<String>)> {
    (from..to)
        .map(|i| {
            let commit = 1_000 + i as u64 * 10;
            change("u", i % KEYS, &format!("v{i}"), i, Some(commit), commit + 5)
        })
        .collect()
}

/// A lock on the view's table held by a connection of the test's own.
enum Lock {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Lock {
    /// PostgreSQL: `LOCK TABLE people IN ACCESS EXCLUSIVE MODE` in an open transaction (the
    /// view's writes wait). SQLite: `BEGIN IMMEDIATE` (the database's one writer;
    /// the view's transactions time out busy and are retried).
    async fn take(store: &TestStore, kind: Kind) -> Self {
        match kind {
            Kind::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&store.location).await.unwrap();
                sqlx::raw_sql("BEGIN; LOCK TABLE people IN ACCESS EXCLUSIVE MODE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Lock::Postgres(conn)
            }
            Kind::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&store.location);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap();
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut conn)
                    .await
                    .unwrap();
                Lock::Sqlite(conn)
            }
        }
    }

    async fn release(self) {
        match self {
            Lock::Postgres(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
            Lock::Sqlite(mut conn) => {
                sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// `ficus_view_buffered_events` of the view on `/metrics`.
async fn buffered_metric(url: &str) -> f64 {
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    let series = "ficus_view_buffered_events{view=\"people\"} ";
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

async fn a_slow_store_never_makes_the_view_buffer_past_its_bound(kind: Kind) {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-backpressure");
    kafka::create_topic(&topic, 2).await.unwrap();
    let producer = producer();
    produce(&producer, &topic, &events(0, 10)).await;

    let store = TestStore::new(kind).await;
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.batch_max_events = 100;
    config.channel_capacity = 200;
    config.watermark_interval_ms = 100;
    let bound = config.buffer_bound_events() as i64;
    assert_eq!(bound, 301);
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(60)).await);
    let router = ficus_view::telemetry::router(vec![view.status.clone()]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    // The store stops; the topic gets thousands of events more.
    let lock = Lock::take(&store, kind).await;
    produce(&producer, &topic, &events(10, EVENTS)).await;

    // While locked: buffered climbs past the channel's capacity (the poller holds one more,
    // waiting; the applier the batch it tries to store, up to `batch_max_events`) and stops
    // there; nothing is applied; the rest waits in the broker (the lag counts it).
    let mut highest = 0;
    let mut settled = None;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let report = view.status.report();
        assert!(
            report.buffered_events <= bound,
            "{} events buffered, over the bound {bound}: {report:?}",
            report.buffered_events
        );
        highest = highest.max(report.buffered_events);
        assert_eq!(report.consumed, 10, "nothing stored while locked");
        if started.elapsed() >= Duration::from_secs(3) {
            let at = *settled.get_or_insert(report.buffered_events);
            assert_eq!(
                report.buffered_events, at,
                "still taking events: {report:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!("buffered while the store was locked: at most {highest} (bound {bound})");
    assert!(
        highest > 200,
        "the poller filled the channel (else the store was not the slow part): {highest}"
    );
    let report = view.status.report();
    assert!(
        report.lag_events >= EVENTS - 10,
        "the lag counts what is not stored: {report:?}"
    );
    assert_eq!(buffered_metric(&metrics_url).await, highest as f64);

    // Released: everything is applied, still within the bound, and nothing stays buffered.
    lock.release().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let report = view.status.report();
        assert!(report.buffered_events <= bound, "{report:?}");
        if report.consumed == EVENTS as u64 && report.lag_events == 0 {
            assert_eq!(report.buffered_events, 0, "{report:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {report:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows = people_rows(&store.store, "people").await;
    assert_eq!(rows.len(), KEYS as usize);
    for (id, (name, n)) in rows {
        let last = EVENTS - KEYS + id;
        assert_eq!((name, n), (format!("v{last}"), last), "row {id}");
    }
    assert_eq!(buffered_metric(&metrics_url).await, 0.0);
    view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_slow_store_never_makes_the_view_buffer_past_its_bound() {
    a_slow_store_never_makes_the_view_buffer_past_its_bound(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_slow_store_never_makes_the_view_buffer_past_its_bound() {
    a_slow_store_never_makes_the_view_buffer_past_its_bound(Kind::Sqlite).await;
}
