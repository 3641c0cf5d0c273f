//! Offsets with state: a view stopped hard in the middle of restoring a topic of many events
//! resumes from its stored offsets: in the end it equals the latest value per key, every event
//! was consumed into the store exactly once (counted in the same transaction as the rows), and
//! the second run did not start from zero. Then a rebuild replays everything from the earliest
//! offset to the same state. Both stores.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ficus_testkit::kafka;
use ficus_view::store::Statements;
use ficus_view::{ColumnType, ConsumerConfig, ViewSpec};

use support::{Kind, TestStore, change, people_rows, produce, producer, tombstone};

const EVENTS: i64 = 12_000;
const KEYS: i64 = 300;

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

fn config() -> ConsumerConfig {
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.batch_max_events = 100;
    config.channel_capacity = 200;
    config
}

async fn stored_events(store: &ficus_view::Store, spec: &ViewSpec) -> i64 {
    let statements = Statements::new(store.dialect(), spec);
    store
        .progress(spec, &statements)
        .await
        .unwrap()
        .values()
        .map(|p| p.events)
        .sum()
}

async fn stopped_mid_restore_resumes_from_its_offsets(kind: Kind) {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-restore");
    kafka::create_topic(&topic, 3).await.unwrap();
    // Updates over KEYS keys; every 7th event deletes its key (a delete and its tombstone).
    let mut records = Vec::new();
    let mut expected = HashMap::new();
    for i in 0..EVENTS {
        let id = (i * 7919) % KEYS;
        let commit = 1_000 + i as u64 * 10;
        if i % 7 == 6 {
            records.push(change("d", id, "", 0, Some(commit), commit + 5));
            records.push(tombstone(id));
            expected.remove(&id);
        } else {
            let name = format!("v{i}");
            records.push(change("u", id, &name, i, Some(commit), commit + 5));
            expected.insert(id, (name, i));
        }
    }
    let total = records.len() as i64;
    produce(&producer(), &topic, &records).await;

    let store = TestStore::new(kind).await;
    let spec = spec(&topic);
    let first = ficus_view::start(store.store.clone(), spec.clone(), config())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.status.report().consumed < (total / 3) as u64 {
        assert!(Instant::now() < deadline, "the first run did not progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!first.status.is_ready(), "stopped before it caught up");
    // As a crash would: the batch being written is rolled back with its offsets.
    first.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let store_again = store.reopen().await;
    let stored_first = stored_events(&store_again, &spec).await;
    assert!(
        stored_first > 0 && stored_first < total,
        "{kind:?}: stopped mid-restore ({stored_first} of {total})"
    );

    let second = ficus_view::start(store_again.clone(), spec.clone(), config())
        .await
        .unwrap();
    assert!(second.status.wait_ready(Duration::from_secs(120)).await);
    let report = second.status.report();
    // Not from zero: the second run consumed exactly what the first had not stored.
    assert_eq!(report.consumed as i64, total - stored_first, "{kind:?}");
    // Exactly once: the store counted every event once, in the same transaction as its rows.
    assert_eq!(stored_events(&store_again, &spec).await, total, "{kind:?}");
    assert_eq!(
        people_rows(&store_again, "people").await,
        expected,
        "{kind:?}"
    );
    second.stop().await.unwrap();

    // Rebuild: rows and offsets gone, then a replay from the earliest offset to the same state.
    ficus_view::rebuild(&store_again, &spec).await.unwrap();
    assert!(people_rows(&store_again, "people").await.is_empty());
    assert_eq!(stored_events(&store_again, &spec).await, 0);
    let third = ficus_view::start(store_again.clone(), spec.clone(), config())
        .await
        .unwrap();
    assert!(third.status.wait_ready(Duration::from_secs(120)).await);
    assert_eq!(third.status.report().consumed as i64, total);
    assert_eq!(
        people_rows(&store_again, "people").await,
        expected,
        "{kind:?}"
    );
    third.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_restore_resumes_from_its_offsets_in_sqlite() {
    stopped_mid_restore_resumes_from_its_offsets(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_mid_restore_resumes_from_its_offsets_in_postgres() {
    stopped_mid_restore_resumes_from_its_offsets(Kind::Postgres).await;
}
