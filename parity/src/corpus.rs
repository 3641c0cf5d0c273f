//! The corpus: JSON lines, one [`Record`] per line. A recording route writes requests (and, when
//! it has them, both answers); the shadow's mismatch log writes mismatches (request, both answers,
//! the verdict, a `curl` for each side) in the same format, so a log is a corpus too and a day of
//! production traffic becomes a CI test. Redaction happens on write ([`CorpusWriter::write`]);
//! the writer is bounded in bytes and says when it is full instead of growing.
//!
//! ```json
//! {"at_ms":1764300000000,"route":"people-read",
//!  "request":{"method":"GET","path":"/api/people/3","query":"fields=name",
//!             "headers":[["accept","application/json"],["authorization","[redacted]"]]},
//!  "monolith":{"status":200,"headers":[["content-type","application/json"]],"body":{"utf8":"{...}"}},
//!  "extracted":{"status":200,"headers":[...],"body":{"utf8":"{...}"}},
//!  "verdict":{"body":{"as":"json"},"differences":[{"path":"$.name","monolith":"Ann","extracted":"Anne","kind":"real"}],
//!             "real":1,"noise":0,"ignored":0},
//!  "urls":{"monolith":"http://monolith:8080","extracted":"http://people:8081"},
//!  "curl":{"monolith":"curl -sS -i -g 'http://monolith:8080/api/people/3?fields=name' -H \"authorization: $AUTHORIZATION\"",
//!          "extracted":"curl ..."}}
//! ```

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::compare::Verdict;
use crate::exchange::{Exchange, header_list, payload};
use crate::redact::{REDACTED, Redaction};

/// A request as recorded (and replayed by `ficus parity`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// As on the wire (`GET`, `POST`).
    pub method: String,
    /// The path, as received (percent-encoded).
    pub path: String,
    /// The query string without `?`; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub query: String,
    /// Header names in lower case; secrets redacted on write.
    #[serde(default, with = "header_list")]
    pub headers: Vec<(String, Vec<u8>)>,
    #[serde(default, with = "payload", skip_serializing_if = "Bytes::is_empty")]
    pub body: Bytes,
    /// Only the first bytes of the body were kept: a replay would not be the same request.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
}

/// Headers a replay or a `curl` leaves to the HTTP client.
pub const CONNECTION_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// What the calibration sample is drawn on: `METHOD path?query` (the `?` only with a query),
/// for a request in hand or one on its way through the proxy.
pub fn sample_key(method: &str, path: &str, query: &str) -> Vec<u8> {
    if query.is_empty() {
        format!("{method} {path}").into_bytes()
    } else {
        format!("{method} {path}?{query}").into_bytes()
    }
}

impl Request {
    /// `path?query`.
    pub fn target(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// What the calibration sample is drawn on: method and target.
    pub fn sample_key(&self) -> Vec<u8> {
        sample_key(&self.method, &self.path, &self.query)
    }

    /// The values of header `name`, joined.
    pub fn header(&self, name: &str) -> Option<String> {
        let values: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// The request with secret headers, query parameters and body values replaced.
    pub fn redacted(&self, redaction: &Redaction) -> Request {
        let mut request = self.clone();
        redaction.headers(&mut request.headers);
        request.query = redaction.query(&self.query);
        if !self.body_truncated {
            request.body = redaction.body(self.header("content-type").as_deref(), &self.body);
        }
        request
    }

    /// A ready-to-run `curl` sending this request to `base_url` (`http://host:port`). A
    /// redacted header is taken from the environment (`authorization` → `"$AUTHORIZATION"`),
    /// so `export AUTHORIZATION='Bearer ...'` makes it run.
    pub fn curl(&self, base_url: &str) -> String {
        let mut prefix = String::new();
        let mut parts = vec!["curl -sS -i -g".to_owned()];
        match self.method.as_str() {
            "GET" => {}
            "HEAD" => parts.push("-I".to_owned()),
            method => parts.push(format!("-X {}", quote(method))),
        }
        parts.push(quote(&format!(
            "{}{}",
            base_url.trim_end_matches('/'),
            self.target()
        )));
        for (name, value) in &self.headers {
            if CONNECTION_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let plain = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if value == REDACTED.as_bytes() && plain {
                let var: String = name
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_uppercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                parts.push(format!("-H \"{name}: ${var}\""));
            } else {
                parts.push(format!(
                    "-H {}",
                    quote(&format!("{name}: {}", String::from_utf8_lossy(value)))
                ));
            }
        }
        if !self.body.is_empty() {
            match std::str::from_utf8(&self.body) {
                Ok(text) => parts.push(format!("--data-binary {}", quote(text))),
                Err(_) => {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(&self.body);
                    prefix = format!("printf %s {} | base64 -d | ", quote(&encoded));
                    parts.push("--data-binary @-".to_owned());
                }
            }
        }
        let mut line = prefix + &parts.join(" ");
        if self.body_truncated {
            line.push_str("  # the body was cut at the recording limit");
        }
        line
    }
}

/// Single-quoted for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The base URLs of the two sides of a mismatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Urls {
    pub monolith: String,
    pub extracted: String,
}

/// The request as a `curl` against each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curls {
    pub monolith: String,
    pub extracted: String,
}

