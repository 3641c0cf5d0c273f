//! The consumer of one view: assigns the view's partitions itself (global or explicit
//! partitions) or takes them from a consumer group's rebalance ([`Partitions::Group`], in
//! `consumer/group.rs`); either way no consumer-group offsets are relied on: each partition is sought to
//! the offset stored with the view's rows, and moves records through
//! a bounded channel (backpressure: a slow store stops the fetching, nothing piles up) to the
//! applier, which decodes them with the event contract and writes batches of up to
//! `batch_max_events` events or `batch_max_ms` milliseconds in one transaction with their
//! offsets. A watermark monitor keeps readiness and lag current, and notices a broker that is
//! away; the view keeps serving what it has meanwhile.
//!
//! ```text
//!  broker --recv--> poller --bounded channel--> applier --one transaction--> store (rows + offsets)
//!    \                                              \--> ViewStatus (offsets, position, ts)
//!     \--watermarks (every watermark_interval_ms)---------> ViewStatus (high, broker up/down)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

mod group;
mod transaction;

pub use transaction::{
    DEFAULT_SETTLE_MS, TransactionalViews, ViewsHandle, rebuild_transactional, start_transactional,
};

use crate::error::{EventError, ViewError};
use crate::event::{Event, Op, Position};
use crate::ready::ViewStatus;
use crate::store::{Batch, Change, Progress, Statements, Store};
use crate::view::{Cell, Column, ViewSpec, decode_row};

/// Which partitions of the topic this instance holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitions {
    /// Every partition: the whole table (global mode, for small lookup views every instance
    /// holds whole).
    All,
    /// These partitions only (partitioned mode by explicit assignment: instance i of n takes
    /// its share; each instance stores only its partitions).
    Only(Vec<i32>),
    /// Partitioned mode by a consumer group: the instances of a service share this `group.id`
    /// and the group's rebalance spreads the partitions over them. On an assignment the
    /// partitions are sought to the offsets stored in the view's store; on a revocation the
    /// records already polled are stored (the batch finishes) before the partitions are given
    /// up. Rows of revoked partitions are kept, not updated any more (see [`crate::consumer`]).
    Group(String),
}

/// How a view consumes.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub partitions: Partitions,
    /// Most events per store transaction.
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill once its first event arrived.
    pub batch_max_ms: u64,
    /// Records between the poller and the applier (the bound that makes backpressure; see
    /// [`ConsumerConfig::buffer_bound_events`]).
    pub channel_capacity: usize,
    /// Ready within this many events of the high watermark (0: only at it).
    pub max_lag_events: u64,
    /// How often the high watermarks are fetched, for lag and readiness.
    pub watermark_interval_ms: u64,
    /// How long the guard remembers a delete (`ficus_view_deletes`), measured in the topic's
    /// own time: a delete is forgotten once the view consumed, in its partition, a record
    /// appended this much later (record timestamps, capped at the clock). Safe when no stale
    /// change of a key can be appended this long after the key's delete (see the crate doc);
    /// 0 keeps every delete forever.
    pub delete_retention_ms: u64,
    /// Extra librdkafka settings (e.g. security); the ones the kit's guarantees rest on are
    /// set after these.
    pub properties: Vec<(String, String)>,
}

impl ConsumerConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            partitions: Partitions::All,
            batch_max_events: 1000,
            batch_max_ms: 20,
            channel_capacity: 2000,
            max_lag_events: 0,
            watermark_interval_ms: 1000,
            delete_retention_ms: 24 * 3600 * 1000,
            properties: Vec::new(),
        }
    }

    /// The most events a view holds taken from the broker but not stored
    /// (`ficus_view_buffered_events`): the channel full, a batch being written, and the one
    /// record the poller waits to hand over. A slower store only makes the poller wait; the
    /// rest stays in the broker (librdkafka's own prefetch is bounded per partition by
    /// `queued.max.messages.kbytes`). Whole-transaction apply holds a transaction whole on
    /// top of this, until its END and every event of it arrived.
    pub fn buffer_bound_events(&self) -> usize {
        self.channel_capacity.max(1) + self.batch_max_events.max(1) + 1
    }
}

