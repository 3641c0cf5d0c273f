//! A cloneable stop signal: a component's `start` returns one, the CLI triggers it on Ctrl-C or
//! SIGTERM, a test on drop.

use std::sync::Arc;

use tokio::sync::watch;

/// Triggered once; every waiter, before or after the trigger, completes.
#[derive(Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Self {
        Self {
            sender: Arc::new(watch::channel(false).0),
        }
    }

    /// Asks everything waiting to stop.
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// Completes once [`Shutdown::trigger`] was called (at once if it already was).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.sender.subscribe();
        async move {
            // Err: every handle is gone, nobody is left to trigger it: stop as well.
            let _ = receiver.wait_for(|stop| *stop).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_before_and_after_the_trigger_complete() {
        let shutdown = Shutdown::new();
        let before = tokio::spawn(shutdown.wait());
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!before.is_finished(), "nothing stops before the trigger");
        shutdown.clone().trigger();
        tokio::time::timeout(Duration::from_secs(1), before)
            .await
            .expect("a waiter from before the trigger completes")
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), shutdown.wait())
            .await
            .expect("a waiter from after the trigger completes");
        assert!(shutdown.is_triggered());
    }
}
