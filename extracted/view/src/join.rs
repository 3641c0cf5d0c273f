//! The stream-table join (Kafka Streams' foreign-key KTable join): a view enriched from another
//! view of the same store, e.g. tasks showing their assignee's display name from a people view.
//! Declared on the enriched view ([`crate::ViewSpec::join`]); the store turns it into a SQL view
//! `<view>_joined` (a `LEFT JOIN` on the other view's primary key) when the view is prepared, and
//! readers query that relation ([`crate::ViewSpec::relation`]).
//!
//! ```
//! use ficus_view::{ColumnType, Join, ViewSpec};
//! let people = ViewSpec::new("people", "ficus.public.people")
//!     .key("id", ColumnType::BigInt)
//!     .column("display_name", ColumnType::Text);
//! let tasks = ViewSpec::new("tasks", "ficus.public.tasks")
//!     .key("id", ColumnType::BigInt)
//!     .column("title", ColumnType::Text)
//!     .column("assignee_id", ColumnType::BigInt)
//!     .join(Join::to(&people).on(["assignee_id"]).take("display_name", "assignee_name"));
//! assert!(tasks.validate().is_ok());
//! // SELECT id, title, assignee_id, assignee_name FROM tasks_joined WHERE ...
//! assert_eq!(tasks.relation(), "tasks_joined");
//! ```
//!
//! Why at read time and not maintained in the enriched rows: both views live in one store, so
//! the database joins on the other view's primary key at each read (an index lookup per row).
//! A rename then costs one row write, whatever the number of tasks showing the person, and it
//! becomes visible on every one of them at once, in the transaction that stores the people
//! batch. Maintaining copies would write every task of the person inside that batch (write
//! amplification a hot person makes unbounded) and need the two views' consumers to coordinate,
//! for the same visibility.
//!
//! What a reader sees (consistency): each query sees one committed state of each view; each
//! view is exactly its topic up to its stored offsets. The two topics are not ordered with
//! each other, so a task can name a person the people view has not stored yet (the task
//! arrived first, or the people view is behind or rebuilding): its taken columns read NULL
//! until the person arrives, then show them with no further event. A deleted person reads as
//! NULL in the tasks still pointing at them (in the monolith `ON DELETE SET NULL` then sends
//! those tasks' own updates). A row never shows a half-applied change of either view.

use crate::view::{Column, ViewSpec};

/// A join of a view to another view of the same store, by the other view's primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    /// The view joined to (its declaration without its own joins); its table is created in
    /// the store when missing, so the enriched view can start first.
    pub other: ViewSpec,
    /// This view's columns holding the other view's key, in the order of its key columns.
    pub on: Vec<String>,
    /// The other view's columns taken, each under the name the joined relation gives it.
    pub take: Vec<Taken>,
}

/// One column taken from the other view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The column in the other view.
    pub column: String,
    /// Its name in the joined relation.
    pub name: String,
}

impl Join {
    /// A join to `other` (to the view, its table, not its topic).
    pub fn to(other: &ViewSpec) -> Self {
        let mut other = other.clone();
        other.joins.clear();
        Self {
            other,
            on: Vec::new(),
            take: Vec::new(),
        }
    }

    /// This view's columns that hold the other view's key (one per key column, in order).
    pub fn on<I, S>(mut self, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.on = columns.into_iter().map(Into::into).collect();
        self
    }

    /// Takes the other view's `column`, named `name` in the joined relation.
    pub fn take(mut self, column: impl Into<String>, name: impl Into<String>) -> Self {
        self.take.push(Taken {
            column: column.into(),
            name: name.into(),
        });
        self
    }

    /// The problems of join `index` of `spec`, with their dotted keys; `names` holds the joined
    /// relation's column names so far.
    pub(crate) fn problems<'a>(
        &'a self,
        index: usize,
        spec: &ViewSpec,
        names: &mut std::collections::HashSet<&'a str>,
        problems: &mut Vec<String>,
    ) {
        let at = format!("joins[{index}]");
        if let Err(error) = self.other.validate() {
            problems.push(format!("{at}.other: {error}"));
        }
        let other_keys: Vec<&Column> = self.other.key_columns().collect();
        if self.on.len() != other_keys.len() {
            problems.push(format!(
                "{at}.on: view {:?} has {} key column(s), got {} column(s)",
                self.other.name,
                other_keys.len(),
                self.on.len()
            ));
        }
        for (i, (name, key)) in self.on.iter().zip(&other_keys).enumerate() {
            match spec.columns.iter().find(|c| &c.name == name) {
                None => problems.push(format!(
                    "{at}.on[{i}]: {name:?} is not a column of view {:?}",
                    spec.name
                )),
                Some(column) if column.ty != key.ty => problems.push(format!(
                    "{at}.on[{i}]: {name:?} is {:?}, the key column {:?} of {:?} is {:?}",
                    column.ty, key.name, self.other.name, key.ty
                )),
                Some(_) => {}
            }
        }
        if self.take.is_empty() {
            problems.push(format!("{at}.take: at least one column is needed"));
        }
        for (i, taken) in self.take.iter().enumerate() {
            if !self.other.columns.iter().any(|c| c.name == taken.column) {
                problems.push(format!(
                    "{at}.take[{i}].column: {:?} is not a column of view {:?}",
                    taken.column, self.other.name
                ));
            }
            if !crate::view::is_identifier(&taken.name) || taken.name.starts_with("_ficus") {
                problems.push(format!(
                    "{at}.take[{i}].name: must be a lowercase SQL identifier not starting with _ficus, got {:?}",
                    taken.name
                ));
            } else if !names.insert(taken.name.as_str()) {
                problems.push(format!(
                    "{at}.take[{i}].name: {:?} is already a column of the joined relation",
                    taken.name
                ));
            }
        }
    }
}