/// One line of a corpus or of a mismatch log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When it was recorded (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// The route it matched, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub request: Request,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monolith: Option<Exchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extracted: Option<Exchange>,
    /// A mismatch's comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The sides' base URLs, when both are known (a mismatch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Urls>,
    /// Made on write from the redacted request and `urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curl: Option<Curls>,
}

impl Record {
    /// A recorded request.
    pub fn request(route: Option<&str>, request: Request, at_ms: Option<u64>) -> Self {
        Self {
            at_ms,
            route: route.map(str::to_owned),
            request,
            monolith: None,
            extracted: None,
            verdict: None,
            urls: None,
            curl: None,
        }
    }

    /// A mismatch: the request, both answers, the verdict, and the sides' URLs (for the
    /// `curl`s, made when written).
    pub fn mismatch(
        route: &str,
        request: Request,
        monolith: Exchange,
        extracted: Exchange,
        verdict: Verdict,
        urls: Urls,
        at_ms: Option<u64>,
    ) -> Self {
        Self {
            at_ms,
            route: Some(route.to_owned()),
            request,
            monolith: Some(monolith),
            extracted: Some(extracted),
            verdict: Some(verdict),
            urls: Some(urls),
            curl: None,
        }
    }

    /// The record with everything secret replaced, and its `curl`s made from the redacted
    /// request.
    pub fn redacted(&self, redaction: &Redaction) -> Record {
        let request = self.request.redacted(redaction);
        let curl = self.urls.as_ref().map(|urls| Curls {
            monolith: request.curl(&urls.monolith),
            extracted: request.curl(&urls.extracted),
        });
        let mut verdict = self.verdict.clone();
        if let Some(verdict) = &mut verdict {
            for difference in &mut verdict.differences {
                redaction.difference(difference);
            }
        }
        Record {
            at_ms: self.at_ms,
            route: self.route.clone(),
            monolith: self.monolith.as_ref().map(|e| redaction.exchange(e)),
            extracted: self.extracted.as_ref().map(|e| redaction.exchange(e)),
            verdict,
            urls: self.urls.clone(),
            curl,
            request,
        }
    }
}

/// Reading or writing a corpus failed.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}:{line}: not a corpus record: {message}")]
    Record {
        source_name: String,
        line: usize,
        message: String,
    },
}

/// Whether a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Kept,
    /// The record would have crossed the size limit: not written (counted in
    /// [`CorpusWriter::refused`]).
    Full,
}

/// Writes records as JSON lines, redacted, up to `max_bytes` in all.
pub struct CorpusWriter<W: Write> {
    out: W,
    name: PathBuf,
    max_bytes: u64,
    written_bytes: u64,
    refused: u64,
}

impl CorpusWriter<BufWriter<File>> {
    /// Appends to the file at `path` (made when absent); what it holds already counts against
    /// `max_bytes`.
    pub fn append(path: &Path, max_bytes: u64) -> Result<Self, CorpusError> {
        let io = |source| CorpusError::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let existing = file.metadata().map_err(io)?.len();
        let mut writer = Self::new(BufWriter::new(file), max_bytes);
        writer.name = path.to_owned();
        writer.written_bytes = existing;
        Ok(writer)
    }
}

