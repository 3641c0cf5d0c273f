//! WebSocket (and the other HTTP/1.1 upgrades a route lists in `upgrades`; never h2c) tunnels:
//! after both sides agree to switch to a protocol the client offered and the route allows (the
//! handler checks both before it opens one), bytes are copied both ways until either closes.
//! Tunnels are counted so that shutdown can wait for them within its bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::metrics::Metrics;

/// The open tunnels.
#[derive(Default)]
pub struct Tunnels {
    open: Arc<AtomicUsize>,
    closed: Arc<Notify>,
    shutdown: Arc<Notify>,
}

impl Tunnels {
    /// Starts copying between the client's and the upstream's upgraded connections.
    pub fn open(
        &self,
        client: OnUpgrade,
        upstream: OnUpgrade,
        metrics: Arc<Metrics>,
        route: Arc<str>,
    ) {
        let open = self.open.clone();
        let closed = self.closed.clone();
        let shutdown = self.shutdown.clone();
        open.fetch_add(1, Ordering::SeqCst);
        metrics.websockets.inc();
        let span = tracing::info_span!("tunnel", route = %route);
        tokio::spawn(
            async move {
                match tokio::try_join!(client, upstream) {
                    Ok((client, upstream)) => {
                        let mut client = TokioIo::new(client);
                        let mut upstream = TokioIo::new(upstream);
                        tokio::select! {
                            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                                match result {
                                    Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
                                    Err(error) => tracing::debug!(%error, "tunnel broke"),
                                }
                            }
                            () = shutdown.notified() => tracing::debug!("tunnel closed by shutdown"),
                        }
                    }
                    Err(error) => tracing::warn!(%error, "upgrade failed"),
                }
                metrics.websockets.dec();
                if open.fetch_sub(1, Ordering::SeqCst) == 1 {
                    closed.notify_waiters();
                }
            }
            .instrument(span),
        );
    }

    /// Tunnels currently open.
    pub fn count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Waits until every tunnel has closed by itself, or `grace` has passed; then closes the rest.
    pub async fn drain(&self, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        while self.count() > 0 {
            let notified = self.closed.notified();
            if self.count() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    open = self.count(),
                    "closing tunnels still open at the end of the grace period"
                );
                self.shutdown.notify_waiters();
                break;
            }
        }
    }
}
