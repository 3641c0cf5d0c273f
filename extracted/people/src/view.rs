//! The people view: the monolith's `people` table without `password_hash` (a column the
//! service never declares is never stored).

use ficus_kit::{ColumnType, Settings, ViewSpec};

pub fn people(settings: &Settings) -> ViewSpec {
    ViewSpec::new("people", settings.topic("people"))
        .key("id", ColumnType::BigInt)
        .column("email", ColumnType::Text)
        .column("display_name", ColumnType::Text)
        .column("role", ColumnType::Text)
        .column("created_at", ColumnType::TimestampTz)
        .column("updated_at", ColumnType::TimestampTz)
}