impl<W: Write> CorpusWriter<W> {
    pub fn new(out: W, max_bytes: u64) -> Self {
        Self {
            out,
            name: PathBuf::from("corpus"),
            max_bytes,
            written_bytes: 0,
            refused: 0,
        }
    }

    /// Redacts `record` and writes it as one line, unless that would cross the size limit.
    pub fn write(
        &mut self,
        record: &Record,
        redaction: &Redaction,
    ) -> Result<Written, CorpusError> {
        let mut line =
            serde_json::to_vec(&record.redacted(redaction)).expect("a record always serializes");
        line.push(b'\n');
        if self.written_bytes + line.len() as u64 > self.max_bytes {
            self.refused += 1;
            return Ok(Written::Full);
        }
        self.out
            .write_all(&line)
            .map_err(|source| CorpusError::Io {
                path: self.name.clone(),
                source,
            })?;
        self.written_bytes += line.len() as u64;
        Ok(Written::Kept)
    }

    pub fn flush(&mut self) -> Result<(), CorpusError> {
        self.out.flush().map_err(|source| CorpusError::Io {
            path: self.name.clone(),
            source,
        })
    }

    /// Bytes in the corpus (what the file held when opened included).
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Records not written because the corpus was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads records, one per line (blank lines skipped); an error names the line.
pub struct CorpusReader<R: BufRead> {
    lines: std::io::Lines<R>,
    name: String,
    line: usize,
}

impl CorpusReader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, CorpusError> {
        let file = File::open(path).map_err(|source| CorpusError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::new(BufReader::new(file), &path.display().to_string()))
    }
}

impl<R: BufRead> CorpusReader<R> {
    /// `name` is what errors call the source (a file name).
    pub fn new(input: R, name: &str) -> Self {
        Self {
            lines: input.lines(),
            name: name.to_owned(),
            line: 0,
        }
    }
}

