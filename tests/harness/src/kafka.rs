//! The Kafka broker of the tests: its address, a topic name per test, topic creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

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
