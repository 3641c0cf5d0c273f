//! Noise calibration, as Diffy does it: the same request answered twice by the monolith; every
//! place where the two answers differ (a timestamp, a generated id, `date`, `x-request-id`) is
//! noise, and a difference there does not count against the extracted side. What was learned is
//! kept per route as counts, visible as it is (admin API, reports).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compare::{Location, find};
use crate::exchange::Exchange;

/// What calibration learned for one route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// Pairs of monolith answers compared.
    pub pairs: u64,
    /// How many pairs differed at each place: `status`, `header:NAME`, `body`, or a JSON path
    /// with indices generalized (`$.items[*].updated_at`: noise in one element of a list is
    /// noise in all of them).
    pub paths: BTreeMap<String, u64>,
}

impl Noise {
    /// Learns from two monolith answers to the same request: every header, the status and the
    /// body are compared, whatever the route's rules say.
    pub fn learn(&mut self, first: &Exchange, second: &Exchange) {
        self.pairs += 1;
        let mut found = Vec::new();
        find(first, second, None, &mut found);
        let mut seen = std::collections::BTreeSet::new();
        for difference in found {
            // The place itself, in its general form (its last key).
            let key = difference
                .location
                .noise_keys()
                .pop()
                .unwrap_or_else(|| difference.location.render());
            seen.insert(key);
        }
        for key in seen {
            *self.paths.entry(key).or_default() += 1;
        }
    }

    /// Adds what another calibration learned (another instance, another run).
    pub fn merge(&mut self, other: &Noise) {
        self.pairs += other.pairs;
        for (path, count) in &other.paths {
            *self.paths.entry(path.clone()).or_default() += count;
        }
    }

    /// Whether a difference at `location` is noise: it, or a value it lies under, differed in
    /// at least `min_percent` of the pairs (and at least once).
    pub(crate) fn suppresses(&self, location: &Location, min_percent: f64) -> bool {
        location.noise_keys().iter().any(|key| {
            self.paths.get(key).is_some_and(|&count| {
                count > 0 && (count as f64) * 100.0 >= min_percent * self.pairs as f64
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{Kind, compare};
    use crate::rules::Rules;
    use bytes::Bytes;
    use serde_json::{Value, json};

    fn answer(body: Value, request_id: &str) -> Exchange {
        Exchange {
            status: 200,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-request-id".into(), request_id.as_bytes().to_vec()),
            ],
            body: Bytes::from(serde_json::to_vec(&body).unwrap()),
            truncated: false,
        }
    }

    #[test]
    fn calibration_learns_what_the_monolith_changes_by_itself() {
        let mut noise = Noise::default();
        noise.learn(
            &answer(
                json!({"items": [{"id": 1, "seen_at": 100}], "trace": "a1", "n": 1}),
                "r1",
            ),
            &answer(
                json!({"items": [{"id": 1, "seen_at": 101}], "trace": "b2", "n": 1}),
                "r2",
            ),
        );
        assert_eq!(noise.pairs, 1);
        let learned: Vec<&str> = noise.paths.keys().map(String::as_str).collect();
        assert_eq!(
            learned,
            ["$.items[*].seen_at", "$.trace", "header:x-request-id"]
        );

        // The extracted side differs there, in another element, and in one real field.
        let rules = Rules {
            headers: vec!["content-type".into(), "x-request-id".into()],
            ..Rules::default()
        };
        let monolith = answer(
            json!({"items": [{"id": 1, "seen_at": 100}, {"id": 2, "seen_at": 100}], "trace": "a1", "n": 1}),
            "r1",
        );
        let extracted = answer(
            json!({"items": [{"id": 1, "seen_at": 200}, {"id": 2, "seen_at": 300}], "trace": "zz", "n": 2}),
            "r9",
        );
        let verdict = compare(&rules, &noise, &monolith, &extracted);
        assert_eq!(verdict.real, 1, "{verdict:#?}");
        assert_eq!(verdict.differences[0].path, "$.n");
        assert_eq!(verdict.noise, 4);
        assert!(
            verdict.differences[1..]
                .iter()
                .all(|d| d.kind == Kind::Noise)
        );

        // Without calibration every one of them is real.
        let verdict = compare(&rules, &Noise::default(), &monolith, &extracted);
        assert_eq!(verdict.real, 5);
    }

    #[test]
    fn a_noise_threshold_needs_the_share_of_pairs() {
        let mut noise = Noise::default();
        noise.learn(&answer(json!({"t": 1}), "r"), &answer(json!({"t": 2}), "r"));
        for _ in 0..9 {
            noise.learn(&answer(json!({"t": 1}), "r"), &answer(json!({"t": 1}), "r"));
        }
        assert_eq!(noise.paths["$.t"], 1);
        let rules = |min: f64| Rules {
            noise_min_percent: min,
            ..Rules::default()
        };
        let (a, b) = (answer(json!({"t": 1}), "r"), answer(json!({"t": 5}), "r"));
        // Differed in 1 of 10 pairs: noise at 10 %, not at 20 %.
        assert!(compare(&rules(10.0), &noise, &a, &b).is_match());
        assert!(!compare(&rules(20.0), &noise, &a, &b).is_match());

        let mut other = Noise::default();
        other.learn(&answer(json!({"u": 1}), "r"), &answer(json!({"u": 2}), "r"));
        noise.merge(&other);
        assert_eq!(noise.pairs, 11);
        assert_eq!(noise.paths["$.u"], 1);
    }
}
