//! kill -9 of `ficus-people` while it restores its view from a topic of many thousands of
//! change events. The view's offsets live in its store, written in the same transaction as its
//! rows, so after the restart: the view equals the table (the latest value per key), every
//! event was applied exactly once (the events counted equal the offsets reached), and the
//! restarted process consumed only what the first had not stored (no restart from zero).
//! Readiness is false (and the API answers 503 `not_ready`) until the view caught up, then true;
//! meanwhile `/metrics` reports `ficus_view_lag_events` and `ficus_view_lag_seconds` above 0,
//! both 0 once caught up.
//! Then `ficus-people rebuild` empties the view and a start replays it whole.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ficus_testkit::{TestAdapter, TestDatabase, kafka, unique_suffix};
use serde_json::Value;
use sqlx::SqlitePool;

use crate::support::{ServiceConfig, ServiceProcess, rebuild};

type Row = (i64, String, String, String, DateTime<Utc>, DateTime<Utc>);
const ROWS: &str = "SELECT id, email, display_name, CAST(role AS TEXT), created_at, updated_at FROM people ORDER BY id";

/// (partition, next_offset, events) of the people view, as stored.
async fn stored_offsets(store: &SqlitePool) -> BTreeMap<i32, (i64, i64)> {
    sqlx::query_as::<_, (i32, i64, i64)>(
        "SELECT \"partition\", next_offset, events FROM ficus_view_offsets WHERE view = 'people'",
    )
    .fetch_all(store)
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|(p, next, events)| (p, (next, events)))
    .collect()
}

