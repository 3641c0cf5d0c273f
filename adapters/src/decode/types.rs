//! PostgreSQL values (their text output, as pgoutput and `::text` give them) mapped to JSON the
//! way Debezium's PostgreSQL connector does, by its value-handling properties
//! (`decimal.handling.mode`, `time.precision.mode`, `binary.handling.mode`,
//! `interval.handling.mode`, `hstore.handling.mode`; Debezium's defaults shown first). The
//! Connect schema of each kind is in [`super::schema`].
//!
//! | PostgreSQL | JSON | Debezium logical type |
//! |---|---|---|
//! | `boolean`, `bit(1)`, `varbit(1)` | `true` / `false` | |
//! | `smallint`, `integer`, `bigint`, `oid` | number | int16 / int32 / int64 |
//! | `real`, `double precision` | number as Java prints it (`100.0`, `1.0E-6`); `"NaN"`, `"Infinity"`, `"-Infinity"` as strings | float / double |
//! | `numeric(p, s)` | precise: base64 of the unscaled value's two's-complement bytes (`"ALxhTg=="`); NaN null | org.apache.kafka.connect.data.Decimal |
//! | `numeric` (no scale) | precise: `{"scale": s, "value": base64}`, trailing zeros dropped | io.debezium.data.VariableScaleDecimal |
//! | `numeric` with `decimal.handling.mode=string` / `double` | string with every digit (`"12.3400"`, `"NaN"`) / number as Java prints it (`100.0`) | |
//! | `money` | precise: base64 bytes of scale 2; `string`/`double` modes: `"-1234.50"` (no currency symbol, no grouping) / number | org.apache.kafka.connect.data.Decimal |
//! | `text`, `varchar`, `char`, `name`, `citext`, `inet`, ... | string | (`xml`: io.debezium.data.Xml, `ltree`: io.debezium.data.Ltree) |
//! | `uuid` | string | io.debezium.data.Uuid |
//! | enum types | string (the label) | io.debezium.data.Enum |
//! | `json`, `jsonb` | string holding the JSON text | io.debezium.data.Json |
//! | `bytea` | `bytes`: base64; `base64`, `base64-url-safe` (padded), `hex` (lower case): strings | bytes / string |
//! | `bit(n)`, `varbit(n)` | base64 of the bits as a little-endian number, as few bytes as its highest set bit needs | io.debezium.data.Bits |
//! | `date` | days since 1970-01-01 | io.debezium.time.Date (connect: org.apache.kafka.connect.data.Date) |
//! | `time(0..3)` / `time` | adaptive: milliseconds / microseconds since midnight; adaptive_time_microseconds: microseconds; connect: milliseconds | io.debezium.time.Time / MicroTime (connect: org.apache.kafka.connect.data.Time) |
//! | `timestamp(0..3)` / `timestamp` | milliseconds / microseconds since the epoch (as if UTC); connect: milliseconds | io.debezium.time.Timestamp / MicroTimestamp (connect: org.apache.kafka.connect.data.Timestamp) |
//! | `timestamptz` | ISO-8601 string in UTC, `"2024-05-01T10:00:00.123456Z"` | io.debezium.time.ZonedTimestamp |
//! | `timetz` | ISO-8601 time in UTC, `"10:00:00.5Z"` | io.debezium.time.ZonedTime |
//! | `interval` | numeric: microseconds, a month counted as 30.4375 days; string: `"P1Y2M3DT4H5M6.5S"` | io.debezium.time.MicroDuration / Interval |
//! | arrays of any of these | JSON arrays (nested for several dimensions), `null` elements kept | array |
//! | domains | as their base type | |
//! | `point` | `{"x", "y", "wkb", "srid": null}` | io.debezium.data.geometry.Point |
//! | `hstore` | json: string holding a JSON object; map: the object | io.debezium.data.Json / map |
//! | anything else (geometric, ranges, composite, ...) | string, PostgreSQL's text | |
//!
//! Infinite values as Debezium 3.6 writes them: `timestamp` `infinity` / `-infinity` as
//! 9223372036825200000 / -9223372036832400000 (microsecond columns; millisecond columns these
//! divided by 1000: JDBC's sentinels), `date` as [`DATE_INFINITY`] (its stream and its
//! snapshot differ), `timestamptz` as `"infinity"` / `"-infinity"`. A value the mapper cannot
//! parse is emitted as its text rather than dropped.

use base64::Engine as _;
use chrono::{NaiveDate, NaiveTime, Timelike};

use super::json;

/// How a column's values are written (and, in the schema-wrapped form, described: see
/// [`super::schema`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int(IntType),
    /// `real` (Connect `float`) or `double precision` (`double`).
    Float {
        double: bool,
    },
    /// `scale`: the declared scale (`numeric(p, s)`), `None` without one; `precision` likewise.
    Numeric {
        precision: Option<u32>,
        scale: Option<u16>,
        mode: DecimalMode,
    },
    /// Two fraction digits (Debezium's `money.fraction.digits` default).
    Money {
        mode: DecimalMode,
    },
    Text(TextType),
    Uuid,
    /// `allowed`: the labels in order, comma-separated (the schema's parameter).
    Enum {
        allowed: std::sync::Arc<str>,
    },
    Json,
    Bytea {
        mode: BinaryMode,
    },
    /// `bit(n)` with n > 1 and `varbit(n)`: Debezium's `io.debezium.data.Bits`, the bits as
    /// little-endian bytes. `bit(1)` and `varbit(1)` are [`Kind::Bool`].
    Bits {
        length: u32,
    },
    /// `snapshot`: the column is read by the snapshot, whose infinite dates Debezium writes as
    /// other numbers than its stream's (see [`DATE_INFINITY`]).
    Date {
        mode: TimePrecisionMode,
        snapshot: bool,
    },
    /// `precision`: the fraction's declared digits (6 without one).
    Time {
        precision: u8,
        mode: TimePrecisionMode,
    },
    TimeTz,
    Timestamp {
        precision: u8,
        mode: TimePrecisionMode,
    },
    /// `precision`: the fraction's digits (the column's precision, 6 by default), as
    /// Debezium's `ZonedTimestamp` pads it.
    TimestampTz {
        precision: u8,
    },
    Interval {
        mode: IntervalMode,
    },
    /// `point`: Debezium's `io.debezium.data.geometry.Point`.
    Point,
    /// The `hstore` extension's type.
    Hstore {
        mode: HstoreMode,
    },
    Array(Box<Kind>),
}

/// The Connect integer type of an integer column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntType {
    Int16,
    Int32,
    Int64,
}

