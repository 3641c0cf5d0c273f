//! The comparison: status, the route's chosen headers, and the body (JSON structurally, with
//! the JSON path of each difference; anything else by bytes, shown as text or as a digest),
//! each difference then classed as ignored (a rule of the route), noise (calibration saw the
//! monolith differ from itself there) or real.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

use crate::exchange::Exchange;
use crate::noise::Noise;
use crate::path::{Pattern, Step, render, render_general};
use crate::rules::{IgnoreRule, Rules};

/// At most this many differences are kept in a verdict (real ones first); the counts stay exact.
pub const MAX_KEPT_DIFFERENCES: usize = 100;
/// Past this many differences in one pair of answers the diff stops looking (`omitted` says).
const MAX_FOUND_DIFFERENCES: usize = 10_000;
/// Bodies and values up to this size are shown as text; larger ones as a digest.
const MAX_SHOWN_BYTES: usize = 512;

/// How a difference counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Counts against the extracted side.
    Real,
    /// The monolith differed from itself there in calibration.
    Noise,
    /// A rule of the route (`ignore`) leaves it out.
    Ignored,
}

/// One difference between the two answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    /// `status`, `header:etag`, `body` (non-JSON bytes) or a JSON path (`$.people[3].name`).
    pub path: String,
    /// The monolith's value; absent when the monolith had none there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monolith: Option<Value>,
    /// The extracted side's value; absent when it had none there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<Value>,
    pub kind: Kind,
}

/// How the bodies were compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "as")]
pub enum BodyCheck {
    /// Both parsed as JSON and were compared structurally.
    Json,
    /// Compared byte for byte.
    Bytes,
    /// Not compared (a body was over the kept limit); status and headers still were.
    Skipped { reason: String },
}

/// The outcome of one comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub body: BodyCheck,
    /// Real ones first, at most [`MAX_KEPT_DIFFERENCES`].
    pub differences: Vec<Difference>,
    pub real: usize,
    pub noise: usize,
    pub ignored: usize,
    /// Differences past the search limit, neither counted nor kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Verdict {
    /// No real difference (noise and ignored ones do not count).
    pub fn is_match(&self) -> bool {
        self.real == 0 && self.omitted == 0
    }

    /// The real differences.
    pub fn real_differences(&self) -> impl Iterator<Item = &Difference> {
        self.differences.iter().filter(|d| d.kind == Kind::Real)
    }
}

/// Where in an exchange a difference is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    Status,
    Header(String),
    /// The bytes of a non-JSON body.
    Body,
    Json(Vec<Step>),
}

impl Location {
    pub(crate) fn render(&self) -> String {
        match self {
            Location::Status => "status".to_owned(),
            Location::Header(name) => format!("header:{name}"),
            Location::Body => "body".to_owned(),
            Location::Json(steps) => render(steps),
        }
    }

    /// The keys noise is learned under: this place and, for JSON, every value above it (with
    /// indices as `[*]`).
    pub(crate) fn noise_keys(&self) -> Vec<String> {
        match self {
            Location::Json(steps) => (0..=steps.len())
                .map(|end| render_general(&steps[..end]))
                .collect(),
            other => vec![other.render()],
        }
    }
}

/// A difference found, before it is classed.
pub(crate) struct Found {
    pub location: Location,
    pub monolith: Option<Value>,
    pub extracted: Option<Value>,
}

/// Every difference between two answers: status, the `headers` named (all of them when
/// `None`), and the body. Returns how the body was compared and how many were past the limit.
pub(crate) fn find(
    first: &Exchange,
    second: &Exchange,
    headers: Option<&[String]>,
    out: &mut Vec<Found>,
) -> (BodyCheck, usize) {
    if first.status != second.status {
        out.push(Found {
            location: Location::Status,
            monolith: Some(Value::from(first.status)),
            extracted: Some(Value::from(second.status)),
        });
    }
    // The common case first, without allocating: every chosen header the same on both sides.
    let all_same = headers.is_some_and(|names| {
        first.headers == second.headers || names.iter().all(|name| first.same_header(second, name))
    });
    let names: BTreeSet<String> = match headers {
        _ if all_same => BTreeSet::new(),
        Some(names) => names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        None => first
            .headers
            .iter()
            .chain(&second.headers)
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect(),
    };
    for name in names {
        let (a, b) = (first.header(&name), second.header(&name));
        if a != b {
            out.push(Found {
                location: Location::Header(name),
                monolith: a.map(Value::String),
                extracted: b.map(Value::String),
            });
        }
    }
    if first.truncated || second.truncated {
        let reason = "a body was over the kept limit".to_owned();
        return (BodyCheck::Skipped { reason }, 0);
    }
    let is_json = first.is_json() || second.is_json();
    // The same bytes are the same value: nothing to parse.
    if first.body == second.body {
        return (
            if is_json {
                BodyCheck::Json
            } else {
                BodyCheck::Bytes
            },
            0,
        );
    }
    if is_json {
        let parsed = (
            serde_json::from_slice::<Value>(&first.body),
            serde_json::from_slice::<Value>(&second.body),
        );
        if let (Ok(a), Ok(b)) = parsed {
            let mut omitted = 0;
            json(&a, &b, &mut Vec::new(), out, &mut omitted);
            return (BodyCheck::Json, omitted);
        }
    }
    if first.body != second.body {
        out.push(Found {
            location: Location::Body,
            monolith: Some(shown(&first.body)),
            extracted: Some(shown(&second.body)),
        });
    }
    (BodyCheck::Bytes, 0)
}

