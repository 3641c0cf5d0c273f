//! The adapter's one error type. Each variant says which side failed; [`CdcError::is_retriable`]
//! tells the supervisor whether restarting the pipeline (after a backoff) can help.

use rdkafka::error::KafkaError;

#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    /// The configuration is refused; every problem names its key.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// A query on a regular PostgreSQL connection failed.
    #[error("postgres: {context}: {source}")]
    Postgres {
        context: String,
        #[source]
        source: sqlx::Error,
    },
    /// The replication connection failed.
    #[error("replication: {0}")]
    Replication(#[from] pg_walstream::ReplicationError),
    /// The broker refused something (client creation, topic creation).
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    /// A message could not be delivered and will not be by retrying the same producer.
    #[error("delivery failed: {0}")]
    Delivery(String),
    /// The database does not look like something the adapter can stream (no logical decoding,
    /// missing privileges...).
    #[error("setup: {0}")]
    Setup(String),
    /// A snapshot step failed.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// Shutdown was asked for while waiting (not a failure).
    #[error("stopped")]
    Stopped,
    /// The metrics listener could not be bound.
    #[error("metrics listener on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl CdcError {
    /// Whether restarting the pipeline after a backoff can succeed. Configuration and
    /// listener errors cannot; everything that involves the network can.
    pub fn is_retriable(&self) -> bool {
        !matches!(
            self,
            CdcError::Config(_) | CdcError::Listen { .. } | CdcError::Stopped
        )
    }

    pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> CdcError {
        let context = context.into();
        move |source| CdcError::Postgres { context, source }
    }

    pub(crate) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> CdcError {
        let context = context.into();
        move |source| CdcError::Kafka { context, source }
    }
}
