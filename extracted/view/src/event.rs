//! The event contract as types: what `ficus cdc` writes into a change topic (Debezium's
//! PostgreSQL shape), read back by the kit before anything is stored. The consumer decodes every
//! record with [`Event::decode`]; `tests/contract.rs` decodes the real adapter's output with it,
//! so the adapter and the kit cannot drift apart.
//!
//! - key: the primary key's columns as an object, `{"id":42}`; `null` for a truncate;
//! - value: the envelope `{"before","after","source","op","ts_ms","transaction"}`, or `null`
//!   (a tombstone, after each delete); Kafka Connect's `{"schema","payload"}` wrapper is accepted;
//! - heartbeats go to a topic of their own, key `{"serverName":..}`, value `{"ts_ms":..}`.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::EventError;

/// The operation of a change event (`op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Op {
    #[serde(rename = "c")]
    Create,
    #[serde(rename = "u")]
    Update,
    #[serde(rename = "d")]
    Delete,
    /// A snapshot read.
    #[serde(rename = "r")]
    Read,
    #[serde(rename = "t")]
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Read => "r",
            Op::Truncate => "t",
        }
    }
}

/// `source.snapshot`: Debezium's values (ficus writes them too: `first`, `first_in_data_collection`,
/// `last_in_data_collection`, `last`, `true` between, `false` in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMarker {
    #[serde(rename = "false")]
    False,
    #[serde(rename = "true")]
    True,
    First,
    FirstInDataCollection,
    LastInDataCollection,
    Last,
    Incremental,
}

impl SnapshotMarker {
    /// Whether the event is part of a snapshot rather than the stream.
    pub fn is_snapshot(self) -> bool {
        self != SnapshotMarker::False
    }
}

/// `source.sequence`: a JSON string holding `["<last commit lsn>","<lsn>"]` (Debezium's), the
/// first element being the commit LSN of the transaction streamed before this one (`null` for a
/// snapshot read and for the first transaction after an adapter restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    pub last_commit_lsn: Option<u64>,
    pub lsn: Option<u64>,
}

/// The `source` block. Every field ficus writes is here; [`SOURCE_FIELDS`] lists them for the
/// contract test.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Source {
    pub version: String,
    pub connector: String,
    /// The adapter's `topic_prefix` (Debezium's logical server name).
    pub name: String,
    /// Commit time of the transaction (snapshot: when the snapshot started), ms since the epoch.
    pub ts_ms: i64,
    pub snapshot: SnapshotMarker,
    pub db: String,
    #[serde(default, deserialize_with = "sequence")]
    pub sequence: Option<Sequence>,
    /// `ts_ms` in microseconds and nanoseconds (Debezium 2.6 and later).
    #[serde(default)]
    pub ts_us: Option<i64>,
    #[serde(default)]
    pub ts_ns: Option<i64>,
    pub schema: String,
    pub table: String,
    #[serde(rename = "txId")]
    pub tx_id: Option<u64>,
    /// The change's WAL position (snapshot: the snapshot's consistent point).
    pub lsn: Option<u64>,
    pub xmin: Option<u64>,
    /// The replication origin (always null from ficus).
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub origin_lsn: Option<u64>,
}

/// The member names of `source`, as the adapter writes them.
pub const SOURCE_FIELDS: &[&str] = &[
    "version",
    "connector",
    "name",
    "ts_ms",
    "snapshot",
    "db",
    "sequence",
    "ts_us",
    "ts_ns",
    "schema",
    "table",
    "txId",
    "lsn",
    "xmin",
    "origin",
    "origin_lsn",
];

/// The member names of the envelope.
pub const ENVELOPE_FIELDS: &[&str] = &[
    "before",
    "after",
    "source",
    "transaction",
    "op",
    "ts_ms",
    "ts_us",
    "ts_ns",
];

/// Debezium's `transaction` block (`provide.transaction.metadata`): the event's transaction
/// (`"<txId>:<lsn>"` for PostgreSQL) and its place in it, over all tables and in its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransactionBlock {
    pub id: String,
    #[serde(deserialize_with = "count")]
    pub total_order: u64,
    #[serde(deserialize_with = "count")]
    pub data_collection_order: u64,
}

