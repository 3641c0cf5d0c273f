//! The kit's errors: an event the contract does not describe, a value a view cannot store, the
//! store, the broker. Each says whether retrying can help ([`ViewError::is_retriable`]).

/// A record that does not follow the event contract.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("not the JSON of a change event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a change event: {0}")]
    Shape(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("view declaration: {0}")]
    Declaration(String),
    #[error("{topic}[{partition}]@{offset}: {source}")]
    Event {
        topic: String,
        partition: i32,
        offset: i64,
        source: EventError,
    },
    #[error("{topic}[{partition}]@{offset}: column {column}: {message}")]
    Value {
        topic: String,
        partition: i32,
        offset: i64,
        column: String,
        message: String,
    },
    #[error("store: {context}: {source}")]
    Store {
        context: &'static str,
        source: sqlx::Error,
    },
    #[error("store location {0:?}: neither a postgres:// URL nor a SQLite file path")]
    Location(String),
    #[error("broker: {context}: {source}")]
    Kafka {
        context: &'static str,
        source: rdkafka::error::KafkaError,
    },
    #[error("topic {0} not found on the broker")]
    UnknownTopic(String),
    #[error("the view {0} was stopped")]
    Stopped(String),
}

impl ViewError {
    pub(crate) fn store(context: &'static str) -> impl FnOnce(sqlx::Error) -> ViewError {
        move |source| ViewError::Store { context, source }
    }

    pub(crate) fn kafka(
        context: &'static str,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> ViewError {
        move |source| ViewError::Kafka { context, source }
    }

    /// Whether waiting and trying again can succeed (a broker or store outage), as opposed to
    /// what needs an operator (a bad declaration, an event the view cannot take).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ViewError::Kafka { .. } | ViewError::Store { .. } | ViewError::UnknownTopic(_)
        )
    }
}
