//! Which WAL position may be confirmed to PostgreSQL: the end of the last transaction all of
//! whose events (and every event before them) the broker has acknowledged.
//!
//! Every record gets a sequence number when it is handed to the producer; the broker's
//! acknowledgements arrive out of order across partitions, so the tracker keeps a window of
//! flags from the lowest unacknowledged number (`base`) on. A transaction's commit is recorded
//! with the sequence number after its last event (`bound`); once `base` reaches it, its end LSN
//! is confirmed. A failed delivery is never skipped: `base` stays below it and the pipeline is
//! restarted from the last confirmed position.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::error::DeliveryFailure;
use crate::metrics::Metrics;

struct PendingCommit {
    bound: u64,
    end_lsn: u64,
    commit_ts_micros: i64,
}

struct Inner {
    /// Every sequence number below is acknowledged.
    base: u64,
    /// The next sequence number to hand out.
    next: u64,
    /// `acked[i]` is sequence number `base + i`.
    acked: VecDeque<bool>,
    commits: VecDeque<PendingCommit>,
}

/// Shared between the pipeline (which registers records and commits) and the producer's
/// delivery callback (which acknowledges them).
pub struct AckTracker {
    inner: Mutex<Inner>,
    confirmed: AtomicU64,
    notify: Notify,
    failure: Mutex<Option<DeliveryFailure>>,
    metrics: Arc<Metrics>,
}

