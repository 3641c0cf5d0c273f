//! Readiness and lag: `/readyz` answers 503 until every partition reached the high watermark
//! seen at start, then 200; `/metrics` shows the lag and the applied position; while the broker
//! is away the view keeps serving its rows and reports the broker down and a growing lag. The
//! applied position reported is the highest applied, whatever order a batch ends in.

mod support;

use std::time::{Duration, Instant};

use ficus_testkit::kafka;
use ficus_view::{ColumnType, ConsumerConfig, ViewSpec};
use serde_json::Value;

use support::{
    Kind, PrivateBroker, TestStore, change, create_topic_on, people_rows, produce, producer,
    producer_to,
};

fn spec(topic: &str) -> ViewSpec {
    ViewSpec::new("people", topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn events(count: i64, first_lsn: u64) -> Vec<(Option<String>, Option<String>)> {
    (0..count)
        .map(|i| {
            let commit = first_lsn + i as u64 * 10;
            change("u", i % 100, &format!("v{i}"), i, Some(commit), commit + 5)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_caught_up_with_the_start_watermarks() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-ready");
    kafka::create_topic(&topic, 2).await.unwrap();
    produce(&producer(), &topic, &events(4000, 1000)).await;

    let store = TestStore::new(Kind::Sqlite).await;
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.batch_max_events = 50;
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    let base = serve(ficus_view::telemetry::router(vec![view.status.clone()])).await;
    let http = reqwest::Client::new();
    let first = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(first.status(), 503);

    // Ready never shows before every partition stored its start high watermark.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut not_ready_seen = 0;
    loop {
        let report = view.status.report();
        if report.ready {
            for (partition, status) in &report.partitions {
                assert!(
                    status.next_offset >= status.start_high.unwrap(),
                    "ready while partition {partition} is at {} of {:?}",
                    status.next_offset,
                    status.start_high
                );
            }
            break;
        }
        not_ready_seen += 1;
        assert!(Instant::now() < deadline, "never ready: {report:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(not_ready_seen > 0);
    assert_eq!(view.status.report().consumed, 4000);

    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["views"][0]["view"], "people");
    assert_eq!(body["views"][0]["lag_events"], 0);
    assert_eq!(body["views"][0]["applied_lsn"], 1000 + 3999 * 10 + 5);

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "ficus_view_ready{view=\"people\"} 1",
        "ficus_view_lag_events{view=\"people\",partition=\"0\"} 0",
        "ficus_view_events_total{view=\"people\",outcome=\"applied\"} 4000",
        "ficus_view_broker_up{view=\"people\"} 1",
        "ficus_view_applied_lsn{view=\"people\"} 40995",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(line)),
            "{line} missing:\n{metrics}"
        );
    }
    view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_max_lag_is_ready_earlier() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-maxlag");
    kafka::create_topic(&topic, 1).await.unwrap();
    produce(&producer(), &topic, &events(500, 1000)).await;
    let store = TestStore::new(Kind::Sqlite).await;
    let mut config = ConsumerConfig::new(kafka::brokers());
    config.max_lag_events = 1_000;
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    // Ready as soon as the watermarks are known: 500 behind is within 1,000.
    assert!(view.status.wait_ready(Duration::from_secs(30)).await);
    view.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_broker_is_away_the_view_serves_and_reports_its_lag() {
    ficus_testkit::init_tracing();
    let mut broker = PrivateBroker::new();
    broker.start();
    let topic = format!("view-outage-{}", ficus_testkit::unique_suffix());
    create_topic_on(&broker.brokers(), &topic, 1).await;
    produce(&producer_to(&broker.brokers()), &topic, &events(200, 1000)).await;

    let store = TestStore::new(Kind::Sqlite).await;
    let mut config = ConsumerConfig::new(broker.brokers());
    config.watermark_interval_ms = 200;
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(60)).await);
    let base = serve(ficus_view::telemetry::router(vec![view.status.clone()])).await;

    broker.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = view.status.report();
    assert!(!report.broker_up, "{report:?}");
    assert!(report.lag_seconds >= 1.0, "lag grows: {report:?}");
    assert!(!view.is_finished(), "the view keeps running");
    assert_eq!(people_rows(&store.store, "people").await.len(), 100);
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ficus_view_broker_up{view=\"people\"} 0"),
        "{metrics}"
    );

    // Back: what was written meanwhile arrives, the lag is gone.
    broker.start();
    produce(
        &producer_to(&broker.brokers()),
        &topic,
        &events(10, 100_000),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = view.status.report();
        if report.consumed == 210 && report.broker_up && report.lag_events == 0 {
            assert_eq!(report.lag_seconds, 0.0);
            break;
        }
        assert!(Instant::now() < deadline, "not back: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    view.stop().await.unwrap();
}

/// The applied source position a view reports (what the proxy and the rollout read) is the
/// highest it applied, even when a batch ends on an older event of another partition: one batch
/// takes partition 0's change at commit 300, then its change of another key at commit 50, and
/// partition 1's at commit 60; whatever order the partitions interleave in, the batch ends on
/// an older event than its newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applied_position_is_the_highest_of_a_batch() {
    use rdkafka::producer::FutureRecord;
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("view-position");
    kafka::create_topic(&topic, 2).await.unwrap();
    let producer = producer();
    for (partition, (key, value)) in [
        (0, change("c", 1, "newest", 1, Some(300), 305)),
        (0, change("c", 2, "older", 2, Some(50), 55)),
        (1, change("c", 3, "older", 3, Some(60), 65)),
    ] {
        let (key, value) = (key.unwrap(), value.unwrap());
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value),
                Duration::from_secs(30),
            )
            .await
            .expect("delivered");
    }
    let store = TestStore::new(Kind::Sqlite).await;
    let mut config = ConsumerConfig::new(kafka::brokers());
    // The three in one batch.
    config.batch_max_ms = 3000;
    let view = ficus_view::start(store.store.clone(), spec(&topic), config)
        .await
        .unwrap();
    assert!(view.status.wait_ready(Duration::from_secs(30)).await);
    let report = view.status.report();
    assert_eq!(report.applied, 3);
    assert_eq!(
        report.position,
        Some(ficus_view::Position {
            commit_lsn: Some(300),
            lsn: 305
        })
    );
    view.stop().await.unwrap();
}
