//! The source-position guard: stale, duplicated and reordered events produced straight into a
//! topic (an older LSN after a newer one, re-deliveries after an adapter restart, an old
//! producer's create after the delete) change nothing, in both stores.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ficus_testkit::kafka;
use ficus_view::{ColumnType, ConsumerConfig, ViewSpec};

use support::{Kind, TestStore, change, people_rows, produce, producer, tombstone, truncate};

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

async fn stale_and_duplicate_events_change_nothing(kind: Kind) {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-guard");
    kafka::create_topic(&topic, 1).await.unwrap();
    let records = vec![
        change("c", 1, "v1", 1, Some(100), 110),
        change("u", 1, "v2", 2, Some(200), 210),
        // An older transaction's update arriving late.
        change("u", 1, "stale", 0, Some(100), 120),
        // A re-delivery, as is and as after an adapter restart (no commit LSN).
        change("u", 1, "v2", 2, Some(200), 210),
        change("u", 1, "v2", 2, None, 210),
        // An older change without a commit LSN.
        change("u", 1, "older", 0, None, 150),
        // A snapshot read from before.
        change("r", 1, "snapshot", 0, None, 50),
        // A create, its delete and tombstone, then an old producer's create of the same row.
        change("c", 2, "x", 2, Some(300), 310),
        change("d", 2, "", 0, Some(400), 410),
        tombstone(2),
        change("c", 2, "zombie", 0, Some(300), 315),
        // A truncate removes what came before it; a late older create stays out.
        change("c", 3, "y", 3, Some(500), 510),
        truncate(Some(600), 610),
        change("c", 3, "old", 0, Some(500), 520),
        // What comes after the truncate lands.
        change("c", 4, "z", 4, Some(700), 710),
        // The first transaction after an adapter restart (no commit LSN) is still newer.
        change("u", 4, "z2", 44, None, 800),
        // The truncate took row 1 too; it comes back newer, then an older update arrives late.
        change("c", 1, "v3", 3, Some(900), 910),
        change("u", 1, "stale again", 0, Some(850), 860),
    ];
    produce(&producer(), &topic, &records).await;

    let store = TestStore::new(kind).await;
    let view = ficus_view::start(
        store.store.clone(),
        spec(&topic),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(60)).await);
    let rows = people_rows(&store.store, "people").await;
    assert_eq!(
        rows,
        HashMap::from([(1, ("v3".to_owned(), 3)), (4, ("z2".to_owned(), 44))]),
        "{kind:?}"
    );
    let report = view.status.report();
    assert_eq!(report.consumed, records.len() as u64);
    // c1, u1, c2, d2, tombstone (nothing left to delete: not counted), c3, t, c4, u4, c1.
    assert_eq!((report.applied, report.stale), (9, 8), "{kind:?}");
    view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_events_change_nothing_in_sqlite() {
    stale_and_duplicate_events_change_nothing(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_events_change_nothing_in_postgres() {
    stale_and_duplicate_events_change_nothing(Kind::Postgres).await;
}

/// A tombstone alone (a compacted topic kept it, not its delete) deletes the row it finds; an
/// unchanged TOAST value keeps the stored one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_and_unchanged_toast_values() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-toast");
    kafka::create_topic(&topic, 1).await.unwrap();
    let records = vec![
        change("c", 1, "kept", 1, Some(100), 110),
        change(
            "u",
            1,
            ficus_view::view::TOAST_PLACEHOLDER,
            2,
            Some(200),
            210,
        ),
        change("c", 2, "gone", 2, Some(100), 120),
        tombstone(2),
    ];
    produce(&producer(), &topic, &records).await;
    let store = TestStore::new(Kind::Sqlite).await;
    let view = ficus_view::start(
        store.store.clone(),
        spec(&topic),
        ConsumerConfig::new(kafka::brokers()),
    )
    .await
    .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(60)).await);
    assert_eq!(
        people_rows(&store.store, "people").await,
        HashMap::from([(1, ("kept".to_owned(), 2))])
    );
    view.stop().await.unwrap();
}
