//! Partitioned mode with a real consumer group on the real broker: two instances of a view
//! share a `group.id`; the group's rebalance spreads the topic's partitions over them; each
//! instance consumes only its partitions, from the offsets stored in its store; a revoked
//! partition's last batch is stored before it moves, so with a shared store every event is
//! stored exactly once across the handovers, and with stores of their own each instance holds
//! rows of its partitions only (plus the kept rows of partitions it gave up).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use ficus_testkit::kafka;
use ficus_view::store::Statements;
use ficus_view::{ColumnType, ConsumerConfig, Partitions, Store, ViewHandle, ViewSpec};

use support::{Kind, TestStore, change, produce, producer};

const PARTITIONS: i32 = 4;
const KEYS: i64 = 200;

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

fn config(group: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.partitions = Partitions::Group(group.to_owned());
    config.batch_max_events = 50;
    config.watermark_interval_ms = 200;
    config
}

/// Events `from..to`, each an update of key `i % KEYS` (so every key's partition gets some).
fn events(
    from: i64,
    to: i64,
    expected: &mut HashMap<i64, (String, i64)>,
) -> Vec<(Option<String>, Option<String>)> {
    (from..to)
        .map(|i| {
            let id = i % KEYS;
            let lsn = 1_000 + i as u64 * 10;
            let name = format!("v{i}");
            expected.insert(id, (name.clone(), i));
            change("u", id, &name, i, Some(lsn), lsn + 5)
        })
        .collect()
}

/// Rows with their partition: id -> (name, n, partition).
async fn rows(store: &Store) -> HashMap<i64, (String, i64, i32)> {
    let sql = "SELECT id, name, n, _ficus_partition FROM people";
    let rows: Vec<(i64, String, i64, i32)> = match store {
        Store::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
        Store::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await.unwrap(),
    };
    rows.into_iter()
        .map(|(id, name, n, p)| (id, (name, n, p)))
        .collect()
}

/// Stored events per partition.
async fn stored_events(store: &Store, spec: &ViewSpec) -> HashMap<i32, (i64, i64)> {
    let statements = Statements::new(store.dialect(), spec);
    store
        .progress(spec, &statements)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, progress)| (p, (progress.next_offset, progress.events)))
        .collect()
}

fn high_watermarks(topic: &str) -> HashMap<i32, i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = support::client_config().create().unwrap();
    (0..PARTITIONS)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap();
            (p, high)
        })
        .collect()
}

