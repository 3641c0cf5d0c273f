//! From pgoutput messages (and snapshot rows) to Kafka records: the relation cache, the type
//! mapping ([`types`]), the Debezium envelope ([`envelope`]) and outbox routing.

pub mod envelope;
pub mod json;
pub mod relation;
pub mod schema;
pub mod transaction;
pub mod types;

use std::collections::HashMap;
use std::sync::Arc;

use pg_walstream::TupleData;

use self::envelope::{Cell, Row, RowRef, SnapshotMarker, Source, StaticSource};
use self::relation::{OutboxRoute, Relation, Role, sanitize_topic};
use crate::config::CdcConfig;

/// What an event is, for metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Create,
    Update,
    Delete,
    Tombstone,
    Truncate,
    Read,
    Outbox,
    Heartbeat,
    /// A BEGIN or END record of the transaction topic.
    Transaction,
    /// A logical decoding message (`pg_logical_emit_message`).
    Message,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Tombstone => "tombstone",
            Op::Truncate => "t",
            Op::Read => "r",
            Op::Outbox => "outbox",
            Op::Heartbeat => "heartbeat",
            Op::Transaction => "transaction",
            Op::Message => "m",
        }
    }
}

/// One Kafka message to send.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Arc<str>, Vec<u8>)>,
    /// `schema.table`, for metrics.
    pub table: Arc<str>,
    pub op: Op,
    /// The primary key's text values, when asked for (snapshot windows).
    pub key_text: Option<Vec<String>>,
}

/// The transaction an event belongs to.
#[derive(Debug, Clone, Copy)]
pub struct TxContext {
    pub xid: u32,
    /// Commit time, microseconds since the epoch.
    pub commit_ts_us: i64,
    /// The LSN of the commit record (pgoutput Begin's `final_lsn`).
    pub commit_lsn: u64,
    /// The previous transaction's commit LSN (Debezium's `sequence`).
    pub last_commit_lsn: Option<u64>,
}

/// Maps changes of known relations to records.
pub struct Decoder {
    relations: HashMap<u32, Arc<Relation>>,
    config: Arc<CdcConfig>,
    static_source: StaticSource,
    /// Debezium's context headers on every change record (`extended.headers.enabled`).
    context_headers: Vec<(Arc<str>, Vec<u8>)>,
}

/// Debezium's header on the delete (and tombstone) of a primary-key change: the new key.
pub const NEW_KEY_HEADER: &str = "__debezium.newkey";
/// Debezium's header on the create of a primary-key change: the old key.
pub const OLD_KEY_HEADER: &str = "__debezium.oldkey";

/// `__debezium.context.*` headers, values as JSON strings (Kafka Connect's JsonConverter's,
/// schema-wrapped with `header.converter.schemas.enable`).
fn context_headers(config: &CdcConfig) -> Vec<(Arc<str>, Vec<u8>)> {
    if !config.debezium.extended_headers_enabled {
        return Vec::new();
    }
    let run_id = uuid::Uuid::new_v4().to_string();
    [
        ("connectorLogicalName", config.topic_prefix.as_str()),
        ("taskId", "0"),
        ("connectorName", "postgresql"),
        ("runId", run_id.as_str()),
    ]
    .into_iter()
    .map(|(name, value)| {
        let mut bytes = Vec::new();
        json::push_str(&mut bytes, value);
        if config.connect.header_converter_schemas_enable {
            bytes = schema::wrap(schema::STRING_HEADER_SCHEMA.as_bytes(), &bytes);
        }
        (
            Arc::from(format!("__debezium.context.{name}").as_str()),
            bytes,
        )
    })
    .collect()
}

impl Decoder {
    pub fn new(config: Arc<CdcConfig>) -> Self {
        let static_source = envelope::static_source(
            concat!("ficus-", env!("CARGO_PKG_VERSION")),
            &config.topic_prefix,
            &config.database_name(),
        );
        Self {
            relations: HashMap::new(),
            context_headers: context_headers(&config),
            config,
            static_source,
        }
    }

    /// Installs (or replaces, on a schema change) a relation.
    pub fn set_relation(&mut self, relation: Relation) -> Arc<Relation> {
        let relation = Arc::new(relation);
        self.relations.insert(relation.oid, relation.clone());
        relation
    }