/// A running view.
pub struct ViewHandle {
    pub status: Arc<ViewStatus>,
    pub store: Store,
    pub spec: ViewSpec,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ViewError>>>,
}

impl ViewHandle {
    /// Stops after the batch being written; returns the view's fatal error, if it had one.
    pub async fn stop(mut self) -> Result<(), ViewError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(ViewError::Stopped(format!("{}: {e}", self.spec.name)))),
            None => Ok(()),
        }
    }

    /// Stops at once, as a crash would: a batch being written is rolled back with its offsets.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Whether the consumer task ended (a fatal error, see [`ViewStatus::report`]).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for ViewHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts a view: validates it, prepares its tables, reads its stored offsets, and consumes
/// until stopped. Errors here are the ones no retry fixes (declaration, store); a broker that
/// is away is waited for.
pub async fn start(
    store: Store,
    spec: ViewSpec,
    config: ConsumerConfig,
) -> Result<ViewHandle, ViewError> {
    spec.validate()?;
    let statements = Statements::new(store.dialect(), &spec);
    store.prepare(&statements).await?;
    let progress = store.progress(&spec, &statements).await?;
    let status = Arc::new(ViewStatus::new(
        &spec.name,
        &spec.topic,
        config.max_lag_events,
    ));
    let (stop, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("view", view = %spec.name, topic = %spec.topic);
    let task = tokio::spawn(
        run(
            store.clone(),
            spec.clone(),
            statements,
            config,
            progress,
            status.clone(),
            stop_rx,
        )
        .instrument(span),
    );
    Ok(ViewHandle {
        status,
        store,
        spec,
        stop,
        task: Some(task),
    })
}

/// Empties a view and forgets its offsets: its next start replays the topic from the earliest
/// offset. Run it while no consumer of the view is running. Views applied a transaction at a
/// time are rebuilt together, with their group's place in the transaction topic:
/// [`rebuild_transactional`].
pub async fn rebuild(store: &Store, spec: &ViewSpec) -> Result<(), ViewError> {
    spec.validate()?;
    let statements = Statements::new(store.dialect(), spec);
    store.prepare(&statements).await?;
    store.rebuild(spec, &statements).await
}

/// What the poller hands the applier, in order.
enum Item {
    Record(Raw),
    /// Store what came before, then answer (a consumer group is revoking partitions).
    Flush(oneshot::Sender<()>),
}

/// A record on its way from the poller to the applier.
struct Raw {
    partition: i32,
    offset: i64,
    /// The record's timestamp (create or log-append time), when it has one.
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// Aborts a task when dropped, so an aborted view leaves nothing running.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn run(
    store: Store,
    spec: ViewSpec,
    statements: Statements,
    config: ConsumerConfig,
    progress: BTreeMap<i32, Progress>,
    status: Arc<ViewStatus>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let result = consume(
        &store,
        &spec,
        &statements,
        &config,
        progress,
        &status,
        &mut stop,
    )
    .await;
    if let Err(error) = &result {
        tracing::error!(%error, "the view stopped");
        status.failed(error.to_string());
    }
    result
}

fn client_config(name: &str, config: &ConsumerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    // A group member that vanished gives its partitions up after this (overridable).
    client.set("session.timeout.ms", "10000");
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    let group = match &config.partitions {
        Partitions::Group(group) => group.clone(),
        _ => format!("ficus-view-{name}"),
    };
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        // Eager rebalancing: every revocation takes the whole assignment (what the rebalance
        // callback below relies on), never cooperative increments.
        .set("partition.assignment.strategy", "range,roundrobin")
        // librdkafka's own prefetch queue is bounded too (per partition).
        .set("queued.max.messages.kbytes", "16384");
    client
}

fn client(spec: &ViewSpec, config: &ConsumerConfig) -> Result<Arc<StreamConsumer>, ViewError> {
    client_config(&spec.name, config)
        .create()
        .map(Arc::new)
        .map_err(ViewError::kafka("creating the consumer"))
}

/// The partitions to hold with their (low, high) watermarks.
fn discover(
    consumer: &StreamConsumer,
    topic: &str,
    want: &Partitions,
) -> Result<BTreeMap<i32, (i64, i64)>, ViewError> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(ViewError::kafka("fetching the topic's metadata"))?;
    let Some(meta) = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
    else {
        return Err(ViewError::UnknownTopic(topic.to_owned()));
    };
    let existing: Vec<i32> = meta.partitions().iter().map(|p| p.id()).collect();
    if existing.is_empty() {
        return Err(ViewError::UnknownTopic(topic.to_owned()));
    }
    let chosen = match want {
        Partitions::All | Partitions::Group(_) => existing,
        Partitions::Only(only) => {
            if let Some(missing) = only.iter().find(|p| !existing.contains(p)) {
                return Err(ViewError::Declaration(format!(
                    "partition {missing} of {topic} does not exist (it has {})",
                    existing.len()
                )));
            }
            only.clone()
        }
    };
    let mut marks = BTreeMap::new();
    for partition in chosen {
        let watermarks = consumer
            .fetch_watermarks(topic, partition, timeout)
            .map_err(ViewError::kafka("fetching watermarks"))?;
        marks.insert(partition, watermarks);
    }
    Ok(marks)
}

