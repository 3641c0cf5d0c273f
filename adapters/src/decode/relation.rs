//! What the adapter knows about one table: its columns and how to map them, its primary key,
//! its topic, and its role (an ordinary table, ficus's heartbeat, an outbox, or ignored).
//! Rebuilt from every pgoutput Relation message, so added and dropped columns are picked up
//! without a restart.

use std::sync::Arc;

use super::json;
use super::schema::{self, ColumnSchema};
use super::types::{Kind, Modes};
use crate::config::{CdcConfig, split_table};

/// One column.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: Arc<str>,
    /// `"name":`, escaped once.
    pub member: Vec<u8>,
    pub kind: Kind,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// Left out of `before`/`after` (`column.include.list`/`column.exclude.list`); a key
    /// column stays in the key.
    pub excluded: bool,
}

/// What the adapter does with a table's changes.
#[derive(Debug, Clone)]
pub enum Role {
    /// Debezium-style change events on `<prefix>.<schema>.<table>`.
    Table,
    /// `_ficus.heartbeat`: not published; its commits move the slot.
    Heartbeat,
    /// A declared outbox: inserted rows are messages.
    Outbox(OutboxRoute),
    /// ficus's other tables: skipped.
    Ignored,
}

/// Where an outbox's columns are.
#[derive(Debug, Clone)]
pub struct OutboxRoute {
    pub topic_prefix: Arc<str>,
    pub topic_column: Option<usize>,
    pub key_column: Option<usize>,
    pub payload_column: Option<usize>,
    pub headers: Vec<(Arc<str>, usize)>,
    /// The names, for messages about a missing column.
    pub names: [String; 3],
}

/// A table as the adapter maps it.
#[derive(Debug, Clone)]
pub struct Relation {
    pub oid: u32,
    pub schema: Arc<str>,
    pub table: Arc<str>,
    /// `schema.table`, the metrics label.
    pub full_name: Arc<str>,
    pub topic: Arc<str>,
    pub columns: Vec<Column>,
    /// Indexes of the primary key's columns, in key order; empty when there is none. The
    /// snapshot reads in this order and the snapshot filter compares these columns.
    pub key: Vec<usize>,
    /// Indexes of the columns of the records' key: `message.key.columns`' for this table, else
    /// the primary key's; empty: records keyed null.
    pub message_key: Vec<usize>,
    /// `REPLICA IDENTITY FULL`: old rows carry every column.
    pub identity_full: bool,
    pub role: Role,
    /// `"schema":"...","table":"..."` of the source block, escaped once.
    pub source_names: Vec<u8>,
    /// The key's Connect schema (`<topic>.Key`), for the schema-wrapped form and the key-change
    /// headers; `None` without a key.
    pub key_schema: Option<Vec<u8>>,
    /// `{"schema":<key schema>,"payload":` when keys are schema-wrapped
    /// (`key.converter.schemas.enable`).
    pub key_head: Option<Vec<u8>>,
    /// `{"schema":<envelope schema>,"payload":` when values are schema-wrapped
    /// (`value.converter.schemas.enable`).
    pub value_head: Option<Vec<u8>>,
}

/// A column as the catalog or a Relation message describes it, before mapping.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
    /// What pgoutput does not say (from the catalog, for the schema).
    pub facts: ColumnFacts,
}

/// A column's nullability, default and type name (`crate::catalog::Catalog::column_facts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnFacts {
    pub not_null: bool,
    /// The default's expression (`pg_get_expr`), when any.
    pub default: Option<String>,
    /// `pg_type.typname` of the column's type.
    pub type_name: String,
}

/// A table as the catalog or a Relation message describes it, before mapping.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub oid: u32,
    pub schema: String,
    pub table: String,
    pub columns: Vec<ColumnSpec>,
    /// The primary key's column names, in key order (empty: none).
    pub primary_key: Vec<String>,
    pub identity_full: bool,
}

