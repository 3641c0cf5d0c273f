//! A latency histogram for a request path: what a component observes per answer, exposed at
//! `/metrics` as a Prometheus histogram that the dashboard and the rollout's latency gate read
//! back ([`crate::scrape::quantile`]). Its bounds are fine enough that a quantile taken from
//! them moves at most ~28 % at a time ([`r10_bounds`]), and an observation stays cheap however
//! many there are: a branchless binary search over the bounds and two relaxed atomic additions,
//! no lock (`prometheus_client`'s own histogram takes a write lock and scans its bounds in order).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// The ISO 3 preferred numbers of series R10 (×100): ten per decade, each at most 28 % above
/// the one before (1.25, 1.28, 1.25, 1.25, 1.26, 1.27, 1.25, 1.26, 1.27, 1.25).
const R10: [u32; 10] = [100, 125, 160, 200, 250, 315, 400, 500, 630, 800];

/// Bounds in seconds from `10^from` to `10^to` (decades, `from < to`), ten per decade on the
/// R10 series, both ends included: `r10_bounds(-4, 1)` is 0.1 ms, 0.125 ms, 0.16 ms, … 8 s,
/// 10 s (51 bounds). Each bound is the nearest double to its decimal value, so the exposition
/// writes `le="0.00125"`, never `0.0012500000000000002`.
pub fn r10_bounds(from: i32, to: i32) -> Vec<f64> {
    let mut bounds = Vec::new();
    for decade in from..to {
        for m in R10 {
            bounds.push(decimal(m, decade - 2));
        }
    }
    bounds.push(decimal(100, to - 2));
    bounds
}

/// `m × 10^exp`, correctly rounded (one division or product of exact values).
fn decimal(m: u32, exp: i32) -> f64 {
    if exp >= 0 {
        f64::from(m) * 10f64.powi(exp)
    } else {
        f64::from(m) / 10f64.powi(-exp)
    }
}

