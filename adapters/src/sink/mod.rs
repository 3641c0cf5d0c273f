//! The Kafka side: an idempotent producer with `acks=all` and no delivery timeout (a message
//! is retried until the broker takes it), the acknowledgement tracker ([`ack`]) that decides
//! what may be confirmed to PostgreSQL, and topic creation through the admin API (Tansu and many
//! production clusters do not auto-create topics).
//!
//! Backpressure: [`Sink::try_send`] returns [`TrySend::Full`] when librdkafka's queue is full;
//! the caller waits and retries the same record (same sequence number), keeping PostgreSQL's
//! connection alive meanwhile. Nothing is dropped: a record leaves the pipeline only when the
//! broker acknowledged it.
//!
//! Records the broker will never take are caught before they reach the producer: the size
//! limit of each topic is known up front (its `max.message.bytes` as the broker describes it
//! when the topic is made ready, else the producer's `message.max.bytes`), and a record over
//! it, or one the producer refuses for good, follows `errors.tolerance`: `none` fails the
//! pipeline with the record named (table, key, size), `all` sends it to the dead-letter topic
//! with a placeholder in its place ([`dead_letter`]). Either way no restart loop: the same
//! record would be refused again.

pub mod ack;
pub mod dead_letter;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use self::ack::AckTracker;
use crate::config::{CdcConfig, ErrorTolerance};
use crate::decode::Record;
use crate::error::{CdcError, DeliveryFailure, ErrorClass, RecordInfo};
use crate::metrics::{DeadLetterLabels, KindLabels, Metrics};

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