/// Strings Debezium gives a semantic name (or none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextType {
    Plain,
    Xml,
    Ltree,
}

/// `decimal.handling.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecimalMode {
    #[default]
    Precise,
    String,
    Double,
}

/// `time.precision.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimePrecisionMode {
    /// Milliseconds for precision 0..=3, microseconds above (`io.debezium.time.*`).
    #[default]
    Adaptive,
    /// As adaptive, but `time` always in microseconds (`MicroTime`).
    AdaptiveTimeMicroseconds,
    /// Kafka Connect's own `Date`, `Time`, `Timestamp`: milliseconds whatever the precision.
    Connect,
}

/// `binary.handling.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BinaryMode {
    /// Connect `bytes` (base64 in JSON).
    #[default]
    Bytes,
    Base64,
    Base64UrlSafe,
    Hex,
}

/// `interval.handling.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMode {
    /// Microseconds, a month counted as 30.4375 days (`io.debezium.time.MicroDuration`).
    #[default]
    Numeric,
    /// ISO-8601 `P1Y2M3DT4H5M6.78S` (`io.debezium.time.Interval`).
    String,
}

/// `hstore.handling.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HstoreMode {
    /// A string holding a JSON object (`io.debezium.data.Json`).
    #[default]
    Json,
    /// A JSON object (a Connect map of string to optional string).
    Map,
}

/// The value-handling modes (Debezium's properties of the same names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Modes {
    pub decimal: DecimalMode,
    pub time_precision: TimePrecisionMode,
    pub binary: BinaryMode,
    pub interval: IntervalMode,
    pub hstore: HstoreMode,
}

impl Kind {
    /// The kind with every mode-dependent mapping set from `modes` (arrays included).
    pub fn with_modes(self, modes: Modes) -> Kind {
        match self {
            Kind::Numeric {
                precision, scale, ..
            } => Kind::Numeric {
                precision,
                scale,
                mode: modes.decimal,
            },
            Kind::Money { .. } => Kind::Money {
                mode: modes.decimal,
            },
            Kind::Bytea { .. } => Kind::Bytea { mode: modes.binary },
            Kind::Date { snapshot, .. } => Kind::Date {
                mode: modes.time_precision,
                snapshot,
            },
            Kind::Time { precision, .. } => Kind::Time {
                precision,
                mode: modes.time_precision,
            },
            Kind::Timestamp { precision, .. } => Kind::Timestamp {
                precision,
                mode: modes.time_precision,
            },
            Kind::Interval { .. } => Kind::Interval {
                mode: modes.interval,
            },
            Kind::Hstore { .. } => Kind::Hstore { mode: modes.hstore },
            Kind::Array(elem) => Kind::Array(Box::new(elem.with_modes(modes))),
            other => other,
        }
    }

    /// The kind as the snapshot reads it (dates mapped with the snapshot's infinities).
    pub fn for_snapshot(self) -> Kind {
        match self {
            Kind::Date { mode, .. } => Kind::Date {
                mode,
                snapshot: true,
            },
            Kind::Array(elem) => Kind::Array(Box::new(elem.for_snapshot())),
            other => other,
        }
    }

    /// Whether `time` values are written in milliseconds (else microseconds).
    fn time_millis(precision: u8, mode: TimePrecisionMode) -> bool {
        match mode {
            TimePrecisionMode::Adaptive => precision <= 3,
            TimePrecisionMode::AdaptiveTimeMicroseconds => false,
            TimePrecisionMode::Connect => true,
        }
    }

    /// Whether `timestamp` values are written in milliseconds (else microseconds).
    fn timestamp_millis(precision: u8, mode: TimePrecisionMode) -> bool {
        match mode {
            TimePrecisionMode::Adaptive | TimePrecisionMode::AdaptiveTimeMicroseconds => {
                precision <= 3
            }
            TimePrecisionMode::Connect => true,
        }
    }
}

/// A time type's precision from its modifier (-1: the default, 6).
fn time_precision(typmod: i32) -> u8 {
    if (0..=6).contains(&typmod) {
        typmod as u8
    } else {
        6
    }
}

/// Built-in scalar types by OID; `typmod` is the column's type modifier (precision of time
/// types). Arrays, domains and enums are resolved from the catalog (`crate::catalog`). Modes
/// are the defaults; [`Kind::with_modes`] sets the configured ones.
pub fn builtin_kind(oid: u32, typmod: i32) -> Option<Kind> {
    let modes = Modes::default();
    Some(match oid {
        16 => Kind::Bool,
        21 => Kind::Int(IntType::Int16),
        23 => Kind::Int(IntType::Int32),
        20 | 26 | 28 => Kind::Int(IntType::Int64),
        700 => Kind::Float { double: false },
        701 => Kind::Float { double: true },
        1700 => Kind::Numeric {
            // typmod = ((precision << 16) | scale) + 4; -1 without a declared scale.
            precision: (typmod >= 4).then(|| ((typmod - 4) >> 16) as u32),
            scale: (typmod >= 4).then(|| ((typmod - 4) & 0xffff) as u16),
            mode: modes.decimal,
        },
        790 => Kind::Money {
            mode: modes.decimal,
        },
        17 => Kind::Bytea { mode: modes.binary },
        114 | 3802 => Kind::Json,
        2950 => Kind::Uuid,
        1082 => Kind::Date {
            mode: modes.time_precision,
            snapshot: false,
        },
        1083 => Kind::Time {
            precision: time_precision(typmod),
            mode: modes.time_precision,
        },
        1266 => Kind::TimeTz,
        1114 => Kind::Timestamp {
            precision: time_precision(typmod),
            mode: modes.time_precision,
        },
        1184 => Kind::TimestampTz {
            precision: time_precision(typmod),
        },
        1186 => Kind::Interval {
            mode: modes.interval,
        },
        600 => Kind::Point,
        // bit(n) and varbit(n): the modifier is n (-1: varbit without a length).
        1560 | 1562 => {
            let length = if typmod > 0 {
                typmod as u32
            } else {
                i32::MAX as u32
            };
            if length == 1 {
                Kind::Bool
            } else {
                Kind::Bits { length }
            }
        }
        142 => Kind::Text(TextType::Xml),
        // text, varchar, bpchar, name, "char", inet, cidr, macaddr
        25 | 1043 | 1042 | 19 | 18 | 869 | 650 | 829 => Kind::Text(TextType::Plain),
        _ => return None,
    })
}

