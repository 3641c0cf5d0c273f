//! Debezium's envelope, written straight into bytes:
//!
//! ```json
//! {"before": {...} | null, "after": {...} | null,
//!  "source": {"version", "connector": "postgresql", "name": <prefix>, "ts_ms": <commit time>,
//!             "snapshot": "false" | "true" | "first" | "first_in_data_collection" |
//!                         "last_in_data_collection" | "last",
//!             "db", "sequence": "[\"<last commit end lsn>\",\"<lsn>\"]",
//!             "ts_us", "ts_ns", "schema", "table", "txId", "lsn", "xmin": null,
//!             "origin": null, "origin_lsn": null},
//!  "transaction": null, "op": "c" | "u" | "d" | "r" | "t",
//!  "ts_ms", "ts_us", "ts_ns": <processing time>}
//! ```
//!
//! Members in Debezium 3.6's order, so the bytes match too.
//!
//! and the key, the primary key's columns as an object (`{"id": 42}`). With the schema-wrapped
//! form (`key.converter.schemas.enable`, `value.converter.schemas.enable`) each is the payload
//! of `{"schema": <the relation's schema, built once>, "payload": ...}` ([`super::schema`]).

use pg_walstream::TupleData;

use super::json;
use super::relation::Relation;
use super::types::{BinaryMode, write_placeholder, write_value};

/// One column's value in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    Null,
    Text(&'a [u8]),
    /// An unchanged TOAST value pgoutput did not send.
    Unchanged,
}

/// A row: pgoutput's tuple or a snapshot row.
pub trait Row {
    fn cell(&self, index: usize) -> Cell<'_>;
}

impl Row for TupleData {
    fn cell(&self, index: usize) -> Cell<'_> {
        match self.columns.get(index) {
            None => Cell::Null,
            Some(column) => match column.data_type {
                b'n' => Cell::Null,
                b'u' => Cell::Unchanged,
                _ => Cell::Text(column.as_bytes()),
            },
        }
    }
}

impl Row for Vec<Option<String>> {
    fn cell(&self, index: usize) -> Cell<'_> {
        match self.get(index) {
            Some(Some(text)) => Cell::Text(text.as_bytes()),
            _ => Cell::Null,
        }
    }
}

/// A row plus where to look for the columns it lacks (REPLICA IDENTITY FULL's old row).
#[derive(Clone, Copy)]
pub struct RowRef<'a> {
    pub row: &'a dyn Row,
    pub fallback: Option<&'a dyn Row>,
}

impl<'a> RowRef<'a> {
    pub fn new(row: &'a dyn Row) -> Self {
        Self {
            row,
            fallback: None,
        }
    }

    pub fn cell(&self, index: usize) -> Cell<'a> {
        match self.row.cell(index) {
            Cell::Unchanged => match self.fallback.map(|f| f.cell(index)) {
                Some(Cell::Text(text)) => Cell::Text(text),
                Some(Cell::Null) => Cell::Null,
                _ => Cell::Unchanged,
            },
            cell => cell,
        }
    }
}

/// `source.snapshot`: `false` in the stream; in a snapshot Debezium marks the first record,
/// the first and last record of each table, and the last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMarker {
    False,
    True,
    First,
    FirstInDataCollection,
    LastInDataCollection,
    Last,
}

impl SnapshotMarker {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMarker::False => "false",
            SnapshotMarker::True => "true",
            SnapshotMarker::First => "first",
            SnapshotMarker::FirstInDataCollection => "first_in_data_collection",
            SnapshotMarker::LastInDataCollection => "last_in_data_collection",
            SnapshotMarker::Last => "last",
        }
    }
}

/// The source block's fields that vary per event.
pub struct Source {
    /// Commit time (snapshot: when it started), microseconds since the epoch.
    pub ts_us: i64,
    pub snapshot: SnapshotMarker,
    pub tx_id: Option<u64>,
    pub lsn: u64,
    pub last_commit_lsn: Option<u64>,
}

