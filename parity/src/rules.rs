//! What a route's comparison looks at and what it leaves out: the `parity` table of a route in
//! routes.toml (`ficus-proxy` deserializes it into [`Rules`]; the live shadow and `ficus parity`
//! read the same value).
//!
//! ```toml
//! [[route]]
//! name = "people-read"
//! # ...
//! [route.parity]
//! headers = ["content-type", "etag", "link", "location"]   # compared (the default)
//! ignore = ["$.fetched_at", "$.items[*].updated_at", "header:etag", "body"]
//! redact = ["$.email", "$..phone", "header:x-session", "query:signature"]
//! calibrate_percent = 10        # requests also sent a second time to the monolith
//! noise_min_percent = 0         # a path is noise once it differed in this share of those pairs
//! max_mismatch_percent = 0      # more mismatched requests than this fails `ficus parity`
//! ```

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::path::Pattern;

/// The parity rules of one route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Response headers compared (names, any case). Default: `content-type`, `etag`, `link`,
    /// `location`. Status and body are always compared.
    #[serde(default = "default_headers", deserialize_with = "header_names")]
    pub headers: Vec<String>,
    /// Differences not counted: JSON paths with wildcards (`$.items[*].updated_at`, `$..id`;
    /// a path covers what lies under it), `header:NAME`, or `body` (a non-JSON body's bytes).
    #[serde(default)]
    pub ignore: Vec<IgnoreRule>,
    /// Values replaced by `[redacted]` wherever an exchange is written (mismatch log, corpus,
    /// reports): JSON paths (request and answer bodies), `header:NAME`, `query:NAME` (also the
    /// fields of form bodies). Added to [`DEFAULT_REDACTIONS`], which always apply.
    #[serde(default)]
    pub redact: Vec<RedactRule>,
    /// Share of compared requests (0..=100) also sent a second time to the monolith to learn
    /// the noise; the same requests every time (a hash of method, path and query).
    #[serde(default = "default_calibrate_percent", deserialize_with = "percent")]
    pub calibrate_percent: f64,
    /// A path is noise once it differed between the two monolith answers in at least this share
    /// (0..=100) of the calibration pairs of the route; 0: once is enough.
    #[serde(default, deserialize_with = "percent")]
    pub noise_min_percent: f64,
    /// The share (0..=100) of compared requests that may mismatch before `ficus parity` fails
    /// the route.
    #[serde(default, deserialize_with = "percent")]
    pub max_mismatch_percent: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            headers: default_headers(),
            ignore: Vec::new(),
            redact: Vec::new(),
            calibrate_percent: default_calibrate_percent(),
            noise_min_percent: 0.0,
            max_mismatch_percent: 0.0,
        }
    }
}

/// Redactions every route has: credentials in headers and queries, secrets in JSON bodies.
pub const DEFAULT_REDACTIONS: &[&str] = &[
    "header:authorization",
    "header:proxy-authorization",
    "header:cookie",
    "header:set-cookie",
    "header:x-api-key",
    "header:x-auth-token",
    "header:x-ficus-identity",
    "query:access_token",
    "query:api_key",
    "query:apikey",
    "query:token",
    "query:password",
    "query:secret",
    "query:signature",
    "$..password",
    "$..secret",
    "$..token",
    "$..access_token",
    "$..refresh_token",
    "$..api_key",
];

fn default_headers() -> Vec<String> {
    ["content-type", "etag", "link", "location"]
        .map(str::to_owned)
        .to_vec()
}

fn default_calibrate_percent() -> f64 {
    10.0
}

fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(d)?;
    if !(0.0..=100.0).contains(&value) {
        return Err(D::Error::custom(format!("{value} is not in 0..=100")));
    }
    Ok(value)
}

fn header_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .into_iter()
        .map(|name| header_name(&name).map_err(D::Error::custom))
        .collect()
}

fn header_name(name: &str) -> Result<String, String> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(format!("`{name}` is not a header name"))
    }
}

/// One `ignore` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum IgnoreRule {
    Json(Pattern),
    /// A header name, lower case.
    Header(String),
    /// The bytes of a non-JSON body.
    Body,
}