/// Writes one non-null value of `kind` whose PostgreSQL text output is `text`.
pub fn write_value(buf: &mut Vec<u8>, kind: &Kind, text: &[u8]) {
    let Ok(s) = std::str::from_utf8(text) else {
        json::push_bytes_as_str(buf, text);
        return;
    };
    let start = buf.len();
    if !try_write_value(buf, kind, s) {
        buf.truncate(start);
        json::push_str(buf, s);
    }
}

/// Writes the TOAST placeholder in the column's shape: bytea gets the placeholder's bytes (in
/// the binary mode's encoding), arrays a one-element array, everything else the string (as
/// Debezium does).
pub fn write_placeholder(buf: &mut Vec<u8>, kind: &Kind, placeholder: &str) {
    match kind {
        Kind::Bytea { mode } => write_binary(buf, *mode, placeholder.as_bytes()),
        // Debezium writes the placeholder's bytes as the numbers of an integer array.
        Kind::Array(elem) if matches!(**elem, Kind::Int(_)) => {
            buf.push(b'[');
            for (i, byte) in placeholder.bytes().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                json::push_i64(buf, i64::from(byte));
            }
            buf.push(b']');
        }
        Kind::Array(_) => {
            buf.push(b'[');
            json::push_str(buf, placeholder);
            buf.push(b']');
        }
        _ => json::push_str(buf, placeholder),
    }
}

/// Infinite dates as Debezium 3.6 writes them (days since the epoch): its stream turns
/// PostgreSQL's `infinity` / `-infinity` into PostgreSQL's own day numbers (`i32::MAX`,
/// `i32::MIN` since 2000-01-01) shifted to 1970 with 32-bit overflow; its snapshot reads them
/// through JDBC's sentinel dates. `(stream, snapshot)` for `infinity`, then `-infinity`.
pub const DATE_INFINITY: [(i64, i64); 2] = [
    (-2_147_472_692, -622_191_234),
    (-2_147_472_691, -625_821_272),
];

/// Infinite timestamps as Debezium writes them (stream and snapshot alike): JDBC's sentinels
/// (`PGStatement.DATE_POSITIVE_INFINITY`, `DATE_NEGATIVE_INFINITY`, milliseconds) taken as
/// microseconds, and divided by 1000 for millisecond columns.
pub const TIMESTAMP_INFINITY: [i64; 2] = [9_223_372_036_825_200_000, -9_223_372_036_832_400_000];

/// Bytes in `binary.handling.mode`.
pub fn write_binary(buf: &mut Vec<u8>, mode: BinaryMode, bytes: &[u8]) {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    match mode {
        BinaryMode::Bytes | BinaryMode::Base64 => json::push_str(buf, &STANDARD.encode(bytes)),
        BinaryMode::Base64UrlSafe => json::push_str(buf, &URL_SAFE.encode(bytes)),
        BinaryMode::Hex => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            buf.push(b'"');
            for b in bytes {
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
            buf.push(b'"');
        }
    }
}

/// Writes one non-null value of `kind` whose text is `s`; false (with `buf` partly written)
/// when `s` is not a value of `kind`.
pub fn try_write_value(buf: &mut Vec<u8>, kind: &Kind, s: &str) -> bool {
    match kind {
        Kind::Bool => match s {
            // `bit(1)` / `varbit(1)` print 1 and 0.
            "t" | "true" | "1" => buf.extend_from_slice(b"true"),
            "f" | "false" | "0" => buf.extend_from_slice(b"false"),
            _ => return false,
        },
        Kind::Int(_) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return false;
            }
            buf.extend_from_slice(s.as_bytes());
        }
        // As Java prints the value read (`100.0`, `1.0E-6`): PostgreSQL prints `100`, `1e-06`.
        Kind::Float { double } => match s {
            "NaN" | "Infinity" | "-Infinity" => json::push_str(buf, s),
            _ if !is_json_number(s) => return false,
            _ if *double => match s.parse::<f64>() {
                Ok(x) if x.is_finite() => json::push_java_f64(buf, x),
                _ => return false,
            },
            _ => match s.parse::<f32>() {
                Ok(x) if x.is_finite() => json::push_java_f32(buf, x),
                _ => return false,
            },
        },
        Kind::Numeric { scale, mode, .. } => return write_numeric(buf, *scale, *mode, s),
        Kind::Money { mode } => return write_money(buf, *mode, s),
        Kind::Text(_) | Kind::Uuid | Kind::Enum { .. } | Kind::Json => json::push_str(buf, s),
        Kind::Bytea { mode } => {
            let Some(hex) = s.strip_prefix("\\x") else {
                return false;
            };
            let Some(bytes) = decode_hex(hex) else {
                return false;
            };
            write_binary(buf, *mode, &bytes);
        }
        Kind::Bits { .. } => return write_bits(buf, s),
        Kind::Date { snapshot, .. } => match s {
            "infinity" | "-infinity" => {
                let (stream, snap) = DATE_INFINITY[usize::from(s == "-infinity")];
                json::push_i64(buf, if *snapshot { snap } else { stream });
            }
            _ => match parse_date(s) {
                Some(date) => json::push_i64(buf, days_since_epoch(date)),
                None => return false,
            },
        },
        Kind::Time { precision, mode } => match parse_time(s) {
            Some(micros) => json::push_i64(
                buf,
                if Kind::time_millis(*precision, *mode) {
                    micros / 1000
                } else {
                    micros
                },
            ),
            None => return false,
        },
        Kind::TimeTz => match parse_timetz_utc(s) {
            Some(text) => json::push_str(buf, &text),
            None => return false,
        },
        Kind::Timestamp { precision, mode } => {
            let micros = match s {
                "infinity" | "-infinity" => TIMESTAMP_INFINITY[usize::from(s == "-infinity")],
                _ => match parse_timestamp_micros(s) {
                    Some(micros) => micros,
                    None => return false,
                },
            };
            json::push_i64(
                buf,
                if Kind::timestamp_millis(*precision, *mode) {
                    micros.div_euclid(1000)
                } else {
                    micros
                },
            );
        }
        Kind::TimestampTz { precision } => match s {
            "infinity" | "-infinity" => json::push_str(buf, s),
            _ => match parse_timestamptz_utc(s, *precision) {
                Some(text) => json::push_str(buf, &text),
                None => return false,
            },
        },
        Kind::Interval { mode } => match parse_interval(s) {
            Some(interval) => match mode {
                IntervalMode::Numeric => match interval.micros() {
                    Some(micros) => json::push_i64(buf, micros),
                    None => return false,
                },
                IntervalMode::String => json::push_str(buf, &interval.iso()),
            },
            None => return false,
        },
        Kind::Point => return write_point(buf, s),
        Kind::Hstore { mode } => return write_hstore(buf, *mode, s),
        Kind::Array(elem) => return write_array(buf, elem, s),
    }
    true
}