/// The placeholder of a dead-lettered record, still to be handed to the producer under the
/// record's own sequence number (the dead-letter record went first; the queue was full).
struct PendingPlaceholder {
    seq: u64,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
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
    /// `errors.tolerance`.
    tolerance: ErrorTolerance,
    dead_letter_topic: Arc<str>,
    /// `<prefix>.transaction` when `provide.transaction.metadata` is on.
    transaction_topic: Option<Arc<str>>,
    toast_placeholder: String,
    /// The producer's `message.max.bytes`.
    producer_limit: usize,
    /// `max.message.bytes` of the topics whose configuration the broker described.
    topic_limits: HashMap<Arc<str>, usize>,
    pending_placeholder: Mutex<Option<PendingPlaceholder>>,
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
            tolerance: config.errors.tolerance,
            dead_letter_topic: Arc::from(config.dead_letter_topic().as_str()),
            transaction_topic: config
                .debezium
                .provide_transaction_metadata
                .then(|| Arc::from(config.transaction_topic().as_str())),
            toast_placeholder: config.toast_placeholder.clone(),
            producer_limit: config.producer_max_message_bytes(),
            topic_limits: HashMap::new(),
            pending_placeholder: Mutex::new(None),
        })
    }

    /// Makes the topics that exist whatever the tables hold ready at start (one attempt each):
    /// the dead-letter topic when `errors.tolerance = "all"` (before the first record may need
    /// it), the transaction topic when `provide.transaction.metadata` is on (a consumer that
    /// applies whole transactions subscribes to it before the first transaction is written).
    pub async fn prepare(&mut self, timeout: Duration) -> Result<(), CdcError> {
        if self.tolerance == ErrorTolerance::All {
            let topic = self.dead_letter_topic.clone();
            self.ensure_topic(&topic, &Arc::from("dead letters"), timeout)
                .await?;
        }
        if let Some(topic) = self.transaction_topic.clone() {
            self.ensure_topic(&topic, &Arc::from("transaction"), timeout)
                .await?;
        }
        Ok(())
    }

    /// The size limit of a record for `topic`: the topic's `max.message.bytes` when the broker
    /// described it, at most the producer's `message.max.bytes`.
    pub fn limit(&self, topic: &str) -> usize {
        self.topic_limits
            .get(topic)
            .map_or(self.producer_limit, |&l| l.min(self.producer_limit))
    }

    /// `max.message.bytes` of `topic` as the broker describes it (DescribeConfigs); `None` when
    /// it does not say (Tansu describes only what was set when the topic was created).
    async fn describe_limit(&self, topic: &str, timeout: Duration) -> Option<usize> {
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let resource = ResourceSpecifier::Topic(topic);
        let described = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            self.admin.describe_configs([&resource], &options),
        )
        .await;
        let results = match described {
            Ok(Ok(results)) => results,
            Ok(Err(error)) => {
                tracing::debug!(%topic, %error, "topic configuration not described");
                return None;
            }
            Err(_) => {
                tracing::debug!(%topic, "topic configuration not described in time");
                return None;
            }
        };
        let config = results.into_iter().next()?.ok()?;
        config
            .get("max.message.bytes")?
            .value
            .as_deref()?
            .parse()
            .ok()
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
        match self.describe_limit(topic, timeout).await {
            Some(limit) => {
                tracing::info!(%topic, max_message_bytes = limit, "topic ready");
                self.topic_limits.insert(topic.clone(), limit);
            }
            None => tracing::info!(
                %topic,
                producer_max_message_bytes = self.producer_limit,
                "topic ready (the broker does not describe its max.message.bytes; the producer's limit applies)"
            ),
        }
        self.topics.insert(topic.clone());
        Ok(())
    }

    /// Hands `record` to the producer under sequence number `seq` (from the tracker). A
    /// record over the topic's size limit, or one the producer refuses for good, follows
    /// `errors.tolerance` (see the module's documentation).
    pub fn try_send(&self, record: &Record, seq: u64) -> Result<TrySend, CdcError> {
        if let Some(result) = self.resume_placeholder(record, seq) {
            return result;
        }
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (&**k, v.as_slice()))
            .collect();
        let wire = dead_letter::wire_size(record.key.as_deref(), record.value.as_deref(), &headers);
        let limit = self.limit(&record.topic);
        if wire > limit {
            let source = if self.topic_limits.contains_key(&*record.topic) {
                "the topic's max.message.bytes, as the broker describes it"
            } else {
                "the producer's message.max.bytes"
            };
            let failure = DeliveryFailure::kafka(
                RDKafkaErrorCode::MessageSizeTooLarge,
                format!(
                    "{wire} bytes with headers and framing, over the limit of {limit} bytes ({source}); \
                     errors.tolerance = \"all\" would set it aside in a dead-letter topic"
                ),
                record_info(record),
            );
            return self.refused(record, seq, failure);
        }
        match self.produce(
            &record.topic,
            record.key.as_deref(),
            record.value.as_deref(),
            &headers,
            seq,
        ) {
            Ok(()) => {
                let bytes = record.key.as_ref().map_or(0, Vec::len)
                    + record.value.as_ref().map_or(0, Vec::len);
                self.metrics.sent_bytes.inc_by(bytes as u64);
                Ok(TrySend::Sent)
            }
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => Ok(TrySend::Full),
            Err(error) => {
                let reason = format!("the producer refused it: {error}");
                let failure = match error.rdkafka_error_code() {
                    Some(code) => DeliveryFailure::kafka(code, reason, record_info(record)),
                    None => DeliveryFailure {
                        code: None,
                        reason,
                        record: Some(record_info(record)),
                    },
                };
                if failure.classify().class == ErrorClass::Never {
                    return self.refused(record, seq, failure);
                }
                Err(CdcError::Delivery(failure))
            }
        }
    }

    /// One record into the producer's queue.
    fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        seq: u64,
    ) -> Result<(), KafkaError> {
        let mut base: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, seq as usize);
        if let Some(key) = key {
            base = base.key(key);
        }
        if let Some(value) = value {
            base = base.payload(value);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (key, value) in headers {
                owned = owned.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            base = base.headers(owned);
        }
        self.producer.send(base).map_err(|(error, _)| error)
    }

    /// A record the broker will never take: `none` fails with it, `all` sets it aside.
    fn refused(
        &self,
        record: &Record,
        seq: u64,
        failure: DeliveryFailure,
    ) -> Result<TrySend, CdcError> {
        match self.tolerance {
            ErrorTolerance::None => Err(CdcError::Delivery(failure)),
            ErrorTolerance::All => self.dead_letter(record, seq, failure),
        }
    }

    /// The record to the dead-letter topic, then its placeholder (when it is a change event)
    /// to its own topic under `seq`.
    fn dead_letter(
        &self,
        record: &Record,
        seq: u64,
        failure: DeliveryFailure,
    ) -> Result<TrySend, CdcError> {
        let cause = failure.classify().cause;
        let info = record_info(record);
        let size = info.size.to_string();
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(k, v)| (&**k, v.as_slice()))
            .collect();
        let key = record.key.as_deref();
        // Room for the placeholder's own headers, the replaced columns' names included.
        let placeholder_budget = self
            .limit(&record.topic)
            .saturating_sub(dead_letter::wire_size(key, None, &headers) + 1024);
        let placeholder = record.value.as_deref().and_then(|value| {
            dead_letter::placeholder_value(
                value,
                placeholder_budget,
                &self.toast_placeholder,
                cause != "record_too_large",
            )
        });
        let mut dlq_headers = headers.clone();
        let context: [&[u8]; 5] = [
            record.topic.as_bytes(),
            record.table.as_bytes(),
            cause.as_bytes(),
            failure.reason.as_bytes(),
            size.as_bytes(),
        ];
        for (name, value) in dead_letter::DLQ_HEADERS.iter().zip(context) {
            dlq_headers.push((name, value));
        }
        let original_fits = dead_letter::wire_size(key, record.value.as_deref(), &dlq_headers) + 16
            <= self.limit(&self.dead_letter_topic);
        let (dlq_value, kind): (Option<&[u8]>, &[u8]) = if original_fits {
            (record.value.as_deref(), b"original")
        } else if let Some((value, _)) = &placeholder {
            (Some(value.as_slice()), b"placeholder")
        } else {
            (None, b"omitted")
        };
        dlq_headers.push((dead_letter::DLQ_HEADERS[5], kind));
        // With a placeholder to follow, the dead-letter record needs a sequence number of its
        // own (registered before the transaction's commit, so the commit waits for it too).
        let dlq_seq = if placeholder.is_some() {
            self.tracker.register()
        } else {
            seq
        };
        match self.produce(
            &self.dead_letter_topic,
            key,
            dlq_value,
            &dlq_headers,
            dlq_seq,
        ) {
            Ok(()) => {}
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                if dlq_seq != seq {
                    self.tracker.abandon(dlq_seq);
                }
                return Ok(TrySend::Full);
            }
            Err(error) => {
                if dlq_seq != seq {
                    self.tracker.abandon(dlq_seq);
                }
                return Err(CdcError::Delivery(DeliveryFailure {
                    reason: format!(
                        "{}; and the dead-letter topic {} refused it too: {error}",
                        failure.reason, self.dead_letter_topic
                    ),
                    ..failure
                }));
            }
        }
        tracing::warn!(
            table = %record.table,
            key = %info.key,
            size = info.size,
            cause,
            dead_letter_topic = %self.dead_letter_topic,
            placeholder = placeholder.is_some(),
            "record set aside in the dead-letter topic (errors.tolerance = all)"
        );
        self.metrics
            .dead_letters
            .get_or_create(&DeadLetterLabels {
                table: crate::metrics::label_value(&record.table),
                cause,
            })
            .inc();
        self.metrics
            .health
            .dead_lettered(&self.dead_letter_topic, cause, info);
        let Some((value, columns)) = placeholder else {
            return Ok(TrySend::Sent);
        };
        let mut placeholder_headers: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        for (name, value) in dead_letter::PLACEHOLDER_HEADERS.iter().zip([
            self.dead_letter_topic.as_bytes().to_vec(),
            cause.as_bytes().to_vec(),
            size.into_bytes(),
            columns.join(",").into_bytes(),
        ]) {
            placeholder_headers.push(((*name).to_owned(), value));
        }
        *self
            .pending_placeholder
            .lock()
            .expect("pending placeholder") = Some(PendingPlaceholder {
            seq,
            value,
            headers: placeholder_headers,
        });
        self.resume_placeholder(record, seq)
            .unwrap_or(Ok(TrySend::Full))
    }

    /// Sends the placeholder waiting under `seq`, if one is.
    fn resume_placeholder(&self, record: &Record, seq: u64) -> Option<Result<TrySend, CdcError>> {
        let mut pending = self
            .pending_placeholder
            .lock()
            .expect("pending placeholder");
        if pending.as_ref().is_none_or(|p| p.seq != seq) {
            return None;
        }
        let placeholder = pending.as_ref().expect("a pending placeholder");
        let headers: Vec<(&str, &[u8])> = placeholder
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let result = self.produce(
            &record.topic,
            record.key.as_deref(),
            Some(&placeholder.value),
            &headers,
            seq,
        );
        Some(match result {
            Ok(()) => {
                *pending = None;
                Ok(TrySend::Sent)
            }
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => Ok(TrySend::Full),
            Err(error) => {
                *pending = None;
                let reason = format!("its placeholder was refused: {error}");
                Err(CdcError::Delivery(match error.rdkafka_error_code() {
                    Some(code) => DeliveryFailure::kafka(code, reason, record_info(record)),
                    None => DeliveryFailure {
                        code: None,
                        reason,
                        record: Some(record_info(record)),
                    },
                }))
            }
        })
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

/// What a failure says about `record`: its table, topic, key, and key and value bytes.
fn record_info(record: &Record) -> RecordInfo {
    let size = record.key.as_ref().map_or(0, Vec::len) + record.value.as_ref().map_or(0, Vec::len);
    RecordInfo::new(&record.table, &record.topic, record.key.as_deref(), size)
}
