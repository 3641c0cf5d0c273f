//! Whole-transaction apply: several views of one store, over their change topics and the
//! adapter's transaction topic (`<prefix>.transaction`, Debezium's
//! `provide.transaction.metadata`), applied a monolith transaction at a time, so a transaction
//! that touched several tables becomes visible in the views at once, never half.
//!
//! ```text
//!  people topic ---\
//!  tasks topic -----+--> one consumer (every partition, at the stored offsets) --bounded channel-->
//!  transaction topic/      applier: a queue per partition + the transaction markers in order
//!                          -> units (a whole transaction, or one event without one)
//!                          -> ONE store transaction { every view's rows, every topic's offsets }
//! ```
//!
//! How a transaction becomes a unit: its END record names how many events it wrote per table
//! (`data_collections`); once the heads of the partition queues hold that many events of it
//! (`transaction.id`, `<txId>:<lsn>`: the same `txId`) for the views' tables, they are taken
//! together (with the tombstones
//! right behind its deletes). Transactions are taken in commit order (below), and a partition's events are taken in offset order, so the offsets stored are always
//! a transaction boundary: a crash anywhere leaves each transaction in the store whole or not at
//! all, and the restart (data topics and the transaction topic resume at their stored offsets)
//! takes it again whole. Events without a `transaction` block (snapshot reads, an adapter
//! without transaction metadata) and tombstones are units of their own, as in a single view.
//! An event at a queue's head whose transaction was taken already, or is older than the one
//! being completed (an adapter's re-delivery whose END was taken before) is a unit of its own
//! too: the guard makes it a no-op. The guard, deletes, truncates and pruning are the single view's
//! ([`crate::store`]).
//!
//! **Commit order** over a transaction topic of several partitions (the adapter and Debezium
//! create it with `kafka.topic_partitions` partitions, records keyed by id): each partition is
//! in the order the adapter wrote it, which is commit order, but the partitions are not ordered
//! with each other. An END's id is `<txId>:<lsn>`, the LSN its commit's (the adapter: the
//! commit record's end, which the next transaction's events carry as `sequence[0]`); the next
//! END to complete is the earliest at the head of a partition, taken only once no partition
//! can still deliver an earlier one. A partition is proven when
//! 1. it delivered a record (BEGIN or END) positioned after that END: its earlier records came
//!    before (a BEGIN's position is below its own commit, so a later BEGIN is a later
//!    transaction); or
//! 2. the END's events name the last END taken as their previous commit (`sequence[0]`):
//!    nothing committed in between, so no partition holds an earlier one (the adapter's
//!    chain; an END of a transaction the adapter filtered out, or Debezium's other
//!    conventions, break it and fall back to 1 and 3); or
//! 3. it stayed at its high watermark, nothing later received, for `settle_ms`
//!    ([`TransactionalViews::settle_ms`], 1 s by default) after the END came to the head:
//!    the adapter wrote the earlier END before, so it is in the broker unless its producer is
//!    late by more than that. Neither the adapter's nor Debezium's heartbeats carry a position
//!    (only `ts_ms`), so a quiet partition has no better proof. If the assumption fails (a
//!    producer retry longer than `settle_ms`), a later transaction is visible before an
//!    earlier one of other rows for a moment; rows never regress (the guard).
//!
//! The last END taken is stored with the offsets (in the same store transaction,
//! `ficus_view_transactions`), so 2 holds across a restart too: the first transaction after it
//! names the END stored last.
//!
//! A busy topic proves by 1, a quiet adapter by 2; 3 costs `settle_ms` of lag, after a
//! transaction of tables outside the adapter's capture (or of a store that applied none yet). With one partition the order is
//! the topic's and nothing waits.
//!
//! The price: a transaction waits until its END and its last event arrived, so the views
//! lag by that much more; and the events of a transaction wait in memory until it is whole
//! (bounded by the largest transaction). Global mode only ([`super::Partitions::All`]): a
//! transaction is whole only where every partition of every topic is held.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use super::{
    AbortOnDrop, ConsumerConfig, Partitions, Pruning, Raw, client_config, discover, monitor,
    resume_at, to_change,
};
use crate::error::ViewError;
use crate::event::{Position, TransactionMarker, TransactionStatus};
use crate::ready::ViewStatus;
use crate::store::{Batch, Change, GroupProgress, Progress, Statements, Store};
use crate::view::{Column, ViewSpec};

