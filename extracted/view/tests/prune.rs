//! Pruning the guard's memory of deletes (`ficus_view_deletes`), by the topic's own time: a
//! delete is forgotten once the view consumed, in its partition, a record appended more than
//! `delete_retention_ms` after it; a younger delete is kept and still turns a stale create of
//! its key into a no-op. Both stores.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ficus_testkit::kafka;
use ficus_view::{ColumnType, ConsumerConfig, Store, ViewSpec};
use rdkafka::producer::FutureRecord;

use support::{Kind, TestStore, change, people_rows, producer, tombstone};

const RETENTION_MS: i64 = 60_000;

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

/// The keys the guard remembers a delete of.
async fn remembered(store: &Store) -> Vec<String> {
    let sql = "SELECT key FROM ficus_view_deletes ORDER BY key";
    let rows: Vec<(String,)> = match store {
        Store::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    rows.into_iter().map(|(k,)| k).collect()
}

async fn old_deletes_are_forgotten_young_ones_kept(kind: Kind) {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-prune");
    kafka::create_topic(&topic, 1).await.unwrap();
    // Record timestamps, in the past (the cutoff is capped at the clock).
    let t0 = chrono::Utc::now().timestamp_millis() - 600_000;
    let records = [
        (t0, change("c", 1, "a", 1, Some(100), 110)),
        (t0, change("d", 1, "", 0, Some(200), 210)),
        (t0, tombstone(1)),
        (t0 + 1_000, change("c", 2, "b", 2, Some(300), 310)),
        // Appended more than the retention after key 1's delete, which then goes ...
        (t0 + 200_000, change("d", 2, "", 0, Some(400), 410)),
        (t0 + 200_000, tombstone(2)),
        // ... while key 2's delete is younger than the retention: kept, and a stale create of
        // key 2 stays a no-op.
        (t0 + 200_001, change("c", 2, "zombie", 0, Some(300), 315)),
        (t0 + 230_000, change("c", 3, "c", 3, Some(500), 510)),
    ];
    let producer = producer();
    for (ts, (key, value)) in &records {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(&topic).timestamp(*ts);
        if let Some(key) = key {
            record = record.key(key.as_str());
        }
        if let Some(value) = value {
            record = record.payload(value.as_str());
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .expect("delivered");
    }

    let store = TestStore::new(kind).await;
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.delete_retention_ms = RETENTION_MS as u64;
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(60)).await);
    assert_eq!(
        people_rows(&store.store, "people").await,
        HashMap::from([(3, ("c".to_owned(), 3))]),
        "{kind:?}"
    );
    assert_eq!(
        remembered(&store.store).await,
        vec![r#"{"id":2}"#.to_owned()],
        "{kind:?}: key 1's delete forgotten, key 2's kept"
    );
    view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_deletes_are_forgotten_young_ones_kept_in_sqlite() {
    old_deletes_are_forgotten_young_ones_kept(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_deletes_are_forgotten_young_ones_kept_in_postgres() {
    old_deletes_are_forgotten_young_ones_kept(Kind::Postgres).await;
}