/// A bit string (`1011`) as Debezium's `Bits`: the number it spells, as little-endian bytes,
/// as few as hold its highest set bit (none for zero).
fn write_bits(buf: &mut Vec<u8>, s: &str) -> bool {
    if s.is_empty() || !s.bytes().all(|b| b == b'0' || b == b'1') {
        return false;
    }
    let mut bytes = vec![0u8; s.len().div_ceil(8)];
    for (i, bit) in s.bytes().rev().enumerate() {
        if bit == b'1' {
            bytes[i / 8] |= 1 << (i % 8);
        }
    }
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    push_base64(buf, &bytes);
    true
}

/// `(x,y)` as `{"x":..,"y":..,"wkb":<base64 little-endian WKB point>,"srid":null}`.
fn write_point(buf: &mut Vec<u8>, s: &str) -> bool {
    let Some((x, y)) = s
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once(','))
    else {
        return false;
    };
    let (Ok(x), Ok(y)) = (x.trim().parse::<f64>(), y.trim().parse::<f64>()) else {
        return false;
    };
    if !x.is_finite() || !y.is_finite() {
        return false;
    }
    let mut wkb = Vec::with_capacity(21);
    wkb.push(1); // little-endian
    wkb.extend_from_slice(&1u32.to_le_bytes()); // a point
    wkb.extend_from_slice(&x.to_le_bytes());
    wkb.extend_from_slice(&y.to_le_bytes());
    // Doubles as Java writes them: `-2.0`, not `-2`.
    buf.extend_from_slice(format!("{{\"x\":{x:?},\"y\":{y:?},\"wkb\":").as_bytes());
    push_base64(buf, &wkb);
    buf.extend_from_slice(b",\"srid\":null}");
    true
}

/// hstore's text (`"a"=>"1", "b"=>NULL`) as the JSON object (mode `map`) or a string holding
/// it (`json`), in hstore's order.
fn write_hstore(buf: &mut Vec<u8>, mode: HstoreMode, s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut pos = 0;
    let mut object = Vec::with_capacity(s.len() + 2);
    object.push(b'{');
    let quoted = |pos: &mut usize| -> Option<String> {
        if bytes.get(*pos) != Some(&b'"') {
            return None;
        }
        *pos += 1;
        let mut out = Vec::new();
        loop {
            match bytes.get(*pos)? {
                b'\\' => {
                    out.push(*bytes.get(*pos + 1)?);
                    *pos += 2;
                }
                b'"' => {
                    *pos += 1;
                    return String::from_utf8(out).ok();
                }
                &c => {
                    out.push(c);
                    *pos += 1;
                }
            }
        }
    };
    let mut first = true;
    while pos < bytes.len() {
        while bytes.get(pos) == Some(&b' ') {
            pos += 1;
        }
        let Some(key) = quoted(&mut pos) else {
            return false;
        };
        if bytes.get(pos..pos + 2) != Some(b"=>") {
            return false;
        }
        pos += 2;
        if !first {
            object.push(b',');
        }
        first = false;
        json::push_str(&mut object, &key);
        object.push(b':');
        if bytes.get(pos..pos + 4) == Some(b"NULL") {
            pos += 4;
            object.extend_from_slice(b"null");
        } else {
            let Some(value) = quoted(&mut pos) else {
                return false;
            };
            json::push_str(&mut object, &value);
        }
        match bytes.get(pos) {
            Some(b',') => pos += 1,
            None => {}
            _ => return false,
        }
    }
    object.push(b'}');
    match mode {
        HstoreMode::Json => json::push_bytes_as_str(buf, &object),
        HstoreMode::Map => buf.extend_from_slice(&object),
    }
    true
}

/// A numeric's text (`-12.340`, `NaN`) in `mode`.
fn write_numeric(buf: &mut Vec<u8>, scale: Option<u16>, mode: DecimalMode, s: &str) -> bool {
    match mode {
        DecimalMode::String => json::push_str(buf, s),
        DecimalMode::Double => match s {
            "NaN" | "Infinity" | "-Infinity" => json::push_str(buf, s),
            // The nearest double, as Java prints it (`100.0`, `1.0E-7`).
            _ if is_json_number(s) => match s.parse::<f64>() {
                Ok(x) if x.is_finite() => json::push_java_f64(buf, x),
                _ => return false,
            },
            _ => return false,
        },
        DecimalMode::Precise => {
            // Debezium has no precise form for NaN and the infinities: null.
            if matches!(s, "NaN" | "Infinity" | "-Infinity") {
                buf.extend_from_slice(b"null");
                return true;
            }
            let Some((negative, int, frac)) = split_decimal(s) else {
                return false;
            };
            match scale {
                Some(scale) => {
                    let scale = usize::from(scale);
                    let mut digits = String::with_capacity(int.len() + scale);
                    digits.push_str(int);
                    digits.push_str(&frac[..frac.len().min(scale)]);
                    digits.extend(std::iter::repeat_n('0', scale.saturating_sub(frac.len())));
                    push_base64(buf, &twos_complement(&digits, negative));
                }
                None => {
                    let frac = frac.trim_end_matches('0');
                    let digits = format!("{int}{frac}");
                    buf.extend_from_slice(b"{\"scale\":");
                    json::push_i64(buf, frac.len() as i64);
                    buf.extend_from_slice(b",\"value\":");
                    push_base64(buf, &twos_complement(&digits, negative));
                    buf.push(b'}');
                }
            }
        }
    }
    true
}

/// A money value as PostgreSQL prints it (`$1,234.56`, `-$1.50`) in `mode`, scale 2: precise
/// bytes, `"1234.56"`, or `1234.56` (as Debezium writes its `BigDecimal`).
fn write_money(buf: &mut Vec<u8>, mode: DecimalMode, s: &str) -> bool {
    let negative = s.contains('-') || s.contains('(');
    let plain: String = s
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let Some((int, frac)) = plain.split_once('.').or(Some((plain.as_str(), ""))) else {
        return false;
    };
    if int.is_empty() && frac.is_empty() {
        return false;
    }
    let sign = if negative { "-" } else { "" };
    let int = if int.is_empty() { "0" } else { int };
    match mode {
        // Debezium's `BigDecimal` of scale 2 as text: no currency symbol, no grouping.
        DecimalMode::String => {
            let cents = format!("{frac:0<2}");
            json::push_str(buf, &format!("{sign}{int}.{cents}"));
        }
        DecimalMode::Double => match format!("{sign}{int}.{frac}0").parse::<f64>() {
            Ok(x) if x.is_finite() => json::push_java_f64(buf, x),
            _ => return false,
        },
        DecimalMode::Precise => {
            let mut digits = int.to_owned();
            digits.push_str(&frac[..frac.len().min(2)]);
            digits.extend(std::iter::repeat_n('0', 2usize.saturating_sub(frac.len())));
            push_base64(buf, &twos_complement(&digits, negative));
        }
    }
    true
}