impl<R: BufRead> Iterator for CorpusReader<R> {
    type Item = Result<Record, CorpusError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.line += 1;
            let text = match self.lines.next()? {
                Ok(text) => text,
                Err(source) => {
                    return Some(Err(CorpusError::Io {
                        path: PathBuf::from(&self.name),
                        source,
                    }));
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            return Some(
                serde_json::from_str(&text).map_err(|e| CorpusError::Record {
                    source_name: self.name.clone(),
                    line: self.line,
                    message: e.to_string(),
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::compare;
    use crate::noise::Noise;
    use crate::rules::{RedactRule, Rules};
    use serde_json::json;

    fn get(path: &str) -> Request {
        Request {
            method: "GET".into(),
            path: path.into(),
            query: "page=2&access_token=t0k".into(),
            headers: vec![
                ("accept".into(), b"application/json".to_vec()),
                ("authorization".into(), b"Bearer secret".to_vec()),
                ("host".into(), b"example".to_vec()),
            ],
            ..Request::default()
        }
    }

    fn answer(body: serde_json::Value) -> Exchange {
        Exchange {
            status: 200,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from(body.to_string()),
            truncated: false,
        }
    }

    #[test]
    fn records_round_trip_redacted_with_curls() {
        let monolith = answer(json!({"name": "Ann", "email": "ann@x"}));
        let extracted = answer(json!({"name": "Anne", "email": "anne@x"}));
        let verdict = compare(&Rules::default(), &Noise::default(), &monolith, &extracted);
        let record = Record::mismatch(
            "people-read",
            get("/api/people/1"),
            monolith,
            extracted,
            verdict,
            Urls {
                monolith: "http://m:1".into(),
                extracted: "http://e:2/".into(),
            },
            Some(1),
        );
        let redaction = Redaction::new(&[RedactRule::parse("$.email").unwrap()]);
        let mut writer = CorpusWriter::new(Vec::new(), 1 << 20);
        assert_eq!(writer.write(&record, &redaction).unwrap(), Written::Kept);
        let bytes = writer.into_inner();
        let text = String::from_utf8(bytes.clone()).unwrap();
        for secret in ["secret", "t0k", "ann@x", "anne@x"] {
            assert!(!text.contains(secret), "{secret} written: {text}");
        }
        let read: Vec<Record> = CorpusReader::new(&bytes[..], "log")
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 1);
        let back = &read[0];
        let verdict = back.verdict.as_ref().unwrap();
        assert_eq!(verdict.real, 2);
        let email = verdict
            .differences
            .iter()
            .find(|d| d.path == "$.email")
            .unwrap();
        assert_eq!(email.monolith, Some(json!(REDACTED)));
        let name = verdict
            .differences
            .iter()
            .find(|d| d.path == "$.name")
            .unwrap();
        assert_eq!(name.extracted, Some(json!("Anne")));
        let curl = back.curl.as_ref().unwrap();
        assert_eq!(
            curl.extracted,
            "curl -sS -i -g 'http://e:2/api/people/1?page=2&access_token=REDACTED' \
             -H 'accept: application/json' -H \"authorization: $AUTHORIZATION\""
        );
        assert!(curl.monolith.contains("'http://m:1/api/people/1?"));
        // Reading back and writing again gives the same line (redaction is idempotent).
        let mut again = CorpusWriter::new(Vec::new(), 1 << 20);
        again.write(back, &redaction).unwrap();
        assert_eq!(again.into_inner(), bytes);
    }

    #[test]
    fn curls_quote_and_carry_bodies() {
        let post = Request {
            method: "POST".into(),
            path: "/api/notes".into(),
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: Bytes::from_static(b"{\"text\":\"it's\"}"),
            ..Request::default()
        };
        assert_eq!(
            post.curl("http://m"),
            r#"curl -sS -i -g -X 'POST' 'http://m/api/notes' -H 'content-type: application/json' --data-binary '{"text":"it'\''s"}'"#
        );
        let binary = Request {
            body: Bytes::from_static(&[0, 1, 255]),
            ..post
        };
        assert!(
            binary
                .curl("http://m")
                .starts_with("printf %s 'AAH/' | base64 -d | curl")
        );
        assert!(binary.curl("http://m").ends_with("--data-binary @-"));
    }

    #[test]
    fn the_writer_stops_at_its_limit_and_says_so() {
        let dir = std::env::temp_dir().join(format!("ficus-parity-corpus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corpus.jsonl");
        let _ = std::fs::remove_file(&path);
        let record = Record::request(Some("r"), get("/api/people/1"), None);
        let line_len = serde_json::to_vec(&record.redacted(&Redaction::default()))
            .unwrap()
            .len() as u64
            + 1;
        let limit = line_len * 3 + line_len / 2;
        let mut writer = CorpusWriter::append(&path, limit).unwrap();
        let outcomes: Vec<Written> = (0..5)
            .map(|_| writer.write(&record, &Redaction::default()).unwrap())
            .collect();
        assert_eq!(
            outcomes,
            [
                Written::Kept,
                Written::Kept,
                Written::Kept,
                Written::Full,
                Written::Full
            ]
        );
        assert_eq!(writer.refused(), 2);
        writer.flush().unwrap();
        drop(writer);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), line_len * 3);
        // Reopened: what the file holds counts.
        let mut writer = CorpusWriter::append(&path, limit).unwrap();
        assert_eq!(
            writer.write(&record, &Redaction::default()).unwrap(),
            Written::Full
        );
        drop(writer);
        let read: Vec<Record> = CorpusReader::open(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(
            read[0].request.header("authorization").as_deref(),
            Some(REDACTED)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_line_is_named() {
        let input = "\n{\"request\":{\"method\":\"GET\",\"path\":\"/\"}}\n{\"request\":{}}\n";
        let results: Vec<_> = CorpusReader::new(input.as_bytes(), "c.jsonl").collect();
        assert!(results[0].is_ok());
        let error = results[1].as_ref().unwrap_err().to_string();
        assert!(
            error.starts_with("c.jsonl:3: not a corpus record"),
            "{error}"
        );
    }
}