/// A record of the transaction topic (`<prefix>.transaction`, Debezium's
/// `provide.transaction.metadata`): a transaction's BEGIN, and its END with how many events it
/// wrote, in all and per table (`data_collection`: `<schema>.<table>`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransactionMarker {
    pub status: TransactionStatus,
    pub id: String,
    #[serde(default, deserialize_with = "optional_count")]
    pub event_count: Option<u64>,
    #[serde(default)]
    pub data_collections: Option<Vec<DataCollectionCount>>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TransactionStatus {
    #[serde(rename = "BEGIN")]
    Begin,
    #[serde(rename = "END")]
    End,
}

/// One table's share of a transaction's events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataCollectionCount {
    pub data_collection: String,
    #[serde(deserialize_with = "count")]
    pub event_count: u64,
}

impl TransactionMarker {
    /// Decodes a transaction topic record's value (with or without the `{"schema","payload"}`
    /// wrapper).
    pub fn decode(value: Option<&[u8]>) -> Result<TransactionMarker, EventError> {
        let value = value.ok_or(EventError::Shape("a transaction record without a value"))?;
        let value: Value = serde_json::from_slice(value)?;
        let value = match value {
            Value::Object(mut map) if map.contains_key("schema") && map.contains_key("payload") => {
                map.remove("payload").unwrap_or(Value::Null)
            }
            other => other,
        };
        Ok(serde_json::from_value(value)?)
    }

    /// The events of this transaction in the tables `collection` accepts (END only).
    pub fn events_in(&self, collection: impl Fn(&str) -> bool) -> u64 {
        self.data_collections
            .iter()
            .flatten()
            .filter(|c| collection(&c.data_collection))
            .map(|c| c.event_count)
            .sum()
    }
}

/// A count Debezium writes as a JSON number (its documentation shows strings; both are taken).
fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64().ok_or_else(|| D::Error::custom("not a count")),
        Value::String(s) => s.parse().map_err(D::Error::custom),
        _ => Err(D::Error::custom("not a count")),
    }
}

fn optional_count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| D::Error::custom("not a count")),
        Value::String(s) => s.parse().map(Some).map_err(D::Error::custom),
        _ => Err(D::Error::custom("not a count")),
    }
}

/// A change event's value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// The old row: its key columns, or the whole row with `REPLICA IDENTITY FULL`.
    pub before: Option<Map<String, Value>>,
    /// The new row (`c`, `u`, `r`).
    pub after: Option<Map<String, Value>>,
    pub source: Source,
    pub op: Op,
    /// When the adapter processed the change, ms since the epoch.
    pub ts_ms: i64,
    /// The same in microseconds and nanoseconds (Debezium 2.6 and later).
    #[serde(default)]
    pub ts_us: Option<i64>,
    #[serde(default)]
    pub ts_ns: Option<i64>,
    pub transaction: Option<TransactionBlock>,
}

impl Envelope {
    /// Where the change sits in the source's history (see [`Position`]).
    pub fn position(&self) -> Result<Position, EventError> {
        let lsn = self
            .source
            .lsn
            .or(self.source.sequence.and_then(|s| s.lsn))
            .ok_or(EventError::Shape("source.lsn is null"))?;
        let commit_lsn = if self.source.snapshot.is_snapshot() {
            None
        } else {
            self.source.sequence.and_then(|s| s.last_commit_lsn)
        };
        Ok(Position { commit_lsn, lsn })
    }
}

/// A record key: the primary key's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(pub Map<String, Value>);

impl Key {
    /// The key as canonical JSON (members sorted by name): what the store indexes deletions by.
    pub fn canonical(&self) -> String {
        // serde_json's Map is ordered by key (no `preserve_order`), so this is canonical.
        Value::Object(self.0.clone()).to_string()
    }

    pub fn get(&self, column: &str) -> Option<&Value> {
        self.0.get(column)
    }
}

/// One record of a change topic.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `c`, `u`, `d`, `r` (key present) or `t` (key `None`).
    Change {
        key: Option<Key>,
        envelope: Box<Envelope>,
    },
    /// The null value that follows a delete, for log compaction.
    Tombstone { key: Key },
}

