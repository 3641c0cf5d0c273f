//! The reading side of `/metrics`: a Prometheus / OpenMetrics text exposition parsed into
//! samples, and the quantile of a histogram's cumulative buckets. The proxy's dashboard reads
//! its own exposition with these, the rollout controller reads every proxy's; both compute
//! latency quantiles with [`quantile`], so the page shows the p95 the gates judge.

use std::collections::BTreeMap;

/// One sample of a text exposition: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, when the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// A histogram bucket's upper bound (`le`, `+Inf` as infinity), when the sample has one.
    pub fn le(&self) -> Option<f64> {
        match self.label("le")? {
            "+Inf" => Some(f64::INFINITY),
            other => other.parse().ok(),
        }
    }
}

/// Parses Prometheus / OpenMetrics text: `name{label="value",...} value [timestamp]` lines;
/// comments and lines it cannot read are skipped.
pub fn parse_text(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ', '\t'])?;
    let name = &line[..name_end];
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end = loop {
            while chars.next_if(|(_, c)| *c == ',' || *c == ' ').is_some() {}
            let (start, first) = chars.next()?;
            if first == '}' {
                break start;
            }
            let mut eq = None;
            for (i, c) in chars.by_ref() {
                if c == '=' {
                    eq = Some(i);
                    break;
                }
            }
            let key = body[start..eq?].trim();
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut value = String::new();
            let mut escaped = false;
            loop {
                let (_, c) = chars.next()?;
                match (escaped, c) {
                    (true, 'n') => value.push('\n'),
                    (true, other) => value.push(other),
                    (false, '\\') => {
                        escaped = true;
                        continue;
                    }
                    (false, '"') => break,
                    (false, other) => value.push(other),
                }
                escaped = false;
            }
            labels.insert(key.to_owned(), value);
        };
        rest = body.get(end + 1..)?;
    }
    let value = match rest.split_whitespace().next()? {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The `q` quantile (0..1) of a histogram given as cumulative `(upper bound, count)` buckets in
/// increasing order: the upper bound of the bucket holding it (a conservative estimate: the
/// true value is at most this, and above the bound before it), or `None` without
/// observations. Past the last finite bound: infinity.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last().map(|b| b.1)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    buckets
        .iter()
        .find(|(_, count)| *count >= rank)
        .map(|(le, _)| *le)
}

/// `now - before`, bucket by bucket (both cumulative, the same bounds): the histogram of what
/// was observed between the two readings. A bucket that went down (the process restarted)
/// counts whole, as a counter reset does.
pub fn buckets_since(now: &[(f64, f64)], before: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let reset = now
        .iter()
        .any(|(le, n)| before.iter().any(|(b, m)| b == le && m > n));
    now.iter()
        .map(|(le, n)| {
            let base = if reset {
                0.0
            } else {
                before
                    .iter()
                    .find(|(b, _)| b == le)
                    .map_or(0.0, |(_, m)| *m)
            };
            (*le, n - base)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_parses_with_labels_and_escapes() {
        let samples = parse_text(
            "a_total{x=\"1\",y=\"q\\\"uote\"} 3\nb 4.5 1700000000\n# comment\nc{} 1\nd{le=\"+Inf\",} +Inf\n",
        );
        assert_eq!(samples.len(), 4, "{samples:#?}");
        assert_eq!(samples[0].labels["y"], "q\"uote");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].name, "b");
        assert_eq!(samples[1].value, 4.5);
        assert!(samples[3].value.is_infinite());
        assert_eq!(samples[3].le(), Some(f64::INFINITY));
        assert_eq!(samples[0].le(), None);
        // A label value that looks like another label is still one value.
        let odd = parse_text("h_bucket{route=\"x le=\\\"1\\\"\",le=\"0.5\"} 2\n");
        assert_eq!(odd[0].label("route"), Some("x le=\"1\""));
        assert_eq!(odd[0].le(), Some(0.5));
    }

    #[test]
    fn quantiles_read_the_bucket_holding_the_rank() {
        let buckets = [
            (0.001, 10.0),
            (0.002, 90.0),
            (0.004, 99.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(&buckets, 0.5), Some(0.002));
        assert_eq!(quantile(&buckets, 0.95), Some(0.004));
        assert_eq!(quantile(&buckets, 0.9), Some(0.002));
        assert_eq!(quantile(&buckets, 1.0), Some(f64::INFINITY));
        assert_eq!(quantile(&[(0.1, 0.0), (f64::INFINITY, 0.0)], 0.95), None);
        assert_eq!(quantile(&[], 0.95), None);
    }

    #[test]
    fn buckets_since_is_what_was_observed_between_and_a_reset_counts_whole() {
        let before = [(0.001, 10.0), (0.002, 12.0), (f64::INFINITY, 12.0)];
        let now = [(0.001, 10.0), (0.002, 15.0), (f64::INFINITY, 20.0)];
        assert_eq!(
            buckets_since(&now, &before),
            vec![(0.001, 0.0), (0.002, 3.0), (f64::INFINITY, 8.0)]
        );
        let restarted = [(0.001, 1.0), (0.002, 2.0), (f64::INFINITY, 2.0)];
        assert_eq!(buckets_since(&restarted, &before), restarted.to_vec());
        assert_eq!(buckets_since(&now, &[]), now.to_vec());
    }
}
