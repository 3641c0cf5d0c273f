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
//! right behind its deletes). Transactions are taken in the order of their END records (commit
//! order), and a partition's events are taken in offset order, so the offsets stored are always
//! a transaction boundary: a crash anywhere leaves each transaction in the store whole or not at
//! all, and the restart (data topics and the transaction topic resume at their stored offsets)
//! takes it again whole. Events without a `transaction` block (snapshot reads, an adapter
//! without transaction metadata) and tombstones are units of their own, as in a single view.
//! An event at a queue's head whose transaction was taken already, or is older than the one
//! being completed (an adapter's re-delivery whose END was taken before) is a unit of its own
//! too: the guard makes it a no-op. The guard, deletes, truncates and pruning are the single view's
//! ([`crate::store`]).
//!
//! The price: a transaction waits until its END and its last event arrived, so the views
//! lag by that much more; and the events of a transaction wait in memory until it is whole
//! (bounded by the largest transaction). Global mode only ([`super::Partitions::All`]): a
//! transaction is whole only where every partition of every topic is held; the transaction
//! topic must have one partition (its order is commit order).

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
use crate::store::{Batch, Change, Progress, Statements, Store};
use crate::view::{Column, ViewSpec};

/// Views applied a whole source transaction at a time.
#[derive(Debug, Clone)]
pub struct TransactionalViews {
    /// Names the group: its consumer and the stored offsets of the transaction topic.
    pub name: String,
    /// The adapter's transaction topic (`<prefix>.transaction`).
    pub transaction_topic: String,
    pub views: Vec<ViewSpec>,
}