/// `-12.340` into (negative, "12", "340"); digits only.
fn split_decimal(s: &str) -> Option<(bool, &str, &str)> {
    let (negative, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    (!(int.is_empty() && frac.is_empty()) && digits(int) && digits(frac))
        .then_some((negative, int, frac))
}

/// The decimal digits' value, negated when `negative`, as Java's `BigInteger.toByteArray()`:
/// big-endian two's complement in the fewest bytes that keep the sign.
fn twos_complement(digits: &str, negative: bool) -> Vec<u8> {
    // Magnitude, little-endian base 256.
    let mut magnitude: Vec<u8> = Vec::new();
    for d in digits.bytes() {
        let mut carry = u32::from(d - b'0');
        for byte in magnitude.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = (v & 0xff) as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            magnitude.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    while magnitude.last() == Some(&0) {
        magnitude.pop();
    }
    if magnitude.is_empty() {
        return vec![0];
    }
    let mut bytes: Vec<u8> = magnitude.iter().rev().copied().collect();
    if !negative {
        if bytes[0] & 0x80 != 0 {
            bytes.insert(0, 0);
        }
        return bytes;
    }
    // Negate: invert and add one.
    for byte in bytes.iter_mut() {
        *byte = !*byte;
    }
    for byte in bytes.iter_mut().rev() {
        let (v, overflow) = byte.overflowing_add(1);
        *byte = v;
        if !overflow {
            break;
        }
    }
    if bytes[0] & 0x80 == 0 {
        bytes.insert(0, 0xff);
    }
    bytes
}

fn push_base64(buf: &mut Vec<u8>, bytes: &[u8]) {
    json::push_str(
        buf,
        &base64::engine::general_purpose::STANDARD.encode(bytes),
    );
}

/// JSON numbers: no leading '+', no leading '.', no "inf".
fn is_json_number(s: &str) -> bool {
    let body = s.strip_prefix('-').unwrap_or(s);
    body.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    hex.as_bytes()
        .chunks_exact(2)
        .map(|pair| Some((nibble(pair[0])? << 4) | nibble(pair[1])?))
        .collect()
}

const EPOCH: NaiveDate = NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");

fn days_since_epoch(date: NaiveDate) -> i64 {
    (date - EPOCH).num_days()
}

/// `YYYY-MM-DD[ BC]` (years may have more than four digits).
fn parse_date(s: &str) -> Option<NaiveDate> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    parse_ymd(s, bc)
}

fn parse_ymd(s: &str, bc: bool) -> Option<NaiveDate> {
    let mut parts = s.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let day: u32 = parts.next()?.parse().ok()?;
    // 1 BC is astronomical year 0.
    let year = if bc { 1 - year } else { year };
    NaiveDate::from_ymd_opt(year, month, day)
}

/// `HH:MM:SS[.ffffff]` to microseconds since midnight (`24:00:00` allowed).
fn parse_time(s: &str) -> Option<i64> {
    let mut parts = s.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next()?;
    let (whole, fraction) = match seconds.split_once('.') {
        Some((w, f)) => (w, f),
        None => (seconds, ""),
    };
    let whole: i64 = whole.parse().ok()?;
    let micros = parse_fraction_micros(fraction)?;
    if !(0..=24).contains(&hours) || !(0..60).contains(&minutes) || !(0..=60).contains(&whole) {
        return None;
    }
    Some(((hours * 60 + minutes) * 60 + whole) * 1_000_000 + micros)
}

/// Up to six fractional digits to microseconds.
fn parse_fraction_micros(fraction: &str) -> Option<i64> {
    if fraction.is_empty() {
        return Some(0);
    }
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = fraction.parse().ok()?;
    Some(n * 10_i64.pow(6 - fraction.len() as u32))
}

/// Splits `HH:MM:SS[.f][+-HH[:MM[:SS]]]` into the time and the offset in seconds.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    let at = s.find(['+', '-'])?;
    let (time, offset) = s.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut parts = offset[1..].split(':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    let seconds: i64 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    Some((time, sign * (hours * 3600 + minutes * 60 + seconds)))
}

/// `YYYY-MM-DD HH:MM:SS[.f][ BC]` to microseconds since the epoch.
fn parse_timestamp_micros(s: &str) -> Option<i64> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, time) = s.split_once(' ')?;
    let date = parse_ymd(date, bc)?;
    let time = parse_time(time)?;
    days_since_epoch(date)
        .checked_mul(86_400_000_000)?
        .checked_add(time)
}

/// `YYYY-MM-DD HH:MM:SS[.f]+OFFSET[ BC]` to ISO-8601 in UTC, the fraction `precision` digits.
fn parse_timestamptz_utc(s: &str, precision: u8) -> Option<String> {
    let (s, bc) = match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let (date, rest) = s.split_once(' ')?;
    let (time, offset_secs) = split_offset(rest)?;
    let date = parse_ymd(date, bc)?;
    let micros = days_since_epoch(date)
        .checked_mul(86_400_000_000)?
        .checked_add(parse_time(time)?)?
        .checked_sub(offset_secs * 1_000_000)?;
    let utc = chrono::DateTime::from_timestamp_micros(micros)?;
    let mut text = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
    if precision > 0 {
        let fraction = format!("{:06}", micros.rem_euclid(1_000_000));
        text.push('.');
        text.push_str(&fraction[..usize::from(precision)]);
    }
    text.push('Z');
    Some(text)
}

/// `HH:MM:SS[.f]+OFFSET` to `HH:MM:SS[.f]Z` in UTC.
fn parse_timetz_utc(s: &str) -> Option<String> {
    let (time, offset_secs) = split_offset(s)?;
    let micros = parse_time(time)? - offset_secs * 1_000_000;
    let micros = micros.rem_euclid(86_400_000_000);
    let secs = (micros / 1_000_000) as u32;
    let nanos = ((micros % 1_000_000) * 1000) as u32;
    let t = NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos)?;
    let mut out = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    if nanos > 0 {
        let frac = format!("{:06}", nanos / 1000);
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    Some(out)
}

