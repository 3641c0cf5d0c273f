//! The Kafka broker of the tests: its address, a topic name per test, topic creation, and the
//! reader tests check a topic with: [`read_topic`] reads every partition up to its high
//! watermark as it is now; [`wait_for_messages`] reads again until a condition holds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::{KAFKA_BROKERS_VAR, service_env, unique_suffix};

/// `bootstrap.servers` of the test broker.
pub fn brokers() -> String {
    service_env(KAFKA_BROKERS_VAR)
}

/// A client configuration pointed at the test broker.
pub fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers());
    config
}

/// A topic name no other test uses: `ficus-test-<purpose>-<random>`.
pub fn unique_topic(purpose: &str) -> String {
    format!("ficus-test-{purpose}-{}", unique_suffix())
}

/// Creates a topic (the broker does not auto-create them) and waits for the answer.
pub async fn create_topic(name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config().create()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin.create_topics([&topic], &options).await?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// How many partitions `topic` has on the broker; `None` when it does not exist.
pub fn topic_partitions(brokers: &str, topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("a metadata client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let topic_meta = metadata.topics().iter().find(|t| t.name() == topic)?;
    (topic_meta.error().is_none() && !topic_meta.partitions().is_empty())
        .then(|| topic_meta.partitions().len())
}

/// One message read back from the broker.
#[derive(Debug, Clone)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    /// The value as JSON: the payload of a schema-wrapped record (`{"schema","payload"}`, the
    /// adapter's default form), the value itself otherwise.
    pub fn json(&self) -> Value {
        match &self.value {
            Some(v) => payload(serde_json::from_slice(v).expect("a JSON value")),
            None => Value::Null,
        }
    }

    /// The key as JSON, unwrapped like [`Msg::json`].
    pub fn key_json(&self) -> Value {
        match &self.key {
            Some(k) => payload(serde_json::from_slice(k).expect("a JSON key")),
            None => Value::Null,
        }
    }

    pub fn op(&self) -> String {
        self.json()["op"].as_str().unwrap_or("tombstone").to_owned()
    }
}

/// The payload of a schema-wrapped record, or the record itself.
pub fn payload(mut value: Value) -> Value {
    match value.as_object_mut() {
        Some(map)
            if map.len() == 2 && map.contains_key("schema") && map.contains_key("payload") =>
        {
            map.remove("payload").unwrap_or(Value::Null)
        }
        _ => value,
    }
}

/// Every message of `topic` (all partitions, in offset order per partition) up to the high
/// watermarks as they are now; empty when the topic does not exist.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ficus-test-reader-{}", unique_suffix()))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("a consumer");
    let metadata = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let Some(topic_meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Vec::new();
    };
    if topic_meta.error().is_some() || topic_meta.partitions().is_empty() {
        return Vec::new();
    }
    let mut assignment = TopicPartitionList::new();
    let mut highs = HashMap::new();
    for partition in topic_meta.partitions() {
        let (_, high) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .expect("watermarks");
        highs.insert(partition.id(), high);
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    let total: i64 = highs.values().sum();
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    consumer.assign(&assignment).expect("assigning partitions");
    let mut done: HashMap<i32, bool> = highs.iter().map(|(p, h)| (*p, *h == 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.values().any(|d| !d) {
        assert!(Instant::now() < deadline, "reading {topic} took over 60 s");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                if m.offset() + 1 >= highs[&m.partition()] {
                    done.insert(m.partition(), true);
                }
                if m.offset() < highs[&m.partition()] {
                    out.push(Msg {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                }
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Reads `topic` until `ready` holds for its messages, or panics after `timeout`.
pub async fn wait_for_messages(
    brokers: &str,
    topic: &str,
    timeout: Duration,
    ready: impl Fn(&[Msg]) -> bool,
) -> Vec<Msg> {
    let deadline = Instant::now() + timeout;
    loop {
        let topic_owned = topic.to_owned();
        let brokers = brokers.to_owned();
        let messages = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic_owned))
            .await
            .unwrap();
        if ready(&messages) {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: condition not met within {timeout:?}; {} messages: {:#?}",
            messages.len(),
            messages
                .iter()
                .rev()
                .take(5)
                .map(|m| (m.key_json(), m.json()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The last message per key (JSON text of the key).
pub fn last_by_key(messages: &[Msg]) -> HashMap<String, Msg> {
    let mut last = HashMap::new();
    for m in messages {
        if let Some(key) = &m.key {
            last.insert(String::from_utf8_lossy(key).into_owned(), m.clone());
        }
    }
    last
}