/// Writes `{"col": value, ...}`.
pub fn write_row(buf: &mut Vec<u8>, relation: &Relation, row: RowRef<'_>, placeholder: &str) {
    buf.push(b'{');
    let mut first = true;
    for (i, column) in relation.columns.iter().enumerate() {
        if column.excluded {
            continue;
        }
        if !first {
            buf.push(b',');
        }
        first = false;
        buf.extend_from_slice(&column.member);
        match row.cell(i) {
            Cell::Null => buf.extend_from_slice(b"null"),
            Cell::Text(text) => write_value(buf, &column.kind, text),
            Cell::Unchanged => write_placeholder(buf, &column.kind, placeholder),
        }
    }
    buf.push(b'}');
}

/// The key as the record carries it: the payload, wrapped in `{"schema","payload"}` when
/// keys are schema-wrapped; `None` for a table without a primary key or
/// `message.key.columns`.
pub fn key(relation: &Relation, row: RowRef<'_>, placeholder: &str) -> Option<Vec<u8>> {
    let head = relation.key_head.as_deref().unwrap_or_default();
    let mut buf = write_key(relation, row, placeholder, head)?;
    if !head.is_empty() {
        buf.push(b'}');
    }
    Some(buf)
}

/// The key's payload (`{"id":42}`), or `None` for a table without a key.
pub fn key_payload(relation: &Relation, row: RowRef<'_>, placeholder: &str) -> Option<Vec<u8>> {
    write_key(relation, row, placeholder, b"")
}

fn write_key(
    relation: &Relation,
    row: RowRef<'_>,
    placeholder: &str,
    head: &[u8],
) -> Option<Vec<u8>> {
    if relation.message_key.is_empty() {
        return None;
    }
    let mut buf = Vec::with_capacity(head.len() + 16 * relation.message_key.len());
    buf.extend_from_slice(head);
    buf.push(b'{');
    for (n, &i) in relation.message_key.iter().enumerate() {
        if n > 0 {
            buf.push(b',');
        }
        let column = &relation.columns[i];
        buf.extend_from_slice(&column.member);
        match row.cell(i) {
            Cell::Null => buf.extend_from_slice(b"null"),
            Cell::Text(text) => write_value(&mut buf, &column.kind, text),
            Cell::Unchanged => write_placeholder(&mut buf, &column.kind, placeholder),
        }
    }
    buf.push(b'}');
    Some(buf)
}

/// The primary key's values as PostgreSQL text, to compare with snapshot boundaries.
pub fn key_text(relation: &Relation, row: RowRef<'_>) -> Option<Vec<String>> {
    if relation.key.is_empty() {
        return None;
    }
    Some(
        relation
            .key
            .iter()
            .map(|&i| match row.cell(i) {
                Cell::Text(text) => String::from_utf8_lossy(text).into_owned(),
                _ => String::new(),
            })
            .collect(),
    )
}

/// Whether the record key's values (the primary key's, or `message.key.columns`') differ
/// between two rows.
pub fn key_changed(relation: &Relation, old: RowRef<'_>, new: RowRef<'_>) -> bool {
    relation
        .message_key
        .iter()
        .any(|&i| match (old.cell(i), new.cell(i)) {
            (Cell::Text(a), Cell::Text(b)) => a != b,
            (Cell::Unchanged, _) | (_, Cell::Unchanged) => false,
            (a, b) => a != b,
        })
}

/// The whole envelope (wrapped in `{"schema","payload"}` when values are schema-wrapped).
#[allow(clippy::too_many_arguments)]
pub fn envelope(
    relation: &Relation,
    static_source: &StaticSource,
    before: Option<RowRef<'_>>,
    after: Option<RowRef<'_>>,
    op: &str,
    source: &Source,
    now_ns: i64,
    placeholder: &str,
) -> Vec<u8> {
    let head = relation.value_head.as_deref().unwrap_or_default();
    let mut buf = Vec::with_capacity(head.len() + 256 + 48 * relation.columns.len());
    buf.extend_from_slice(head);
    buf.extend_from_slice(b"{\"before\":");
    match before {
        Some(row) => write_row(&mut buf, relation, row, placeholder),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"after\":");
    match after {
        Some(row) => write_row(&mut buf, relation, row, placeholder),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"source\":");
    write_source(&mut buf, &relation.source_names, static_source, source);
    buf.extend_from_slice(b",\"transaction\":null,\"op\":");
    json::push_str(&mut buf, op);
    write_times(&mut buf, now_ns);
    buf.push(b'}');
    if !head.is_empty() {
        buf.push(b'}');
    }
    buf
}