/// Views applied a whole source transaction at a time.
#[derive(Debug, Clone)]
pub struct TransactionalViews {
    /// Names the group: its consumer and the stored offsets of the transaction topic.
    pub name: String,
    /// The adapter's transaction topic (`<prefix>.transaction`).
    pub transaction_topic: String,
    pub views: Vec<ViewSpec>,
    /// With several partitions of the transaction topic: how long a partition must stay at its
    /// high watermark, with nothing later received in it, before it counts as holding nothing
    /// earlier than the transaction waiting (see the module doc, "Commit order").
    pub settle_ms: u64,
}

/// The default [`TransactionalViews::settle_ms`].
pub const DEFAULT_SETTLE_MS: u64 = 1000;

impl TransactionalViews {
    pub fn new(name: impl Into<String>, transaction_topic: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            transaction_topic: transaction_topic.into(),
            views: Vec::new(),
            settle_ms: DEFAULT_SETTLE_MS,
        }
    }

    pub fn settle_ms(mut self, ms: u64) -> Self {
        self.settle_ms = ms;
        self
    }

    pub fn view(mut self, spec: ViewSpec) -> Self {
        self.views.push(spec);
        self
    }

    fn validate(&self) -> Result<(), ViewError> {
        if self.views.is_empty() {
            return Err(ViewError::Declaration(format!(
                "transactional views {}: no view",
                self.name
            )));
        }
        let mut topics = Vec::new();
        for spec in &self.views {
            spec.validate()?;
            if spec.topic == self.transaction_topic || topics.contains(&&spec.topic) {
                return Err(ViewError::Declaration(format!(
                    "transactional views {}: topic {} is taken twice",
                    self.name, spec.topic
                )));
            }
            topics.push(&spec.topic);
        }
        Ok(())
    }
}

/// The table (`data_collection`, `<schema>.<table>`) a change topic carries: the topic's last two
/// dot-separated parts (`<prefix>.<schema>.<table>`). A transaction's END names tables this way,
/// possibly with the database in front.
fn collection_of(topic: &str) -> String {
    let parts: Vec<&str> = topic.rsplitn(3, '.').collect();
    match parts.as_slice() {
        [table, schema, ..] => format!("{schema}.{table}"),
        _ => topic.to_owned(),
    }
}

fn same_collection(named: &str, ours: &str) -> bool {
    named == ours
        || named
            .strip_suffix(ours)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Running transactional views.
pub struct ViewsHandle {
    /// One per view, in declaration order.
    pub statuses: Vec<Arc<ViewStatus>>,
    pub store: Store,
    pub views: Vec<ViewSpec>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<Result<(), ViewError>>>,
}

impl ViewsHandle {
    /// Stops after the batch being written; returns the fatal error, if there was one.
    pub async fn stop(mut self) -> Result<(), ViewError> {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task
                .await
                .unwrap_or_else(|e| Err(ViewError::Stopped(e.to_string()))),
            None => Ok(()),
        }
    }

    /// Stops at once, as a crash would: a batch being written is rolled back with its offsets.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Every view is ready.
    pub fn is_ready(&self) -> bool {
        self.statuses.iter().all(|s| s.is_ready())
    }
}