impl TransactionalViews {
    pub fn new(name: impl Into<String>, transaction_topic: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            transaction_topic: transaction_topic.into(),
            views: Vec::new(),
        }
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
    let statuses = views.iter().map(|m| m.status.clone()).collect();
    let (stop, stop_rx) = watch::channel(false);
    let span = tracing::info_span!("transactional views", name = %group.name);
    let task = tokio::spawn(
        run(
            store.clone(),
            group.clone(),
            views,
            marker_progress,
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

/// One view of the group.
struct Member {
    spec: ViewSpec,
    statements: Statements,
    progress: BTreeMap<i32, Progress>,
    status: Arc<ViewStatus>,
    collection: String,
}

async fn run(
    store: Store,
    group: TransactionalViews,
    views: Vec<Member>,
    marker_progress: BTreeMap<i32, Progress>,
    config: ConsumerConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ViewError> {
    let statuses: Vec<_> = views.iter().map(|m| m.status.clone()).collect();
    let result = consume(&store, &group, views, marker_progress, &config, &mut stop).await;
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
    marker_progress: BTreeMap<i32, Progress>,
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
    if marker_marks.len() != 1 {
        return Err(ViewError::Declaration(format!(
            "the transaction topic {} has {} partitions; whole transactions need its order: one",
            group.transaction_topic,
            marker_marks.len()
        )));
    }
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
    let (&marker_partition, _) = marker_marks.iter().next().expect("one partition");
    let marker_stored = marker_progress
        .get(&marker_partition)
        .copied()
        .unwrap_or_default();
    assignment
        .add_partition_offset(
            &group.transaction_topic,
            marker_partition,
            resume_at(marker_stored),
        )
        .map_err(ViewError::kafka("assigning partitions"))?;
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
    let _poller = AbortOnDrop(tokio::spawn(
        poll(consumer.clone(), index, sender).in_current_span(),
    ));
    let mut applier = Applier::new(group, views, config, marker_partition);
    applier.apply(store, receiver, stop).await
}

async fn poll(
    consumer: Arc<StreamConsumer>,
    index: HashMap<String, Option<usize>>,
    sender: mpsc::Sender<Received>,
) {
    loop {
        match consumer.recv().await {
            Ok(message) => {
                let view = index.get(message.topic()).copied().flatten();
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

struct Applier {
    views: Vec<Member>,
    columns: Vec<Vec<Column>>,
    queues: BTreeMap<(usize, i32), VecDeque<Pending>>,
    markers: VecDeque<(i64, TransactionMarker)>,
    marker_topic: String,
    marker_partition: i32,
    group_name: String,
    /// The transaction topic's progress not yet stored (the markers taken since).
    marker_progress: Progress,
    batch_max_events: usize,
    batch_max_ms: u64,
    pruning: Vec<Pruning>,
    /// Transactions taken lately, to recognize their re-delivered events.
    taken: HashSet<String>,
    taken_order: VecDeque<String>,
}

/// How many taken transactions are remembered.
const TAKEN_REMEMBERED: usize = 100_000;

impl Applier {
    fn new(
        group: &TransactionalViews,
        views: Vec<Member>,
        config: &ConsumerConfig,
        marker_partition: i32,
    ) -> Self {
        Self {
            columns: views.iter().map(|m| m.spec.columns.clone()).collect(),
            pruning: views
                .iter()
                .map(|_| Pruning::new(config.delete_retention_ms))
                .collect(),
            views,
            queues: BTreeMap::new(),
            markers: VecDeque::new(),
            marker_topic: group.transaction_topic.clone(),
            marker_partition,
            group_name: group.name.clone(),
            marker_progress: Progress::default(),
            batch_max_events: config.batch_max_events.max(1),
            batch_max_ms: config.batch_max_ms,
            taken: HashSet::new(),
            taken_order: VecDeque::new(),
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
                self.markers.push_back((raw.offset, marker));
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

    fn marker_taken(&mut self, offset: i64) {
        self.marker_progress.next_offset = offset + 1;
        self.marker_progress.events += 1;
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
            let (offset, marker) = self.markers.front()?;
            let offset = *offset;
            if marker.status == TransactionStatus::Begin {
                self.markers.pop_front();
                self.marker_taken(offset);
                continue;
            }
            let needed: u64 = marker.events_in(|named| {
                self.views
                    .iter()
                    .any(|m| same_collection(named, &m.collection))
            });
            if needed == 0 {
                // A transaction of other tables only.
                self.markers.pop_front();
                self.marker_taken(offset);
                continue;
            }
            let id = transaction_key(&marker.id).to_owned();
            let mut found = 0u64;
            let mut oldest: Option<Position> = None;
            for queue in self.queues.values() {
                for pending in queue
                    .iter()
                    .take_while(|p| p.transaction.as_deref() == Some(id.as_str()))
                {
                    found += 1;
                    if let Some((position, _)) = pending.source
                        && oldest.is_none_or(|o| position.compare(&o).is_lt())
                    {
                        oldest = Some(position);
                    }
                }
            }
            if found >= needed {
                self.markers.pop_front();
                self.marker_taken(offset);
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
            // Not whole yet. A head of a transaction taken before (a re-delivery whose END
            // was taken already), or older than this one, would wait forever: it goes alone
            // (a no-op by the guard).
            let stale = self.queues.iter().find_map(|(&at, queue)| {
                queue
                    .front()
                    .filter(|p| {
                        p.transaction.as_deref() != Some(id.as_str())
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
            return Some(Unit {
                events: vec![(at.0, pending)],
            });
        }
    }

    async fn apply(
        &mut self,
        store: &Store,
        mut receiver: mpsc::Receiver<Received>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), ViewError> {
        loop {
            let first = tokio::select! {
                item = receiver.recv() => item,
                _ = stop.changed() => return Ok(()),
            };
            let Some(first) = first else { return Ok(()) };
            self.receive(first)?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(self.batch_max_ms);
            let mut units = Vec::new();
            let mut events = 0usize;
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
                let item = match receiver.try_recv() {
                    Ok(item) => item,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) if units.is_empty() => {
                        // Nothing whole yet: wait for more, however long.
                        tokio::select! {
                            item = receiver.recv() => match item {
                                Some(item) => item,
                                None => return Ok(()),
                            },
                            _ = stop.changed() => return Ok(()),
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, receiver.recv()).await {
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
        let marker_offsets: BTreeMap<i32, Progress> = if self.marker_progress.events > 0 {
            BTreeMap::from([(self.marker_partition, self.marker_progress)])
        } else {
            BTreeMap::new()
        };
        let parts: Vec<(&ViewSpec, &Statements, &Batch)> = self
            .views
            .iter()
            .zip(&batches)
            .filter(|(_, b)| !b.changes.is_empty())
            .map(|(m, b)| (&m.spec, &m.statements, b))
            .collect();
        let progress = [(
            self.group_name.as_str(),
            self.marker_topic.as_str(),
            &marker_offsets,
        )];
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
        self.marker_progress = Progress {
            next_offset: self.marker_progress.next_offset,
            events: 0,
        };
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
