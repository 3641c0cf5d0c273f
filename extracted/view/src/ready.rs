//! Readiness and lag of a running view: what the consumer has stored per partition, the high
//! watermarks it saw at start (or when a consumer group assigned the partition) and sees now,
//! the source position and time of the last applied change. A view is ready once every
//! partition it holds reached the high watermark seen when it got it (within
//! `max_lag_events`), and stays ready unless its lag grows past `max_lag_events` again; an
//! instance holding no partition (mid-rebalance, or more instances than partitions) is not
//! ready. While the broker is unreachable it keeps serving what it has and its lag in seconds
//! keeps growing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::event::Position;
use crate::store::Progress;

/// One partition's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Stored: the next offset to consume (durable with the rows).
    pub next_offset: i64,
    /// Stored: events consumed into the store, in total.
    pub events: i64,
    /// The log start offset seen at start (retention may have removed what came before).
    pub low: i64,
    /// The high watermark seen at start: readiness waits for it.
    pub start_high: Option<i64>,
    /// The latest high watermark seen.
    pub high: Option<i64>,
    /// Reached `start_high` (within `max_lag_events`) since it was assigned; stays true.
    pub reached: bool,
}

impl PartitionStatus {
    /// Events behind the latest known high watermark.
    pub fn lag_events(&self) -> i64 {
        match self.high.or(self.start_high) {
            Some(high) => (high - self.next_offset.max(self.low)).max(0),
            None => 0,
        }
    }

    fn reached_start(&self, max_lag: i64) -> bool {
        self.start_high
            .is_some_and(|high| self.next_offset.max(self.low) + max_lag >= high)
    }
}

/// A snapshot of a view's status.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusReport {
    pub view: String,
    pub topic: String,
    pub ready: bool,
    pub partitions: BTreeMap<i32, PartitionStatus>,
    /// The highest source position applied (batches interleave partitions).
    pub position: Option<Position>,
    /// Commit time (`source.ts_ms`) of the change at `position`.
    pub source_ts_ms: Option<i64>,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub broker_up: bool,
    /// Events consumed since this process started (stale ones included).
    pub consumed: u64,
    pub applied: u64,
    pub stale: u64,
    /// Events taken from the broker (out of the consumer's fetch queue) and not stored yet:
    /// what the kit holds between the poller and the store, at most
    /// [`crate::ConsumerConfig::buffer_bound_events`] (one transaction more in
    /// whole-transaction apply).
    pub buffered_events: i64,
    /// Why the view stopped, when it did.
    pub failure: Option<String>,
}

#[derive(Debug)]
struct Inner {
    partitions: BTreeMap<i32, PartitionStatus>,
    position: Option<Position>,
    source_ts_ms: Option<i64>,
    broker_up: bool,
    last_broker_contact: Option<Instant>,
    consumed: u64,
    applied: u64,
    stale: u64,
    failure: Option<String>,
}

/// The live status of one view, shared by its consumer, `/readyz` and `/metrics`.
#[derive(Debug)]
pub struct ViewStatus {
    pub view: String,
    pub topic: String,
    max_lag_events: i64,
    inner: Mutex<Inner>,
    /// Events taken from the broker, not stored yet (outside the lock: the poller counts each).
    buffered: AtomicI64,
}

impl ViewStatus {
    pub fn new(view: &str, topic: &str, max_lag_events: u64) -> Self {
        Self {
            view: view.to_owned(),
            topic: topic.to_owned(),
            max_lag_events: i64::try_from(max_lag_events).unwrap_or(i64::MAX),
            inner: Mutex::new(Inner {
                partitions: BTreeMap::new(),
                position: None,
                source_ts_ms: None,
                broker_up: false,
                last_broker_contact: None,
                consumed: 0,
                applied: 0,
                stale: 0,
                failure: None,
            }),
            buffered: AtomicI64::new(0),
        }
    }

    /// The poller took an event from the broker.
    pub(crate) fn took(&self) {
        self.buffered.fetch_add(1, Ordering::Relaxed);
    }