impl Relation {
    /// Builds the mapping; `kinds[i]` is column `i`'s resolved kind.
    pub fn build(spec: &TableSpec, kinds: Vec<Kind>, config: &CdcConfig) -> Self {
        let (schema, table) = (spec.schema.as_str(), spec.table.as_str());
        let primary_key = &spec.primary_key;
        let modes = Modes {
            decimal: config.debezium.decimal_handling_mode,
            time_precision: config.debezium.time_precision_mode,
            binary: config.debezium.binary_handling_mode,
            interval: config.debezium.interval_handling_mode,
            hstore: config.debezium.hstore_handling_mode,
        };
        let lists = config.lists();
        let columns: Vec<Column> = spec
            .columns
            .iter()
            .zip(kinds)
            .map(|(spec, kind)| {
                let kind = kind.with_modes(modes);
                let mut member = Vec::with_capacity(spec.name.len() + 3);
                json::push_key(&mut member, &spec.name);
                Column {
                    name: Arc::from(spec.name.as_str()),
                    member,
                    kind,
                    type_oid: spec.type_oid,
                    type_modifier: spec.type_modifier,
                    excluded: !lists
                        .columns
                        .includes(&format!("{schema}.{table}.{}", spec.name)),
                }
            })
            .collect();
        let position = |name: &str| columns.iter().position(|c| &*c.name == name);
        let key: Vec<usize> = primary_key.iter().filter_map(|k| position(k)).collect();
        let key = if key.len() == primary_key.len() {
            key
        } else {
            Vec::new()
        };
        let custom_key = lists
            .key_columns
            .key_of(schema, table, columns.iter().map(|c| &*c.name));
        let message_key = if custom_key.is_empty() {
            key.clone()
        } else {
            custom_key
        };
        let role = role_of(schema, table, config, &columns);
        let mut source_names = Vec::new();
        json::push_key(&mut source_names, "schema");
        json::push_str(&mut source_names, schema);
        source_names.push(b',');
        json::push_key(&mut source_names, "table");
        json::push_str(&mut source_names, table);
        let topic = topic_name(&config.topic_prefix, schema, table);
        let defaults: Vec<Option<Vec<u8>>> = spec
            .columns
            .iter()
            .zip(&columns)
            .map(|(spec, column)| {
                let expression = spec.facts.default.as_deref()?;
                schema::default_value(&column.kind, &spec.facts.type_name, expression)
            })
            .collect();
        let column_schema = |i: usize| ColumnSchema {
            name: &columns[i].name,
            kind: &columns[i].kind,
            optional: !spec.columns[i].facts.not_null,
            default: defaults[i].as_deref(),
        };
        let key_schema = (!message_key.is_empty()).then(|| {
            let fields: Vec<ColumnSchema<'_>> =
                message_key.iter().map(|&i| column_schema(i)).collect();
            schema::key_schema(&topic, &fields)
        });
        let key_head = key_schema
            .as_deref()
            .filter(|_| config.connect.key_converter_schemas_enable)
            .map(schema::head);
        let value_head = config.connect.value_converter_schemas_enable.then(|| {
            // The columns the events carry: an excluded one is in neither (Debezium's).
            let fields: Vec<ColumnSchema<'_>> = (0..columns.len())
                .filter(|&i| !columns[i].excluded)
                .map(column_schema)
                .collect();
            schema::head(&schema::envelope_schema(&topic, &fields))
        });
        Self {
            oid: spec.oid,
            schema: Arc::from(schema),
            table: Arc::from(table),
            full_name: Arc::from(format!("{schema}.{table}").as_str()),
            topic: Arc::from(topic.as_str()),
            columns,
            key,
            message_key,
            identity_full: spec.identity_full,
            role,
            source_names,
            key_schema,
            key_head,
            value_head,
        }
    }

    pub fn has_primary_key(&self) -> bool {
        !self.key.is_empty()
    }

    /// Whether its records have a key (a primary key or `message.key.columns`).
    pub fn has_message_key(&self) -> bool {
        !self.message_key.is_empty()
    }
}

fn role_of(schema: &str, table: &str, config: &CdcConfig, columns: &[Column]) -> Role {
    for outbox in &config.outbox {
        if split_table(&outbox.table) == Some((schema, table)) {
            let find = |name: &str| columns.iter().position(|c| &*c.name == name);
            return Role::Outbox(OutboxRoute {
                topic_prefix: Arc::from(outbox.topic_prefix.as_str()),
                topic_column: find(&outbox.topic_column),
                key_column: find(&outbox.key_column),
                payload_column: find(&outbox.payload_column),
                headers: outbox
                    .header_columns
                    .iter()
                    .filter_map(|h| find(h).map(|i| (Arc::from(h.as_str()), i)))
                    .collect(),
                names: [
                    outbox.topic_column.clone(),
                    outbox.key_column.clone(),
                    outbox.payload_column.clone(),
                ],
            });
        }
    }
    if schema == crate::migrations::SCHEMA {
        if table == "heartbeat" {
            return Role::Heartbeat;
        }
        return Role::Ignored;
    }
    if !is_captured(config, schema, table) {
        return Role::Ignored;
    }
    Role::Table
}

/// Whether Debezium's lists capture `schema.table`: its schema passes
/// `schema.include.list`/`schema.exclude.list` and `schema.table` passes
/// `table.include.list`/`table.exclude.list` (Debezium's `Selectors`: both must hold).
pub fn is_captured(config: &CdcConfig, schema: &str, table: &str) -> bool {
    config.lists().captures(schema, table)
}

/// `<prefix>.<schema>.<table>`, with characters Kafka does not allow replaced by `_`.
pub fn topic_name(prefix: &str, schema: &str, table: &str) -> String {
    sanitize_topic(&format!("{prefix}.{schema}.{table}"))
}

/// Kafka topic names allow `[a-zA-Z0-9._-]`, at most 249 characters.
pub fn sanitize_topic(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(249);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_sanitized() {
        assert_eq!(
            topic_name("ficus", "public", "people"),
            "ficus.public.people"
        );
        assert_eq!(
            topic_name("ficus", "My Schema", "tâble$"),
            "ficus.My_Schema.t_ble_"
        );
    }
}