impl Event {
    /// Decodes a record's key and value.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Event, EventError> {
        let key = match key {
            None => None,
            Some(bytes) => match serde_json::from_slice::<Value>(bytes)? {
                Value::Null => None,
                Value::Object(map) => Some(Key(unwrap_payload_object(map)?)),
                _ => return Err(EventError::Shape("the key is neither an object nor null")),
            },
        };
        let Some(value) = value else {
            let key = key.ok_or(EventError::Shape("a tombstone without a key"))?;
            return Ok(Event::Tombstone { key });
        };
        let envelope: Envelope = if value.starts_with(b"{\"schema\"") {
            let wrapped: Value = serde_json::from_slice(value)?;
            match wrapped {
                Value::Object(mut map) if map.contains_key("payload") => {
                    match map.remove("payload") {
                        Some(Value::Null) | None => {
                            let key = key.ok_or(EventError::Shape("a tombstone without a key"))?;
                            return Ok(Event::Tombstone { key });
                        }
                        Some(payload) => serde_json::from_value(payload)?,
                    }
                }
                other => serde_json::from_value(other)?,
            }
        } else {
            serde_json::from_slice(value)?
        };
        match envelope.op {
            Op::Truncate => {}
            _ if key.is_none() => {
                return Err(EventError::Shape(
                    "a row change without a key (a table without a primary key)",
                ));
            }
            Op::Create | Op::Update | Op::Read if envelope.after.is_none() => {
                return Err(EventError::Shape(
                    "a create, update or read without `after`",
                ));
            }
            _ => {}
        }
        Ok(Event::Change {
            key,
            envelope: Box::new(envelope),
        })
    }

    /// The source position, for row changes and truncates.
    pub fn position(&self) -> Result<Option<Position>, EventError> {
        match self {
            Event::Change { envelope, .. } => envelope.position().map(Some),
            Event::Tombstone { .. } => Ok(None),
        }
    }
}

/// `{"schema":..,"payload":{..}}` around a key.
fn unwrap_payload_object(mut map: Map<String, Value>) -> Result<Map<String, Value>, EventError> {
    if map.len() == 2 && map.contains_key("schema") {
        match map.remove("payload") {
            Some(Value::Object(inner)) => return Ok(inner),
            Some(_) => {
                return Err(EventError::Shape(
                    "a wrapped key whose payload is no object",
                ));
            }
            None => {}
        }
    }
    Ok(map)
}

/// A heartbeat record (topic `__debezium-heartbeat.<prefix>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub server_name: String,
    pub ts_ms: i64,
}

impl Heartbeat {
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Heartbeat, EventError> {
        #[derive(Deserialize)]
        struct HeartbeatKey {
            #[serde(rename = "serverName")]
            server_name: String,
        }
        #[derive(Deserialize)]
        struct HeartbeatValue {
            ts_ms: i64,
        }
        // Either form: bare, or Kafka Connect's `{"schema","payload"}`.
        let unwrapped = |bytes: &[u8]| -> Result<Value, EventError> {
            Ok(match serde_json::from_slice::<Value>(bytes)? {
                Value::Object(map) => Value::Object(unwrap_payload_object(map)?),
                other => other,
            })
        };
        let key: HeartbeatKey = serde_json::from_value(unwrapped(
            key.ok_or(EventError::Shape("a heartbeat without a key"))?,
        )?)?;
        let value: HeartbeatValue = serde_json::from_value(unwrapped(
            value.ok_or(EventError::Shape("a heartbeat without a value"))?,
        )?)?;
        Ok(Heartbeat {
            server_name: key.server_name,
            ts_ms: value.ts_ms,
        })
    }
}

/// Where a change sits in the source's history, for the per-key guard.
///
/// `commit_lsn` is `sequence`'s first element: the commit LSN of the transaction the adapter
/// streamed before this one. It grows strictly with commit order, so between two stream events
/// that both carry it, `(commit_lsn, lsn)` is the exact commit order. It is `None` for snapshot
/// reads and for the first transaction after an adapter restart; then the change LSN decides,
/// which for one key is also commit order (PostgreSQL's row locks make a second writer of a row
/// wait for the first one's commit, so its change is logged after that commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub commit_lsn: Option<u64>,
    pub lsn: u64,
}

