//! Kafka Connect schemas for the schema-wrapped form (`{"schema": ..., "payload": ...}`), as
//! Kafka Connect's `JsonConverter` (`schemas.enable=true`) writes Debezium's records: built once
//! per relation (when [`super::relation::Relation`] is built from a Relation message or the
//! catalog), then each record copies the prefix and appends its payload.
//!
//! Names and shapes are Debezium 3.6's: `<topic>.Key`, `<topic>.Value`, `<topic>.Envelope`
//! (version 2), `io.debezium.connector.postgresql.Source`, `event.block`; members in
//! `JsonConverter`'s order (`type`, `items`/`keys`/`values`/`fields`, `optional`, `name`,
//! `version`, `doc`, `parameters`, `default`, `field`). A column is `optional` unless it is
//! `NOT NULL`; its `default` is the column default Debezium's `PostgresDefaultValueConverter`
//! understands (literals of the built-in types and enums; a function call such as `now()` or
//! `nextval(..)` gives the type's zero value, as Debezium's does).

use super::json;
use super::types::{
    BinaryMode, DecimalMode, HstoreMode, IntType, IntervalMode, Kind, TextType, TimePrecisionMode,
    try_write_value,
};

/// The `source` block's schema (`io.debezium.connector.postgresql.Source`), with `"field"`.
pub const SOURCE_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"version"},"#,
    r#"{"type":"string","optional":false,"field":"connector"},"#,
    r#"{"type":"string","optional":false,"field":"name"},"#,
    r#"{"type":"int64","optional":false,"field":"ts_ms"},"#,
    r#"{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},"#,
    r#"{"type":"string","optional":false,"field":"db"},"#,
    r#"{"type":"string","optional":true,"field":"sequence"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_us"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ns"},"#,
    r#"{"type":"string","optional":false,"field":"schema"},"#,
    r#"{"type":"string","optional":false,"field":"table"},"#,
    r#"{"type":"int64","optional":true,"field":"txId"},"#,
    r#"{"type":"int64","optional":true,"field":"lsn"},"#,
    r#"{"type":"int64","optional":true,"field":"xmin"},"#,
    r#"{"type":"string","optional":true,"field":"origin"},"#,
    r#"{"type":"int64","optional":true,"field":"origin_lsn"}"#,
    r#"],"optional":false,"name":"io.debezium.connector.postgresql.Source","version":1,"field":"source"}"#,
);

/// The `transaction` block's schema (`event.block`), with `"field"`.
pub const TRANSACTION_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"id"},"#,
    r#"{"type":"int64","optional":false,"field":"total_order"},"#,
    r#"{"type":"int64","optional":false,"field":"data_collection_order"}"#,
    r#"],"optional":true,"name":"event.block","version":1,"field":"transaction"}"#,
);

/// The key schema of a `<prefix>.transaction` record (`provide.transaction.metadata`).
pub const TRANSACTION_KEY_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"}],"#,
    r#""optional":false,"name":"io.debezium.connector.common.TransactionMetadataKey","version":1}"#,
);

/// The value schema of a `<prefix>.transaction` record (BEGIN and END alike).
pub const TRANSACTION_VALUE_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"status"},"#,
    r#"{"type":"string","optional":false,"field":"id"},"#,
    r#"{"type":"int64","optional":true,"field":"event_count"},"#,
    r#"{"type":"array","items":{"type":"struct","fields":["#,
    r#"{"type":"string","optional":false,"field":"data_collection"},"#,
    r#"{"type":"int64","optional":false,"field":"event_count"}"#,
    r#"],"optional":true,"name":"event.collection","version":1},"optional":true,"field":"data_collections"},"#,
    r#"{"type":"int64","optional":false,"field":"ts_ms"}"#,
    r#"],"optional":false,"name":"io.debezium.connector.common.TransactionMetadataValue","version":1}"#,
);

/// The key schema of a heartbeat record (`{"serverName": <topic prefix>}`), Debezium's
/// `SchemaFactory.heartbeatKeySchema`.
pub const HEARTBEAT_KEY_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"serverName"}],"#,
    r#""optional":false,"name":"io.debezium.connector.common.ServerNameKey","version":1}"#,
);

/// The value schema of a heartbeat record (`{"ts_ms": <when it was sent>}`), Debezium's
/// `SchemaFactory.heartbeatValueSchema`.
pub const HEARTBEAT_VALUE_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"ts_ms"}],"#,
    r#""optional":false,"name":"io.debezium.connector.common.Heartbeat","version":1}"#,
);