impl IgnoreRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('$') {
            Pattern::parse(text).map(Self::Json)
        } else if let Some(name) = text.strip_prefix("header:") {
            header_name(name).map(Self::Header)
        } else if text == "body" {
            Ok(Self::Body)
        } else {
            Err(format!(
                "`{text}` is not a JSON path (`$.a[*].b`), `header:NAME` or `body`"
            ))
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Json(pattern) => pattern.to_string(),
            Self::Header(name) => format!("header:{name}"),
            Self::Body => "body".to_owned(),
        }
    }
}

/// One `redact` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum RedactRule {
    Json(Pattern),
    /// A header name, lower case.
    Header(String),
    /// A query parameter (or form field) name, as written.
    Query(String),
}

impl RedactRule {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.starts_with('$') {
            Pattern::parse(text).map(Self::Json)
        } else if let Some(name) = text.strip_prefix("header:") {
            header_name(name).map(Self::Header)
        } else if let Some(name) = text.strip_prefix("query:") {
            if name.is_empty() {
                Err("`query:` needs a parameter name".to_owned())
            } else {
                Ok(Self::Query(name.to_owned()))
            }
        } else {
            Err(format!(
                "`{text}` is not a JSON path (`$.a[*].b`), `header:NAME` or `query:NAME`"
            ))
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Json(pattern) => pattern.to_string(),
            Self::Header(name) => format!("header:{name}"),
            Self::Query(name) => format!("query:{name}"),
        }
    }
}

macro_rules! as_text {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::parse(&String::deserialize(d)?).map_err(D::Error::custom)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.text())
            }
        }
    )*};
}
as_text!(IgnoreRule, RedactRule);

/// Whether `key` falls in the sampled share `percent` (0..=100): the same answer for the same
/// key on every run and every instance (FNV-1a with a 64-bit finalizer, as the canary buckets).
pub fn sampled(key: &[u8], percent: f64) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in b"ficus-parity\xff".iter().chain(key) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    let bucket = (hash % 10_000) as f64;
    bucket < percent * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_from_toml_with_defaults() {
        let rules: Rules = toml_like(
            r#"{"ignore": ["$.items[*].updated_at", "header:ETag", "body"],
                "redact": ["$.email", "query:sig", "header:X-Session"],
                "max_mismatch_percent": 2.5}"#,
        );
        assert_eq!(rules.headers, default_headers());
        assert_eq!(rules.ignore[1], IgnoreRule::Header("etag".into()));
        assert_eq!(rules.ignore[2], IgnoreRule::Body);
        assert_eq!(rules.redact[1], RedactRule::Query("sig".into()));
        assert_eq!(rules.max_mismatch_percent, 2.5);
        assert_eq!(rules.calibrate_percent, 10.0);
        // Written back as read.
        let back = serde_json::to_value(&rules).unwrap();
        assert_eq!(back["ignore"][0], "$.items[*].updated_at");
        assert_eq!(back["redact"][2], "header:x-session");
    }

    fn toml_like(json: &str) -> Rules {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn bad_rules_name_the_value() {
        for (json, expected) in [
            (r#"{"ignore": ["items"]}"#, "`items` is not a JSON path"),
            (r#"{"redact": ["query:"]}"#, "needs a parameter name"),
            (r#"{"headers": ["bad header"]}"#, "is not a header name"),
            (r#"{"max_mismatch_percent": 140}"#, "140 is not in 0..=100"),
            (r#"{"ignored": []}"#, "unknown field `ignored`"),
        ] {
            let error = serde_json::from_str::<Rules>(json).unwrap_err().to_string();
            assert!(error.contains(expected), "{json}: {error}");
        }
    }

    #[test]
    fn the_sample_is_stable_and_near_its_share() {
        let picked = (0..10_000)
            .filter(|i| sampled(format!("GET /api/people/{i}").as_bytes(), 10.0))
            .count();
        assert!((800..1200).contains(&picked), "{picked}");
        assert!(sampled(b"x", 100.0));
        assert!(!sampled(b"x", 0.0));
        assert_eq!(sampled(b"GET /a", 50.0), sampled(b"GET /a", 50.0));
    }
}