impl Position {
    /// Whether a change at `self` comes after one at `older` (equal: a duplicate, not after).
    pub fn supersedes(&self, older: &Position) -> bool {
        self.compare(older) == Ordering::Greater
    }

    /// The guard's order (see the type's doc).
    pub fn compare(&self, other: &Position) -> Ordering {
        match (self.commit_lsn, other.commit_lsn) {
            (Some(a), Some(b)) => (a, self.lsn).cmp(&(b, other.lsn)),
            _ => self.lsn.cmp(&other.lsn),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.commit_lsn {
            Some(commit) => write!(f, "{}/{}", format_lsn(commit), format_lsn(self.lsn)),
            None => write!(f, "-/{}", format_lsn(self.lsn)),
        }
    }
}

/// PostgreSQL's `XXXXXXXX/XXXXXXXX` form of an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

fn sequence<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Sequence>, D::Error> {
    use serde::de::Error as _;
    let Some(text) = Option::<String>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let parts: Vec<Option<String>> = serde_json::from_str(&text).map_err(D::Error::custom)?;
    let [last, lsn] = parts.as_slice() else {
        return Err(D::Error::custom(format!(
            "source.sequence: expected two elements, got {text}"
        )));
    };
    let parse = |part: &Option<String>| -> Result<Option<u64>, D::Error> {
        part.as_deref()
            .map(|p| {
                p.parse::<u64>()
                    .map_err(|_| D::Error::custom(format!("source.sequence: not an LSN: {p:?}")))
            })
            .transpose()
    };
    Ok(Some(Sequence {
        last_commit_lsn: parse(last)?,
        lsn: parse(lsn)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATE: &str = r#"{"before":null,"after":{"id":42,"name":"Ada"},"source":{"version":"ficus-0.1.0","connector":"postgresql","name":"ficus","ts_ms":1700000000000,"snapshot":"false","db":"app","sequence":"[\"100\",\"120\"]","schema":"public","table":"people","txId":77,"lsn":120,"xmin":null},"op":"u","ts_ms":1700000000005,"transaction":null}"#;

    #[test]
    fn decodes_an_update_with_its_position() {
        let event = Event::decode(Some(br#"{"id":42}"#), Some(UPDATE.as_bytes())).unwrap();
        let Event::Change { key, envelope } = &event else {
            panic!("a change")
        };
        assert_eq!(key.as_ref().unwrap().canonical(), r#"{"id":42}"#);
        assert_eq!(envelope.op, Op::Update);
        assert_eq!(envelope.after.as_ref().unwrap()["name"], "Ada");
        assert_eq!(envelope.source.tx_id, Some(77));
        assert_eq!(
            envelope.source.sequence,
            Some(Sequence {
                last_commit_lsn: Some(100),
                lsn: Some(120)
            })
        );
        assert_eq!(
            event.position().unwrap(),
            Some(Position {
                commit_lsn: Some(100),
                lsn: 120
            })
        );
    }

    #[test]
    fn tombstones_truncates_and_wrapped_values() {
        assert_eq!(
            Event::decode(Some(br#"{"id":1}"#), None).unwrap(),
            Event::Tombstone {
                key: Key(serde_json::from_str(r#"{"id":1}"#).unwrap())
            }
        );
        let truncate = UPDATE
            .replace("\"op\":\"u\"", "\"op\":\"t\"")
            .replace("\"after\":{\"id\":42,\"name\":\"Ada\"}", "\"after\":null");
        let event = Event::decode(None, Some(truncate.as_bytes())).unwrap();
        assert!(
            matches!(event, Event::Change { key: None, ref envelope } if envelope.op == Op::Truncate)
        );
        let wrapped = format!(r#"{{"schema":{{}},"payload":{UPDATE}}}"#);
        let event = Event::decode(
            Some(br#"{"schema":{},"payload":{"id":42}}"#),
            Some(wrapped.as_bytes()),
        )
        .unwrap();
        assert!(
            matches!(event, Event::Change { key: Some(ref k), .. } if k.get("id") == Some(&Value::from(42)))
        );
        // A row change without a key cannot be stored by key.
        assert!(Event::decode(None, Some(UPDATE.as_bytes())).is_err());
        assert!(Event::decode(None, None).is_err());
    }

    #[test]
    fn the_guard_orders_by_commit_then_change_lsn() {
        let p = |c: Option<u64>, l: u64| Position {
            commit_lsn: c,
            lsn: l,
        };
        // Later transaction, lower change LSN (it began first): still after.
        assert!(p(Some(200), 150).supersedes(&p(Some(100), 180)));
        assert!(!p(Some(100), 180).supersedes(&p(Some(200), 150)));
        // Same transaction: change order.
        assert!(p(Some(100), 181).supersedes(&p(Some(100), 180)));
        // Duplicates never supersede.
        assert!(!p(Some(100), 180).supersedes(&p(Some(100), 180)));
        assert!(!p(None, 180).supersedes(&p(Some(100), 180)));
        // Without a commit LSN (snapshot, first transaction after a restart): change LSN.
        assert!(p(None, 300).supersedes(&p(Some(250), 290)));
        assert!(!p(None, 280).supersedes(&p(Some(250), 290)));
    }

    #[test]
    fn transaction_markers_in_both_forms() {
        // Debezium 3.6.3's END record as JsonConverter writes it (schemas.enable=true).
        let wrapped = concat!(
            r#"{"schema":{"type":"struct","fields":[{"type":"string","optional":false,"field":"status"},"#,
            r#"{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":true,"field":"event_count"},"#,
            r#"{"type":"array","items":{"type":"struct","fields":[{"type":"string","optional":false,"field":"data_collection"},"#,
            r#"{"type":"int64","optional":false,"field":"event_count"}],"optional":true,"name":"event.collection","version":1},"#,
            r#""optional":true,"field":"data_collections"},{"type":"int64","optional":false,"field":"ts_ms"}],"optional":false,"#,
            r#""name":"io.debezium.connector.common.TransactionMetadataValue","version":1},"#,
            r#""payload":{"status":"END","id":"282820:3219117112","event_count":3,"#,
            r#""data_collections":[{"data_collection":"public.t","event_count":2},{"data_collection":"public.u","event_count":1}],"ts_ms":1795830126629}}"#,
        );
        let end = TransactionMarker::decode(Some(wrapped.as_bytes())).unwrap();
        assert_eq!(end.status, TransactionStatus::End);
        assert_eq!(end.id, "282820:3219117112");
        assert_eq!(end.event_count, Some(3));
        assert_eq!(end.events_in(|c| c == "public.t"), 2);
        assert_eq!(end.ts_ms, Some(1_795_830_126_629));
        let schemaless =
            serde_json::to_vec(&serde_json::from_str::<Value>(wrapped).unwrap()["payload"])
                .unwrap();
        assert_eq!(TransactionMarker::decode(Some(&schemaless)).unwrap(), end);
        let begin = TransactionMarker::decode(Some(
            br#"{"status":"BEGIN","id":"282820:3219116936","event_count":null,"data_collections":null,"ts_ms":1}"#,
        ))
        .unwrap();
        assert_eq!(begin.status, TransactionStatus::Begin);
        assert_eq!(begin.event_count, None);
    }

    #[test]
    fn heartbeats() {
        let beat = Heartbeat::decode(Some(br#"{"serverName":"ficus"}"#), Some(br#"{"ts_ms":17}"#))
            .unwrap();
        assert_eq!(beat.server_name, "ficus");
        assert_eq!(beat.ts_ms, 17);
        let wrapped = Heartbeat::decode(
            Some(br#"{"schema":{"type":"struct"},"payload":{"serverName":"ficus"}}"#),
            Some(br#"{"schema":{"type":"struct"},"payload":{"ts_ms":17}}"#),
        )
        .unwrap();
        assert_eq!(wrapped, beat);
    }

    #[test]
    fn a_bad_sequence_is_refused() {
        let bad = UPDATE.replace(r#"[\"100\",\"120\"]"#, r#"[\"x\",\"120\"]"#);
        assert!(Event::decode(Some(br#"{"id":42}"#), Some(bad.as_bytes())).is_err());
    }
}