/// An interval's fields as PostgreSQL's default output style gives them
/// (`1 year 2 mons -3 days +04:05:06.7`; the time part's sign applies to hours, minutes and
/// seconds alike, as PgJDBC's `PGInterval` reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Interval {
    years: i64,
    months: i64,
    days: i64,
    hours: i64,
    minutes: i64,
    /// Seconds in microseconds.
    second_micros: i64,
}

impl Interval {
    /// Microseconds, a month being 30.4375 days (Debezium's `MicroDuration`).
    fn micros(&self) -> Option<i64> {
        const MONTH_MICROS: i128 = 2_629_800_000_000; // 30.4375 days
        const DAY_MICROS: i128 = 86_400_000_000;
        let total = (i128::from(self.years) * 12 + i128::from(self.months)) * MONTH_MICROS
            + i128::from(self.days) * DAY_MICROS
            + (i128::from(self.hours) * 60 + i128::from(self.minutes)) * 60_000_000
            + i128::from(self.second_micros);
        i64::try_from(total).ok()
    }

    /// Debezium's `io.debezium.time.Interval`: `P<y>Y<m>M<d>DT<h>H<m>M<s>S`, every field
    /// present, seconds without trailing zeros.
    fn iso(&self) -> String {
        let sign = if self.second_micros < 0 { "-" } else { "" };
        let abs = self.second_micros.unsigned_abs();
        let mut seconds = format!("{sign}{}", abs / 1_000_000);
        let fraction = abs % 1_000_000;
        if fraction > 0 {
            let digits = format!("{fraction:06}");
            seconds.push('.');
            seconds.push_str(digits.trim_end_matches('0'));
        }
        format!(
            "P{}Y{}M{}DT{}H{}M{seconds}S",
            self.years, self.months, self.days, self.hours, self.minutes
        )
    }
}

/// An interval in PostgreSQL's default output style to its fields.
fn parse_interval(s: &str) -> Option<Interval> {
    let mut interval = Interval::default();
    let mut tokens = s.split_whitespace();
    let mut seen = false;
    while let Some(token) = tokens.next() {
        seen = true;
        if token.contains(':') {
            let (sign, body) = match token.as_bytes()[0] {
                b'-' => (-1, &token[1..]),
                b'+' => (1, &token[1..]),
                _ => (1, token),
            };
            // Hours may exceed 24 here.
            let mut parts = body.splitn(3, ':');
            let hours: i64 = parts.next()?.parse().ok()?;
            let minutes: i64 = parts.next()?.parse().ok()?;
            let seconds = parts.next().unwrap_or("0");
            let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
            let whole: i64 = whole.parse().ok()?;
            let fraction = parse_fraction_micros(fraction)?;
            interval.hours += sign * hours;
            interval.minutes += sign * minutes;
            interval.second_micros += sign * (whole.checked_mul(1_000_000)? + fraction);
        } else {
            let n: i64 = token.parse().ok()?;
            let unit = tokens.next()?;
            match unit.trim_end_matches('s') {
                "year" => interval.years += n,
                "mon" => interval.months += n,
                "day" => interval.days += n,
                _ => return None,
            }
        }
    }
    seen.then_some(interval)
}

/// A PostgreSQL array literal (`{1,2,NULL}`, `{{"a b",c},{d,"e\"f"}}`, `[0:1]={1,2}`) as a
/// JSON array whose elements are mapped as `elem`.
fn write_array(buf: &mut Vec<u8>, elem: &Kind, s: &str) -> bool {
    let s = match s.find('=') {
        Some(eq) if s.starts_with('[') => &s[eq + 1..],
        _ => s,
    };
    let bytes = s.as_bytes();
    let mut pos = 0;
    if !parse_array_level(buf, elem, bytes, &mut pos) {
        return false;
    }
    pos == bytes.len()
}

