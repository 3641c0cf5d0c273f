//! A smoke test of the Kafka broker that `scripts/services` started, through rdkafka: create a
//! topic, produce with idempotence, consume with a consumer group, commit and read back offsets.

use std::time::Duration;

use ficus_testkit::kafka;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const MESSAGES: usize = 50;

#[tokio::test]
async fn produce_idempotently_consume_in_a_group_and_commit() {
    ficus_testkit::init_tracing();
    let topic = kafka::unique_topic("smoke");
    kafka::create_topic(&topic, 3)
        .await
        .expect("creating the topic");

    let producer: FutureProducer = kafka::client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("a producer");
    for i in 0..MESSAGES {
        let key = format!("{{\"id\":{}}}", i % 7);
        let payload = format!("{{\"n\":{i}}}");
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "source",
            value: Some("ficus-test"),
        });
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("the broker acknowledges");
    }

    // The broker reports exact watermarks: the sum over partitions is what we sent.
    let group = format!("{topic}-group");
    let consumer: StreamConsumer = kafka::client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .create()
        .expect("a consumer");
    let mut total = 0;
    for partition in 0..3 {
        let (low, high) = consumer
            .fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .expect("watermarks");
        assert_eq!(low, 0);
        total += high;
    }
    assert_eq!(total as usize, MESSAGES);

    consumer.subscribe(&[&topic]).expect("subscribing");
    let mut seen = [false; MESSAGES];
    let mut per_key_order: std::collections::HashMap<String, Vec<usize>> = Default::default();
    for _ in 0..MESSAGES {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("a message within 30 s")
            .expect("a message");
        let payload: serde_json::Value =
            serde_json::from_slice(message.payload().unwrap()).unwrap();
        let n = payload["n"].as_u64().unwrap() as usize;
        assert!(!seen[n], "message {n} delivered twice");
        seen[n] = true;
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        per_key_order.entry(key).or_default().push(n);
        let header = message.headers().expect("headers").get(0);
        assert_eq!(header.key, "source");
        consumer
            .store_offset_from_message(&message)
            .expect("storing the offset");
    }
    assert!(seen.iter().all(|s| *s));
    // One key, one partition: per-key order is the order sent.
    for order in per_key_order.values() {
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "per-key order kept: {order:?}"
        );
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("committing");

    // Read the committed offsets back, from a fresh consumer of the same group.
    let reader: StreamConsumer = kafka::client_config()
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut partitions = TopicPartitionList::new();
    for partition in 0..3 {
        partitions.add_partition(&topic, partition);
    }
    let committed = reader
        .committed_offsets(partitions, Duration::from_secs(10))
        .expect("committed offsets");
    let mut committed_total = 0;
    for element in committed.elements() {
        let (_, high) = reader
            .fetch_watermarks(&topic, element.partition(), Duration::from_secs(10))
            .unwrap();
        match element.offset() {
            Offset::Offset(offset) => {
                assert_eq!(
                    offset,
                    high,
                    "partition {} committed up to its end",
                    element.partition()
                );
                committed_total += offset;
            }
            other => assert_eq!(high, 0, "partition {}: {other:?}", element.partition()),
        }
    }
    assert_eq!(committed_total as usize, MESSAGES);
}
