//! `ficus-view-bench` (run by `scripts/bench-view`): how fast a view restores from a change
//! topic, against a raw rdkafka consumer reading the same topic from the same broker in the
//! same run. Produces EVENTS change events (the adapter's envelope, updates over KEYS keys)
//! once to a fresh topic, then times: the raw consumer (assign every partition from the
//! beginning, poll to the high watermarks, touch each payload), the view into a fresh SQLite
//! file, the view into a fresh PostgreSQL database (start to ready: caught up with the high
//! watermarks, every batch committed with its offsets).
//!
//! Environment: FICUS_TEST_KAFKA_BROKERS, FICUS_TEST_DATABASE_URL (a database whose server it
//! creates and drops `ficus_bench_view_<run>` on), EVENTS (1000000), KEYS (100000),
//! PARTITIONS (3), BATCH (the view's batch_max_events, 1000).

use std::time::{Duration, Instant};

use ficus_view::{ColumnType, ConsumerConfig, Store, ViewSpec};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sqlx::{Connection, Executor, PgConnection};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn env_num(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(v) => v.parse().map_err(|e| format!("{name}={v}: {e}").into()),
        Err(_) => Ok(default),
    }
}

/// The value of event `i`: an update of key `i % keys`, as the adapter writes it (~420 B).
fn event(i: u64, keys: u64) -> (String, String) {
    let id = i % keys;
    let lsn = 1_000_000 + i * 64;
    let value = format!(
        concat!(
            r#"{{"before":null,"after":{{"id":{id},"name":"person {id} version {i}","n":{i}}},"#,
            r#""source":{{"version":"ficus-bench","connector":"postgresql","name":"bench","ts_ms":{ts},"#,
            r#""snapshot":"false","db":"app","sequence":"[\"{commit}\",\"{lsn}\"]","schema":"public","#,
            r#""table":"people","txId":{tx},"lsn":{lsn},"xmin":null}},"op":"u","ts_ms":{ts},"transaction":null}}"#
        ),
        id = id,
        i = i,
        ts = 1_700_000_000_000u64 + i / 100,
        commit = lsn - 64,
        lsn = lsn,
        tx = 1000 + i,
    );
    (format!(r#"{{"id":{id}}}"#), value)
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics([&new], &options).await? {
        result.map_err(|(t, e)| format!("creating {t}: {e}"))?;
    }
    Ok(())
}

/// Produces the events as fast as the broker takes them (idempotent, batched).
fn produce(brokers: &str, topic: &str, events: u64, keys: u64) -> Result<f64, Error> {
    let producer: ThreadedProducer<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "200000")
        .create()?;
    let started = Instant::now();
    for i in 0..events {
        let (key, value) = event(i, keys);
        let mut record = BaseRecord::to(topic).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(started.elapsed().as_secs_f64())
}

/// The raw consumer: every partition from the beginning to its high watermark.
fn raw_consume(brokers: &str, topic: &str, partitions: i32) -> Result<(u64, f64), Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("ficus-bench-raw-{topic}"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()?;
    let mut highs = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        highs.push(high);
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let mut next = vec![0i64; partitions as usize];
    let (mut count, mut bytes) = (0u64, 0usize);
    while next.iter().zip(&highs).any(|(n, h)| n < h) {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                bytes +=
                    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len);
                next[message.partition() as usize] = message.offset() + 1;
                count += 1;
            }
            Some(Err(e)) => eprintln!("raw consumer: {e}"),
            None => {}
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("raw consumer: {count} records, {bytes} bytes");
    Ok((count, elapsed))
}

/// A view restored into `store` from the start to ready.
async fn restore(
    store: Store,
    spec: &ViewSpec,
    brokers: &str,
    batch: usize,
) -> Result<(u64, f64), Error> {
    let mut config = ConsumerConfig::new(brokers);
    config.batch_max_events = batch;
    config.channel_capacity = batch * 4;
    config.watermark_interval_ms = 1000;
    let started = Instant::now();
    let view = ficus_view::start(store, spec.clone(), config).await?;
    while !view.status.is_ready() {
        if view.is_finished() {
            return Err(format!("the view stopped: {:?}", view.status.report().failure).into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let consumed = view.status.report().consumed;
    view.stop().await?;
    Ok((consumed, elapsed))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let brokers = env_or("FICUS_TEST_KAFKA_BROKERS", "127.0.0.1:9092");
    let database_url = std::env::var("FICUS_TEST_DATABASE_URL")
        .map_err(|_| "FICUS_TEST_DATABASE_URL is not set (eval \"$(scripts/services env)\")")?;
    let events = env_num("EVENTS", 1_000_000)?;
    let keys = env_num("KEYS", 100_000)?;
    let partitions = i32::try_from(env_num("PARTITIONS", 3)?)?;
    let batch = usize::try_from(env_num("BATCH", 1000)?)?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let topic = format!("ficus-bench-view-{run}");

    create_topic(&brokers, &topic, partitions).await?;
    let (b, t) = (brokers.clone(), topic.clone());
    let produced = tokio::task::spawn_blocking(move || produce(&b, &t, events, keys)).await??;
    println!(
        "produced   {events} events ({keys} keys, {partitions} partitions) in {produced:.1} s: {:.0} records/s",
        events as f64 / produced
    );

    let (b, t) = (brokers.clone(), topic.clone());
    let (raw_count, raw_secs) =
        tokio::task::spawn_blocking(move || raw_consume(&b, &t, partitions)).await??;
    let raw_rate = raw_count as f64 / raw_secs;
    println!("raw        {raw_count} records in {raw_secs:.1} s: {raw_rate:.0} records/s");

    let spec = ViewSpec::new("people", &topic)
        .key("id", ColumnType::BigInt)
        .column("name", ColumnType::Text)
        .column("n", ColumnType::BigInt);

    // SQLite: a fresh file.
    let dir = std::env::temp_dir().join(format!("ficus-bench-view-{run}"));
    std::fs::create_dir_all(&dir)?;
    let sqlite = Store::open(&dir.join("view.db").display().to_string()).await?;
    let (count, secs) = restore(sqlite, &spec, &brokers, batch).await?;
    let rate = count as f64 / secs;
    println!(
        "sqlite     {count} records in {secs:.1} s: {rate:.0} records/s = {:.2}x raw (goal 0.7x)",
        rate / raw_rate
    );
    let _ = std::fs::remove_dir_all(&dir);

    // PostgreSQL: a fresh database on the same server.
    let db = format!("ficus_bench_view_{run}");
    let mut admin = PgConnection::connect(&database_url).await?;
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await?;
    let url = match database_url.rfind('/') {
        Some(i) => format!("{}/{db}", &database_url[..i]),
        None => return Err("FICUS_TEST_DATABASE_URL has no database part".into()),
    };
    let pg = Store::open(&url).await?;
    let result = restore(pg.clone(), &spec, &brokers, batch).await;
    if let Store::Postgres(pool) = pg {
        pool.close().await;
    }
    admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await?;
    let (count, secs) = result?;
    let rate = count as f64 / secs;
    println!(
        "postgres   {count} records in {secs:.1} s: {rate:.0} records/s = {:.2}x raw (goal 0.5x)",
        rate / raw_rate
    );
    Ok(())
}
