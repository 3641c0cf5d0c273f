//! Redaction: secrets and personal fields replaced by `[redacted]` before anything is written
//! (mismatch log, corpus, reports): header values, query parameters and form fields, JSON values
//! in request and answer bodies, and the values of differences found at redacted places.

use bytes::Bytes;
use serde_json::Value;

use crate::compare::{Difference, parse_concrete};
use crate::exchange::Exchange;
use crate::path::{Pattern, Step};
use crate::rules::{DEFAULT_REDACTIONS, RedactRule, Rules};

/// What replaces a redacted value.
pub const REDACTED: &str = "[redacted]";
/// What replaces a redacted query parameter (no brackets: they would need encoding in a URL).
pub const REDACTED_QUERY: &str = "REDACTED";

/// The redactions of a route: its `redact` rules and [`DEFAULT_REDACTIONS`].
#[derive(Debug, Clone)]
pub struct Redaction {
    headers: Vec<String>,
    queries: Vec<String>,
    json: Vec<Pattern>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Redaction {
    /// The defaults and `rules`.
    pub fn new(rules: &[RedactRule]) -> Self {
        let mut redaction = Self {
            headers: Vec::new(),
            queries: Vec::new(),
            json: Vec::new(),
        };
        let defaults = DEFAULT_REDACTIONS
            .iter()
            .map(|text| RedactRule::parse(text).expect("the default redactions parse"));
        for rule in defaults.chain(rules.iter().cloned()) {
            match rule {
                RedactRule::Header(name) => redaction.headers.push(name),
                RedactRule::Query(name) => redaction.queries.push(name),
                RedactRule::Json(pattern) => redaction.json.push(pattern),
            }
        }
        redaction
    }

    /// The redactions of a route's rules.
    pub fn of(rules: &Rules) -> Self {
        Self::new(&rules.redact)
    }

    pub fn header_is_secret(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Header values of redacted names replaced.
    pub fn headers(&self, headers: &mut [(String, Vec<u8>)]) {
        for (name, value) in headers {
            if self.header_is_secret(name) {
                *value = REDACTED.as_bytes().to_vec();
            }
        }
    }

    /// A query string (or form body) with the values of redacted parameters replaced.
    pub fn query(&self, query: &str) -> String {
        query
            .split('&')
            .map(|pair| {
                let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                if self.queries.iter().any(|q| q.eq_ignore_ascii_case(name)) {
                    format!("{name}={REDACTED_QUERY}")
                } else {
                    pair.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&")
    }

    /// A body with redacted values replaced: JSON values at redacted paths, form fields by the
    /// query rules. Other bodies are returned as they are.
    pub fn body(&self, content_type: Option<&str>, body: &Bytes) -> Bytes {
        if body.is_empty() {
            return body.clone();
        }
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if essence == "application/x-www-form-urlencoded"
            && let Ok(text) = std::str::from_utf8(body)
        {
            return Bytes::from(self.query(text));
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(mut value) => {
                if self.json_value(&mut value) {
                    Bytes::from(serde_json::to_vec(&value).unwrap_or_default())
                } else {
                    body.clone()
                }
            }
            Err(_) => body.clone(),
        }
    }

    /// Replaces values at redacted paths; true when one was.
    pub fn json_value(&self, value: &mut Value) -> bool {
        let mut at = Vec::new();
        self.walk(value, &mut at)
    }

    fn walk(&self, value: &mut Value, at: &mut Vec<Step>) -> bool {
        if !at.is_empty() && self.json.iter().any(|p| p.matches(at)) {
            *value = Value::String(REDACTED.to_owned());
            return true;
        }
        let mut changed = false;
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    at.push(Step::Key(key.clone()));
                    changed |= self.walk(child, at);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter_mut().enumerate() {
                    at.push(Step::Index(index));
                    changed |= self.walk(child, at);
                    at.pop();
                }
            }
            _ => {}
        }
        changed
    }

    /// An answer with its secret headers and body values replaced.
    pub fn exchange(&self, exchange: &Exchange) -> Exchange {
        let mut redacted = exchange.clone();
        self.headers(&mut redacted.headers);
        if !exchange.truncated {
            redacted.body = self.body(exchange.header("content-type").as_deref(), &exchange.body);
        }
        redacted
    }

    /// A difference with its values replaced when its place is redacted (or lies inside a
    /// redacted value, or holds one).
    pub fn difference(&self, difference: &mut Difference) {
        let secret = if let Some(name) = difference.path.strip_prefix("header:") {
            self.header_is_secret(name)
        } else if let Some(steps) = parse_concrete(&difference.path) {
            self.json.iter().any(|p| p.covers(&steps))
        } else {
            false
        };
        for value in [&mut difference.monolith, &mut difference.extracted]
            .into_iter()
            .flatten()
        {
            if secret {
                *value = Value::String(REDACTED.to_owned());
            } else if let Some(steps) = parse_concrete(&difference.path) {
                // Values below the difference's place: walk with the place as the prefix.
                let mut at = steps;
                self.walk_below(value, &mut at);
            }
        }
    }

    fn walk_below(&self, value: &mut Value, at: &mut Vec<Step>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    at.push(Step::Key(key.clone()));
                    self.walk(child, at);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter_mut().enumerate() {
                    at.push(Step::Index(index));
                    self.walk(child, at);
                    at.pop();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::Kind;
    use serde_json::json;

    #[test]
    fn headers_queries_forms_and_json_are_redacted() {
        let rules: Rules = serde_json::from_value(json!({
            "redact": ["$.email", "$.people[*].phone", "header:x-session", "query:sig"]
        }))
        .unwrap();
        let redaction = Redaction::of(&rules);
        let mut headers = vec![
            ("authorization".to_owned(), b"Bearer abc".to_vec()),
            ("x-session".to_owned(), b"s1".to_vec()),
            ("accept".to_owned(), b"*/*".to_vec()),
        ];
        redaction.headers(&mut headers);
        assert_eq!(headers[0].1, REDACTED.as_bytes());
        assert_eq!(headers[1].1, REDACTED.as_bytes());
        assert_eq!(headers[2].1, b"*/*");

        assert_eq!(
            redaction.query("page=2&sig=xyz&access_token=t&q=a%20b"),
            "page=2&sig=REDACTED&access_token=REDACTED&q=a%20b"
        );
        let form = redaction.body(
            Some("application/x-www-form-urlencoded"),
            &Bytes::from_static(b"user=ann&password=hunter2"),
        );
        assert_eq!(&form[..], b"user=ann&password=REDACTED");

        let body = Bytes::from(
            json!({"email": "a@x", "people": [{"phone": "1", "name": "A"}], "auth": {"password": "p"}})
                .to_string(),
        );
        let redacted: Value =
            serde_json::from_slice(&redaction.body(Some("application/json"), &body)).unwrap();
        assert_eq!(
            redacted,
            json!({"email": REDACTED, "people": [{"phone": REDACTED, "name": "A"}], "auth": {"password": REDACTED}})
        );
        // Not JSON, not a form: as it is.
        let plain = Bytes::from_static(b"email=a@x");
        assert_eq!(redaction.body(Some("text/plain"), &plain), plain);
    }

    #[test]
    fn differences_at_or_above_redacted_places_are_redacted() {
        let redaction = Redaction::new(&[RedactRule::parse("$.people[*].email").unwrap()]);
        let mut at = Difference {
            path: "$.people[2].email".into(),
            monolith: Some(json!("a@x")),
            extracted: Some(json!("b@x")),
            kind: Kind::Real,
        };
        redaction.difference(&mut at);
        assert_eq!(at.monolith, Some(json!(REDACTED)));
        assert_eq!(at.extracted, Some(json!(REDACTED)));
        let mut above = Difference {
            path: "$.people[2]".into(),
            monolith: None,
            extracted: Some(json!({"email": "c@x", "name": "C"})),
            kind: Kind::Real,
        };
        redaction.difference(&mut above);
        assert_eq!(
            above.extracted,
            Some(json!({"email": REDACTED, "name": "C"}))
        );
        let mut header = Difference {
            path: "header:set-cookie".into(),
            monolith: Some(json!("s=1")),
            extracted: None,
            kind: Kind::Real,
        };
        redaction.difference(&mut header);
        assert_eq!(header.monolith, Some(json!(REDACTED)));
    }
}