async fn consume(
    store: &Store,
    spec: &ViewSpec,
    statements: &Statements,
    config: &ConsumerConfig,
    progress: BTreeMap<i32, Progress>,
    status: &Arc<ViewStatus>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let consumer = client(spec, config)?;
    // Wait for the broker (the view serves what it stored meanwhile, not ready).
    let marks = loop {
        let (c, topic, want) = (
            consumer.clone(),
            spec.topic.clone(),
            config.partitions.clone(),
        );
        let found = tokio::task::spawn_blocking(move || discover(&c, &topic, &want))
            .await
            .map_err(|e| ViewError::Stopped(e.to_string()))?;
        match found {
            Ok(marks) => break marks,
            Err(error) if error.is_retriable() => {
                status.broker_down();
                tracing::warn!(%error, "waiting for the broker");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
            Err(error) => return Err(error),
        }
    };
    let (sender, receiver) = mpsc::channel(config.channel_capacity.max(1));
    let _monitor = AbortOnDrop(tokio::spawn(
        monitor(
            consumer.clone(),
            spec.topic.clone(),
            status.clone(),
            Duration::from_millis(config.watermark_interval_ms.max(50)),
        )
        .in_current_span(),
    ));
    if let Partitions::Group(_) = &config.partitions {
        let _poller = group::spawn(store, spec, statements, config, status, sender)?;
        return apply(store, spec, statements, config, status, receiver, stop).await;
    }
    let mut assignment = TopicPartitionList::new();
    let mut start = BTreeMap::new();
    for (&partition, &(low, high)) in &marks {
        let stored = progress.get(&partition).copied().unwrap_or_default();
        assignment
            .add_partition_offset(&spec.topic, partition, resume_at(stored))
            .map_err(ViewError::kafka("assigning partitions"))?;
        start.insert(partition, (stored, low, high));
    }
    consumer
        .assign(&assignment)
        .map_err(ViewError::kafka("assigning partitions"))?;
    tracing::info!(partitions = ?start, "consuming from the stored offsets");
    status.start(start);
    let _poller = AbortOnDrop(tokio::spawn(
        poll(consumer.clone(), status.clone(), sender).in_current_span(),
    ));
    apply(store, spec, statements, config, status, receiver, stop).await
}

/// Where a partition resumes: after the last event stored, or at its beginning.
fn resume_at(stored: Progress) -> Offset {
    if stored.next_offset > 0 {
        Offset::Offset(stored.next_offset)
    } else {
        Offset::Beginning
    }
}

async fn poll(consumer: Arc<StreamConsumer>, status: Arc<ViewStatus>, sender: mpsc::Sender<Item>) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                status.took();
                let raw = Raw {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                };
                drop(message);
                // Waits while the applier is behind: the backpressure.
                if sender.send(Item::Record(raw)).await.is_err() {
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "consumer error (librdkafka retries)");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn monitor(
    consumer: Arc<StreamConsumer>,
    topic: String,
    status: Arc<ViewStatus>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // The partitions held now (a consumer group changes them).
        let partitions = status.assigned();
        if partitions.is_empty() {
            continue;
        }
        let (c, t) = (consumer.clone(), topic.clone());
        let highs = tokio::task::spawn_blocking(move || {
            partitions
                .iter()
                .map(|&p| {
                    c.fetch_watermarks(&t, p, Duration::from_secs(2))
                        .map(|(_, high)| (p, high))
                })
                .collect::<Result<BTreeMap<i32, i64>, _>>()
        })
        .await;
        match highs {
            Ok(Ok(highs)) => status.watermarks(&highs),
            Ok(Err(error)) => {
                tracing::debug!(%error, "watermarks unavailable");
                status.broker_down();
            }
            Err(_) => return,
        }
    }
}

