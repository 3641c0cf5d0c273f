//! The broker's ceiling for the benchmark: a plain rdkafka producer, configured like the
//! adapter's (idempotent, `acks=all`), sending `count` messages of `size` bytes to one topic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::error::CdcError;

struct Counting {
    acked: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.acked.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Creates `topic` (one partition, like the adapter's default), then sends `count` messages of
/// `size` bytes (keys like the adapter's) and returns messages per second from the first send
/// to the last acknowledgement.
pub async fn produce_raw(
    brokers: &str,
    topic: &str,
    count: u64,
    size: usize,
) -> Result<f64, CdcError> {
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .map_err(CdcError::kafka("creating the admin client"))?;
    let new = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&new], &rdkafka::admin::AdminOptions::new())
        .await
        .map_err(CdcError::kafka("creating the bench topic"))?
    {
        if let Err((name, code)) = result
            && code != RDKafkaErrorCode::TopicAlreadyExists
        {
            return Err(CdcError::Kafka {
                context: format!("creating topic {name}"),
                source: KafkaError::AdminOp(code),
            });
        }
    }
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || produce_blocking(&brokers, &topic, count, size))
        .await
        .map_err(|e| {
            CdcError::Delivery(crate::error::DeliveryFailure::message(format!(
                "bench producer: {e}"
            )))
        })?
}

fn produce_blocking(brokers: &str, topic: &str, count: u64, size: usize) -> Result<f64, CdcError> {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "110000")
        .set("partitioner", "murmur2_random")
        .create_with_context(Counting {
            acked: acked.clone(),
            failed: failed.clone(),
        })
        .map_err(CdcError::kafka("creating the bench producer"))?;
    let payload = vec![b'x'; size];
    let started = Instant::now();
    for i in 0..count {
        let key = format!("{{\"id\":{i}}}");
        loop {
            match producer.send(BaseRecord::to(topic).key(&key).payload(&payload)) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(CdcError::kafka("sending")(error)),
            }
        }
    }
    producer
        .flush(Duration::from_secs(600))
        .map_err(CdcError::kafka("flushing"))?;
    let elapsed = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(CdcError::Delivery(crate::error::DeliveryFailure::message(
            format!("{failed} messages failed"),
        )));
    }
    // Sanity: the broker holds what was acknowledged.
    let (_, high) = producer
        .client()
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .map_err(CdcError::kafka("reading the bench topic's watermark"))?;
    let acked = acked.load(Ordering::Relaxed);
    if high < acked as i64 {
        return Err(CdcError::Delivery(crate::error::DeliveryFailure::message(
            format!("{acked} acknowledged but the topic's high watermark is {high}"),
        )));
    }
    Ok(acked as f64 / elapsed)
}

/// The broker's own round trip: `count` messages of `size` bytes sent one at a time, each
/// waiting for its acknowledgement; returns the p50 and p99 in milliseconds.
pub fn round_trips(
    brokers: &str,
    topic: &str,
    count: u64,
    size: usize,
) -> Result<(f64, f64), CdcError> {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let producer: ThreadedProducer<Counting> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .create_with_context(Counting {
            acked: acked.clone(),
            failed: failed.clone(),
        })
        .map_err(CdcError::kafka("creating the bench producer"))?;
    let payload = vec![b'x'; size];
    let mut samples = Vec::with_capacity(count as usize);
    for i in 0..=count {
        let key = format!("{{\"id\":{i}}}");
        let before = acked.load(Ordering::SeqCst);
        let started = Instant::now();
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&payload))
            .map_err(|(e, _)| CdcError::kafka("sending")(e))?;
        while acked.load(Ordering::SeqCst) == before {
            if failed.load(Ordering::SeqCst) > 0 {
                return Err(CdcError::Delivery(crate::error::DeliveryFailure::message(
                    "a message failed",
                )));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        // The first message also waits for the topic's metadata: not a round trip.
        if i > 0 {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Ok((at(0.5), at(0.99)))
}
