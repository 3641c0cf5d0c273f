//! The broker stopped for a while during writes, then started again: the adapter waits (no
//! crash, no drop), confirms nothing the broker did not acknowledge, and delivers every row
//! written during the outage once the broker is back. The broker is a private Tansu for this test, so
//! stopping it disturbs no other test.

use std::time::Duration;

use ficus_adapters::CancellationToken;
use ficus_testkit::PrivateBroker;

use crate::support::{CdcTest, metric_sum, spawn_writer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_during_writes_loses_nothing() {
    let mut broker = PrivateBroker::new();
    broker.start();
    let mut test = CdcTest::new(
        "CREATE TABLE t (id bigint PRIMARY KEY, n bigint NOT NULL, note text NOT NULL);",
    )
    .await;
    test.brokers = broker.brokers();
    let adapter = test.start_streaming().await;

    let stop = CancellationToken::new();
    let writer = spawn_writer(
        test.url.clone(),
        "t",
        1_000,
        stop.clone(),
        Duration::from_millis(2),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.stop();
    // Rows written only during the outage, outside the writer's keys: each must reach the
    // topic once the broker is back.
    const MARKERS: std::ops::RangeInclusive<i64> = 1_000_001..=1_000_050;
    let (before_markers,): (String,) = sqlx::query_as("SELECT pg_current_wal_insert_lsn()::text")
        .fetch_one(&test.pool)
        .await
        .unwrap();
    for id in MARKERS {
        sqlx::query("INSERT INTO t (id, n, note) VALUES ($1, $1, 'outage')")
            .bind(id)
            .execute(&test.pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Writes go on with the broker down; the adapter waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        adapter.is_running(),
        "the adapter must not exit while the broker is down"
    );
    // Nothing written during the outage is acknowledged, so the slot cannot have been
    // confirmed past the position before the first marker.
    let confirmed = test.confirmed_lsn().await.expect("a confirmed position");
    let (held,): (bool,) = sqlx::query_as("SELECT $1::pg_lsn <= $2::pg_lsn")
        .bind(&confirmed)
        .bind(&before_markers)
        .fetch_one(&test.pool)
        .await
        .unwrap();
    assert!(
        held,
        "confirmed {confirmed} during the outage, past {before_markers} (before the first unacknowledged change)"
    );
    let outage_errors = metric_sum(
        &adapter.metrics_text().await,
        "ficus_cdc_broker_errors_total",
        &[],
    );
    assert!(outage_errors > 0.0, "the outage is seen as broker errors");
    broker.start();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let transactions = writer.await.unwrap();
    test.wait_caught_up(Duration::from_secs(180)).await;

    let messages = test.assert_topic_matches_table(&test.topic("t"), "t").await;
    let created: std::collections::HashSet<i64> = messages
        .iter()
        .filter(|m| m.op() == "c")
        .filter_map(|m| m.key_json()["id"].as_i64())
        .collect();
    let missing: Vec<i64> = MARKERS.filter(|id| !created.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "rows written during the outage missing from the topic: {missing:?}"
    );
    eprintln!(
        "{transactions} transactions across the outage, {} events",
        messages.len()
    );
    adapter.stop().await;
}

/// What the adapter relies on for per-row order: the broker keeps a partition's messages in the
/// order an idempotent producer sent them, with several requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_keeps_the_order_of_a_partition() {
    use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
    const COUNT: u64 = 50_000;
    // A broker of its own: 50,000 records would slow the shared one for every other test
    // (and its state would slow this one).
    let mut broker = PrivateBroker::new();
    broker.start();
    let brokers = broker.brokers();
    let topic = ficus_testkit::kafka::unique_topic("order");
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .create()
                .unwrap();
        let results = admin
            .create_topics(
                [&NewTopic::new(&topic, 1, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await
            .unwrap();
        for result in results {
            result.unwrap();
        }
    }
    let sent_topic = topic.clone();
    let sent_brokers = brokers.clone();
    tokio::task::spawn_blocking(move || {
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &sent_brokers)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("max.in.flight.requests.per.connection", "5")
                .set("linger.ms", "1")
                .set("batch.num.messages", "500")
                .create()
                .unwrap();
        for i in 0..COUNT {
            let payload = i.to_string();
            let mut record = BaseRecord::to(&sent_topic).key("k").payload(&payload);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120)).unwrap();
    })
    .await
    .unwrap();
    let messages =
        tokio::task::spawn_blocking(move || crate::support::read_topic(&brokers, &topic))
            .await
            .unwrap();
    assert_eq!(messages.len() as u64, COUNT);
    let mut out_of_order = Vec::new();
    for (offset, m) in messages.iter().enumerate() {
        let n: u64 = String::from_utf8_lossy(m.value.as_ref().unwrap())
            .parse()
            .unwrap();
        if n != offset as u64 {
            out_of_order.push((offset, n));
        }
    }
    assert!(
        out_of_order.is_empty(),
        "{} messages out of place, first: {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(10)]
    );
}
