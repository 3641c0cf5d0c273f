//! The Kafka side: an idempotent producer with `acks=all` and no delivery timeout (a message
//! is retried until the broker takes it), the acknowledgement tracker ([`ack`]) that decides
//! what may be confirmed to PostgreSQL, and topic creation through the admin API (Tansu and many
//! production clusters do not auto-create topics).
//!
//! Backpressure: [`Sink::try_send`] returns [`TrySend::Full`] when librdkafka's queue is full;
//! the caller waits and retries the same record (same sequence number), keeping PostgreSQL's
//! connection alive meanwhile. Nothing is dropped: a record leaves the pipeline only when the
//! broker acknowledged it.

pub mod ack;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use self::ack::AckTracker;
use crate::config::CdcConfig;
use crate::decode::Record;
use crate::error::{CdcError, DeliveryFailure, RecordInfo};
use crate::metrics::{KindLabels, Metrics};

/// Receives librdkafka's callbacks: delivery reports go to the tracker.
pub struct AckContext {
    tracker: Arc<AckTracker>,
    metrics: Arc<Metrics>,
    last_warning: Mutex<Option<Instant>>,
    /// Topic → `schema.table`, to name the table of a refused record (filled when a topic is
    /// first used, read only on a failure).
    tables: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

impl AckContext {
    fn warn_rate_limited(&self, message: impl FnOnce() -> String) {
        let mut last = self.last_warning.lock().expect("warning clock");
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            drop(last);
            tracing::warn!("{}", message());
        }
    }
}

impl ClientContext for AckContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                self.warn_rate_limited(|| format!("librdkafka {fac}: {log_message}"))
            }
            _ => tracing::debug!(fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics
            .broker_errors
            .get_or_create(&KindLabels { kind: "client" })
            .inc();
        self.warn_rate_limited(|| {
            format!("broker error (retrying; nothing is dropped): {error}: {reason}")
        });
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        match result {
            Ok(_) => self.tracker.ack(seq as u64),
            Err((error, message)) => {
                self.metrics
                    .broker_errors
                    .get_or_create(&KindLabels { kind: "delivery" })
                    .inc();
                let topic = message.topic();
                let table = self
                    .tables
                    .lock()
                    .expect("topic tables")
                    .get(topic)
                    .map_or_else(|| topic.to_owned(), |t| t.to_string());
                let size = message.key_len() + message.payload_len();
                let record = RecordInfo::new(&table, topic, message.key(), size);
                let failure = match error.rdkafka_error_code() {
                    Some(code) => DeliveryFailure::kafka(code, error.to_string(), record),
                    None => DeliveryFailure {
                        code: None,
                        reason: error.to_string(),
                        record: Some(record),
                    },
                };
                self.tracker.fail(seq as u64, failure);
            }
        }
    }
}

/// What became of a send attempt.
pub enum TrySend {
    Sent,
    /// The producer's queue is full: wait a little and send the same record again.
    Full,
}

/// The producer, its tracker and the topics known to exist.
pub struct Sink {
    producer: ThreadedProducer<AckContext>,
    metrics: Arc<Metrics>,
    admin: AdminClient<DefaultClientContext>,
    tracker: Arc<AckTracker>,
    topics: HashSet<Arc<str>>,
    partitions: i32,
    replication: i32,
}

