//! The views: the monolith's `tasks` table, and from `people` only what a task shows of its
//! assignee. `tags` (a `text[]`) is kept as the JSON array the adapter writes.

use ficus_kit::{ColumnType, Settings, ViewSpec};

pub fn tasks(settings: &Settings) -> ViewSpec {
    ViewSpec::new("tasks", settings.topic("tasks"))
        .key("id", ColumnType::BigInt)
        .column("title", ColumnType::Text)
        .column("description", ColumnType::Text)
        .column("status", ColumnType::Text)
        .column("assignee_id", ColumnType::BigInt)
        .column("due_on", ColumnType::Date)
        .column("tags", ColumnType::Text)
        .column("created_at", ColumnType::TimestampTz)
        .column("updated_at", ColumnType::TimestampTz)
}

pub fn people(settings: &Settings) -> ViewSpec {
    ViewSpec::new("people", settings.topic("people"))
        .key("id", ColumnType::BigInt)
        .column("display_name", ColumnType::Text)
}