fn parse_array_level(buf: &mut Vec<u8>, elem: &Kind, s: &[u8], pos: &mut usize) -> bool {
    if s.get(*pos) != Some(&b'{') {
        return false;
    }
    *pos += 1;
    buf.push(b'[');
    if s.get(*pos) == Some(&b'}') {
        *pos += 1;
        buf.push(b']');
        return true;
    }
    let mut first = true;
    loop {
        if !first {
            buf.push(b',');
        }
        first = false;
        match s.get(*pos) {
            Some(b'{') => {
                if !parse_array_level(buf, elem, s, pos) {
                    return false;
                }
            }
            Some(b'"') => {
                *pos += 1;
                let mut value = Vec::new();
                loop {
                    match s.get(*pos) {
                        Some(b'\\') => {
                            let Some(&c) = s.get(*pos + 1) else {
                                return false;
                            };
                            value.push(c);
                            *pos += 2;
                        }
                        Some(b'"') => {
                            *pos += 1;
                            break;
                        }
                        Some(&c) => {
                            value.push(c);
                            *pos += 1;
                        }
                        None => return false,
                    }
                }
                write_value(buf, elem, &value);
            }
            Some(_) => {
                let start = *pos;
                while let Some(&c) = s.get(*pos) {
                    if c == b',' || c == b'}' {
                        break;
                    }
                    *pos += 1;
                }
                let raw = &s[start..*pos];
                if raw.eq_ignore_ascii_case(b"NULL") {
                    buf.extend_from_slice(b"null");
                } else {
                    write_value(buf, elem, raw);
                }
            }
            None => return false,
        }
        match s.get(*pos) {
            Some(b',') => *pos += 1,
            Some(b'}') => {
                *pos += 1;
                buf.push(b']');
                return true;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(kind: &Kind, text: &str) -> serde_json::Value {
        let mut buf = Vec::new();
        write_value(&mut buf, kind, text.as_bytes());
        serde_json::from_slice(&buf)
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&buf)))
    }

    /// The bytes written, as text (where the notation matters: `100.0`, `1.0E-7`).
    fn raw(kind: &Kind, text: &str) -> String {
        let mut buf = Vec::new();
        write_value(&mut buf, kind, text.as_bytes());
        String::from_utf8(buf).unwrap()
    }

    use serde_json::json;

    const INT: Kind = Kind::Int(IntType::Int64);
    const FLOAT: Kind = Kind::Float { double: true };
    const TEXT: Kind = Kind::Text(TextType::Plain);
    const BYTEA: Kind = Kind::Bytea {
        mode: BinaryMode::Bytes,
    };
    const HSTORE: Kind = Kind::Hstore {
        mode: HstoreMode::Json,
    };
    const DATE: Kind = Kind::Date {
        mode: TimePrecisionMode::Adaptive,
        snapshot: false,
    };
    const INTERVAL: Kind = Kind::Interval {
        mode: IntervalMode::Numeric,
    };

    #[test]
    fn scalars() {
        assert_eq!(out(&Kind::Bool, "t"), json!(true));
        assert_eq!(out(&Kind::Bool, "f"), json!(false));
        assert_eq!(out(&INT, "-9223372036854775808"), json!(i64::MIN));
        assert_eq!(out(&FLOAT, "1.5"), json!(1.5));
        assert_eq!(out(&FLOAT, "1e+100"), json!(1e100));
        assert_eq!(out(&FLOAT, "NaN"), json!("NaN"));
        assert_eq!(out(&FLOAT, "-Infinity"), json!("-Infinity"));
        let string = Kind::Numeric {
            precision: Some(40),
            scale: Some(6),
            mode: DecimalMode::String,
        };
        assert_eq!(
            out(&string, "123456789012345678901234567890.123400"),
            json!("123456789012345678901234567890.123400")
        );
        assert_eq!(
            out(&Kind::Json, r#"{"a": [1, 2]}"#),
            json!(r#"{"a": [1, 2]}"#)
        );
        assert_eq!(out(&BYTEA, "\\x00ff10"), json!("AP8Q"));
        assert_eq!(
            out(&Kind::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            json!("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")
        );
    }

    #[test]
    fn numeric_precise_is_debeziums_unscaled_twos_complement() {
        let scaled = |scale| Kind::Numeric {
            precision: Some(12),
            scale: Some(scale),
            mode: DecimalMode::Precise,
        };
        // Values Debezium 3.6.3 wrote for the same input (tests/cdc/conformance.rs).
        assert_eq!(out(&scaled(3), "12345.678"), json!("ALxhTg=="));
        assert_eq!(out(&scaled(3), "-0.500"), json!("/gw="));
        assert_eq!(out(&scaled(3), "0.000"), json!("AA=="));
        assert_eq!(out(&scaled(0), "NaN"), json!(null));
        let variable = Kind::Numeric {
            precision: None,
            scale: None,
            mode: DecimalMode::Precise,
        };
        assert_eq!(
            out(&variable, "123.4500"),
            json!({"scale": 2, "value": "MDk="})
        );
        assert_eq!(out(&variable, "1.5"), json!({"scale": 1, "value": "Dw=="}));
        let money = Kind::Money {
            mode: DecimalMode::Precise,
        };
        assert_eq!(out(&money, "$12.34"), json!("BNI="));
        assert_eq!(out(&money, "-$1.50"), json!("/2o="));
        // Java's BigInteger.toByteArray() edges.
        assert_eq!(twos_complement("128", false), vec![0x00, 0x80]);
        assert_eq!(twos_complement("128", true), vec![0x80]);
        assert_eq!(twos_complement("129", true), vec![0xff, 0x7f]);
        assert_eq!(twos_complement("256", true), vec![0xff, 0x00]);
        assert_eq!(twos_complement("1", true), vec![0xff]);
    }

    /// What Debezium 3.6.3 wrote for the same values (tests/cdc/conformance.rs, the options
    /// cases): numbers as Java prints them, money without its currency symbol.
    #[test]
    fn floats_doubles_and_money_strings_as_debezium_writes_them() {
        let real = Kind::Float { double: false };
        assert_eq!(out(&FLOAT, "100"), json!(100.0));
        assert_eq!(out(&FLOAT, "1e-07"), json!(1e-7));
        assert_eq!(raw(&FLOAT, "1e-07"), "1.0E-7");
        assert_eq!(raw(&real, "7"), "7.0");
        assert_eq!(raw(&real, "1e+10"), "1.0E10");
        let double = Kind::Numeric {
            precision: None,
            scale: None,
            mode: DecimalMode::Double,
        };
        assert_eq!(raw(&double, "100"), "100.0");
        assert_eq!(raw(&double, "0.000001"), "1.0E-6");
        let money = |mode| Kind::Money { mode };
        assert_eq!(
            raw(&money(DecimalMode::Double), "-$1,234,567.89"),
            "-1234567.89"
        );
        assert_eq!(raw(&money(DecimalMode::Double), "$0.00"), "0.0");
        assert_eq!(out(&money(DecimalMode::String), "$12.34"), json!("12.34"));
        assert_eq!(out(&money(DecimalMode::String), "-$1.50"), json!("-1.50"));
        assert_eq!(
            out(&money(DecimalMode::String), "-$1,234,567.89"),
            json!("-1234567.89")
        );
    }

    #[test]
    fn point_and_hstore_as_debezium_writes_them() {
        assert_eq!(
            out(&Kind::Point, "(1.5,-2)"),
            json!({"x": 1.5, "y": -2.0, "wkb": "AQEAAAAAAAAAAAD4PwAAAAAAAADA", "srid": null})
        );
        assert_eq!(
            out(&HSTORE, r#""a"=>"1", "b"=>NULL, "q\"k"=>"v""#),
            json!(r#"{"a":"1","b":null,"q\"k":"v"}"#)
        );
        assert_eq!(out(&HSTORE, ""), json!("{}"));
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(out(&DATE, "1970-01-02"), json!(1));
        assert_eq!(out(&DATE, "1969-12-31"), json!(-1));
        assert_eq!(out(&DATE, "2024-02-29"), json!(19782));
        assert_eq!(out(&DATE, "0001-01-01 BC"), json!(-719528));
        assert_eq!(out(&DATE, "infinity"), json!(-2_147_472_692));
        assert_eq!(
            out(
                &Kind::Time {
                    precision: 6,
                    mode: TimePrecisionMode::Adaptive
                },
                "01:02:03.5"
            ),
            json!(3_723_500_000_i64)
        );
        assert_eq!(
            out(
                &Kind::Time {
                    precision: 3,
                    mode: TimePrecisionMode::Adaptive
                },
                "01:02:03.5"
            ),
            json!(3_723_500)
        );
        assert_eq!(
            out(
                &Kind::Time {
                    precision: 6,
                    mode: TimePrecisionMode::Adaptive
                },
                "24:00:00"
            ),
            json!(86_400_000_000_i64)
        );
        assert_eq!(
            out(
                &Kind::Timestamp {
                    precision: 6,
                    mode: TimePrecisionMode::Adaptive
                },
                "1970-01-01 00:00:01.000001"
            ),
            json!(1_000_001)
        );
        assert_eq!(
            out(
                &Kind::Timestamp {
                    precision: 3,
                    mode: TimePrecisionMode::Adaptive
                },
                "1969-12-31 23:59:59.9995"
            ),
            json!(-1)
        );
        assert_eq!(
            out(
                &Kind::TimestampTz { precision: 6 },
                "2024-05-01 12:30:00.123456+02"
            ),
            json!("2024-05-01T10:30:00.123456Z")
        );
        assert_eq!(
            out(
                &Kind::TimestampTz { precision: 6 },
                "2024-05-01 00:10:00-05:30"
            ),
            json!("2024-05-01T05:40:00.000000Z")
        );
        assert_eq!(
            out(
                &Kind::TimestampTz { precision: 3 },
                "2024-05-01 00:10:00.12+00"
            ),
            json!("2024-05-01T00:10:00.120Z")
        );
        assert_eq!(
            out(
                &Kind::TimestampTz { precision: 0 },
                "2024-05-01 00:10:00+00"
            ),
            json!("2024-05-01T00:10:00Z")
        );
        assert_eq!(
            out(&Kind::TimestampTz { precision: 6 }, "infinity"),
            json!("infinity")
        );
        assert_eq!(out(&Kind::TimeTz, "01:00:00.5+02"), json!("23:00:00.5Z"));
        assert_eq!(out(&Kind::TimeTz, "10:00:00-01:30"), json!("11:30:00Z"));
    }

    #[test]
    fn intervals_count_a_month_as_30_4375_days() {
        let day = 86_400_000_000_i64;
        assert_eq!(out(&INTERVAL, "1 day"), json!(day));
        assert_eq!(
            out(&INTERVAL, "-1 days +02:00:00"),
            json!(-day + 7_200_000_000)
        );
        assert_eq!(out(&INTERVAL, "1 mon"), json!(2_629_800_000_000_i64));
        assert_eq!(
            out(&INTERVAL, "1 year 2 mons 3 days 04:05:06.789"),
            json!(14 * 2_629_800_000_000_i64 + 3 * day + 14_706_789_000)
        );
        assert_eq!(out(&INTERVAL, "-00:00:01.5"), json!(-1_500_000));
        assert_eq!(out(&INTERVAL, "00:00:00"), json!(0));
    }

    #[test]
    fn value_modes_as_debezium_writes_them() {
        // Values Debezium 3.6.3 wrote for the same input (tests/cdc/conformance.rs).
        let bytes = |mode| Kind::Bytea { mode };
        assert_eq!(out(&bytes(BinaryMode::Hex), "\\xfbff00"), json!("fbff00"));
        assert_eq!(
            out(&bytes(BinaryMode::Base64UrlSafe), "\\xfbff"),
            json!("-_8=")
        );
        assert_eq!(out(&bytes(BinaryMode::Base64), "\\xfbff"), json!("+/8="));
        let iso = Kind::Interval {
            mode: IntervalMode::String,
        };
        assert_eq!(
            out(&iso, "1 year 2 mons 3 days 04:05:06.5"),
            json!("P1Y2M3DT4H5M6.5S")
        );
        assert_eq!(out(&iso, "-1 days +02:00:00"), json!("P0Y0M-1DT2H0M0S"));
        assert_eq!(out(&iso, "-00:00:01.5"), json!("P0Y0M0DT0H0M-1.5S"));
        let connect = |precision| Kind::Time {
            precision,
            mode: TimePrecisionMode::Connect,
        };
        assert_eq!(out(&connect(6), "13:14:15.123456"), json!(47_655_123));
        let micro = Kind::Time {
            precision: 0,
            mode: TimePrecisionMode::AdaptiveTimeMicroseconds,
        };
        assert_eq!(out(&micro, "01:02:03"), json!(3_723_000_000_i64));
        let map = Kind::Hstore {
            mode: HstoreMode::Map,
        };
        assert_eq!(
            out(&map, r#""a"=>"1", "b"=>NULL"#),
            json!({"a": "1", "b": null})
        );
        let bits = Kind::Bits { length: 10 };
        assert_eq!(out(&bits, "1011001110"), json!("zgI="));
        assert_eq!(out(&bits, "0000"), json!(""));
        assert_eq!(out(&Kind::Bool, "1"), json!(true));
        let ts = |precision| Kind::Timestamp {
            precision,
            mode: TimePrecisionMode::Adaptive,
        };
        assert_eq!(
            out(&ts(6), "-infinity"),
            json!(-9_223_372_036_832_400_000_i64)
        );
        assert_eq!(out(&ts(3), "infinity"), json!(9_223_372_036_825_200_i64));
        assert_eq!(out(&DATE.for_snapshot(), "-infinity"), json!(-625_821_272));
        assert_eq!(out(&DATE, "-infinity"), json!(-2_147_472_691));
    }

    #[test]
    fn arrays() {
        let ints = Kind::Array(Box::new(INT));
        assert_eq!(out(&ints, "{1,2,NULL}"), json!([1, 2, null]));
        assert_eq!(out(&ints, "{}"), json!([]));
        assert_eq!(out(&ints, "{{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
        assert_eq!(out(&ints, "[0:1]={5,6}"), json!([5, 6]));
        let texts = Kind::Array(Box::new(TEXT));
        assert_eq!(
            out(
                &texts,
                r#"{plain,"with space","quote\"back\\slash","NULL",NULL}"#
            ),
            json!(["plain", "with space", "quote\"back\\slash", "NULL", null])
        );
        let dates = Kind::Array(Box::new(DATE));
        assert_eq!(out(&dates, "{1970-01-02,1970-01-03}"), json!([1, 2]));
        // Unparsable: kept as text rather than lost.
        assert_eq!(out(&ints, "{1,2"), json!("{1,2"));
    }

    #[test]
    fn unparsable_values_fall_back_to_their_text() {
        assert_eq!(out(&INT, "12abc"), json!("12abc"));
        assert_eq!(out(&DATE, "someday"), json!("someday"));
        assert_eq!(out(&BYTEA, "not hex"), json!("not hex"));
    }

    #[test]
    fn placeholders_keep_the_shape() {
        let mut buf = Vec::new();
        write_placeholder(&mut buf, &Kind::Array(Box::new(TEXT)), "__x");
        assert_eq!(buf, br#"["__x"]"#);
        // Debezium's: the placeholder's bytes as the numbers of an integer array.
        buf.clear();
        write_placeholder(&mut buf, &Kind::Array(Box::new(INT)), "__x");
        assert_eq!(buf, b"[95,95,120]");
        buf.clear();
        write_placeholder(&mut buf, &BYTEA, "__debezium_unavailable_value");
        assert_eq!(buf, br#""X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==""#);
    }
}
