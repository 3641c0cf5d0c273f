//! The metrics registry holder and its Prometheus text exposition, served at `/metrics` by
//! [`crate::admin`]. A component registers its families once at start ([`MetricsRegistry`]) or
//! keeps its own registry and hands the admin router anything that implements [`Exposition`].

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::{Metric, Registry};

/// The content type of the text `prometheus_client` writes (OpenMetrics 1.0, ends in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/metrics` serves: the text exposition of a component's metrics.
pub trait Exposition: Send + Sync + 'static {
    fn encode(&self) -> String;
}

impl<F> Exposition for F
where
    F: Fn() -> String + Send + Sync + 'static,
{
    fn encode(&self) -> String {
        self()
    }
}

/// A registry shared between the code that registers metrics and the `/metrics` handler.
#[derive(Clone, Default)]
pub struct MetricsRegistry {
    inner: Arc<Mutex<Registry>>,
}

impl MetricsRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `metric` under `name` (without `_total`: the encoder adds it to counters).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.lock().register(name, help, metric);
    }

    /// Registers through the registry itself (sub-registries, prefixes).
    pub fn with<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        f(&mut self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while registering leaves the registry usable: metrics are not invariants.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Exposition for MetricsRegistry {
    fn encode(&self) -> String {
        encode_registry(&self.lock())
    }
}

/// The text exposition of `registry` (an encoding failure is logged and yields what was written).
pub fn encode_registry(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(error) = encode(&mut text, registry) {
        tracing::error!(%error, "encoding metrics failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[test]
    fn registered_counters_are_encoded_as_openmetrics() {
        let registry = MetricsRegistry::new();
        let counter = Counter::<u64>::default();
        registry.register("ficus_test_things", "Things", counter.clone());
        counter.inc_by(3);
        let text = registry.encode();
        assert!(text.contains("# TYPE ficus_test_things counter"), "{text}");
        assert!(text.contains("ficus_test_things_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