/// A histogram of durations in seconds over fixed bounds (`le`, increasing), plus `+Inf`.
/// Clones share the counts (as `prometheus_client`'s metrics do).
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bounds: Box<[f64]>,
    /// The bounds padded with infinities to a power of two, for the branchless search.
    padded: Box<[f64]>,
    /// Per bucket (not cumulative); the last is past every bound (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// The sum of the observations in nanoseconds (exact addition; 584 years of time fit).
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    /// A histogram over `bounds` (seconds, strictly increasing, finite).
    ///
    /// # Panics
    /// When `bounds` is not strictly increasing or holds a value that is not finite: a
    /// programming error in a metric's definition, caught by the first test that builds it.
    pub fn new(bounds: Vec<f64>) -> Self {
        assert!(
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must be finite and strictly increasing: {bounds:?}"
        );
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        let size = (bounds.len() + 1).next_power_of_two();
        let padded = bounds
            .iter()
            .copied()
            .chain(std::iter::repeat(f64::INFINITY))
            .take(size)
            .collect();
        Self {
            inner: Arc::new(Inner {
                bounds: bounds.into_boxed_slice(),
                padded,
                counts,
                sum_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Counts one duration: in the first bucket whose bound is at least `seconds` (a negative
    /// or NaN duration in the first, as zero).
    pub fn observe(&self, seconds: f64) {
        let inner = &*self.inner;
        inner.counts[inner.bucket(seconds)].fetch_add(1, Ordering::Relaxed);
        // `as` saturates: NaN and negatives add 0, an absurd duration at most u64::MAX.
        let nanos = (seconds * 1e9).round() as u64;
        inner.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The bounds (seconds, without `+Inf`).
    pub fn bounds(&self) -> &[f64] {
        &self.inner.bounds
    }

    /// `(sum of seconds, count, per-bucket counts with +Inf as f64::MAX)`, as the encoder takes
    /// them. Read without a lock: under concurrent observations the sum may lag the counts
    /// by the observations in flight, as with every lock-free Prometheus client.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(inner.counts.iter())
            .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (sum, count, buckets)
    }
}

impl Inner {
    /// How many bounds are below `seconds` (the bucket's index): a binary search of fixed
    /// length over the padded bounds whose steps compile to conditional moves, so latencies
    /// spread over the range cost no mispredicted branches (log2 of 64 steps for 51 bounds).
    fn bucket(&self, seconds: f64) -> usize {
        let padded = &*self.padded;
        let mut at = 0;
        let mut step = padded.len() / 2;
        while step > 0 {
            if padded[at + step - 1] < seconds {
                at += step;
            }
            step /= 2;
        }
        // Padding is infinite: only an infinite duration passes the last bound, into +Inf.
        at.min(self.bounds.len())
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;
    use crate::scrape::{parse_text, quantile};

    #[test]
    fn r10_bounds_step_at_most_28_percent_and_print_as_written() {
        let bounds = r10_bounds(-4, 1);
        assert_eq!(bounds.len(), 51);
        assert_eq!(bounds[0], 0.0001);
        assert_eq!(*bounds.last().unwrap(), 10.0);
        for pair in bounds.windows(2) {
            let step = pair[1] / pair[0];
            assert!((1.24..=1.281).contains(&step), "{pair:?}: {step}");
        }
        let printed: Vec<String> = bounds[..12].iter().map(|b| b.to_string()).collect();
        assert_eq!(
            printed,
            [
                "0.0001", "0.000125", "0.00016", "0.0002", "0.00025", "0.000315", "0.0004",
                "0.0005", "0.00063", "0.0008", "0.001", "0.00125"
            ]
        );
    }

    #[test]
    fn observations_land_in_the_first_bucket_at_least_as_large_and_encode_cumulatively() {
        let histogram = LatencyHistogram::new(vec![0.001, 0.002, 0.005]);
        for seconds in [0.0005, 0.001, 0.0011, 0.002, 0.004, 0.5, -1.0, f64::NAN] {
            histogram.observe(seconds);
        }
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 8);
        assert_eq!(
            buckets,
            [(0.001, 4), (0.002, 2), (0.005, 1), (f64::MAX, 1)],
            "le is inclusive; NaN and negatives count in the first"
        );
        assert!((sum - 0.5086).abs() < 1e-9, "{sum}");

        let mut registry = Registry::default();
        registry.register("ficus_test_duration_seconds", "Test", histogram.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let samples = parse_text(&text);
        let cumulative: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.name == "ficus_test_duration_seconds_bucket")
            .map(|s| (s.le().unwrap(), s.value))
            .collect();
        assert_eq!(
            cumulative,
            [
                (0.001, 4.0),
                (0.002, 6.0),
                (0.005, 7.0),
                (f64::INFINITY, 8.0)
            ],
            "{text}"
        );
        assert!(text.contains("# TYPE ficus_test_duration_seconds histogram"));
        assert!(
            text.contains("ficus_test_duration_seconds_count 8"),
            "{text}"
        );
        assert_eq!(quantile(&cumulative, 0.5), Some(0.001));
    }

    #[test]
    fn the_search_is_the_first_bound_at_least_as_large() {
        for bounds in [r10_bounds(-4, 1), vec![0.001], vec![0.001, 0.002, 0.005]] {
            let histogram = LatencyHistogram::new(bounds.clone());
            let mut probes: Vec<f64> = bounds
                .iter()
                .flat_map(|b| [b * 0.99, *b, b * 1.01])
                .collect();
            probes.extend([0.0, -1.0, 1e9, f64::INFINITY, f64::NAN]);
            for v in probes {
                let expected = bounds.partition_point(|b| *b < v);
                assert_eq!(histogram.inner.bucket(v), expected, "{v} over {bounds:?}");
            }
        }
    }

    #[test]
    fn a_p95_over_r10_bounds_moves_at_most_28_percent_when_latency_grows() {
        // 100 answers at one latency: the p95 is the bound just above it. Growing the latency
        // by 1 % at a time, the reported p95 never jumps by more than one R10 step.
        let bounds = r10_bounds(-4, 1);
        let mut latency = 0.0001;
        let mut previous: Option<f64> = None;
        while latency < 10.0 {
            let histogram = LatencyHistogram::new(bounds.clone());
            for _ in 0..100 {
                histogram.observe(latency);
            }
            let (_, _, buckets) = histogram.snapshot();
            let mut running = 0.0;
            let cumulative: Vec<(f64, f64)> = buckets
                .iter()
                .map(|(b, n)| {
                    running += *n as f64;
                    (*b, running)
                })
                .collect();
            let p95 = quantile(&cumulative, 0.95).unwrap();
            assert!(
                p95 >= latency && p95 <= latency * 1.281,
                "{latency} -> {p95}"
            );
            if let Some(before) = previous {
                assert!(p95 / before <= 1.281, "{before} -> {p95}");
            }
            previous = Some(p95);
            latency *= 1.01;
        }
    }

    /// The cost of one observation, against `prometheus_client`'s histogram over the proxy's
    /// former bounds (18 doubling) and over these: `cargo test -p ficus-telemetry --release
    /// observation_cost -- --ignored --nocapture` (a figure, not a benchmark: the lead's
    /// benches measure the request path).
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn observation_cost() {
        use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
        const N: u32 = 2_000_000;
        // Latencies spread over the range, as a route's answers are.
        let values: Vec<f64> = (0..1024)
            .map(|i| 0.0001 * 1.5f64.powf(f64::from(i % 30) * 0.8))
            .collect();
        let time = |observe: &dyn Fn(f64)| {
            let started = std::time::Instant::now();
            for i in 0..N {
                observe(std::hint::black_box(values[(i % 1024) as usize]));
            }
            started.elapsed().as_nanos() as f64 / f64::from(N)
        };
        let old = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let scan = Histogram::new(r10_bounds(-4, 1));
        let ours = LatencyHistogram::new(r10_bounds(-4, 1));
        let old_ns = time(&|v| old.observe(v));
        let scan_ns = time(&|v| scan.observe(v));
        let ours_ns = time(&|v| ours.observe(v));
        println!(
            "ns per observation: prometheus_client 18 doubling bounds {old_ns:.1}, \
             prometheus_client 51 R10 bounds {scan_ns:.1}, LatencyHistogram 51 R10 bounds {ours_ns:.1}"
        );
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn bounds_out_of_order_are_refused() {
        let _ = LatencyHistogram::new(vec![0.002, 0.001]);
    }
}