impl AckTracker {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::new(Inner {
                base: 0,
                next: 0,
                acked: VecDeque::new(),
                commits: VecDeque::new(),
            }),
            confirmed: AtomicU64::new(0),
            notify: Notify::new(),
            failure: Mutex::new(None),
            metrics,
        }
    }

    /// A sequence number for the next record.
    pub fn register(&self) -> u64 {
        let mut inner = self.inner.lock().expect("ack tracker");
        let seq = inner.next;
        inner.next += 1;
        inner.acked.push_back(false);
        self.metrics.inflight.set((inner.next - inner.base) as i64);
        seq
    }

    /// The sequence number the next record will get (every record registered so far is below).
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().expect("ack tracker").next
    }

    /// Records a transaction's end: once every record registered so far is acknowledged,
    /// `end_lsn` may be confirmed.
    pub fn commit(&self, end_lsn: u64, commit_ts_micros: i64) {
        let mut inner = self.inner.lock().expect("ack tracker");
        let bound = inner.next;
        inner.commits.push_back(PendingCommit {
            bound,
            end_lsn,
            commit_ts_micros,
        });
        self.confirm_ready(&mut inner);
    }

    /// `seq` was registered but never handed to the producer (the stream failed first). It
    /// counts as settled for the window: the restarted stream starts before the transaction it
    /// belongs to, whose commit was never recorded, and sends it again.
    pub fn abandon(&self, seq: u64) {
        self.settle(seq, false);
    }

    /// The broker acknowledged `seq`.
    pub fn ack(&self, seq: u64) {
        self.settle(seq, true);
    }

    fn settle(&self, seq: u64, acknowledged: bool) {
        let mut inner = self.inner.lock().expect("ack tracker");
        if seq < inner.base {
            return;
        }
        let index = (seq - inner.base) as usize;
        if let Some(flag) = inner.acked.get_mut(index) {
            *flag = true;
        }
        let mut advanced = false;
        while inner.acked.front() == Some(&true) {
            inner.acked.pop_front();
            inner.base += 1;
            advanced = true;
        }
        if acknowledged {
            self.metrics.acked_events.inc();
        }
        self.metrics.inflight.set((inner.next - inner.base) as i64);
        if advanced {
            self.confirm_ready(&mut inner);
            drop(inner);
            self.notify.notify_waiters();
        }
    }

    /// The broker refused `seq` for good: the pipeline must stop (the supervisor decides,
    /// from the failure's class, whether it restarts from the last confirmed position).
    pub fn fail(&self, seq: u64, reason: DeliveryFailure) {
        let mut failure = self.failure.lock().expect("ack tracker failure");
        if failure.is_none() {
            tracing::error!(seq, %reason, "delivery failed; the pipeline stops");
            *failure = Some(reason);
        }
        drop(failure);
        self.notify.notify_waiters();
    }

    /// A delivery failure, if one happened.
    pub fn failure(&self) -> Option<DeliveryFailure> {
        self.failure.lock().expect("ack tracker failure").clone()
    }

    fn confirm_ready(&self, inner: &mut Inner) {
        let mut confirmed = None;
        let now = now_micros();
        while let Some(commit) = inner.commits.front() {
            if commit.bound > inner.base {
                break;
            }
            let commit = inner.commits.pop_front().expect("a commit");
            if commit.commit_ts_micros > 0 {
                let latency = (now - commit.commit_ts_micros).max(0) as f64 / 1e6;
                self.metrics.commit_to_ack.observe(latency);
                self.metrics.lag_seconds.set(latency);
            }
            confirmed = Some(commit.end_lsn);
        }
        if let Some(lsn) = confirmed {
            let previous = self.confirmed.fetch_max(lsn, Ordering::SeqCst);
            self.metrics.confirmed_lsn.set(previous.max(lsn) as i64);
        }
    }

    /// The highest WAL position whose changes are all acknowledged (0: none yet).
    pub fn confirmed(&self) -> u64 {
        self.confirmed.load(Ordering::SeqCst)
    }

    /// Records sent and not yet acknowledged.
    pub fn outstanding(&self) -> u64 {
        let inner = self.inner.lock().expect("ack tracker");
        inner.next - inner.base
    }

    /// Nothing outstanding and no transaction waiting for confirmation.
    pub fn drained(&self) -> bool {
        let inner = self.inner.lock().expect("ack tracker");
        inner.next == inner.base && inner.commits.is_empty()
    }

    /// Whether every record below `seq` is acknowledged.
    pub fn acked_below(&self, seq: u64) -> bool {
        self.inner.lock().expect("ack tracker").base >= seq
    }

    /// Waits until `ready()` holds, a failure is recorded, or `timeout` passes; says whether
    /// `ready()` holds.
    pub async fn wait_until(&self, timeout: Duration, ready: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready(self) {
                return true;
            }
            if self.failure().is_some() {
                return false;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return ready(self);
            }
        }
    }
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> AckTracker {
        AckTracker::new(Arc::new(Metrics::default()))
    }

    #[test]
    fn a_commit_is_confirmed_only_when_everything_before_it_is_acknowledged() {
        let t = tracker();
        let a = t.register();
        let b = t.register();
        t.commit(100, 0);
        let c = t.register();
        t.commit(200, 0);
        assert_eq!(t.confirmed(), 0);
        t.ack(b);
        assert_eq!(t.confirmed(), 0, "a is still outstanding");
        t.ack(c);
        assert_eq!(t.confirmed(), 0, "a still blocks the second commit too");
        t.ack(a);
        assert_eq!(t.confirmed(), 200);
        assert!(t.drained());
    }

    #[test]
    fn out_of_order_acknowledgements_confirm_in_order() {
        let t = tracker();
        let a = t.register();
        t.commit(10, 0);
        let b = t.register();
        t.commit(20, 0);
        t.ack(b);
        assert_eq!(t.confirmed(), 0);
        t.ack(a);
        assert_eq!(t.confirmed(), 20);
    }

    #[test]
    fn an_empty_transaction_is_confirmed_at_once_when_nothing_is_outstanding() {
        let t = tracker();
        t.commit(5, 0);
        assert_eq!(t.confirmed(), 5);
        let a = t.register();
        t.commit(6, 0);
        assert_eq!(t.confirmed(), 5);
        t.ack(a);
        assert_eq!(t.confirmed(), 6);
    }

    #[test]
    fn a_failure_blocks_confirmation_for_good() {
        let t = tracker();
        let a = t.register();
        let b = t.register();
        t.commit(10, 0);
        t.fail(a, DeliveryFailure::message("refused"));
        t.ack(b);
        assert_eq!(t.confirmed(), 0);
        assert_eq!(t.failure(), Some(DeliveryFailure::message("refused")));
    }

    #[test]
    fn an_abandoned_record_does_not_block_the_window() {
        let t = tracker();
        let a = t.register();
        t.commit(10, 0);
        t.ack(a);
        assert_eq!(t.confirmed(), 10);
        let lost = t.register();
        t.abandon(lost);
        // The restarted stream's records and commits confirm again.
        let b = t.register();
        t.commit(30, 0);
        t.ack(b);
        assert_eq!(t.confirmed(), 30);
    }

    #[test]
    fn the_confirmed_position_never_goes_back() {
        let t = tracker();
        t.commit(50, 0);
        t.commit(40, 0);
        assert_eq!(t.confirmed(), 50);
    }

    /// Paused time: a waiter that missed the acknowledgement would sleep to its (far)
    /// deadline, which the paused clock reaches at once, and still see `ready()`. What proves
    /// the wake-up is the clock: it must not have moved past the acknowledgement.
    #[tokio::test(start_paused = true)]
    async fn waiters_wake_on_acknowledgement() {
        let t = Arc::new(tracker());
        let a = t.register();
        let start = tokio::time::Instant::now();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move {
                let ready = t
                    .wait_until(Duration::from_secs(3600), |t| t.acked_below(a + 1))
                    .await;
                (ready, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.ack(a);
        let (ready, waited) = waiter.await.unwrap();
        assert!(ready);
        assert!(
            waited < Duration::from_secs(1),
            "woke after {waited:?}: at the deadline, not on the acknowledgement"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_on_failure() {
        let t = Arc::new(tracker());
        let a = t.register();
        let start = tokio::time::Instant::now();
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move {
                let ready = t
                    .wait_until(Duration::from_secs(3600), |t| t.acked_below(a + 1))
                    .await;
                (ready, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        t.fail(a, DeliveryFailure::message("refused"));
        let (ready, waited) = waiter.await.unwrap();
        assert!(!ready);
        assert!(waited < Duration::from_secs(1), "woke after {waited:?}");
    }
}