    pub fn relation(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }

    pub fn relations(&self) -> impl Iterator<Item = &Arc<Relation>> {
        self.relations.values()
    }

    fn placeholder(&self) -> &str {
        &self.config.toast_placeholder
    }

    fn source(&self, lsn: u64, tx: &TxContext) -> Source {
        Source {
            ts_us: tx.commit_ts_us,
            snapshot: SnapshotMarker::False,
            tx_id: Some(u64::from(tx.xid)),
            lsn,
            last_commit_lsn: tx.last_commit_lsn,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn change(
        &self,
        relation: &Relation,
        before: Option<RowRef<'_>>,
        after: Option<RowRef<'_>>,
        op: Op,
        source: &Source,
        with_key_text: bool,
        key_header: Option<(&'static str, Option<&[u8]>)>,
        out: &mut Vec<Record>,
    ) {
        let key_row = after.or(before).expect("a change has a row");
        let key = envelope::key(relation, key_row, self.placeholder());
        let value = envelope::envelope(
            relation,
            &self.static_source,
            before,
            after,
            op.as_str(),
            source,
            now_ns(),
            self.placeholder(),
        );
        let key_text = if with_key_text {
            envelope::key_text(relation, key_row)
        } else {
            None
        };
        let headers = self.headers(key_header);
        let tombstone =
            (op == Op::Delete && self.config.debezium.tombstones_on_delete).then(|| Record {
                topic: relation.topic.clone(),
                key: key.clone(),
                value: None,
                headers: headers.clone(),
                table: relation.full_name.clone(),
                op: Op::Tombstone,
                key_text: key_text.clone(),
            });
        out.push(Record {
            topic: relation.topic.clone(),
            key,
            value: Some(value),
            headers,
            table: relation.full_name.clone(),
            op,
            key_text,
        });
        out.extend(tombstone);
    }

    /// A key as a key-change header carries it (schema-wrapped with
    /// `header.converter.schemas.enable`).
    fn key_header(&self, relation: &Relation, row: RowRef<'_>) -> Option<Vec<u8>> {
        let payload = envelope::key_payload(relation, row, self.placeholder())?;
        match &relation.key_schema {
            Some(schema) if self.config.connect.header_converter_schemas_enable => {
                Some(self::schema::wrap(schema, &payload))
            }
            _ => Some(payload),
        }
    }

    /// A key-change header (when any) followed by the context headers.
    fn headers(
        &self,
        key_header: Option<(&'static str, Option<&[u8]>)>,
    ) -> Vec<(Arc<str>, Vec<u8>)> {
        let mut headers = Vec::with_capacity(self.context_headers.len() + 1);
        if let Some((name, key)) = key_header {
            headers.push((Arc::from(name), key.unwrap_or(b"null").to_vec()));
        }
        headers.extend(self.context_headers.iter().cloned());
        headers
    }

    /// An insert: a `c` event, or an outbox message.
    pub fn insert(
        &self,
        relation: &Relation,
        tuple: &TupleData,
        lsn: u64,
        tx: &TxContext,
        with_key_text: bool,
        out: &mut Vec<Record>,
    ) {
        match &relation.role {
            Role::Table => {}
            Role::Outbox(route) => {
                if let Some(record) = outbox_record(relation, route, tuple) {
                    out.push(record);
                    return;
                }
                // A row that does not fit the declared outbox is still not lost: it goes out
                // as an ordinary change event of its table.
            }
            Role::Heartbeat | Role::Ignored => return,
        }
        if self.config.debezium.skipped_operations.create {
            return;
        }
        let after = RowRef::new(tuple);
        let source = self.source(lsn, tx);
        self.change(
            relation,
            None,
            Some(after),
            Op::Create,
            &source,
            with_key_text,
            None,
            out,
        );
    }

    /// An update: a `u` event, or, when the primary key changed, a delete (plus tombstone) of
    /// the old key and a create of the new one (as Debezium does).
    #[allow(clippy::too_many_arguments)] // The change, its position, where the records go.
    pub fn update(
        &self,
        relation: &Relation,
        old: Option<&TupleData>,
        new: &TupleData,
        lsn: u64,
        tx: &TxContext,
        with_key_text: bool,
        out: &mut Vec<Record>,
    ) {
        if !matches!(relation.role, Role::Table) {
            return;
        }
        let source = self.source(lsn, tx);
        let old_ref = old.map(|o| RowRef::new(o as &dyn Row));
        let new_ref = RowRef {
            row: new,
            fallback: if relation.identity_full {
                old.map(|o| o as &dyn Row)
            } else {
                None
            },
        };
        if let Some(old_ref) = old_ref
            && relation.has_message_key()
            && envelope::key_changed(relation, old_ref, new_ref)
        {
            // Debezium's headers link the two: the delete names the new key, the create the old.
            let old_key = self.key_header(relation, old_ref);
            let new_key = self.key_header(relation, new_ref);
            self.change(
                relation,
                Some(old_ref),
                None,
                Op::Delete,
                &source,
                with_key_text,
                Some((NEW_KEY_HEADER, new_key.as_deref())),
                out,
            );
            self.change(
                relation,
                None,
                Some(new_ref),
                Op::Create,
                &source,
                with_key_text,
                Some((OLD_KEY_HEADER, old_key.as_deref())),
                out,
            );
            return;
        }
        if self.config.debezium.skipped_operations.update {
            return;
        }
        // The old row is "before" only when it is complete (REPLICA IDENTITY FULL).
        let before = if relation.identity_full {
            old_ref
        } else {
            None
        };
        self.change(
            relation,
            before,
            Some(new_ref),
            Op::Update,
            &source,
            with_key_text,
            None,
            out,
        );
    }

    /// A delete: a `d` event (before = the old key, or the whole old row with REPLICA IDENTITY
    /// FULL) and a tombstone.
    pub fn delete(
        &self,
        relation: &Relation,
        old: &TupleData,
        lsn: u64,
        tx: &TxContext,
        with_key_text: bool,
        out: &mut Vec<Record>,
    ) {
        if !matches!(relation.role, Role::Table) || self.config.debezium.skipped_operations.delete {
            return;
        }
        let source = self.source(lsn, tx);
        self.change(
            relation,
            Some(RowRef::new(old)),
            None,
            Op::Delete,
            &source,
            with_key_text,
            None,
            out,
        );
    }

    /// A truncate: a `t` event with a null key (Debezium's shape).
    pub fn truncate(&self, relation: &Relation, lsn: u64, tx: &TxContext, out: &mut Vec<Record>) {
        if !matches!(relation.role, Role::Table) || self.config.debezium.skipped_operations.truncate
        {
            return;
        }
        let source = self.source(lsn, tx);
        let value = envelope::envelope(
            relation,
            &self.static_source,
            None,
            None,
            Op::Truncate.as_str(),
            &source,
            now_ns(),
            self.placeholder(),
        );
        out.push(Record {
            topic: relation.topic.clone(),
            key: None,
            value: Some(value),
            headers: self.headers(None),
            table: relation.full_name.clone(),
            op: Op::Truncate,
            key_text: None,
        });
    }

    /// A logical decoding message at `lsn`: an `m` event on `<prefix>.message`, keyed
    /// `{"prefix": ..}`. `tx` is the transaction of a transactional message; a
    /// non-transactional one has no `txId` and the last commit's time, as Debezium's.
    #[allow(clippy::too_many_arguments)] // The message, its position and its context.
    pub fn message(
        &self,
        topic: &Arc<str>,
        prefix: &str,
        content: &[u8],
        lsn: u64,
        tx: Option<&TxContext>,
        ts_us: i64,
        last_commit_lsn: Option<u64>,
    ) -> Record {
        let source = Source {
            ts_us,
            snapshot: SnapshotMarker::False,
            tx_id: tx.map(|tx| u64::from(tx.xid)),
            lsn,
            last_commit_lsn,
        };
        let mut key = b"{\"prefix\":".to_vec();
        json::push_str(&mut key, prefix);
        key.push(b'}');
        let binary = self.config.debezium.binary_handling_mode;
        let mut value = envelope::message(
            &self.static_source,
            &source,
            prefix,
            content,
            binary,
            now_ms(),
        );
        let connect = &self.config.connect;
        if connect.key_converter_schemas_enable {
            key = schema::wrap(schema::MESSAGE_KEY_SCHEMA.as_bytes(), &key);
        }
        if connect.value_converter_schemas_enable {
            value = schema::wrap(&schema::message_value_schema(binary), &value);
        }
        Record {
            topic: topic.clone(),
            key: Some(key),
            value: Some(value),
            headers: Vec::new(),
            table: Arc::from("message"),
            op: Op::Message,
            key_text: None,
        }
    }

    /// A snapshot row: an `r` event.
    pub fn snapshot_read(
        &self,
        relation: &Relation,
        row: &Vec<Option<String>>,
        snapshot_lsn: u64,
        snapshot_ts_us: i64,
        tx_id: Option<u64>,
        marker: SnapshotMarker,
    ) -> Record {
        let source = Source {
            ts_us: snapshot_ts_us,
            snapshot: marker,
            tx_id,
            lsn: snapshot_lsn,
            last_commit_lsn: None,
        };
        let after = RowRef::new(row);
        let key = envelope::key(relation, after, self.placeholder());
        let value = envelope::envelope(
            relation,
            &self.static_source,
            None,
            Some(after),
            Op::Read.as_str(),
            &source,
            now_ns(),
            self.placeholder(),
        );
        Record {
            topic: relation.topic.clone(),
            key,
            value: Some(value),
            headers: self.headers(None),
            table: relation.full_name.clone(),
            op: Op::Read,
            key_text: None,
        }
    }
}

/// An outbox row as a message: topic from one column, key from another, payload as the value.
fn outbox_record(relation: &Relation, route: &OutboxRoute, tuple: &TupleData) -> Option<Record> {
    let text = |index: Option<usize>| -> Option<&[u8]> {
        match tuple.cell(index?) {
            Cell::Text(text) => Some(text),
            _ => None,
        }
    };
    let (Some(topic_index), Some(key_index), Some(payload_index)) =
        (route.topic_column, route.key_column, route.payload_column)
    else {
        tracing::error!(
            table = %relation.full_name,
            topic_column = %route.names[0],
            key_column = %route.names[1],
            payload_column = %route.names[2],
            "outbox table lacks a declared column; the row is sent as a change event instead"
        );
        return None;
    };
    let Some(topic_value) = text(Some(topic_index)) else {
        tracing::error!(table = %relation.full_name, "outbox row without a topic value; sent as a change event instead");
        return None;
    };
    let topic = sanitize_topic(&format!(
        "{}{}",
        route.topic_prefix,
        String::from_utf8_lossy(topic_value)
    ));
    let key = text(Some(key_index)).map(<[u8]>::to_vec);
    let value =
        text(Some(payload_index)).map(|payload| match &relation.columns[payload_index].kind {
            types::Kind::Bytea { .. } => payload
                .strip_prefix(b"\\x")
                .and_then(decode_hex)
                .unwrap_or_else(|| payload.to_vec()),
            _ => payload.to_vec(),
        });
    let headers = route
        .headers
        .iter()
        .filter_map(|(name, index)| text(Some(*index)).map(|v| (name.clone(), v.to_vec())))
        .collect();
    Some(Record {
        topic: Arc::from(topic.as_str()),
        key,
        value,
        headers,
        table: relation.full_name.clone(),
        op: Op::Outbox,
        key_text: None,
    })
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    now_ns().div_euclid(1_000_000)
}

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::relation::{ColumnSpec, TableSpec};
    use super::types::builtin_kind;
    use super::*;
    use pg_walstream::ColumnData;
    use serde_json::{Value, json};

    /// Schemaless (the payloads are what these tests look at).
    fn config() -> Arc<CdcConfig> {
        wrapped_config(false)
    }

    fn wrapped_config(schemas: bool) -> Arc<CdcConfig> {
        let mut config: CdcConfig = serde_json::from_value(json!({
            "database_url": "postgres://u:p@h/app",
            "kafka": {"brokers": "b:9092"},
            "outbox": [{"table": "public.outbox"}],
            "connect": {
                "key.converter.schemas.enable": schemas,
                "value.converter.schemas.enable": schemas,
                "header.converter.schemas.enable": schemas,
            },
        }))
        .unwrap();
        config.topic_prefix = "pfx".to_owned();
        Arc::new(config)
    }

    fn relation(table: &str, identity_full: bool) -> Relation {
        relation_in(table, identity_full, &config())
    }

    fn relation_in(table: &str, identity_full: bool, config: &CdcConfig) -> Relation {
        let columns = [("id", 20), ("name", 25), ("doc", 3802), ("blob", 17)];
        let spec = TableSpec {
            oid: 1,
            schema: "public".to_owned(),
            table: table.to_owned(),
            columns: columns
                .iter()
                .map(|(n, t)| ColumnSpec {
                    name: (*n).to_owned(),
                    type_oid: *t,
                    type_modifier: -1,
                    facts: Default::default(),
                })
                .collect(),
            primary_key: vec!["id".to_owned()],
            identity_full,
        };
        let kinds = spec
            .columns
            .iter()
            .map(|c| builtin_kind(c.type_oid, c.type_modifier).unwrap())
            .collect();
        Relation::build(&spec, kinds, config)
    }

    fn tuple(cells: &[Option<&str>]) -> TupleData {
        TupleData::new(
            cells
                .iter()
                .map(|c| match c {
                    None => ColumnData::null(),
                    Some("<unchanged>") => ColumnData::unchanged(),
                    Some(text) => ColumnData::text(text.as_bytes().to_vec()),
                })
                .collect(),
        )
    }

    const TX: TxContext = TxContext {
        xid: 77,
        commit_ts_us: 1_700_000_000_000_000,
        commit_lsn: 500,
        last_commit_lsn: Some(400),
    };

    fn value(record: &Record) -> Value {
        serde_json::from_slice(record.value.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn an_insert_is_a_create_event_keyed_by_the_primary_key() {
        let decoder = Decoder::new(config());
        let rel = relation("people", false);
        let mut out = Vec::new();
        decoder.insert(
            &rel,
            &tuple(&[
                Some("42"),
                Some("Ada"),
                Some(r#"{"a": 1}"#),
                Some("\\x0102"),
            ]),
            450,
            &TX,
            false,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].topic, "pfx.public.people");
        assert_eq!(out[0].key.as_deref(), Some(br#"{"id":42}"#.as_slice()));
        let v = value(&out[0]);
        assert_eq!(v["op"], "c");
        assert_eq!(v["before"], Value::Null);
        assert_eq!(
            v["after"],
            json!({"id": 42, "name": "Ada", "doc": "{\"a\": 1}", "blob": "AQI="})
        );
        let source = &v["source"];
        assert_eq!(source["connector"], "postgresql");
        assert_eq!(source["name"], "pfx");
        assert_eq!(source["db"], "app");
        assert_eq!(source["schema"], "public");
        assert_eq!(source["table"], "people");
        assert_eq!(source["txId"], 77);
        assert_eq!(source["lsn"], 450);
        assert_eq!(source["ts_ms"], 1_700_000_000_000_i64);
        assert_eq!(source["snapshot"], "false");
        assert_eq!(source["sequence"], "[\"400\",\"450\"]");
        assert!(v["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    }

    #[test]
    fn the_schema_wrapped_form_carries_the_relations_schemas() {
        let config = wrapped_config(true);
        let decoder = Decoder::new(config.clone());
        let mut rel = relation_in("people", false, &config);
        assert!(rel.value_head.is_some());
        let mut out = Vec::new();
        let row = tuple(&[Some("42"), Some("Ada"), None, None]);
        decoder.insert(&rel, &row, 450, &TX, false, &mut out);
        let key: Value = serde_json::from_slice(out[0].key.as_ref().unwrap()).unwrap();
        assert_eq!(key["payload"], json!({"id": 42}));
        assert_eq!(key["schema"]["name"], "pfx.public.people.Key");
        assert_eq!(key["schema"]["fields"][0]["type"], "int64");
        let v = value(&out[0]);
        assert_eq!(v["payload"]["after"]["name"], "Ada");
        assert_eq!(v["payload"]["op"], "c");
        let schema = &v["schema"];
        assert_eq!(schema["name"], "pfx.public.people.Envelope");
        assert_eq!(schema["version"], 2);
        let fields: Vec<&str> = schema["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "before",
                "after",
                "source",
                "transaction",
                "op",
                "ts_ms",
                "ts_us",
                "ts_ns"
            ]
        );
        assert_eq!(schema["fields"][1]["name"], "pfx.public.people.Value");
        assert_eq!(
            schema["fields"][1]["fields"][2]["name"],
            "io.debezium.data.Json"
        );
        let (name, header) = &out[0].headers[0];
        assert_eq!(&**name, "__debezium.context.connectorLogicalName");
        assert_eq!(
            header.as_slice(),
            br#"{"schema":{"type":"string","optional":false},"payload":"pfx"}"#
        );
        // A delete's tombstone stays null.
        out.clear();
        decoder.delete(&rel, &row, 451, &TX, false, &mut out);
        assert_eq!(out[1].value, None);
        // A key change's headers carry the key with its schema.
        out.clear();
        let new = tuple(&[Some("43"), Some("Ada"), None, None]);
        decoder.update(&rel, Some(&row), &new, 452, &TX, false, &mut out);
        let newkey = out[0]
            .headers
            .iter()
            .find(|(n, _)| &**n == NEW_KEY_HEADER)
            .unwrap();
        let newkey: Value = serde_json::from_slice(&newkey.1).unwrap();
        assert_eq!(newkey["payload"], json!({"id": 43}));
        assert_eq!(newkey["schema"]["name"], "pfx.public.people.Key");
        // Without a key there is no key schema.
        rel.key.clear();
        rel.message_key.clear();
        rel.key_schema = None;
        rel.key_head = None;
        out.clear();
        decoder.insert(&rel, &row, 453, &TX, false, &mut out);
        assert_eq!(out[0].key, None);
    }

    #[test]
    fn a_delete_is_followed_by_a_tombstone() {
        let decoder = Decoder::new(config());
        let rel = relation("people", false);
        let mut out = Vec::new();
        decoder.delete(
            &rel,
            &tuple(&[Some("42"), None, None, None]),
            450,
            &TX,
            false,
            &mut out,
        );
        assert_eq!(out.len(), 2);
        let v = value(&out[0]);
        assert_eq!(v["op"], "d");
        assert_eq!(v["after"], Value::Null);
        assert_eq!(v["before"]["id"], 42);
        assert_eq!(out[1].op, Op::Tombstone);
        assert_eq!(out[1].value, None);
        assert_eq!(out[1].key, out[0].key);
    }

    #[test]
    fn unchanged_toast_gets_the_placeholder_unless_the_old_row_is_full() {
        let decoder = Decoder::new(config());
        let mut out = Vec::new();
        let new = tuple(&[
            Some("1"),
            Some("x"),
            Some("<unchanged>"),
            Some("<unchanged>"),
        ]);
        decoder.update(&relation("t", false), None, &new, 1, &TX, false, &mut out);
        let v = value(&out[0]);
        assert_eq!(v["op"], "u");
        assert_eq!(v["after"]["doc"], "__debezium_unavailable_value");
        assert_eq!(
            v["after"]["blob"],
            "X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="
        );
        assert_eq!(v["before"], Value::Null);

        out.clear();
        let old = tuple(&[Some("1"), Some("w"), Some("[1]"), Some("\\x05")]);
        decoder.update(
            &relation("t", true),
            Some(&old),
            &new,
            1,
            &TX,
            false,
            &mut out,
        );
        let v = value(&out[0]);
        assert_eq!(v["after"]["doc"], "[1]");
        assert_eq!(v["after"]["blob"], "BQ==");
        assert_eq!(v["before"]["name"], "w");
    }

    #[test]
    fn a_primary_key_change_is_a_delete_tombstone_and_create() {
        let decoder = Decoder::new(config());
        let mut out = Vec::new();
        let old = tuple(&[Some("1"), None, None, None]);
        let new = tuple(&[Some("2"), Some("x"), None, None]);
        decoder.update(
            &relation("t", false),
            Some(&old),
            &new,
            1,
            &TX,
            false,
            &mut out,
        );
        let ops: Vec<Op> = out.iter().map(|r| r.op).collect();
        assert_eq!(ops, vec![Op::Delete, Op::Tombstone, Op::Create]);
        assert_eq!(out[0].key.as_deref(), Some(br#"{"id":1}"#.as_slice()));
        assert_eq!(out[2].key.as_deref(), Some(br#"{"id":2}"#.as_slice()));
    }

    #[test]
    fn outbox_rows_become_messages() {
        let decoder = Decoder::new(config());
        let spec = TableSpec {
            oid: 9,
            schema: "public".to_owned(),
            table: "outbox".to_owned(),
            columns: [
                ("id", 2950),
                ("aggregatetype", 25),
                ("aggregateid", 25),
                ("type", 25),
                ("payload", 3802),
            ]
            .iter()
            .map(|(n, t)| ColumnSpec {
                name: (*n).to_owned(),
                type_oid: *t,
                type_modifier: -1,
                facts: Default::default(),
            })
            .collect(),
            primary_key: vec!["id".to_owned()],
            identity_full: false,
        };
        let kinds = spec
            .columns
            .iter()
            .map(|c| builtin_kind(c.type_oid, -1).unwrap())
            .collect();
        let rel = Relation::build(&spec, kinds, &config());
        let mut out = Vec::new();
        decoder.insert(
            &rel,
            &tuple(&[
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
                Some("order"),
                Some("o-17"),
                Some("OrderPlaced"),
                Some(r#"{"total": 3}"#),
            ]),
            1,
            &TX,
            false,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].topic, "outbox.event.order");
        assert_eq!(out[0].key.as_deref(), Some(b"o-17".as_slice()));
        assert_eq!(out[0].value.as_deref(), Some(br#"{"total": 3}"#.as_slice()));
        let headers: Vec<&str> = out[0].headers.iter().map(|(k, _)| &**k).collect();
        assert_eq!(headers, vec!["id", "type"]);
        // Updates and deletes of an outbox are not messages.
        out.clear();
        let row = tuple(&[Some("x"), Some("order"), Some("k"), Some("T"), None]);
        decoder.update(&rel, None, &row, 1, &TX, false, &mut out);
        decoder.delete(&rel, &row, 1, &TX, false, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn message_key_columns_key_the_records_and_their_key_changes() {
        let mut config = (*wrapped_config(true)).clone();
        config.debezium.message_key_columns = Some("public.peo.*:name,id".to_owned());
        // The lists are compiled by validation, once.
        config.validate().unwrap();
        let decoder = Decoder::new(Arc::new(config.clone()));
        let rel = relation_in("people", true, &config);
        assert_eq!(
            (rel.key.clone(), rel.message_key.clone()),
            (vec![0], vec![1, 0])
        );
        let other = relation_in("other", true, &config);
        assert_eq!(
            other.message_key,
            vec![0],
            "an unmatched table keeps its primary key"
        );
        let key = |record: &Record| -> Value {
            serde_json::from_slice(record.key.as_ref().unwrap()).unwrap()
        };
        let mut out = Vec::new();
        let old = tuple(&[Some("1"), Some("Ada"), None, None]);
        decoder.insert(&rel, &old, 1, &TX, false, &mut out);
        assert_eq!(key(&out[0])["payload"], json!({"name": "Ada", "id": 1}));
        let first_key = key(&out[0]);
        let fields: Vec<&str> = first_key["schema"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["field"].as_str().unwrap())
            .collect();
        assert_eq!(fields, ["name", "id"]);
        assert_eq!(key(&out[0])["schema"]["name"], "pfx.public.people.Key");
        // The primary key stays, a key column changes: delete, tombstone, create.
        out.clear();
        let new = tuple(&[Some("1"), Some("Grace"), None, None]);
        decoder.update(&rel, Some(&old), &new, 2, &TX, false, &mut out);
        let ops: Vec<Op> = out.iter().map(|r| r.op).collect();
        assert_eq!(ops, [Op::Delete, Op::Tombstone, Op::Create]);
        assert_eq!(key(&out[0])["payload"]["name"], "Ada");
        assert_eq!(key(&out[2])["payload"]["name"], "Grace");
        // The same change of a table keyed by its primary key: an update.
        out.clear();
        decoder.update(&other, Some(&old), &new, 3, &TX, false, &mut out);
        assert_eq!(out.iter().map(|r| r.op).collect::<Vec<_>>(), [Op::Update]);
    }

    #[test]
    fn tables_without_a_primary_key_are_keyed_null() {
        let decoder = Decoder::new(config());
        let mut rel = relation("nokey", false);
        rel.key.clear();
        rel.message_key.clear();
        let mut out = Vec::new();
        decoder.insert(
            &rel,
            &tuple(&[Some("1"), None, None, None]),
            1,
            &TX,
            false,
            &mut out,
        );
        assert_eq!(out[0].key, None);
    }
}