/// The key schema of a `<prefix>.message` record (a logical decoding message).
pub const MESSAGE_KEY_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":[{"type":"string","optional":true,"field":"prefix"}],"#,
    r#""optional":false,"name":"io.debezium.connector.postgresql.MessageKey","version":1}"#,
);

/// The value schema of a `<prefix>.message` record: `op`, `ts_ms`, `source`, `transaction`
/// and `message` (`prefix`, and `content` as `binary.handling.mode` writes bytes).
pub fn message_value_schema(binary: BinaryMode) -> Vec<u8> {
    let content = match binary {
        BinaryMode::Bytes => "bytes",
        BinaryMode::Base64 | BinaryMode::Base64UrlSafe | BinaryMode::Hex => "string",
    };
    let mut buf = Vec::with_capacity(2048);
    buf.extend_from_slice(br#"{"type":"struct","fields":["#);
    buf.extend_from_slice(br#"{"type":"string","optional":false,"field":"op"},"#);
    buf.extend_from_slice(br#"{"type":"int64","optional":true,"field":"ts_ms"},"#);
    buf.extend_from_slice(SOURCE_SCHEMA.as_bytes());
    buf.push(b',');
    buf.extend_from_slice(TRANSACTION_SCHEMA.as_bytes());
    buf.extend_from_slice(br#",{"type":"struct","fields":[{"type":"string","optional":true,"field":"prefix"},{"type":""#);
    buf.extend_from_slice(content.as_bytes());
    buf.extend_from_slice(br#"","optional":true,"field":"content"}],"optional":false,"name":"io.debezium.connector.postgresql.Message","version":1,"field":"message"}"#);
    buf.extend_from_slice(br#"],"optional":false,"name":"io.debezium.connector.postgresql.MessageValue","version":1}"#);
    buf
}

/// The envelope's members after `transaction`.
const ENVELOPE_TAIL: &str = concat!(
    r#"{"type":"string","optional":false,"field":"op"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ms"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_us"},"#,
    r#"{"type":"int64","optional":true,"field":"ts_ns"}"#,
);

/// The schema of a string header (Debezium's context headers).
pub const STRING_HEADER_SCHEMA: &str = r#"{"type":"string","optional":false}"#;

/// What the schema needs to know about a column beyond its kind.
#[derive(Debug, Clone)]
pub struct ColumnSchema<'a> {
    pub name: &'a str,
    pub kind: &'a Kind,
    pub optional: bool,
    /// The default, already as JSON (see [`default_value`]).
    pub default: Option<&'a [u8]>,
}

/// `{"schema":<schema>,"payload":` — what goes before a payload (then `}`).
pub fn head(schema: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(schema.len() + 24);
    buf.extend_from_slice(b"{\"schema\":");
    buf.extend_from_slice(schema);
    buf.extend_from_slice(b",\"payload\":");
    buf
}

/// `{"schema":<schema>,"payload":<payload>}`.
pub fn wrap(schema: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut buf = head(schema);
    buf.extend_from_slice(payload);
    buf.push(b'}');
    buf
}

/// The key's schema: a struct `<name_prefix>.Key` of the key columns.
pub fn key_schema(name_prefix: &str, columns: &[ColumnSchema<'_>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64 + 48 * columns.len());
    write_struct(
        &mut buf,
        columns,
        false,
        &format!("{name_prefix}.Key"),
        None,
    );
    buf
}

/// The envelope's schema: `<name_prefix>.Envelope` (version 2) with `before` and `after` of
/// struct `<name_prefix>.Value`, then `source`, `transaction`, `op` and the times.
pub fn envelope_schema(name_prefix: &str, columns: &[ColumnSchema<'_>]) -> Vec<u8> {
    let mut row = Vec::with_capacity(64 + 64 * columns.len());
    write_struct(
        &mut row,
        columns,
        true,
        &format!("{name_prefix}.Value"),
        None,
    );
    let mut buf = Vec::with_capacity(2 * row.len() + 1600);
    buf.extend_from_slice(br#"{"type":"struct","fields":["#);
    for field in ["before", "after"] {
        // The row struct with its field name before the closing brace.
        buf.extend_from_slice(&row[..row.len() - 1]);
        buf.extend_from_slice(b",\"field\":");
        json::push_str(&mut buf, field);
        buf.extend_from_slice(b"},");
    }
    buf.extend_from_slice(SOURCE_SCHEMA.as_bytes());
    buf.push(b',');
    buf.extend_from_slice(TRANSACTION_SCHEMA.as_bytes());
    buf.push(b',');
    buf.extend_from_slice(ENVELOPE_TAIL.as_bytes());
    buf.extend_from_slice(br#"],"optional":false,"name":"#);
    json::push_str(&mut buf, &format!("{name_prefix}.Envelope"));
    buf.extend_from_slice(br#","version":2}"#);
    buf
}

fn write_struct(
    buf: &mut Vec<u8>,
    columns: &[ColumnSchema<'_>],
    optional: bool,
    name: &str,
    field: Option<&str>,
) {
    buf.extend_from_slice(br#"{"type":"struct","fields":["#);
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_kind(
            buf,
            column.kind,
            column.optional,
            column.default,
            Some(column.name),
        );
    }
    buf.extend_from_slice(b"],\"optional\":");
    buf.extend_from_slice(if optional { b"true" } else { b"false" });
    buf.extend_from_slice(b",\"name\":");
    json::push_str(buf, name);
    if let Some(field) = field {
        buf.extend_from_slice(b",\"field\":");
        json::push_str(buf, field);
    }
    buf.push(b'}');
}

/// A schema's members after `type` (and its items or fields).
struct Meta<'a> {
    name: Option<&'a str>,
    version: bool,
    doc: Option<&'a str>,
    parameters: &'a [(&'a str, &'a str)],
}

const PLAIN: Meta<'static> = Meta {
    name: None,
    version: false,
    doc: None,
    parameters: &[],
};

const fn named(name: &'static str) -> Meta<'static> {
    Meta {
        name: Some(name),
        version: true,
        doc: None,
        parameters: &[],
    }
}

/// Writes the schema of a value of `kind`; `field` adds the member name (a struct's field).
fn write_kind(
    buf: &mut Vec<u8>,
    kind: &Kind,
    optional: bool,
    default: Option<&[u8]>,
    field: Option<&str>,
) {
    let simple = |buf: &mut Vec<u8>, ty: &str, meta: Meta<'_>| {
        buf.extend_from_slice(b"{\"type\":");
        json::push_str(buf, ty);
        finish(buf, optional, &meta, default, field);
    };
    match kind {
        Kind::Bool => simple(buf, "boolean", PLAIN),
        Kind::Int(IntType::Int16) => simple(buf, "int16", PLAIN),
        Kind::Int(IntType::Int32) => simple(buf, "int32", PLAIN),
        Kind::Int(IntType::Int64) => simple(buf, "int64", PLAIN),
        Kind::Float { double: false } => simple(buf, "float", PLAIN),
        Kind::Float { double: true } => simple(buf, "double", PLAIN),
        Kind::Numeric {
            precision,
            scale,
            mode,
        } => match (mode, scale) {
            (DecimalMode::String, _) => simple(buf, "string", PLAIN),
            (DecimalMode::Double, _) => simple(buf, "double", PLAIN),
            (DecimalMode::Precise, Some(scale)) => {
                let scale = scale.to_string();
                let precision = precision.map(|p| p.to_string());
                let mut parameters = vec![("scale", scale.as_str())];
                if let Some(precision) = &precision {
                    parameters.push(("connect.decimal.precision", precision.as_str()));
                }
                simple(
                    buf,
                    "bytes",
                    Meta {
                        parameters: &parameters,
                        ..named("org.apache.kafka.connect.data.Decimal")
                    },
                );
            }
            (DecimalMode::Precise, None) => {
                buf.extend_from_slice(
                    concat!(
                        r#"{"type":"struct","fields":["#,
                        r#"{"type":"int32","optional":false,"field":"scale"},"#,
                        r#"{"type":"bytes","optional":false,"field":"value"}]"#
                    )
                    .as_bytes(),
                );
                finish(
                    buf,
                    optional,
                    &Meta {
                        doc: Some("Variable scaled decimal"),
                        ..named("io.debezium.data.VariableScaleDecimal")
                    },
                    default,
                    field,
                );
            }
        },
        Kind::Money { mode } => match mode {
            DecimalMode::String => simple(buf, "string", PLAIN),
            DecimalMode::Double => simple(buf, "double", PLAIN),
            DecimalMode::Precise => simple(
                buf,
                "bytes",
                Meta {
                    parameters: &[("scale", "2")],
                    ..named("org.apache.kafka.connect.data.Decimal")
                },
            ),
        },
        Kind::Text(TextType::Plain) => simple(buf, "string", PLAIN),
        Kind::Text(TextType::Xml) => simple(buf, "string", named("io.debezium.data.Xml")),
        Kind::Text(TextType::Ltree) => simple(buf, "string", named("io.debezium.data.Ltree")),
        Kind::Uuid => simple(buf, "string", named("io.debezium.data.Uuid")),
        Kind::Enum { allowed } => simple(
            buf,
            "string",
            Meta {
                parameters: &[("allowed", allowed)],
                ..named("io.debezium.data.Enum")
            },
        ),
        Kind::Json => simple(buf, "string", named("io.debezium.data.Json")),
        Kind::Bytea { mode } => match mode {
            BinaryMode::Bytes => simple(buf, "bytes", PLAIN),
            _ => simple(buf, "string", PLAIN),
        },
        Kind::Bits { length } => {
            let length = length.to_string();
            simple(
                buf,
                "bytes",
                Meta {
                    parameters: &[("length", &length)],
                    ..named("io.debezium.data.Bits")
                },
            );
        }
        Kind::Date { mode, .. } => match mode {
            TimePrecisionMode::Connect => {
                simple(buf, "int32", named("org.apache.kafka.connect.data.Date"))
            }
            _ => simple(buf, "int32", named("io.debezium.time.Date")),
        },
        Kind::Time { precision, mode } => match mode {
            TimePrecisionMode::Connect => {
                simple(buf, "int32", named("org.apache.kafka.connect.data.Time"))
            }
            TimePrecisionMode::Adaptive if *precision <= 3 => {
                simple(buf, "int32", named("io.debezium.time.Time"))
            }
            _ => simple(buf, "int64", named("io.debezium.time.MicroTime")),
        },
        Kind::TimeTz => simple(buf, "string", named("io.debezium.time.ZonedTime")),
        Kind::Timestamp { precision, mode } => match mode {
            TimePrecisionMode::Connect => simple(
                buf,
                "int64",
                named("org.apache.kafka.connect.data.Timestamp"),
            ),
            _ if *precision <= 3 => simple(buf, "int64", named("io.debezium.time.Timestamp")),
            _ => simple(buf, "int64", named("io.debezium.time.MicroTimestamp")),
        },
        Kind::TimestampTz { .. } => simple(buf, "string", named("io.debezium.time.ZonedTimestamp")),
        Kind::Interval { mode } => match mode {
            IntervalMode::Numeric => simple(buf, "int64", named("io.debezium.time.MicroDuration")),
            IntervalMode::String => simple(buf, "string", named("io.debezium.time.Interval")),
        },
        Kind::Point => {
            buf.extend_from_slice(
                concat!(
                    r#"{"type":"struct","fields":["#,
                    r#"{"type":"double","optional":false,"field":"x"},"#,
                    r#"{"type":"double","optional":false,"field":"y"},"#,
                    r#"{"type":"bytes","optional":true,"field":"wkb"},"#,
                    r#"{"type":"int32","optional":true,"field":"srid"}]"#
                )
                .as_bytes(),
            );
            finish(
                buf,
                optional,
                &Meta {
                    doc: Some("Geometry (POINT)"),
                    ..named("io.debezium.data.geometry.Point")
                },
                default,
                field,
            );
        }
        Kind::Hstore { mode } => match mode {
            HstoreMode::Json => simple(buf, "string", named("io.debezium.data.Json")),
            HstoreMode::Map => {
                buf.extend_from_slice(
                    concat!(
                        r#"{"type":"map","keys":{"type":"string","optional":false},"#,
                        r#""values":{"type":"string","optional":true}"#
                    )
                    .as_bytes(),
                );
                finish(buf, optional, &PLAIN, default, field);
            }
        },
        Kind::Array(elem) => {
            buf.extend_from_slice(br#"{"type":"array","items":"#);
            // Debezium's enum arrays have required elements; every other array optional ones.
            let elem_optional = !matches!(**elem, Kind::Enum { .. });
            write_kind(buf, elem, elem_optional, None, None);
            finish(buf, optional, &PLAIN, default, field);
        }
    }
}

/// `,"optional":..[,"name"][,"version"][,"doc"][,"parameters"][,"default"][,"field"]}`.
fn finish(
    buf: &mut Vec<u8>,
    optional: bool,
    meta: &Meta<'_>,
    default: Option<&[u8]>,
    field: Option<&str>,
) {
    buf.extend_from_slice(b",\"optional\":");
    buf.extend_from_slice(if optional { b"true" } else { b"false" });
    if let Some(name) = meta.name {
        buf.extend_from_slice(b",\"name\":");
        json::push_str(buf, name);
    }
    if meta.version {
        buf.extend_from_slice(b",\"version\":1");
    }
    if let Some(doc) = meta.doc {
        buf.extend_from_slice(b",\"doc\":");
        json::push_str(buf, doc);
    }
    if !meta.parameters.is_empty() {
        buf.extend_from_slice(b",\"parameters\":{");
        for (i, (key, value)) in meta.parameters.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            json::push_key(buf, key);
            json::push_str(buf, value);
        }
        buf.push(b'}');
    }
    if let Some(default) = default {
        buf.extend_from_slice(b",\"default\":");
        buf.extend_from_slice(default);
    }
    if let Some(field) = field {
        buf.extend_from_slice(b",\"field\":");
        json::push_str(buf, field);
    }
    buf.push(b'}');
}

/// The schema `default` of a column, as JSON, from its default expression (`pg_get_expr`) and
/// its type's name (`pg_type.typname`), the way Debezium's `PostgresDefaultValueConverter`
/// reads it: `'literal'::type` or a raw `literal`; a function call (`now()`, `nextval(..)`) or
/// `CURRENT_TIMESTAMP` stands for the type's zero value; types it has no reader for (domains,
/// arrays, `money`, `bytea`, `citext`, ...) and structs (`numeric` without a scale, `point`)
/// get none.
pub fn default_value(kind: &Kind, type_name: &str, expression: &str) -> Option<Vec<u8>> {
    let placeholder = match (type_name, kind) {
        ("bit", _) => "00",
        ("varbit", _) => "0",
        ("bool", _) => "false",
        ("bpchar" | "varchar" | "text" | "xml", _) => "",
        ("numeric" | "float4" | "float8", _) => "0.0",
        ("int2" | "int4" | "int8", _) => "0",
        ("json" | "jsonb", _) => "{}",
        ("uuid", _) => "00000000-0000-0000-0000-000000000000",
        ("date" | "timestamp" | "timestamptz", _) => "1970-01-01",
        ("time", _) => "00:00",
        ("interval", _) => "epoch",
        (_, Kind::Enum { .. }) => return enum_default(type_name, expression),
        _ => return None,
    };
    if matches!(
        kind,
        Kind::Numeric {
            scale: None,
            mode: DecimalMode::Precise,
            ..
        } | Kind::Point
    ) {
        return None;
    }
    let trim = !matches!(
        type_name,
        "bpchar" | "varchar" | "text" | "xml" | "json" | "jsonb"
    );
    let expression = if trim { expression.trim() } else { expression };
    let lower = expression.to_ascii_lowercase();
    let text = if is_function_call(expression)
        || matches!(
            lower.as_str(),
            "current_timestamp" | "current_time" | "current_date" | "localtime" | "localtimestamp"
        ) {
        placeholder.to_owned()
    } else if expression.contains('\'') {
        literal(expression)?
    } else if expression.starts_with("NULL::") {
        return None;
    } else {
        expression.to_owned()
    };
    let text = match (type_name, text.len()) {
        // `B'1'` of a bit(1) is a boolean.
        ("bit", 1) => (if text == "1" { "true" } else { "false" }).to_owned(),
        // A date alone where a timestamp is read: midnight.
        ("timestamp", 10) => format!("{text} 00:00:00"),
        ("timestamptz", 10) => format!("{text} 00:00:00+00"),
        ("time", 5) => format!("{text}:00"),
        _ => text,
    };
    let mut buf = Vec::new();
    try_write_value(&mut buf, kind, &text).then_some(buf)
}

/// `'ok'::mood` when the cast names the enum's own type.
fn enum_default(type_name: &str, expression: &str) -> Option<Vec<u8>> {
    let (value, cast) = expression.rsplit_once("::")?;
    let cast = cast.trim_matches('"');
    let cast = cast
        .rsplit_once('.')
        .map_or(cast, |(_, name)| name.trim_matches('"'));
    let type_name = type_name
        .rsplit_once('.')
        .map_or(type_name, |(_, name)| name);
    if cast != type_name {
        return None;
    }
    let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut buf = Vec::new();
    json::push_str(&mut buf, value);
    Some(buf)
}

/// Debezium's `^[(]?[A-Za-z0-9_.]+\((?:.+(?:, ?.+)*)?\)` (found at the start).
fn is_function_call(expression: &str) -> bool {
    let rest = expression.strip_prefix('(').unwrap_or(expression);
    let name_len = rest
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        .count();
    if name_len == 0 || rest.as_bytes().get(name_len) != Some(&b'(') {
        return false;
    }
    rest[name_len + 1..].contains(')')
}

/// The first `'...'` literal's text, `''` unescaped.
fn literal(expression: &str) -> Option<String> {
    let start = expression.find('\'')? + 1;
    let bytes = expression.as_bytes();
    let mut out = String::new();
    let mut i = start;
    let mut from = start;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            if bytes.get(i + 1) == Some(&b'\'') {
                out.push_str(&expression[from..=i]);
                i += 2;
                from = i;
                continue;
            }
            out.push_str(&expression[from..i]);
            return Some(out);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::types::builtin_kind;
    use serde_json::{Value, json};

    fn schema_of(kind: &Kind, optional: bool) -> Value {
        let mut buf = Vec::new();
        write_kind(&mut buf, kind, optional, None, Some("c"));
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn column_schemas_are_debeziums() {
        // As Debezium 3.6.3 wrote them for the same columns (tests/cdc/conformance.rs).
        let numeric = builtin_kind(1700, (12 << 16 | 3) + 4).unwrap();
        assert_eq!(
            serde_json::to_string(&schema_of(&numeric, true)).unwrap(),
            r#"{"field":"c","name":"org.apache.kafka.connect.data.Decimal","optional":true,"parameters":{"connect.decimal.precision":"12","scale":"3"},"type":"bytes","version":1}"#
        );
        let mut buf = Vec::new();
        write_kind(
            &mut buf,
            &builtin_kind(1560, 4).unwrap(),
            true,
            None,
            Some("bt"),
        );
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"type":"bytes","optional":true,"name":"io.debezium.data.Bits","version":1,"parameters":{"length":"4"},"field":"bt"}"#
        );
        assert_eq!(
            schema_of(&builtin_kind(1560, 1).unwrap(), true)["type"],
            "boolean"
        );
        let time3 = builtin_kind(1083, 3).unwrap();
        assert_eq!(schema_of(&time3, true)["name"], "io.debezium.time.Time");
        assert_eq!(
            schema_of(&builtin_kind(1083, -1).unwrap(), true)["type"],
            "int64"
        );
    }

    #[test]
    fn defaults_read_as_debezium_reads_them() {
        let int4 = builtin_kind(23, -1).unwrap();
        let d = |kind: &Kind, ty: &str, expr: &str| {
            default_value(kind, ty, expr).map(|b| String::from_utf8(b).unwrap())
        };
        assert_eq!(d(&int4, "int4", "5").as_deref(), Some("5"));
        assert_eq!(
            d(&int4, "int4", "nextval('s_id_seq'::regclass)").as_deref(),
            Some("0")
        );
        let text = builtin_kind(25, -1).unwrap();
        assert_eq!(
            d(&text, "text", "'it''s'::text").as_deref(),
            Some(r#""it's""#)
        );
        let tstz = builtin_kind(1184, -1).unwrap();
        assert_eq!(
            d(&tstz, "timestamptz", "now()").as_deref(),
            Some(r#""1970-01-01T00:00:00.000000Z""#)
        );
        let numeric = builtin_kind(1700, (5 << 16 | 2) + 4).unwrap();
        assert_eq!(d(&numeric, "numeric", "1.5").as_deref(), Some(r#""AJY=""#));
        let variable = builtin_kind(1700, -1).unwrap();
        assert_eq!(d(&variable, "numeric", "1.5"), None);
        let mood = Kind::Enum {
            allowed: "sad,ok".into(),
        };
        assert_eq!(d(&mood, "mood", "'ok'::mood").as_deref(), Some(r#""ok""#));
        assert_eq!(d(&mood, "mood", "'ok'::other"), None);
        assert_eq!(d(&int4, "positive", "1"), None);
        let _ = json!(null);
    }
}