impl Drop for ViewsHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts transactional views (see the module doc). `config.partitions` must be
/// [`Partitions::All`].
pub async fn start_transactional(
    store: Store,
    group: TransactionalViews,
    config: ConsumerConfig,
) -> Result<ViewsHandle, ViewError> {
    group.validate()?;
    if config.partitions != Partitions::All {
        return Err(ViewError::Declaration(format!(
            "transactional views {}: whole transactions need every partition (Partitions::All)",
            group.name
        )));
    }
    let mut views = Vec::new();
    for spec in &group.views {
        let statements = Statements::new(store.dialect(), spec);
        store.prepare(&statements).await?;
        let progress = store.progress(spec, &statements).await?;
        let status = Arc::new(ViewStatus::new(
            &spec.name,
            &spec.topic,
            config.max_lag_events,
        ));
        views.push(Member {
            collection: collection_of(&spec.topic),
            spec: spec.clone(),
            statements,
            progress,
            status,
        });
    }
    // The transaction topic's offsets, stored like a view's under the group's name.
    let marker_spec = ViewSpec::new(&group.name, &group.transaction_topic);
    let marker_progress = store.progress(&marker_spec, &views[0].statements).await?;
    let last_end = store.last_end(&group.name).await?;
    let statuses = views.iter().map(|m| m.status.clone()).collect();
    let (stop, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("transactional views", name = %group.name);
    let task = tokio::spawn(
        run(
            store.clone(),
            group.clone(),
            views,
            (marker_progress, last_end),
            config,
            stop_rx,
        )
        .instrument(span),
    );
    Ok(ViewsHandle {
        statuses,
        store,
        views: group.views,
        stop,
        task: Some(task),
    })
}

/// Empties transactional views and forgets their offsets, and the group's offsets in the
/// transaction topic and the last END it took, in one store transaction: the next start
/// replays every topic from its earliest offset, each transaction whole again. (Rebuilding
/// the views alone with [`super::rebuild`] would leave the group past every END in the
/// transaction topic, with replayed events that no END completes: the views would stay empty
/// and never ready.) Run it while the group is not running.
pub async fn rebuild_transactional(
    store: &Store,
    group: &TransactionalViews,
) -> Result<(), ViewError> {
    group.validate()?;
    let mut statements = Vec::new();
    for spec in &group.views {
        let prepared = Statements::new(store.dialect(), spec);
        store.prepare(&prepared).await?;
        statements.push(prepared);
    }
    let views: Vec<(&ViewSpec, &Statements)> = group.views.iter().zip(&statements).collect();
    store
        .rebuild_group(&group.name, &group.transaction_topic, &views)
        .await
}

/// One view of the group.
struct Member {
    spec: ViewSpec,
    statements: Statements,
    progress: BTreeMap<i32, Progress>,
    status: Arc<ViewStatus>,
    collection: String,
}

/// What the group stored of the transaction topic: its offsets and the last END taken.
type Stored = (BTreeMap<i32, Progress>, Option<u64>);

async fn run(
    store: Store,
    group: TransactionalViews,
    views: Vec<Member>,
    stored: Stored,
    config: ConsumerConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let statuses: Vec<_> = views.iter().map(|m| m.status.clone()).collect();
    let result = consume(&store, &group, views, stored, &config, &mut stop).await;
    if let Err(error) = &result {
        tracing::error!(%error, "the transactional views stopped");
        for status in statuses {
            status.failed(error.to_string());
        }
    }
    result
}

/// A record and where it came from: a view's topic (its index) or the transaction topic.
struct Received {
    view: Option<usize>,
    raw: Raw,
}

async fn consume(
    store: &Store,
    group: &TransactionalViews,
    views: Vec<Member>,
    (marker_progress, last_end): Stored,
    config: &ConsumerConfig,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let consumer: Arc<StreamConsumer> = Arc::new(
        client_config(&group.name, config)
            .create()
            .map_err(ViewError::kafka("creating the consumer"))?,
    );
    let mut topics: Vec<String> = views.iter().map(|m| m.spec.topic.clone()).collect();
    topics.push(group.transaction_topic.clone());
    let mut marks = Vec::new();
    for topic in &topics {
        let found = loop {
            let (c, t) = (consumer.clone(), topic.clone());
            let found = tokio::task::spawn_blocking(move || discover(&c, &t, &Partitions::All))
                .await
                .map_err(|e| ViewError::Stopped(e.to_string()))?;
            match found {
                Ok(found) => break found,
                Err(error) if error.is_retriable() => {
                    for m in &views {
                        m.status.broker_down();
                    }
                    tracing::warn!(%error, "waiting for the broker");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                }
                Err(error) => return Err(error),
            }
        };
        marks.push(found);
    }
    let marker_marks = marks.pop().unwrap_or_default();
    let mut assignment = TopicPartitionList::new();
    for (member, marks) in views.iter().zip(&marks) {
        let mut start = BTreeMap::new();
        for (&partition, &(low, high)) in marks {
            let stored = member.progress.get(&partition).copied().unwrap_or_default();
            assignment
                .add_partition_offset(&member.spec.topic, partition, resume_at(stored))
                .map_err(ViewError::kafka("assigning partitions"))?;
            start.insert(partition, (stored, low, high));
        }
        member.status.start(start);
    }
    // Every partition of the transaction topic, each from its stored offset; what it has
    // delivered so far starts there (or at its log start).
    let mut marker_partitions = BTreeMap::new();
    for (&partition, &(low, _)) in &marker_marks {
        let stored = marker_progress.get(&partition).copied().unwrap_or_default();
        assignment
            .add_partition_offset(&group.transaction_topic, partition, resume_at(stored))
            .map_err(ViewError::kafka("assigning partitions"))?;
        marker_partitions.insert(
            partition,
            MarkerPartition {
                received: stored.next_offset.max(low),
                ..MarkerPartition::default()
            },
        );
    }
    consumer
        .assign(&assignment)
        .map_err(ViewError::kafka("assigning partitions"))?;
    let mut monitors = Vec::new();
    for member in &views {
        monitors.push(AbortOnDrop(tokio::spawn(
            monitor(
                consumer.clone(),
                member.spec.topic.clone(),
                member.status.clone(),
                Duration::from_millis(config.watermark_interval_ms.max(50)),
            )
            .in_current_span(),
        )));
    }
    let (sender, receiver) = mpsc::channel(config.channel_capacity.max(1));
    let index: HashMap<String, Option<usize>> = topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), (i < views.len()).then_some(i)))
        .collect();
    let statuses: Vec<Arc<ViewStatus>> = views.iter().map(|m| m.status.clone()).collect();
    let _poller = AbortOnDrop(tokio::spawn(
        poll(consumer.clone(), index, statuses, sender).in_current_span(),
    ));
    let mut applier = Applier::new(group, views, config, marker_partitions, consumer, last_end);
    applier.apply(store, receiver, stop).await
}