/// `,"ts_ms":..,"ts_us":..,"ts_ns":..` of a time in nanoseconds since the epoch.
fn write_times(buf: &mut Vec<u8>, ns: i64) {
    buf.extend_from_slice(b",\"ts_ms\":");
    json::push_i64(buf, ns.div_euclid(1_000_000));
    buf.extend_from_slice(b",\"ts_us\":");
    json::push_i64(buf, ns.div_euclid(1_000));
    buf.extend_from_slice(b",\"ts_ns\":");
    json::push_i64(buf, ns);
}

/// A logical decoding message (`pg_logical_emit_message`) as Debezium writes it to
/// `<prefix>.message`: `{"op":"m","ts_ms":<processing time>,"source":{..,"schema":"","table":"",..},
/// "transaction":null,"message":{"prefix":..,"content":..}}`, the content as
/// `binary.handling.mode` writes bytes (as Debezium does: base64 for `bytes` and `base64`,
/// `base64-url-safe`, `hex`).
pub fn message(
    static_source: &StaticSource,
    source: &Source,
    prefix: &str,
    content: &[u8],
    binary: BinaryMode,
    now_ms: i64,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(400 + prefix.len() + content.len() * 4 / 3);
    buf.extend_from_slice(b"{\"op\":\"m\",\"ts_ms\":");
    json::push_i64(&mut buf, now_ms);
    buf.extend_from_slice(b",\"source\":");
    write_source(
        &mut buf,
        b"\"schema\":\"\",\"table\":\"\"",
        static_source,
        source,
    );
    buf.extend_from_slice(b",\"transaction\":null,\"message\":{\"prefix\":");
    json::push_str(&mut buf, prefix);
    buf.extend_from_slice(b",\"content\":");
    super::types::write_binary(&mut buf, binary, content);
    buf.extend_from_slice(b"}}");
    buf
}

/// `source_names`: `"schema":..,"table":..` (a relation's, or empty for a message).
fn write_source(
    buf: &mut Vec<u8>,
    source_names: &[u8],
    static_source: &StaticSource,
    source: &Source,
) {
    buf.extend_from_slice(&static_source.head);
    buf.extend_from_slice(b"\"ts_ms\":");
    json::push_i64(buf, source.ts_us.div_euclid(1000));
    buf.extend_from_slice(b",\"snapshot\":");
    json::push_str(buf, source.snapshot.as_str());
    buf.push(b',');
    buf.extend_from_slice(&static_source.db);
    buf.extend_from_slice(b"\"sequence\":");
    let sequence = match source.last_commit_lsn {
        Some(last) => format!("[\"{last}\",\"{}\"]", source.lsn),
        None => format!("[null,\"{}\"]", source.lsn),
    };
    json::push_str(buf, &sequence);
    buf.extend_from_slice(b",\"ts_us\":");
    json::push_i64(buf, source.ts_us);
    buf.extend_from_slice(b",\"ts_ns\":");
    json::push_i64(buf, source.ts_us.saturating_mul(1000));
    buf.push(b',');
    buf.extend_from_slice(source_names);
    buf.extend_from_slice(b",\"txId\":");
    match source.tx_id {
        Some(tx) => json::push_i64(buf, tx as i64),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"lsn\":");
    json::push_i64(buf, source.lsn as i64);
    buf.extend_from_slice(b",\"xmin\":null,\"origin\":null,\"origin_lsn\":null}");
}

/// The parts of the source block that never change for a process, escaped once:
/// `{"version":..,"connector":"postgresql","name":..,` and `"db":..,`.
#[derive(Debug, Clone)]
pub struct StaticSource {
    pub head: Vec<u8>,
    pub db: Vec<u8>,
}

pub fn static_source(version: &str, name: &str, db: &str) -> StaticSource {
    let mut head = Vec::new();
    head.push(b'{');
    json::push_key(&mut head, "version");
    json::push_str(&mut head, version);
    head.extend_from_slice(b",\"connector\":\"postgresql\",");
    json::push_key(&mut head, "name");
    json::push_str(&mut head, name);
    head.push(b',');
    let mut db_part = Vec::new();
    json::push_key(&mut db_part, "db");
    json::push_str(&mut db_part, db);
    db_part.push(b',');
    StaticSource { head, db: db_part }
}
