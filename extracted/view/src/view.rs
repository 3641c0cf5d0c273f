//! A view's declaration: which topic, which columns with which SQL types, which of them form
//! the key; and the decoding of an event's row (the adapter's JSON mapping of PostgreSQL
//! values) into the typed [`Cell`]s the store binds.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use std::collections::HashSet;

use crate::error::ViewError;
use crate::join::Join;

/// A column's type in the view (the store's SQL type), and how the adapter's JSON maps to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// JSON boolean. SQLite `INTEGER`, PostgreSQL `boolean`.
    Bool,
    /// JSON integer (PostgreSQL integers, `oid`). `INTEGER` / `bigint`.
    BigInt,
    /// JSON number, or `"NaN"`/`"Infinity"`/`"-Infinity"`. `REAL` / `double precision`.
    Double,
    /// JSON string (text, varchar, uuid, enums, ...); other scalars as their JSON text.
    /// `TEXT` / `text`.
    Text,
    /// `numeric` as the adapter writes it, a string with every digit. `TEXT` / `numeric`.
    Numeric,
    /// `timestamptz` as the adapter writes it, ISO-8601 in UTC. `TEXT` (RFC 3339, UTC, as
    /// sqlx writes chrono values) / `timestamptz`.
    TimestampTz,
    /// `date`: days since 1970-01-01. `TEXT` (`YYYY-MM-DD`) / `date`.
    Date,
    /// `json`/`jsonb`: a string holding the JSON. `TEXT` / `jsonb`.
    Json,
}

impl ColumnType {
    pub(crate) fn sqlite(self) -> &'static str {
        match self {
            ColumnType::Bool | ColumnType::BigInt => "INTEGER",
            ColumnType::Double => "REAL",
            _ => "TEXT",
        }
    }

    pub(crate) fn postgres(self) -> &'static str {
        match self {
            ColumnType::Bool => "boolean",
            ColumnType::BigInt => "bigint",
            ColumnType::Double => "double precision",
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::TimestampTz => "timestamptz",
            ColumnType::Date => "date",
            ColumnType::Json => "jsonb",
        }
    }
}

/// One column of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The name in the event's row and in the store (the same).
    pub name: String,
    pub ty: ColumnType,
    /// Part of the key (the topic's record key, the table's primary key).
    pub key: bool,
}

/// A table view over one change topic, as a service declares it:
///
/// ```
/// use ficus_view::{ColumnType, ViewSpec};
/// let people = ViewSpec::new("people", "ficus.public.people")
///     .key("id", ColumnType::BigInt)
///     .column("display_name", ColumnType::Text)
///     .column("updated_at", ColumnType::TimestampTz);
/// assert!(people.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewSpec {
    /// The view's name: its table in the store, its label in metrics.
    pub name: String,
    /// The change topic (`<prefix>.<schema>.<table>`).
    pub topic: String,
    pub columns: Vec<Column>,
    /// Other views this one is enriched from (see [`crate::join`]).
    pub joins: Vec<Join>,
}

/// The columns the kit adds to every view table: the source position of the row's last change.
pub const COMMIT_LSN_COLUMN: &str = "_ficus_commit_lsn";
pub const LSN_COLUMN: &str = "_ficus_lsn";
/// The column the kit adds to every view table: the topic partition of the row's last change,
/// so a reader of a partitioned view can keep to the partitions its instance holds now
/// ([`crate::ViewStatus::assigned`]).
pub const PARTITION_COLUMN: &str = "_ficus_partition";

impl ViewSpec {
    pub fn new(name: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            topic: topic.into(),
            columns: Vec::new(),
            joins: Vec::new(),
        }
    }

    /// Adds a key column.
    pub fn key(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.columns.push(Column {
            name: name.into(),
            ty,
            key: true,
        });
        self
    }

    /// Adds a value column.
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.columns.push(Column {
            name: name.into(),
            ty,
            key: false,
        });
        self
    }

    /// Enriches the view from another view of the same store (a stream-table join, read
    /// through [`ViewSpec::relation`]).
    pub fn join(mut self, join: Join) -> Self {
        self.joins.push(join);
        self
    }

    /// The relation readers query: the view's table, or with joins the SQL view
    /// `<name>_joined` (the view's columns, then the columns its joins take).
    pub fn relation(&self) -> String {
        if self.joins.is_empty() {
            self.name.clone()
        } else {
            format!("{}_joined", self.name)
        }
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.key)
    }

    /// Every problem at once, or nothing.
    pub fn validate(&self) -> Result<(), ViewError> {
        let mut problems = Vec::new();
        if !is_identifier(&self.name) {
            problems.push(format!(
                "name: must be a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 48), got {:?}",
                self.name
            ));
        }
        if self.topic.is_empty() {
            problems.push("topic: must not be empty".to_owned());
        }
        if self.key_columns().next().is_none() {
            problems.push("columns: at least one key column is needed".to_owned());
        }
        for (i, column) in self.columns.iter().enumerate() {
            if !is_identifier(&column.name) || column.name.starts_with("_ficus") {
                problems.push(format!(
                    "columns[{i}].name: must be a lowercase SQL identifier not starting with _ficus, got {:?}",
                    column.name
                ));
            }
            if self.columns[..i].iter().any(|c| c.name == column.name) {
                problems.push(format!(
                    "columns[{i}].name: {:?} is declared twice",
                    column.name
                ));
            }
        }
        let mut names: HashSet<&str> = self.columns.iter().map(|c| c.name.as_str()).collect();
        for (i, join) in self.joins.iter().enumerate() {
            join.problems(i, self, &mut names, &mut problems);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ViewError::Declaration(format!(
                "view {:?}: {}",
                self.name,
                problems.join("; ")
            )))
        }
    }
}

pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 48
}

/// A value ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Text, numeric and JSON columns.
    Text(String),
    Timestamp(DateTime<Utc>),
    Date(NaiveDate),
    /// An unchanged TOAST value the update did not carry: the stored value stays.
    Unchanged,
}

/// The adapter's default placeholder for an unchanged TOAST value.
pub const TOAST_PLACEHOLDER: &str = "__debezium_unavailable_value";

/// Decodes one JSON value of the adapter's mapping into a cell of `ty`.
pub fn decode_cell(ty: ColumnType, value: &Value) -> Result<Cell, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    if value.as_str() == Some(TOAST_PLACEHOLDER) {
        return Ok(Cell::Unchanged);
    }
    let wrong = || format!("{value} is not a {ty:?} as the adapter writes it");
    Ok(match ty {
        ColumnType::Bool => Cell::Bool(value.as_bool().ok_or_else(wrong)?),
        ColumnType::BigInt => Cell::Int(value.as_i64().ok_or_else(wrong)?),
        ColumnType::Double => match value {
            Value::Number(n) => Cell::Float(n.as_f64().ok_or_else(wrong)?),
            Value::String(s) => match s.as_str() {
                "NaN" => Cell::Float(f64::NAN),
                "Infinity" => Cell::Float(f64::INFINITY),
                "-Infinity" => Cell::Float(f64::NEG_INFINITY),
                _ => return Err(wrong()),
            },
            _ => return Err(wrong()),
        },
        ColumnType::Text => match value {
            Value::String(s) => Cell::Text(s.clone()),
            other => Cell::Text(other.to_string()),
        },
        ColumnType::Numeric | ColumnType::Json => match value {
            Value::String(s) => Cell::Text(s.clone()),
            Value::Number(n) => Cell::Text(n.to_string()),
            _ => return Err(wrong()),
        },
        ColumnType::TimestampTz => {
            let text = value.as_str().ok_or_else(wrong)?;
            Cell::Timestamp(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|e| format!("{value}: {e}"))?
                    .with_timezone(&Utc),
            )
        }
        ColumnType::Date => {
            let days = value.as_i64().ok_or_else(wrong)?;
            let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch");
            Cell::Date(
                i32::try_from(days)
                    .ok()
                    .and_then(|d| epoch.checked_add_signed(chrono::Duration::days(d.into())))
                    .ok_or_else(wrong)?,
            )
        }
    })
}

/// Decodes the declared columns of a row (`after`, or a delete's key columns).
pub fn decode_row(
    columns: &[&Column],
    row: &Map<String, Value>,
) -> Result<Vec<Cell>, (String, String)> {
    columns
        .iter()
        .map(|column| match row.get(&column.name) {
            Some(value) => {
                decode_cell(column.ty, value).map_err(|message| (column.name.clone(), message))
            }
            None => Err((
                column.name.clone(),
                "missing from the event's row (not in the table, or not in its key)".to_owned(),
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_as_the_adapter_maps_them() {
        assert_eq!(
            decode_cell(ColumnType::BigInt, &json!(42)).unwrap(),
            Cell::Int(42)
        );
        assert_eq!(
            decode_cell(ColumnType::Numeric, &json!("12.3400")).unwrap(),
            Cell::Text("12.3400".into())
        );
        assert_eq!(
            decode_cell(ColumnType::Date, &json!(19844)).unwrap(),
            Cell::Date(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap())
        );
        let Cell::Timestamp(at) = decode_cell(
            ColumnType::TimestampTz,
            &json!("2024-05-01T10:00:00.123456Z"),
        )
        .unwrap() else {
            panic!("a timestamp")
        };
        assert_eq!(at.timestamp_micros(), 1_714_557_600_123_456);
        assert!(
            matches!(decode_cell(ColumnType::Double, &json!("NaN")).unwrap(), Cell::Float(f) if f.is_nan())
        );
        assert_eq!(
            decode_cell(ColumnType::Text, &json!(TOAST_PLACEHOLDER)).unwrap(),
            Cell::Unchanged
        );
        assert_eq!(
            decode_cell(ColumnType::Bool, &json!(null)).unwrap(),
            Cell::Null
        );
        assert!(decode_cell(ColumnType::BigInt, &json!("42")).is_err());
        assert!(decode_cell(ColumnType::TimestampTz, &json!("yesterday")).is_err());
    }

    #[test]
    fn validation_names_every_problem() {
        let error = ViewSpec::new("Bad Name", "")
            .column("a", ColumnType::Text)
            .column("a", ColumnType::Text)
            .column("_ficus_lsn", ColumnType::BigInt)
            .validate()
            .unwrap_err()
            .to_string();
        for part in [
            "name:",
            "topic:",
            "key column",
            "columns[1].name",
            "columns[2].name",
        ] {
            assert!(error.contains(part), "{part} missing from {error}");
        }
    }
}
