//! The views: the monolith's `tasks` table joined to a view of `people` that holds only what a
//! task shows of its assignee (the stream-table join of `ficus-view`: readers query
//! `tasks_joined`, where `assignee_name` is the people view's `display_name` for `assignee_id`,
//! so a rename shows on every task of the person at once). `tags` (a `text[]`) is kept as the
//! JSON array the adapter writes.

use ficus_kit::{ColumnType, Join, Settings, ViewSpec};

pub fn people(settings: &Settings) -> ViewSpec {
    ViewSpec::new("people", settings.topic("people"))
        .key("id", ColumnType::BigInt)
        .column("display_name", ColumnType::Text)
}

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
        .join(
            Join::to(&people(settings))
                .on(["assignee_id"])
                .take("display_name", "assignee_name"),
        )
}