fn sum(offsets: &BTreeMap<i32, (i64, i64)>) -> (i64, i64) {
    offsets
        .values()
        .fold((0, 0), |(n, e), (next, events)| (n + next, e + events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_killed_while_restoring_resumes_from_its_stored_offsets() {
    let db = TestDatabase::migrated().await;
    let adapter = TestAdapter::start(&db.url, &["public.people"], 3).await;
    adapter
        .wait_snapshot_complete(Duration::from_secs(180))
        .await;
    // Many thousands of changes: inserts, an update of half of them, deletes of a tenth.
    sqlx::raw_sql(
        "INSERT INTO people (email, display_name) \
           SELECT 'p' || g || '@example.test', 'Person ' || g FROM generate_series(1, 15000) g;
         UPDATE people SET display_name = display_name || ' (renamed)', role = 'admin', \
           updated_at = now() WHERE id % 2 = 0;
         DELETE FROM people WHERE id % 10 = 0;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // 15,000 inserts, 7,500 updates, 1,500 deletes each followed by a tombstone.
    const EVENTS: usize = 15_000 + 7_500 + 2 * 1_500;
    let topic = adapter.topic("people");
    let records =
        kafka::wait_for_messages(&kafka::brokers(), &topic, Duration::from_secs(180), |m| {
            m.len() >= EVENTS
        })
        .await;
    let total = records.len() as i64;
    assert_eq!(records.len(), EVENTS, "every change once on the topic");

    let dir = std::env::temp_dir().join(format!("ficus-restore-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let store_path = dir.join("people.db");
    let config = ServiceConfig {
        store: store_path.display().to_string(),
        topic_prefix: adapter.prefix.clone(),
        // No identity is needed: every API answer here is the readiness gate's.
        jwks_url: "http://127.0.0.1:9/.well-known/jwks.json".to_owned(),
        // Small batches: a restore of many transactions, to be killed in the middle of.
        batch_max_events: 200,
        brokers: ficus_testkit::kafka::brokers(),
    };
    let first = ServiceProcess::start("people", &config);
    // Not ready while restoring; the API refuses with 503 rather than answer from a partial view.
    assert!(!first.ready().await, "ready before the view caught up");
    let refused = reqwest::get(first.url("/api/people/1")).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_ready", "{body}");

    // Kill -9 in the middle of the restore, as seen in the store.
    let store = SqlitePool::connect(&format!("sqlite:{}", store_path.display()))
        .await
        .unwrap();
    // Generous: a debug service binary starting on a loaded two-core CI machine took over 60 s
    // to store its first batches once.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (next, _) = sum(&stored_offsets(&store).await);
        if next >= 2_000 && next < total / 2 {
            break;
        }
        assert!(next < total / 2, "the restore finished before the kill");
        assert!(Instant::now() < deadline, "the restore did not start");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    first.kill9();
    let at_kill = stored_offsets(&store).await;
    let (next_at_kill, events_at_kill) = sum(&at_kill);
    assert!(next_at_kill > 0 && next_at_kill < total);
    assert_eq!(
        events_at_kill, next_at_kill,
        "each event counted once up to the stored offsets"
    );
    println!("killed at {next_at_kill} of {total} events");

    // Restart: it resumes from the stored offsets, not from zero, and is not ready until caught up.
    let second = ServiceProcess::start("people", &config);
    let views: Value = reqwest::get(second.url("/views"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(views["ready"], false, "{views}");
    // Its /metrics says it is behind while restoring: events (per partition, summed) and seconds.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (behind, seconds) = loop {
        let (events, seconds) = lag(&second).await;
        if events > 0.0 {
            break (events, seconds);
        }
        assert!(!second.ready().await, "ready before any lag was reported");
        assert!(Instant::now() < deadline, "no lag reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(seconds > 0.0, "{behind} events behind, but 0 s");
    println!("restarting: {behind} events behind, {seconds:.3} s");
    second.wait_ready(Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(&stored_offsets(&store).await).0 < total {
        assert!(
            Instant::now() < deadline,
            "the view did not reach the topic's end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = stored_offsets(&store).await;
    for (partition, (next, _)) in &after {
        assert!(
            *next >= at_kill.get(partition).map_or(0, |p| p.0),
            "partition {partition} went back"
        );
    }
    let (next, events) = sum(&after);
    assert_eq!(next, total, "every event consumed");
    // Caught up: no lag left on /metrics (the watermarks are fetched every 100 ms).
    let deadline = Instant::now() + Duration::from_secs(30);
    while lag(&second).await != (0.0, 0.0) {
        assert!(
            Instant::now() < deadline,
            "lag left: {:?}",
            lag(&second).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        events, total,
        "no event applied twice: events counted = offsets reached"
    );
    // Events after the stored offsets, less the tombstones that follow their delete (a no-op the
    // guard counts neither applied nor stale).
    let counted_after_kill = records
        .iter()
        .filter(|m| m.offset >= at_kill.get(&m.partition).map_or(0, |p| p.0))
        .filter(|m| m.value.is_some())
        .count() as i64;
    let counted_since_restart = second
        .metric("ficus_view_events_total{view=\"people\",outcome=\"applied\"}")
        .await
        + second
            .metric("ficus_view_events_total{view=\"people\",outcome=\"stale\"}")
            .await;
    assert_eq!(
        counted_since_restart as i64, counted_after_kill,
        "the restarted service applied only what was not stored (no restart from zero)"
    );

    // The view equals the table: the latest value of every key, deleted keys absent.
    let table: Vec<Row> = sqlx::query_as(ROWS).fetch_all(&db.pool).await.unwrap();
    let view: Vec<Row> = sqlx::query_as(ROWS).fetch_all(&store).await.unwrap();
    assert_eq!(view.len(), table.len());
    assert!(view == table, "the view differs from the table");
    let live_keys = kafka::last_by_key(&records)
        .values()
        .filter(|m| m.value.is_some() && m.op() != "d")
        .count();
    assert_eq!(
        view.len(),
        live_keys,
        "one row per key whose last event is not a delete"
    );

    // `rebuild` (service stopped) empties the view and its offsets; the next start replays the
    // topic from its earliest offset into the same rows.
    drop(second);
    let said = rebuild("people", &config);
    assert!(said.contains("view people emptied"), "{said}");
    assert!(stored_offsets(&store).await.is_empty(), "offsets forgotten");
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM people")
        .fetch_one(&store)
        .await
        .unwrap();
    assert_eq!(rows, 0, "rows dropped");
    let third = ServiceProcess::start("people", &config);
    third.wait_ready(Duration::from_secs(120)).await;
    let replayed: Vec<Row> = sqlx::query_as(ROWS).fetch_all(&store).await.unwrap();
    assert!(
        replayed == table,
        "the replayed view differs from the table"
    );
    assert_eq!(sum(&stored_offsets(&store).await), (total, total));

    drop(third);
    store.close().await;
    adapter.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ficus_view_lag_events` of the people view summed over its partitions, and
/// `ficus_view_lag_seconds`, from the service's `/metrics`.
async fn lag(service: &ServiceProcess) -> (f64, f64) {
    let text = reqwest::get(service.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |line: &str| -> f64 {
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let events = text
        .lines()
        .filter(|l| l.starts_with("ficus_view_lag_events{view=\"people\","))
        .map(value)
        .sum();
    let seconds = text
        .lines()
        .find(|l| l.starts_with("ficus_view_lag_seconds{view=\"people\"}"))
        .map_or(0.0, value);
    (events, seconds)
}