async fn apply(
    store: &Store,
    spec: &ViewSpec,
    statements: &Statements,
    config: &ConsumerConfig,
    status: &Arc<ViewStatus>,
    mut receiver: mpsc::Receiver<Item>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let columns: Vec<&Column> = spec.columns.iter().collect();
    let key_columns: Vec<&Column> = spec.key_columns().collect();
    let max = config.batch_max_events.max(1);
    let mut raws = Vec::with_capacity(max);
    let mut pruning = Pruning::new(config.delete_retention_ms);
    loop {
        let first = tokio::select! {
            item = receiver.recv() => item,
            _ = stop.changed() => return Ok(()),
        };
        raws.clear();
        let mut flush = None;
        match first {
            None => return Ok(()),
            Some(Item::Flush(done)) => {
                let _ = done.send(());
                continue;
            }
            Some(Item::Record(raw)) => raws.push(raw),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(config.batch_max_ms);
        while raws.len() < max {
            let item = match receiver.try_recv() {
                Ok(item) => item,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, receiver.recv()).await {
                        Ok(Some(item)) => item,
                        _ => break,
                    }
                }
            };
            match item {
                Item::Record(raw) => raws.push(raw),
                // A revocation: this batch is the last of the partitions given up.
                Item::Flush(done) => {
                    flush = Some(done);
                    break;
                }
            }
        }
        let mut batch = Batch::default();
        pruning.schedule(&raws, &mut batch);
        let mut last = None;
        for raw in &raws {
            let (change, source, _) = to_change(spec, &columns, &key_columns, raw)?;
            let progress = batch.offsets.entry(raw.partition).or_default();
            progress.next_offset = raw.offset + 1;
            progress.events += 1;
            batch.changes.push(change);
            // The batch's highest position: it interleaves partitions, so its last event is
            // not always its newest.
            if let Some(source) = source
                && last.is_none_or(|(p, _): (Position, i64)| source.0.supersedes(&p))
            {
                last = Some(source);
            }
        }
        let mut backoff = Duration::from_millis(100);
        let outcome = loop {
            match store.apply(spec, statements, &batch).await {
                Ok(outcome) => break outcome,
                Err(error) => {
                    // The store is away or refused: nothing of the batch is stored (one
                    // transaction), so trying again is exact.
                    tracing::warn!(%error, "storing a batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        status.stored(&batch.offsets, last, outcome.applied, outcome.stale);
        status.released(raws.len());
        if outcome.pruned > 0 {
            tracing::debug!(pruned = outcome.pruned, "deletes forgotten");
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

/// When to forget deletes: per partition, the cutoff (ms) last pruned to; a batch prunes again
/// once the cutoff moved by a tenth of the retention (at least a second), so pruning costs one
/// indexed statement now and then, not one per batch.
struct Pruning {
    retention_ms: i64,
    step_ms: i64,
    done: BTreeMap<i32, i64>,
}

impl Pruning {
    fn new(retention_ms: u64) -> Self {
        let retention_ms = i64::try_from(retention_ms).unwrap_or(i64::MAX);
        Self {
            retention_ms,
            step_ms: (retention_ms / 10).max(1000),
            done: BTreeMap::new(),
        }
    }

    fn schedule(&mut self, raws: &[Raw], batch: &mut Batch) {
        if self.retention_ms == 0 {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
        for raw in raws {
            if let Some(ts) = raw.timestamp_ms {
                let entry = newest.entry(raw.partition).or_insert(ts);
                *entry = (*entry).max(ts);
            }
        }
        for (partition, ts) in newest {
            // Capped at the clock: one record stamped in the future must not prune early.
            let cutoff = ts.min(now_ms).saturating_sub(self.retention_ms);
            let due = self
                .done
                .get(&partition)
                .is_none_or(|done| cutoff >= done + self.step_ms);
            if due {
                batch.prune_deletes.insert(partition, cutoff);
                self.done.insert(partition, cutoff);
            }
        }
    }
}

/// What a record does to a view, with its source position and commit time and its
/// transaction's id (when the adapter publishes transaction metadata).
type Decoded = (Change, Option<(Position, i64)>, Option<String>);

/// Decodes a record into what it does to the view.
fn to_change(
    spec: &ViewSpec,
    columns: &[&Column],
    key_columns: &[&Column],
    raw: &Raw,
) -> Result<Decoded, ViewError> {
    let event_error = |source: EventError| ViewError::Event {
        topic: spec.topic.clone(),
        partition: raw.partition,
        offset: raw.offset,
        source,
    };
    let value_error = |(column, message): (String, String)| ViewError::Value {
        topic: spec.topic.clone(),
        partition: raw.partition,
        offset: raw.offset,
        column,
        message,
    };
    let event = Event::decode(raw.key.as_deref(), raw.value.as_deref()).map_err(event_error)?;
    let key_cells = |key: &crate::event::Key| -> Result<Vec<Cell>, ViewError> {
        decode_row(key_columns, &key.0).map_err(value_error)
    };
    match event {
        Event::Tombstone { key } => Ok((
            Change::Tombstone {
                key_cells: key_cells(&key)?,
                key: key.canonical(),
            },
            None,
            None,
        )),
        Event::Change { key, envelope } => {
            let position = envelope.position().map_err(event_error)?;
            let source = Some((position, envelope.source.ts_ms));
            let change = match (envelope.op, key) {
                (Op::Truncate, _) => Change::Truncate { position },
                (Op::Delete, Some(key)) => Change::Delete {
                    key_cells: key_cells(&key)?,
                    key: key.canonical(),
                    position,
                    partition: raw.partition,
                    appended_ms: raw.timestamp_ms,
                },
                (Op::Create | Op::Update | Op::Read, Some(key)) => {
                    let after = envelope
                        .after
                        .as_ref()
                        .ok_or_else(|| event_error(EventError::Shape("no `after`")))?;
                    Change::Upsert {
                        cells: decode_row(columns, after).map_err(value_error)?,
                        key: key.canonical(),
                        position,
                        partition: raw.partition,
                    }
                }
                (_, None) => {
                    return Err(event_error(EventError::Shape("a row change without a key")));
                }
            };
            let transaction = envelope.transaction.as_ref().map(|t| t.id.clone());
            Ok((change, source, transaction))
        }
    }
}