impl Sink {
    pub fn new(config: &CdcConfig, metrics: Arc<Metrics>) -> Result<Self, CdcError> {
        let tracker = Arc::new(AckTracker::new(metrics.clone()));
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.kafka.brokers)
            // Producer-level guarantees.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("max.in.flight.requests.per.connection", "5")
            // Never give up on a message: the broker being down means waiting, not losing.
            .set("message.timeout.ms", "0")
            // Java's partitioner, so keys land where Debezium's would.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set(
                "queue.buffering.max.messages",
                (config.kafka.max_inflight_events + 10_000).to_string(),
            )
            .set("queue.buffering.max.kbytes", "131072")
            .set("retry.backoff.ms", "100")
            .set("retry.backoff.max.ms", "1000")
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "2000")
            .set("client.id", format!("ficus-cdc-{}", config.slot));
        for (key, value) in &config.kafka.properties {
            client.set(key, value);
        }
        let context = AckContext {
            tracker: tracker.clone(),
            metrics: metrics.clone(),
            last_warning: Mutex::new(None),
            tables: Mutex::new(HashMap::new()),
        };
        let producer: ThreadedProducer<AckContext> = client
            .create_with_context(context)
            .map_err(CdcError::kafka("creating the producer"))?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("client.id", format!("ficus-cdc-{}-admin", config.slot))
            .create()
            .map_err(CdcError::kafka("creating the admin client"))?;
        Ok(Self {
            producer,
            metrics,
            admin,
            tracker,
            topics: HashSet::new(),
            partitions: config.kafka.topic_partitions,
            replication: config.kafka.topic_replication_factor,
        })
    }

    pub fn tracker(&self) -> &Arc<AckTracker> {
        &self.tracker
    }

    /// Whether `topic` is known to exist.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains(topic)
    }

    /// Creates `topic` (the events of `table`) unless it exists (one attempt, bounded by
    /// `timeout`).
    pub async fn ensure_topic(
        &mut self,
        topic: &Arc<str>,
        table: &Arc<str>,
        timeout: Duration,
    ) -> Result<(), CdcError> {
        if self.topics.contains(topic) {
            return Ok(());
        }
        self.producer
            .context()
            .tables
            .lock()
            .expect("topic tables")
            .insert(topic.clone(), table.clone());
        let new = NewTopic::new(
            topic,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        let options = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = tokio::time::timeout(timeout + Duration::from_secs(1), async {
            self.admin.create_topics([&new], &options).await
        })
        .await
        .map_err(|_| CdcError::Kafka {
            context: format!("creating topic {topic}"),
            source: KafkaError::AdminOp(RDKafkaErrorCode::RequestTimedOut),
        })?
        .map_err(CdcError::kafka(format!("creating topic {topic}")))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(CdcError::Kafka {
                        context: format!("creating topic {name}"),
                        source: KafkaError::AdminOp(code),
                    });
                }
            }
        }
        tracing::info!(%topic, "topic ready");
        self.topics.insert(topic.clone());
        Ok(())
    }

    /// Hands `record` to the producer under sequence number `seq` (from the tracker).
    pub fn try_send(&self, record: &Record, seq: u64) -> Result<TrySend, CdcError> {
        let mut base: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, seq as usize);
        if let Some(key) = &record.key {
            base = base.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            base = base.payload(value.as_slice());
        }
        if !record.headers.is_empty() {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                });
            }
            base = base.headers(headers);
        }
        match self.producer.send(base) {
            Ok(()) => {
                let bytes = record.key.as_ref().map_or(0, Vec::len)
                    + record.value.as_ref().map_or(0, Vec::len);
                self.metrics.sent_bytes.inc_by(bytes as u64);
                Ok(TrySend::Sent)
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Ok(TrySend::Full)
            }
            Err((error, _)) => {
                let size = record.key.as_ref().map_or(0, Vec::len)
                    + record.value.as_ref().map_or(0, Vec::len);
                let info =
                    RecordInfo::new(&record.table, &record.topic, record.key.as_deref(), size);
                let reason = format!("the producer refused it: {error}");
                Err(CdcError::Delivery(match error.rdkafka_error_code() {
                    Some(code) => DeliveryFailure::kafka(code, reason, info),
                    None => DeliveryFailure {
                        code: None,
                        reason,
                        record: Some(info),
                    },
                }))
            }
        }
    }

    /// Sends `record`, waiting while `max_inflight` events are unacknowledged or the queue is
    /// full (used by the snapshot, which has no replication connection to keep alive).
    pub async fn send(&self, record: &Record, max_inflight: usize) -> Result<(), CdcError> {
        let max = max_inflight as u64;
        let resume = max - max / 10;
        if self.tracker.outstanding() >= max {
            while self.tracker.outstanding() >= resume {
                tokio::time::sleep(Duration::from_millis(2)).await;
                if let Some(failure) = self.tracker.failure() {
                    return Err(CdcError::Delivery(failure));
                }
            }
        }
        let seq = self.tracker.register();
        loop {
            match self.try_send(record, seq) {
                Ok(TrySend::Sent) => return Ok(()),
                Ok(TrySend::Full) => tokio::time::sleep(Duration::from_millis(2)).await,
                Err(error) => {
                    self.tracker.abandon(seq);
                    return Err(error);
                }
            }
            if let Some(failure) = self.tracker.failure() {
                self.tracker.abandon(seq);
                return Err(CdcError::Delivery(failure));
            }
        }
    }
}