/// Waits until the instances hold disjoint, non-empty shares covering every partition, and
/// every instance is ready.
async fn until_spread(instances: &[&ViewHandle], what: &str) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shares: Vec<Vec<i32>> = instances.iter().map(|v| v.status.assigned()).collect();
        let all: BTreeSet<i32> = shares.iter().flatten().copied().collect();
        let total: usize = shares.iter().map(Vec::len).sum();
        if shares.iter().all(|s| !s.is_empty())
            && total == PARTITIONS as usize
            && all.len() == PARTITIONS as usize
            && instances.iter().all(|v| v.status.is_ready())
        {
            return shares;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: partitions not spread over the group: {shares:?}, ready {:?}",
            instances
                .iter()
                .map(|v| v.status.is_ready())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until each instance's stored offsets reached the high watermarks of its partitions.
async fn until_caught_up(instances: &[&ViewHandle], topic: &str) {
    let highs = high_watermarks(topic);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = instances.iter().all(|v| {
            let report = v.status.report();
            !report.partitions.is_empty()
                && report
                    .partitions
                    .iter()
                    .all(|(p, s)| s.next_offset >= highs[p])
        });
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the group did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two instances sharing one PostgreSQL store: partitions move between them while events keep
/// arriving, and every event is stored exactly once (per partition, the events counted with the
/// rows equal the high watermark), never from zero after a handover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_spreads_partitions_and_hands_them_over_exactly_once() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-group");
    kafka::create_topic(&topic, PARTITIONS).await.unwrap();
    let group = format!("ficus-view-test-{}", ficus_testkit::unique_suffix());
    let producer = producer();
    let mut expected = HashMap::new();
    produce(&producer, &topic, &events(0, 4_000, &mut expected)).await;

    let store = TestStore::new(Kind::Postgres).await;
    let spec = spec(&topic);
    let a = ficus_view::start(store.store.clone(), spec.clone(), config(&group))
        .await
        .unwrap();
    assert!(
        a.status.wait_ready(Duration::from_secs(120)).await,
        "a alone"
    );
    assert_eq!(a.status.assigned().len(), PARTITIONS as usize);

    // B joins while events keep coming: the group spreads the partitions over both.
    let b = ficus_view::start(store.reopen().await, spec.clone(), config(&group))
        .await
        .unwrap();
    let more = events(4_000, 8_000, &mut expected);
    let (first, second) = more.split_at(2_000);
    produce(&producer, &topic, first).await;
    let shares = until_spread(&[&a, &b], "b joined").await;
    produce(&producer, &topic, second).await;
    until_caught_up(&[&a, &b], &topic).await;
    tracing::info!(?shares, "spread");

    // B leaves: A takes its partitions back from the offsets B stored.
    b.stop().await.unwrap();
    produce(&producer, &topic, &events(8_000, 9_000, &mut expected)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while a.status.assigned().len() != PARTITIONS as usize {
        assert!(
            Instant::now() < deadline,
            "a did not take b's partitions back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until_caught_up(&[&a], &topic).await;

    let highs = high_watermarks(&topic);
    let stored = stored_events(&store.store, &spec).await;
    for (partition, high) in &highs {
        assert_eq!(
            stored[partition],
            (*high, *high),
            "partition {partition}: (next offset, events stored) against its high watermark"
        );
    }
    let rows: HashMap<i64, (String, i64)> = rows(&store.store)
        .await
        .into_iter()
        .map(|(id, (name, n, _))| (id, (name, n)))
        .collect();
    assert_eq!(rows, expected);
    a.stop().await.unwrap();
}

/// Two instances with stores of their own: each stores only the partitions the group gave it;
/// together they hold the latest value of every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_stores_only_its_partitions() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-group-own");
    kafka::create_topic(&topic, PARTITIONS).await.unwrap();
    let group = format!("ficus-view-test-{}", ficus_testkit::unique_suffix());
    let producer = producer();
    let mut expected = HashMap::new();
    produce(&producer, &topic, &events(0, 2_000, &mut expected)).await;

    let (store_a, store_b) = (
        TestStore::new(Kind::Sqlite).await,
        TestStore::new(Kind::Sqlite).await,
    );
    let spec = spec(&topic);
    let a = ficus_view::start(store_a.store.clone(), spec.clone(), config(&group))
        .await
        .unwrap();
    let b = ficus_view::start(store_b.store.clone(), spec.clone(), config(&group))
        .await
        .unwrap();
    let shares = until_spread(&[&a, &b], "two instances").await;
    produce(&producer, &topic, &events(2_000, 3_000, &mut expected)).await;
    until_caught_up(&[&a, &b], &topic).await;

    let mut held = HashMap::new();
    for (view, store, share) in [(&a, &store_a, &shares[0]), (&b, &store_b, &shares[1])] {
        // The share did not change meanwhile (no rebalance since).
        assert_eq!(&view.status.assigned(), share);
        let rows = rows(&store.store).await;
        let own: HashMap<i64, (String, i64)> = rows
            .iter()
            .filter(|(_, (_, _, p))| share.contains(p))
            .map(|(id, (name, n, _))| (*id, (name.clone(), *n)))
            .collect();
        // Before B joined, A may have held every partition: those rows are kept, not updated,
        // and marked with their partition; the rows of its own share are current.
        for (id, row) in own {
            assert!(held.insert(id, row).is_none(), "key {id} held twice");
        }
    }
    assert_eq!(held, expected, "the two shares together");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}
