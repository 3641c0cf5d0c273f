//! Partitioned mode by a consumer group ([`super::Partitions::Group`]): a poller thread of its
//! own subscribes with the group's `group.id`, and the group's rebalance callback runs on it, so
//! it can wait for the store without blocking the runtime:
//!
//! - assigned: read the stored offsets of the view (after the previous holder's last batch,
//!   when instances share a PostgreSQL store), assign each partition at its stored offset (or
//!   its beginning), fetch its high watermark, and report the partitions to readiness, which
//!   waits for each to reach that watermark;
//! - revoked: hand the applier a flush behind the records already polled and wait until that
//!   batch is stored (rows and offsets in one transaction), then drop the partitions from
//!   readiness and unassign. The rows of revoked partitions stay in the store, no longer
//!   updated (their `_ficus_partition` tells a reader which ones the instance holds), so a
//!   partition that comes back resumes from its stored offset instead of restoring from zero.
//!
//! Rebalancing is eager (`range,roundrobin`): each revocation takes the whole assignment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message as _;
use rdkafka::types::RDKafkaRespErr;
use tokio::sync::{mpsc, oneshot};

use super::{ConsumerConfig, Item, Raw, client_config, resume_at};
use crate::error::ViewError;
use crate::ready::ViewStatus;
use crate::store::{Statements, Store};
use crate::view::ViewSpec;

/// The poller thread; dropping it stops the thread, which then leaves the group.
pub(super) struct GroupPoller {
    running: Arc<AtomicBool>,
}

impl Drop for GroupPoller {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Release);
    }
}

struct GroupContext {
    store: Store,
    spec: ViewSpec,
    statements: Statements,
    status: Arc<ViewStatus>,
    sender: mpsc::Sender<Item>,
    runtime: tokio::runtime::Handle,
    running: Arc<AtomicBool>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.spec.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assigned(consumer, &partitions);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(?partitions, "partitions revoked; storing what was polled");
                let (done, stored) = oneshot::channel();
                // Fails only when the applier is gone (the view is stopping).
                if self.sender.blocking_send(Item::Flush(done)).is_ok() {
                    let _ = stored.blocking_recv();
                }
                self.status.revoked(&partitions);
                if let Err(error) = consumer.unassign() {
                    tracing::warn!(%error, "unassigning");
                }
            }
            other => {
                tracing::warn!(error = ?other, "rebalance error; unassigning");
                self.status.revoked(&partitions);
                let _ = consumer.unassign();
            }
        }
    }
}

impl GroupContext {
    /// Retries `f` every second while the view runs (a store or broker outage in a rebalance:
    /// assigning from anything but the stored offsets would be wrong).
    fn retry<T>(&self, what: &str, mut f: impl FnMut() -> Result<T, ViewError>) -> Option<T> {
        loop {
            match f() {
                Ok(value) => return Some(value),
                Err(error) => {
                    tracing::warn!(%error, "{what} failed in a rebalance; retrying");
                    if !self.running.load(Ordering::Acquire) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }

    fn assigned(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let Some(progress) = self.retry("reading the stored offsets", || {
            self.runtime
                .block_on(self.store.progress(&self.spec, &self.statements))
        }) else {
            return;
        };
        let mut assignment = TopicPartitionList::new();
        let mut start = std::collections::BTreeMap::new();
        for &partition in partitions {
            let stored = progress.get(&partition).copied().unwrap_or_default();
            let Some((low, high)) = self.retry("fetching watermarks", || {
                consumer
                    .fetch_watermarks(&self.spec.topic, partition, Duration::from_secs(5))
                    .map_err(ViewError::kafka("fetching watermarks"))
            }) else {
                return;
            };
            let offset = resume_at(stored);
            if let Err(error) = assignment.add_partition_offset(&self.spec.topic, partition, offset)
            {
                tracing::error!(%error, partition, "assigning a partition");
                continue;
            }
            start.insert(partition, (stored, low, high));
        }
        tracing::info!(partitions = ?start, "partitions assigned; consuming from the stored offsets");
        if let Err(error) = consumer.assign(&assignment) {
            tracing::error!(%error, "assigning partitions");
            return;
        }
        self.status.start(start);
    }
}

/// Subscribes with the group and starts the poller thread.
pub(super) fn spawn(
    store: &Store,
    spec: &ViewSpec,
    statements: &Statements,
    config: &ConsumerConfig,
    status: &Arc<ViewStatus>,
    sender: mpsc::Sender<Item>,
) -> Result<GroupPoller, ViewError> {
    let running = Arc::new(AtomicBool::new(true));
    let context = GroupContext {
        store: store.clone(),
        spec: spec.clone(),
        statements: statements.clone(),
        status: status.clone(),
        sender: sender.clone(),
        runtime: tokio::runtime::Handle::current(),
        running: running.clone(),
    };
    let consumer: BaseConsumer<GroupContext> = client_config(&spec.name, config)
        .create_with_context(context)
        .map_err(ViewError::kafka("creating the group consumer"))?;
    consumer
        .subscribe(&[&spec.topic])
        .map_err(ViewError::kafka("subscribing"))?;
    let span = tracing::Span::current();
    let flag = running.clone();
    let status = status.clone();
    std::thread::Builder::new()
        .name(format!("view-{}", spec.name))
        .spawn(move || {
            let _entered = span.enter();
            poll(&consumer, &flag, &status, &sender);
            // Dropping the consumer closes it: it leaves the group (the revocation finds the
            // applier gone and only unassigns).
        })
        .map_err(|e| ViewError::Stopped(format!("the poller thread: {e}")))?;
    Ok(GroupPoller { running })
}

fn poll(
    consumer: &BaseConsumer<GroupContext>,
    running: &AtomicBool,
    status: &ViewStatus,
    sender: &mpsc::Sender<Item>,
) {
    while running.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) => {
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
                if sender.blocking_send(Item::Record(raw)).is_err() {
                    return;
                }
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "consumer error (librdkafka retries)");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