/// A body as shown in a difference: its text when short UTF-8, else its digest and length.
fn shown(body: &[u8]) -> Value {
    match std::str::from_utf8(body) {
        Ok(text) if body.len() <= MAX_SHOWN_BYTES => Value::String(text.to_owned()),
        _ => {
            let digest = Sha256::digest(body);
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            Value::String(format!("sha256:{hex}… ({} bytes)", body.len()))
        }
    }
}

/// Structural diff: objects by key (order irrelevant), arrays by index, numbers by value.
fn json(a: &Value, b: &Value, at: &mut Vec<Step>, out: &mut Vec<Found>, omitted: &mut usize) {
    fn differ(
        out: &mut Vec<Found>,
        omitted: &mut usize,
        at: &[Step],
        a: Option<&Value>,
        b: Option<&Value>,
    ) {
        if out.len() >= MAX_FOUND_DIFFERENCES {
            *omitted += 1;
            return;
        }
        out.push(Found {
            location: Location::Json(at.to_vec()),
            monolith: a.cloned(),
            extracted: b.cloned(),
        });
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (key, value) in x {
                at.push(Step::Key(key.clone()));
                match y.get(key) {
                    Some(other) => json(value, other, at, out, omitted),
                    None => differ(out, omitted, at, Some(value), None),
                }
                at.pop();
            }
            for (key, value) in y {
                if !x.contains_key(key) {
                    at.push(Step::Key(key.clone()));
                    differ(out, omitted, at, None, Some(value));
                    at.pop();
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for index in 0..x.len().max(y.len()) {
                at.push(Step::Index(index));
                match (x.get(index), y.get(index)) {
                    (Some(p), Some(q)) => json(p, q, at, out, omitted),
                    (p, q) => differ(out, omitted, at, p, q),
                }
                at.pop();
            }
        }
        (Value::Number(x), Value::Number(y)) if same_number(x, y) => {}
        (x, y) if x == y => {}
        (x, y) => differ(out, omitted, at, Some(x), Some(y)),
    }
}

/// `1` and `1.0` are the same number; integers are compared exactly.
fn same_number(x: &Number, y: &Number) -> bool {
    if let (Some(p), Some(q)) = (x.as_i64(), y.as_i64()) {
        return p == q;
    }
    if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
        return p == q;
    }
    x.as_f64() == y.as_f64()
}

/// Compares the extracted side's answer with the monolith's under a route's rules and the noise
/// learned for it.
pub fn compare(rules: &Rules, noise: &Noise, monolith: &Exchange, extracted: &Exchange) -> Verdict {
    let mut found = Vec::new();
    let (body, omitted) = find(monolith, extracted, Some(&rules.headers), &mut found);
    let mut differences: Vec<Difference> = found
        .into_iter()
        .map(|f| {
            let kind = if ignored(rules, &f.location) {
                Kind::Ignored
            } else if noise.suppresses(&f.location, rules.noise_min_percent) {
                Kind::Noise
            } else {
                Kind::Real
            };
            Difference {
                path: f.location.render(),
                monolith: f.monolith,
                extracted: f.extracted,
                kind,
            }
        })
        .collect();
    let count = |kind| differences.iter().filter(|d| d.kind == kind).count();
    let (real, noise_count, ignored_count) =
        (count(Kind::Real), count(Kind::Noise), count(Kind::Ignored));
    // A stable sort: real first, each kind in the order found.
    differences.sort_by_key(|d| d.kind);
    differences.truncate(MAX_KEPT_DIFFERENCES);
    Verdict {
        body,
        differences,
        real,
        noise: noise_count,
        ignored: ignored_count,
        omitted,
    }
}

fn ignored(rules: &Rules, location: &Location) -> bool {
    rules.ignore.iter().any(|rule| match (rule, location) {
        (IgnoreRule::Json(pattern), Location::Json(steps)) => pattern.covers(steps),
        (IgnoreRule::Header(name), Location::Header(header)) => name == header,
        (IgnoreRule::Body, Location::Body) => true,
        _ => false,
    })
}

