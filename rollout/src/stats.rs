//! The statistics behind the gates, pure: Wilson score bounds for a rate, Newcombe's hybrid
//! score bounds for a difference of two rates, and the three-way verdict they give against a
//! threshold (pass only when the whole confidence interval is on the good side, fail only when
//! it is wholly on the bad side, otherwise inconclusive, which holds).

/// The outcome of one gate or of a whole step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    Pass,
    Inconclusive,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Inconclusive => "inconclusive",
            Verdict::Fail => "fail",
        }
    }
}

/// The one-sided normal quantile z for a confidence in (0.5, 1): P(Z <= z) = confidence.
/// (Acklam's rational approximation; error below 1.2e-9, far under what the gates need.)
pub fn z_one_sided(confidence: f64) -> f64 {
    let p = confidence.clamp(0.5, 0.999_999);
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let high = 1.0 - 0.02425;
    if p <= high {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

/// Wilson score bounds (lower, upper) of a rate of `k` in `n` at normal quantile `z`.
/// With `n == 0` nothing is known: (0, 1).
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = (k as f64 / n).clamp(0.0, 1.0);
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let denominator = 1.0 + z2 / n;
    (
        ((centre - spread) / denominator).max(0.0),
        ((centre + spread) / denominator).min(1.0),
    )
}

/// Newcombe's hybrid score bounds (lower, upper) of `p1 - p0`, the rates `k1/n1` and `k0/n0`
/// (Newcombe 1998, method 10: each side's Wilson bounds combined).
pub fn difference(k1: u64, n1: u64, k0: u64, n0: u64, z: f64) -> (f64, f64) {
    let p1 = if n1 == 0 { 0.0 } else { k1 as f64 / n1 as f64 };
    let p0 = if n0 == 0 { 0.0 } else { k0 as f64 / n0 as f64 };
    let (l1, u1) = wilson(k1, n1, z);
    let (l0, u0) = wilson(k0, n0, z);
    let d = p1 - p0;
    (
        d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt(),
    )
}

/// A rate against its ceiling: pass when even the upper bound is under it, fail when even the
/// lower bound is over it, otherwise inconclusive.
pub fn rate_verdict(k: u64, n: u64, max: f64, z: f64) -> (Verdict, f64, f64) {
    let (low, high) = wilson(k, n, z);
    let verdict = if high <= max {
        Verdict::Pass
    } else if low > max {
        Verdict::Fail
    } else {
        Verdict::Inconclusive
    };
    (verdict, low, high)
}

/// The extracted side's error rate (`k1/n1`) against the monolith's (`k0/n0`) with a tolerated
/// excess `max_increase`: the same three-way rule on the difference's bounds.
pub fn increase_verdict(
    k1: u64,
    n1: u64,
    k0: u64,
    n0: u64,
    max_increase: f64,
    z: f64,
) -> (Verdict, f64, f64) {
    let (low, high) = difference(k1, n1, k0, n0, z);
    let verdict = if high <= max_increase {
        Verdict::Pass
    } else if low > max_increase {
        Verdict::Fail
    } else {
        Verdict::Inconclusive
    };
    (verdict, low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn z_matches_the_normal_table() {
        assert!(close(z_one_sided(0.95), 1.644_854, 1e-5));
        assert!(close(z_one_sided(0.975), 1.959_964, 1e-5));
        assert!(close(z_one_sided(0.99), 2.326_348, 1e-5));
        assert!(close(z_one_sided(0.5), 0.0, 1e-9));
    }

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe 1998, table I: 81/263 at 95 % two-sided (z = 1.96): 0.2553 .. 0.3662.
        let (low, high) = wilson(81, 263, 1.959_964);
        assert!(close(low, 0.2553, 5e-4), "{low}");
        assert!(close(high, 0.3662, 5e-4), "{high}");
        // 0/10: 0 .. 0.2775.
        let (low, high) = wilson(0, 10, 1.959_964);
        assert_eq!(low, 0.0);
        assert!(close(high, 0.2775, 5e-4), "{high}");
        // Nothing observed: anything is possible.
        assert_eq!(wilson(0, 0, 1.96), (0.0, 1.0));
    }

    #[test]
    fn the_difference_matches_newcombe() {
        // Newcombe 1998, table II, example (a): 56/70 - 48/80 = 0.2, 95 %: 0.0524 .. 0.3339.
        let (low, high) = difference(56, 70, 48, 80, 1.959_964);
        assert!(close(low, 0.0524, 5e-4), "{low}");
        assert!(close(high, 0.3339, 5e-4), "{high}");
    }

    #[test]
    fn zero_mismatches_pass_only_with_enough_comparisons() {
        let z = z_one_sided(0.95);
        // Upper bound of 0/n is z²/(n+z²): under 1 % from n = 268 on.
        assert_eq!(rate_verdict(0, 267, 0.01, z).0, Verdict::Inconclusive);
        assert_eq!(rate_verdict(0, 268, 0.01, z).0, Verdict::Pass);
        // A handful is never enough, however clean.
        assert_eq!(rate_verdict(0, 5, 0.01, z).0, Verdict::Inconclusive);
        assert_eq!(rate_verdict(0, 0, 0.01, z).0, Verdict::Inconclusive);
    }

    #[test]
    fn mismatches_fail_only_when_clearly_over() {
        let z = z_one_sided(0.95);
        // 1 in 50 against 1 %: could be bad luck; 5 in 20 cannot. (With a single mismatch
        // Wilson's lower bound leans to "fail" earlier than an exact test would: 1 in 20 is
        // over 1 %. That side of the error rolls back, it never promotes.)
        assert_eq!(rate_verdict(1, 50, 0.01, z).0, Verdict::Inconclusive);
        assert_eq!(rate_verdict(1, 20, 0.01, z).0, Verdict::Fail);
        assert_eq!(rate_verdict(5, 20, 0.01, z).0, Verdict::Fail);
        assert_eq!(rate_verdict(20, 20, 0.1, z).0, Verdict::Fail);
    }

    #[test]
    fn error_rates_compare_over_the_same_window() {
        let z = z_one_sided(0.95);
        // Both clean and large: pass.
        assert_eq!(increase_verdict(0, 500, 0, 5000, 0.01, z).0, Verdict::Pass);
        // The extracted side as bad as the monolith: pass (the service is not worse).
        assert_eq!(
            increase_verdict(25, 1000, 250, 10000, 0.01, z).0,
            Verdict::Pass
        );
        // Half failing: fail.
        assert_eq!(increase_verdict(50, 100, 0, 1000, 0.01, z).0, Verdict::Fail);
        // Too few on the extracted side to tell.
        assert_eq!(
            increase_verdict(0, 10, 0, 1000, 0.01, z).0,
            Verdict::Inconclusive
        );
    }
}