    /// `events` taken before are stored (or dropped with the consumer).
    pub(crate) fn released(&self, events: usize) {
        self.buffered
            .fetch_sub(i64::try_from(events).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The partitions this instance holds from now on (at start, or a consumer group's
    /// assignment), with their stored progress and the watermarks readiness waits for.
    pub(crate) fn start(&self, partitions: BTreeMap<i32, (Progress, i64, i64)>) {
        let mut inner = self.lock();
        inner.partitions = partitions
            .into_iter()
            .map(|(p, (progress, low, high))| {
                (
                    p,
                    PartitionStatus {
                        next_offset: progress.next_offset,
                        events: progress.events,
                        low,
                        start_high: Some(high),
                        high: Some(high),
                        reached: false,
                    },
                )
            })
            .collect();
        inner.broker_up = true;
        inner.last_broker_contact = Some(Instant::now());
        self.update_ready(&mut inner);
    }

    /// A batch is durable.
    pub(crate) fn stored(
        &self,
        offsets: &BTreeMap<i32, Progress>,
        last: Option<(Position, i64)>,
        applied: u64,
        stale: u64,
    ) {
        let mut inner = self.lock();
        for (partition, progress) in offsets {
            // A partition revoked meanwhile is no longer reported (its batch was stored first).
            if let Some(status) = inner.partitions.get_mut(partition) {
                status.next_offset = progress.next_offset;
                status.events += progress.events;
            }
            inner.consumed += progress.events as u64;
        }
        // The highest position applied: a batch interleaves partitions, so its last event is not
        // always its newest, and a later batch may end on an older one.
        if let Some((position, ts_ms)) = last
            && inner.position.is_none_or(|old| position.supersedes(&old))
        {
            inner.position = Some(position);
            inner.source_ts_ms = Some(ts_ms);
        }
        inner.applied += applied;
        inner.stale += stale;
        self.update_ready(&mut inner);
    }

    /// The broker answered with the current high watermarks.
    pub(crate) fn watermarks(&self, highs: &BTreeMap<i32, i64>) {
        let mut inner = self.lock();
        for (partition, high) in highs {
            if let Some(status) = inner.partitions.get_mut(partition) {
                status.high = Some(*high);
            }
        }
        inner.broker_up = true;
        inner.last_broker_contact = Some(Instant::now());
        self.update_ready(&mut inner);
    }

    /// A consumer group took these partitions away: they no longer count for readiness or lag.
    pub(crate) fn revoked(&self, partitions: &[i32]) {
        let mut inner = self.lock();
        for partition in partitions {
            inner.partitions.remove(partition);
        }
    }

    /// The partitions held now.
    pub fn assigned(&self) -> Vec<i32> {
        self.lock().partitions.keys().copied().collect()
    }

    /// The broker did not answer.
    pub(crate) fn broker_down(&self) {
        self.lock().broker_up = false;
    }

    pub(crate) fn failed(&self, failure: String) {
        self.lock().failure = Some(failure);
    }

    fn update_ready(&self, inner: &mut Inner) {
        for partition in inner.partitions.values_mut() {
            if partition.reached_start(self.max_lag_events) {
                partition.reached = true;
            }
        }
    }

    /// Whether the view may serve: holds partitions, each caught up with the high watermark
    /// seen when it was assigned (once; it stays so), not failed, and
    /// (when a `max_lag_events` is set) not further behind than that now.
    pub fn is_ready(&self) -> bool {
        self.report().ready
    }

    pub fn report(&self) -> StatusReport {
        let inner = self.lock();
        let lag_events: i64 = inner.partitions.values().map(|p| p.lag_events()).sum();
        let within_lag = self.max_lag_events == 0
            || inner
                .partitions
                .values()
                .all(|p| p.lag_events() <= self.max_lag_events);
        let lag_seconds = if lag_events > 0 {
            // Behind: how old the last applied change is (or, before any, how long the broker
            // has been known to have more).
            match inner.source_ts_ms {
                Some(ts) => (now_ms() - ts).max(0) as f64 / 1000.0,
                None => inner
                    .last_broker_contact
                    .map_or(0.0, |t| t.elapsed().as_secs_f64()),
            }
        } else if !inner.broker_up {
            // Nothing known to be missing, but nothing known since the broker went away.
            inner
                .last_broker_contact
                .map_or(0.0, |t| t.elapsed().as_secs_f64())
        } else {
            0.0
        };
        StatusReport {
            view: self.view.clone(),
            topic: self.topic.clone(),
            ready: !inner.partitions.is_empty()
                && inner.partitions.values().all(|p| p.reached)
                && within_lag
                && inner.failure.is_none(),
            partitions: inner.partitions.clone(),
            position: inner.position,
            source_ts_ms: inner.source_ts_ms,
            lag_events,
            lag_seconds,
            broker_up: inner.broker_up,
            consumed: inner.consumed,
            applied: inner.applied,
            stale: inner.stale,
            buffered_events: self.buffered.load(Ordering::Relaxed),
            failure: inner.failure.clone(),
        }
    }

    /// Waits until the view is ready, or `timeout` passes (returns whether it is ready).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.is_ready() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(next_offset: i64) -> Progress {
        Progress {
            next_offset,
            events: 0,
        }
    }

    #[test]
    fn ready_once_every_partition_reached_its_start_high_watermark() {
        let status = ViewStatus::new("v", "t", 0);
        assert!(!status.is_ready(), "nothing known yet");
        status.start(BTreeMap::from([
            (0, (progress(0), 0, 10)),
            (1, (progress(5), 0, 5)),
        ]));
        assert!(!status.is_ready());
        assert_eq!(status.report().lag_events, 10);
        status.stored(&BTreeMap::from([(0, progress(9))]), None, 9, 0);
        assert!(!status.is_ready());
        status.stored(&BTreeMap::from([(0, progress(10))]), None, 1, 0);
        assert!(status.is_ready());
        // New events after the start do not take readiness back (no max_lag set)...
        status.watermarks(&BTreeMap::from([(0, 50)]));
        assert!(status.is_ready());
        assert_eq!(status.report().lag_events, 40);
        status.failed("poison".into());
        assert!(!status.is_ready());
    }

    #[test]
    fn max_lag_lets_a_view_be_ready_behind_and_takes_it_back_further_behind() {
        let status = ViewStatus::new("v", "t", 3);
        status.start(BTreeMap::from([(0, (progress(0), 0, 3))]));
        assert!(status.is_ready());
        status.watermarks(&BTreeMap::from([(0, 10)]));
        assert!(!status.is_ready());
    }

    #[test]
    fn a_group_assignment_is_ready_once_each_assigned_partition_caught_up() {
        let status = ViewStatus::new("v", "t", 0);
        status.start(BTreeMap::from([(0, (progress(4), 0, 4))]));
        assert!(status.is_ready());
        // A rebalance: everything revoked, then partitions 0 and 1 assigned.
        status.revoked(&[0]);
        assert!(!status.is_ready(), "holding nothing, serving nothing");
        status.start(BTreeMap::from([
            (0, (progress(4), 0, 4)),
            (1, (progress(0), 0, 6)),
        ]));
        assert_eq!(status.assigned(), vec![0, 1]);
        assert!(!status.is_ready(), "partition 1 is behind");
        status.stored(&BTreeMap::from([(1, progress(6))]), None, 6, 0);
        assert!(status.is_ready());
        // A batch of a partition revoked meanwhile does not bring it back.
        status.revoked(&[1]);
        status.stored(&BTreeMap::from([(1, progress(7))]), None, 1, 0);
        assert_eq!(status.assigned(), vec![0]);
        assert!(status.is_ready());
    }

    #[test]
    fn retention_removed_events_count_as_reached() {
        let status = ViewStatus::new("v", "t", 0);
        status.start(BTreeMap::from([(0, (progress(0), 7, 7))]));
        assert!(status.is_ready());
    }
}
