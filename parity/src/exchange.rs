//! What one side answered (status, headers, the body as far as it was kept), and how a body is
//! written into a corpus or a mismatch log: UTF-8 text as it is, anything else as base64.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One answer, as compared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub status: u16,
    /// Header names in lower case, in the order received; a name may repeat.
    #[serde(default, with = "header_list")]
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, or its first bytes when `truncated`.
    #[serde(default, with = "payload", skip_serializing_if = "Bytes::is_empty")]
    pub body: Bytes,
    /// The body was longer than the limit it was kept to: it is not compared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl Exchange {
    /// The values of header `name` (lower case), joined with `, ` as HTTP allows; `None` when
    /// absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .peekable();
        values.peek()?;
        Some(values.collect::<Vec<_>>().join(", "))
    }

    /// The values of header `name` (any case), in order.
    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether header `name` has the same values here and in `other`, in the same order: then
    /// [`Exchange::header`] is the same on both (the converse is checked by the caller).
    pub(crate) fn same_header(&self, other: &Exchange, name: &str) -> bool {
        self.values(name).eq(other.values(name))
    }

    /// Whether the content type says JSON (`application/json`, `application/problem+json`).
    pub fn is_json(&self) -> bool {
        // One value (nearly always): its essence, read in place.
        let mut values = self.values("content-type");
        if let (Some(value), None) = (values.next(), values.next()) {
            let essence = value.split(|b| *b == b';').next().unwrap_or_default();
            let essence = essence.trim_ascii();
            return essence.eq_ignore_ascii_case(b"application/json")
                || essence.len() >= 5
                    && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json");
        }
        self.header("content-type").is_some_and(|ct| {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
    }
}

/// Headers as `[["name", "value"], ...]` (values read as UTF-8, lossily: header values are
/// ASCII in practice).
pub(crate) mod header_list {
    use super::*;

    pub fn serialize<S: Serializer>(
        headers: &[(String, Vec<u8>)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            headers
                .iter()
                .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value))),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, Vec<u8>)>, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.into_bytes()))
            .collect())
    }
}

/// A body as `{"utf8": "..."}` or `{"base64": "..."}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum Payload {
    Utf8(String),
    Base64(String),
}

pub(crate) mod payload {
    use super::*;

    pub fn serialize<S: Serializer>(body: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(body) {
            Ok(text) => Payload::Utf8(text.to_owned()).serialize(s),
            Err(_) => Payload::Base64(BASE64.encode(body)).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match Payload::deserialize(d)? {
            Payload::Utf8(text) => Ok(Bytes::from(text)),
            Payload::Base64(encoded) => BASE64
                .decode(encoded.as_bytes())
                .map(Bytes::from)
                .map_err(|e| serde::de::Error::custom(format!("body: not base64: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_as_text_or_base64() {
        for body in [&b"{\"a\":1}"[..], &[0xff, 0x00, 0x10][..], b""] {
            let exchange = Exchange {
                status: 200,
                headers: vec![("content-type".into(), b"application/json".to_vec())],
                body: Bytes::copy_from_slice(body),
                truncated: false,
            };
            let line = serde_json::to_string(&exchange).unwrap();
            assert_eq!(serde_json::from_str::<Exchange>(&line).unwrap(), exchange);
        }
        let text = serde_json::to_value(Exchange {
            status: 200,
            body: Bytes::from_static(b"hi"),
            ..Exchange::default()
        })
        .unwrap();
        assert_eq!(text["body"]["utf8"], "hi");
        let binary = serde_json::to_value(Exchange {
            status: 200,
            body: Bytes::from_static(&[0xff]),
            ..Exchange::default()
        })
        .unwrap();
        assert_eq!(binary["body"]["base64"], "/w==");
    }

    #[test]
    fn headers_join_and_json_is_recognised() {
        let exchange = Exchange {
            status: 200,
            headers: vec![
                ("link".into(), b"<a>".to_vec()),
                (
                    "content-type".into(),
                    b"application/problem+json; charset=utf-8".to_vec(),
                ),
                ("link".into(), b"<b>".to_vec()),
            ],
            ..Exchange::default()
        };
        assert_eq!(exchange.header("Link").as_deref(), Some("<a>, <b>"));
        assert_eq!(exchange.header("etag"), None);
        assert!(exchange.is_json());
        let typed = |values: &[&str]| Exchange {
            headers: values
                .iter()
                .map(|v| ("Content-Type".to_owned(), v.as_bytes().to_vec()))
                .collect(),
            ..Exchange::default()
        };
        for (values, json) in [
            (&[" Application/JSON ;charset=utf-8"][..], true),
            (&["application/vnd.api+JSON"], true),
            (&["application/jsonp"], false),
            (&["text/plain", "application/json"], false),
            (&["application/json", "text/plain"], false),
            (&["+json"], true),
            (&["json"], false),
            (&[], false),
        ] {
            assert_eq!(typed(values).is_json(), json, "{values:?}");
        }
        let same = |a: &[&str], b: &[&str]| typed(a).same_header(&typed(b), "content-type");
        assert!(same(&["a", "b"], &["a", "b"]));
        assert!(!same(&["a", "b"], &["b", "a"]));
        assert!(!same(&["a"], &["a", "a"]));
        assert!(same(&[], &[]));
    }
}