/// The steps of a concrete JSON path as [`render`] writes it (`$.people[3].name`); `None` for
/// anything else (`status`, `header:etag`, a pattern with wildcards).
pub(crate) fn parse_concrete(path: &str) -> Option<Vec<Step>> {
    let pattern = Pattern::parse(path).ok()?;
    pattern.concrete()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn answer(status: u16, body: Value) -> Exchange {
        Exchange {
            status,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("etag".into(), b"\"v1\"".to_vec()),
            ],
            body: Bytes::from(serde_json::to_vec(&body).unwrap()),
            truncated: false,
        }
    }

    fn paths(verdict: &Verdict, kind: Kind) -> Vec<&str> {
        verdict
            .differences
            .iter()
            .filter(|d| d.kind == kind)
            .map(|d| d.path.as_str())
            .collect()
    }

    #[test]
    fn json_is_compared_structurally_with_paths() {
        let monolith = answer(
            200,
            json!({"people": [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Bob", "tags": ["a"]}], "total": 2, "ratio": 1.0}),
        );
        // Key order differs, a number is written another way: the same.
        let same = Exchange {
            body: Bytes::from_static(
                br#"{"ratio": 1, "total": 2, "people": [{"name": "Ann", "id": 1}, {"tags": ["a"], "name": "Bob", "id": 2}]}"#,
            ),
            ..monolith.clone()
        };
        let verdict = compare(&Rules::default(), &Noise::default(), &monolith, &same);
        assert!(verdict.is_match(), "{verdict:#?}");
        assert_eq!(verdict.body, BodyCheck::Json);

        let other = answer(
            200,
            json!({"people": [{"id": 1, "name": "Ann"}, {"id": 2, "name": "Rob", "tags": ["a", "b"]}], "extra": true, "ratio": 1.0}),
        );
        let verdict = compare(&Rules::default(), &Noise::default(), &monolith, &other);
        assert!(!verdict.is_match());
        assert_eq!(
            paths(&verdict, Kind::Real),
            [
                "$.people[1].name",
                "$.people[1].tags[1]",
                "$.total",
                "$.extra"
            ]
        );
        let name = &verdict.differences[0];
        assert_eq!(name.monolith, Some(json!("Bob")));
        assert_eq!(name.extracted, Some(json!("Rob")));
        let total = &verdict.differences[2];
        assert_eq!(
            (total.monolith.clone(), total.extracted.clone()),
            (Some(json!(2)), None)
        );
    }

    #[test]
    fn status_headers_and_bytes() {
        let mut monolith = answer(200, json!({}));
        monolith.headers.push(("date".into(), b"Mon".to_vec()));
        let mut extracted = answer(404, json!({}));
        extracted.headers[1].1 = b"\"v2\"".to_vec();
        extracted.headers.push(("date".into(), b"Tue".to_vec()));
        let verdict = compare(&Rules::default(), &Noise::default(), &monolith, &extracted);
        // `date` is not among the compared headers.
        assert_eq!(paths(&verdict, Kind::Real), ["status", "header:etag"]);

        let text = |body: &'static [u8]| Exchange {
            status: 200,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: Bytes::from_static(body),
            truncated: false,
        };
        let verdict = compare(
            &Rules::default(),
            &Noise::default(),
            &text(b"one"),
            &text(b"two"),
        );
        assert_eq!(verdict.body, BodyCheck::Bytes);
        assert_eq!(verdict.differences[0].path, "body");
        assert_eq!(verdict.differences[0].extracted, Some(json!("two")));
        // Large bodies are shown as digests.
        let big = vec![b'x'; 4096];
        let verdict = compare(
            &Rules::default(),
            &Noise::default(),
            &text(b"short"),
            &Exchange {
                body: Bytes::from(big),
                ..text(b"")
            },
        );
        let shown = verdict.differences[0].extracted.clone().unwrap();
        assert!(shown.as_str().unwrap().starts_with("sha256:"), "{shown}");
        assert!(shown.as_str().unwrap().ends_with("(4096 bytes)"), "{shown}");
        // Truncated bodies are not compared, and say so.
        let verdict = compare(
            &Rules::default(),
            &Noise::default(),
            &text(b"one"),
            &Exchange {
                truncated: true,
                ..text(b"two")
            },
        );
        assert!(verdict.is_match());
        assert!(matches!(verdict.body, BodyCheck::Skipped { .. }));
    }

    #[test]
    fn ignore_rules_with_wildcards_suppress() {
        let monolith = answer(
            200,
            json!({"items": [{"id": 1, "updated_at": "t1"}, {"id": 2, "updated_at": "t2"}], "meta": {"took_ms": 3}}),
        );
        let extracted = answer(
            200,
            json!({"items": [{"id": 1, "updated_at": "u1"}, {"id": 2, "updated_at": "u2"}], "meta": {"took_ms": 9, "host": "b"}}),
        );
        let rules: Rules = serde_json::from_value(json!({
            "ignore": ["$.items[*].updated_at", "$.meta"]
        }))
        .unwrap();
        let verdict = compare(&rules, &Noise::default(), &monolith, &extracted);
        assert!(verdict.is_match(), "{verdict:#?}");
        assert_eq!(verdict.ignored, 4);
        // Without the rules they are real.
        let verdict = compare(&Rules::default(), &Noise::default(), &monolith, &extracted);
        assert_eq!(verdict.real, 4);
    }

    #[test]
    fn concrete_paths_parse_back() {
        let steps = vec![
            Step::Key("people".into()),
            Step::Index(3),
            Step::Key("a b".into()),
        ];
        assert_eq!(parse_concrete(&render(&steps)), Some(steps));
        assert_eq!(parse_concrete("$.a[*]"), None);
        assert_eq!(parse_concrete("header:etag"), None);
    }
}