async fn poll(
    consumer: Arc<StreamConsumer>,
    index: HashMap<String, Option<usize>>,
    statuses: Vec<Arc<ViewStatus>>,
    sender: mpsc::Sender<Received>,
) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let view = index.get(message.topic()).copied().flatten();
                if let Some(status) = view.and_then(|v| statuses.get(v)) {
                    status.took();
                }
                let raw = Raw {
                    partition: message.partition(),
                    offset: message.offset(),
                    timestamp_ms: message.timestamp().to_millis(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().map(<[u8]>::to_vec),
                };
                drop(message);
                // Waits while the applier is behind: the backpressure.
                if sender.send(Received { view, raw }).await.is_err() {
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

/// A decoded record waiting at its partition's queue.
struct Pending {
    raw: Raw,
    change: Change,
    source: Option<(Position, i64)>,
    /// [`transaction_key`] of its `transaction.id`.
    transaction: Option<String>,
}

/// What the records of one transaction share in their ids. Debezium's PostgreSQL ids are
/// `<txId>:<lsn>` with the position of the record at hand (the BEGIN's, each event's own, the
/// COMMIT's for the END), so the transaction is the part before the colon; an id without one is
/// taken whole.
fn transaction_key(id: &str) -> &str {
    id.split_once(':').map_or(id, |(tx, _)| tx)
}

/// Events taken together: one transaction, or one event.
struct Unit {
    /// (view, event).
    events: Vec<(usize, Pending)>,
}

/// One partition of the transaction topic at the applier.
#[derive(Default)]
struct MarkerPartition {
    /// Markers received, not taken yet, in offset order: (offset, marker, its LSN).
    queue: VecDeque<(i64, TransactionMarker, Option<u64>)>,
    /// The offset after the last record received (everything before it was received).
    received: i64,
    /// The latest position of any marker received in it: nothing earlier can still come in
    /// this partition.
    latest: Option<u64>,
    /// Progress not yet stored (the markers taken since the last batch).
    progress: Progress,
}

/// The END waiting for the transaction topic's other partitions to prove that nothing
/// earlier can still come in them.
struct Waiting {
    /// The END's position.
    lsn: u64,
    /// When the partitions still unproven are checked against their high watermarks.
    check_at: tokio::time::Instant,
    /// Partitions found at their high watermark after waiting `settle`: they count as holding
    /// nothing earlier than `lsn`.
    settled: HashSet<i32>,
}

/// The position in a transaction record's id (`<txId>:<lsn>`): for an END, its commit's.
fn marker_lsn(id: &str) -> Option<u64> {
    id.split_once(':').and_then(|(_, lsn)| lsn.parse().ok())
}

struct Applier {
    views: Vec<Member>,
    columns: Vec<Vec<Column>>,
    queues: BTreeMap<(usize, i32), VecDeque<Pending>>,
    markers: BTreeMap<i32, MarkerPartition>,
    marker_topic: String,
    group_name: String,
    consumer: Arc<StreamConsumer>,
    batch_max_events: usize,
    batch_max_ms: u64,
    pruning: Vec<Pruning>,
    /// Transactions taken lately, to recognize their re-delivered events.
    taken: HashSet<String>,
    taken_order: VecDeque<String>,
    /// The position of the last END taken (in commit order): a transaction whose events name
    /// it as the previous commit (`sequence[0]`) is the next one. Read from the store at
    /// start, stored with the transaction topic's offsets.
    last_end: Option<u64>,
    /// The last END position stored (written again only when it moved).
    stored_end: Option<u64>,
    settle: Duration,
    waiting: Option<Waiting>,
}

/// How many taken transactions are remembered.
const TAKEN_REMEMBERED: usize = 100_000;

impl Applier {
    fn new(
        group: &TransactionalViews,
        views: Vec<Member>,
        config: &ConsumerConfig,
        markers: BTreeMap<i32, MarkerPartition>,
        consumer: Arc<StreamConsumer>,
        last_end: Option<u64>,
    ) -> Self {
        Self {
            columns: views.iter().map(|m| m.spec.columns.clone()).collect(),
            pruning: views
                .iter()
                .map(|_| Pruning::new(config.delete_retention_ms))
                .collect(),
            views,
            queues: BTreeMap::new(),
            markers,
            marker_topic: group.transaction_topic.clone(),
            group_name: group.name.clone(),
            consumer,
            batch_max_events: config.batch_max_events.max(1),
            batch_max_ms: config.batch_max_ms,
            taken: HashSet::new(),
            taken_order: VecDeque::new(),
            last_end,
            stored_end: last_end,
            settle: Duration::from_millis(group.settle_ms),
            waiting: None,
        }
    }

    /// Takes a record in: into its partition's queue, or the markers.
    fn receive(&mut self, received: Received) -> Result<(), ViewError> {
        let Received { view, raw } = received;
        match view {
            None => {
                let marker = TransactionMarker::decode(raw.value.as_deref()).map_err(|source| {
                    ViewError::Event {
                        topic: self.marker_topic.clone(),
                        partition: raw.partition,
                        offset: raw.offset,
                        source,
                    }
                })?;
                let lsn = marker_lsn(&marker.id);
                if lsn.is_none() && self.markers.len() > 1 {
                    return Err(ViewError::Declaration(format!(
                        "transaction topic {} partition {} offset {}: the id {:?} carries no \
                         position (`<txId>:<lsn>`); with several partitions the commit order \
                         comes from it",
                        self.marker_topic, raw.partition, raw.offset, marker.id
                    )));
                }
                let partition = self.markers.entry(raw.partition).or_default();
                partition.received = partition.received.max(raw.offset + 1);
                partition.latest = partition.latest.max(lsn);
                partition.queue.push_back((raw.offset, marker, lsn));
            }
            Some(v) => {
                let spec = &self.views[v].spec;
                let columns: Vec<&Column> = self.columns[v].iter().collect();
                let key_columns: Vec<&Column> = columns.iter().copied().filter(|c| c.key).collect();
                let (change, source, transaction) = to_change(spec, &columns, &key_columns, &raw)?;
                let transaction = transaction.map(|id| transaction_key(&id).to_owned());
                self.queues
                    .entry((v, raw.partition))
                    .or_default()
                    .push_back(Pending {
                        raw,
                        change,
                        source,
                        transaction,
                    });
            }
        }
        Ok(())
    }

    /// Remembers a transaction taken (the last [`TAKEN_REMEMBERED`]).
    fn remember(&mut self, id: &str) {
        if self.taken.insert(id.to_owned()) {
            self.taken_order.push_back(id.to_owned());
            if self.taken_order.len() > TAKEN_REMEMBERED
                && let Some(old) = self.taken_order.pop_front()
            {
                self.taken.remove(&old);
            }
        }
    }

    /// Takes the head marker of `partition`.
    fn take_marker(&mut self, partition: i32) -> Option<(TransactionMarker, Option<u64>)> {
        let markers = self.markers.get_mut(&partition)?;
        let (offset, marker, lsn) = markers.queue.pop_front()?;
        markers.progress.next_offset = offset + 1;
        markers.progress.events += 1;
        Some((marker, lsn))
    }

    /// The END to complete next: the earliest (by position) at the head of a partition, once
    /// no partition can still deliver an earlier one (see the module doc, "Commit order").
    /// BEGIN records at the heads are taken on the way (they only mark positions).
    fn next_end(&mut self) -> Option<i32> {
        let begins: Vec<i32> = self
            .markers
            .iter()
            .filter(|(_, m)| {
                m.queue
                    .front()
                    .is_some_and(|(_, marker, _)| marker.status == TransactionStatus::Begin)
            })
            .map(|(&p, _)| p)
            .collect();
        for partition in begins {
            while self.markers[&partition]
                .queue
                .front()
                .is_some_and(|(_, marker, _)| marker.status == TransactionStatus::Begin)
            {
                self.take_marker(partition);
            }
        }
        if self.markers.len() == 1 {
            let (&partition, markers) = self.markers.iter().next()?;
            return markers.queue.front().map(|_| partition);
        }
        // Several partitions: every head END carries a position (checked on receipt).
        let (partition, lsn) = self
            .markers
            .iter()
            .filter_map(|(&p, m)| m.queue.front().and_then(|(_, _, lsn)| lsn.map(|l| (p, l))))
            .min_by_key(|&(_, lsn)| lsn)?;
        if self.waiting.as_ref().is_none_or(|w| w.lsn != lsn) {
            self.waiting = Some(Waiting {
                lsn,
                check_at: tokio::time::Instant::now() + self.settle,
                settled: HashSet::new(),
            });
        }
        Some(partition)
    }

    /// Partitions of the transaction topic that might still deliver an END earlier than
    /// `lsn`: nothing later than it received there, and not settled at the high watermark.
    fn unproven(&self, lsn: u64) -> Vec<i32> {
        let settled = self.waiting.as_ref().filter(|w| w.lsn == lsn);
        self.markers
            .iter()
            .filter(|&(p, m)| {
                m.latest.is_none_or(|latest| latest < lsn)
                    && settled.is_none_or(|w| !w.settled.contains(p))
            })
            .map(|(&p, _)| p)
            .collect()
    }

    /// Checks the partitions still unproven for the waiting END against their high
    /// watermarks (called once `settle` passed): one at its high watermark, with nothing later
    /// than the END received, settles.
    async fn settle_check(&mut self) {
        let Some(waiting) = &self.waiting else { return };
        let lsn = waiting.lsn;
        for partition in self.unproven(lsn) {
            let (consumer, topic) = (self.consumer.clone(), self.marker_topic.clone());
            let high = tokio::task::spawn_blocking(move || {
                consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5))
            })
            .await;
            let received = self.markers[&partition].received;
            if let Ok(Ok((_, high))) = high
                && high <= received
                && let Some(waiting) = &mut self.waiting
            {
                tracing::debug!(partition, lsn, "settled at the high watermark");
                waiting.settled.insert(partition);
            }
        }
        if let Some(waiting) = &mut self.waiting {
            waiting.check_at = tokio::time::Instant::now() + self.settle;
        }
    }

    /// When the waiting END's partitions are checked next, if it waits on any.
    fn settle_deadline(&self) -> Option<tokio::time::Instant> {
        let waiting = self.waiting.as_ref()?;
        (!self.unproven(waiting.lsn).is_empty()).then_some(waiting.check_at)
    }

    /// The next unit the queues hold, if one is whole.
    fn next_unit(&mut self) -> Option<Unit> {
        // Events outside any transaction go as they are.
        let single = self.queues.iter().find_map(|(&at, queue)| {
            queue
                .front()
                .filter(|p| p.transaction.is_none())
                .map(|_| at)
        });
        if let Some(at) = single {
            let pending = self.queues.get_mut(&at)?.pop_front()?;
            return Some(Unit {
                events: vec![(at.0, pending)],
            });
        }
        loop {
            let partition = self.next_end();
            let Some(partition) = partition else {
                return self.stale_head(None, None);
            };
            let (_, marker, lsn) = self.markers[&partition].queue.front()?;
            let lsn = *lsn;
            let needed: u64 = marker.events_in(|named| {
                self.views
                    .iter()
                    .any(|m| same_collection(named, &m.collection))
            });
            let id = transaction_key(&marker.id).to_owned();
            let mut found = 0u64;
            let mut oldest: Option<Position> = None;
            // Its events name the previous commit (`sequence[0]`): the last END taken.
            let mut follows_last = false;
            for queue in self.queues.values() {
                for pending in queue
                    .iter()
                    .take_while(|p| p.transaction.as_deref() == Some(id.as_str()))
                {
                    found += 1;
                    if let Some((position, _)) = pending.source {
                        follows_last |=
                            position.commit_lsn.is_some() && position.commit_lsn == self.last_end;
                        if oldest.is_none_or(|o| position.compare(&o).is_lt()) {
                            oldest = Some(position);
                        }
                    }
                }
            }
            let in_order = match lsn {
                Some(lsn) if self.markers.len() > 1 => {
                    follows_last || self.unproven(lsn).iter().all(|&p| p == partition)
                }
                _ => true,
            };
            if !in_order {
                // An earlier END may still come: only heads of transactions taken before go
                // meanwhile (a head older than this one may be of that earlier transaction).
                return self.stale_head(Some(&id), None);
            }
            if needed == 0 {
                // A transaction of other tables only.
                self.take_marker(partition);
                self.last_end = lsn.or(self.last_end);
                continue;
            }
            if found >= needed {
                self.take_marker(partition);
                self.last_end = lsn.or(self.last_end);
                self.waiting = None;
                self.remember(&id);
                let mut events = Vec::new();
                for (&(v, _), queue) in self.queues.iter_mut() {
                    while queue
                        .front()
                        .is_some_and(|p| p.transaction.as_deref() == Some(id.as_str()))
                    {
                        let pending = queue.pop_front().expect("a front");
                        events.push((v, pending));
                        // The tombstone right behind a delete belongs with it.
                        while queue
                            .front()
                            .is_some_and(|p| matches!(p.change, Change::Tombstone { .. }))
                        {
                            events.push((v, queue.pop_front().expect("a front")));
                        }
                    }
                }
                return Some(Unit { events });
            }
            return self.stale_head(Some(&id), oldest);
        }
    }

    /// A head that would wait forever goes alone (a no-op by the guard): one of a transaction
    /// taken before (a re-delivery whose END was taken already), or older than the
    /// transaction `id` being completed (its oldest event at `oldest`).
    fn stale_head(&mut self, id: Option<&str>, oldest: Option<Position>) -> Option<Unit> {
        let stale = self.queues.iter().find_map(|(&at, queue)| {
            queue
                .front()
                .filter(|p| {
                    p.transaction.as_deref() != id
                        && (p
                            .transaction
                            .as_ref()
                            .is_some_and(|t| self.taken.contains(t))
                            || p.source.zip(oldest).is_some_and(|((position, _), oldest)| {
                                position.compare(&oldest).is_lt()
                            }))
                })
                .map(|_| at)
        });
        let at = stale?;
        let pending = self.queues.get_mut(&at)?.pop_front()?;
        Some(Unit {
            events: vec![(at.0, pending)],
        })
    }

    async fn apply(
        &mut self,
        store: &Store,
        mut receiver: mpsc::Receiver<Received>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ViewError> {
        loop {
            let mut units = Vec::new();
            let mut events = 0usize;
            let mut deadline = None;
            loop {
                while events < self.batch_max_events {
                    match self.next_unit() {
                        Some(unit) => {
                            events += unit.events.len();
                            units.push(unit);
                        }
                        None => break,
                    }
                }
                if events >= self.batch_max_events {
                    break;
                }
                if !units.is_empty() && deadline.is_none() {
                    deadline = Some(
                        tokio::time::Instant::now() + Duration::from_millis(self.batch_max_ms),
                    );
                }
                let item = match receiver.try_recv() {
                    Ok(item) => item,
                    Err(mpsc::error::TryRecvError::Disconnected) if units.is_empty() => {
                        return Ok(());
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) if units.is_empty() => {
                        // Nothing whole yet: wait for more, however long, checking the
                        // transaction topic's quiet partitions when an END waits on them.
                        let settle = self.settle_deadline();
                        tokio::select! {
                            item = receiver.recv() => match item {
                                Some(item) => item,
                                None => return Ok(()),
                            },
                            _ = tokio::time::sleep_until(settle.unwrap_or_else(tokio::time::Instant::now)), if settle.is_some() => {
                                self.settle_check().await;
                                continue;
                            }
                            _ = stop.changed() => return Ok(()),
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        let until = deadline.unwrap_or_else(tokio::time::Instant::now);
                        match tokio::time::timeout_at(until, receiver.recv()).await {
                            Ok(Some(item)) => item,
                            _ => break,
                        }
                    }
                };
                self.receive(item)?;
            }
            if units.is_empty() {
                continue;
            }
            self.store(store, units, stop).await?;
        }
    }

    /// Writes the units, every view's offsets and the transaction topic's, in one transaction.
    async fn store(
        &mut self,
        store: &Store,
        units: Vec<Unit>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ViewError> {
        let mut batches: Vec<Batch> = self.views.iter().map(|_| Batch::default()).collect();
        let mut raws: Vec<Vec<Raw>> = self.views.iter().map(|_| Vec::new()).collect();
        let mut last: Vec<Option<(Position, i64)>> = vec![None; self.views.len()];
        for unit in units {
            for (v, pending) in unit.events {
                let batch = &mut batches[v];
                let progress = batch.offsets.entry(pending.raw.partition).or_default();
                progress.next_offset = pending.raw.offset + 1;
                progress.events += 1;
                batch.changes.push(pending.change);
                if let Some(source) = pending.source
                    && last[v].is_none_or(|(p, _)| source.0.supersedes(&p))
                {
                    last[v] = Some(source);
                }
                raws[v].push(pending.raw);
            }
        }
        for ((pruning, raws), batch) in self.pruning.iter_mut().zip(&raws).zip(&mut batches) {
            pruning.schedule(raws, batch);
        }
        let marker_offsets: BTreeMap<i32, Progress> = self
            .markers
            .iter()
            .filter(|(_, m)| m.progress.events > 0)
            .map(|(&p, m)| (p, m.progress))
            .collect();
        let parts: Vec<(&ViewSpec, &Statements, &Batch)> = self
            .views
            .iter()
            .zip(&batches)
            .filter(|(_, b)| !b.changes.is_empty())
            .map(|(m, b)| (&m.spec, &m.statements, b))
            .collect();
        // The last END taken goes with the transaction topic's offsets: both name the same
        // point of the topic (every marker taken so far is in `marker_offsets`).
        let progress = [GroupProgress {
            group: self.group_name.as_str(),
            topic: self.marker_topic.as_str(),
            partitions: &marker_offsets,
            last_end_lsn: self.last_end.filter(|&end| self.stored_end != Some(end)),
        }];
        let mut backoff = Duration::from_millis(100);
        let outcomes = loop {
            match store.apply_all(&parts, &progress).await {
                Ok(outcomes) => break outcomes,
                Err(error) => {
                    // Nothing of it is stored (one transaction): trying again is exact.
                    tracing::warn!(%error, "storing a batch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        for markers in self.markers.values_mut() {
            markers.progress.events = 0;
        }
        self.stored_end = self.last_end;
        let mut outcomes = outcomes.into_iter();
        for (v, batch) in batches.iter().enumerate() {
            if batch.changes.is_empty() {
                continue;
            }
            let outcome = outcomes.next().unwrap_or_default();
            self.views[v]
                .status
                .stored(&batch.offsets, last[v], outcome.applied, outcome.stale);
        }
        for (member, raws) in self.views.iter().zip(&raws) {
            member.status.released(raws.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_names_its_table() {
        assert_eq!(collection_of("ficus.public.people"), "public.people");
        assert_eq!(collection_of("a.b.public.tasks"), "public.tasks");
        assert!(same_collection("public.people", "public.people"));
        assert!(same_collection("app.public.people", "public.people"));
        assert!(!same_collection("xpublic.people", "public.people"));
        assert!(!same_collection("public.people_old", "public.people"));
    }

    #[test]
    fn the_records_of_a_transaction_share_its_txid() {
        assert_eq!(transaction_key("571:53195832"), "571");
        assert_eq!(transaction_key("571:53196000"), "571");
        assert_eq!(transaction_key("571"), "571");
    }
}
