//! The adapter's one error type and its policy: every failure is classified ([`CdcError::classify`])
//! as [`ErrorClass::Retry`] (the supervisor restarts the pipeline after a backoff),
//! [`ErrorClass::Operator`] (a person must change the database, the broker or the configuration)
//! or [`ErrorClass::Never`] (a record the broker will never take), with a short `cause` label
//! the health report and the metrics carry. The model is supabase/etl's error kinds and retry
//! policy; Kafka error codes are sorted as vector's Kafka sink sorts them.

use std::fmt;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::{Deserialize, Serialize};

/// What a failure asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Transient: restart after a backoff (connection refused or reset, broker down,
    /// PostgreSQL restarting, the slot held by another process).
    Retry,
    /// Needs a person: `wal_level`, a slot of another plugin, privileges, the publication, a
    /// listed table missing, authentication. Retrying cannot help.
    Operator,
    /// A record the broker will never take (too large, invalid, not authorized).
    Never,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retry => "retry",
            ErrorClass::Operator => "operator",
            ErrorClass::Never => "never",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A class and a short, stable cause label (`wal_level`, `slot_plugin`, `record_too_large`,
/// `connection`, ...): what metrics and `/healthz` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub class: ErrorClass,
    pub cause: &'static str,
}

impl Classified {
    const fn new(class: ErrorClass, cause: &'static str) -> Self {
        Self { class, cause }
    }
}

/// The record a delivery failure concerns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordInfo {
    /// `schema.table` (or the topic when the table is not known).
    pub table: String,
    pub topic: String,
    /// The record's key as text (truncated at 200 bytes); of a schema-wrapped key, its payload.
    pub key: String,
    /// Key and value bytes.
    pub size: usize,
}

impl RecordInfo {
    pub fn new(table: &str, topic: &str, key: Option<&[u8]>, size: usize) -> Self {
        // A schema-wrapped key (`{"schema":..,"payload":..}`) is named by its payload: the
        // schema says nothing about which row it was.
        let unwrapped = key
            .filter(|k| k.starts_with(b"{\"schema\":"))
            .and_then(|k| serde_json::from_slice::<serde_json::Value>(k).ok())
            .and_then(|mut v| v.get_mut("payload").map(serde_json::Value::take))
            .and_then(|payload| serde_json::to_vec(&payload).ok());
        let key = unwrapped.as_deref().or(key).map_or_else(
            || "null".to_owned(),
            |k| {
                let text = String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned();
                if k.len() > 200 {
                    format!("{text}...")
                } else {
                    text
                }
            },
        );
        Self {
            table: table.to_owned(),
            topic: topic.to_owned(),
            key,
            size,
        }
    }
}

/// A record the producer or the broker refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryFailure {
    /// librdkafka's code, when the failure came from it.
    pub code: Option<RDKafkaErrorCode>,
    /// What was said.
    pub reason: String,
    pub record: Option<RecordInfo>,
}

impl DeliveryFailure {
    /// A failure with only a description.
    pub fn message(reason: impl Into<String>) -> Self {
        Self {
            code: None,
            reason: reason.into(),
            record: None,
        }
    }

    /// A failure librdkafka reported with `code` for `record`.
    pub fn kafka(code: RDKafkaErrorCode, reason: impl Into<String>, record: RecordInfo) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
            record: Some(record),
        }
    }

    pub fn classify(&self) -> Classified {
        match self.code {
            Some(code) => classify_kafka(code),
            None => Classified::new(ErrorClass::Retry, "delivery"),
        }
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.record {
            Some(r) => write!(
                f,
                "record of table {} with key {} ({} bytes) for topic {}: {}",
                r.table, r.key, r.size, r.topic, self.reason
            ),
            None => f.write_str(&self.reason),
        }
    }
}

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
    /// A record was not delivered: the producer refused it, or the broker did.
    #[error("delivery failed: {0}")]
    Delivery(DeliveryFailure),
    /// The database or the broker is set up in a way only a person can fix; `cause` is the
    /// label health and metrics report (`wal_level`, `slot_plugin`, ...).
    #[error("{message}")]
    Operator {
        cause: &'static str,
        message: String,
    },
    /// The process cannot run the adapter (e.g. a single-threaded runtime).
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
    /// Whether restarting the pipeline after a backoff can succeed.
    pub fn is_retriable(&self) -> bool {
        self.classify().class == ErrorClass::Retry
    }

    /// The error policy: what this failure asks for, and its cause label.
    pub fn classify(&self) -> Classified {
        use ErrorClass::*;
        match self {
            CdcError::Config(_) => Classified::new(Operator, "config"),
            CdcError::Listen { .. } => Classified::new(Operator, "listen"),
            CdcError::Setup(_) => Classified::new(Operator, "setup"),
            CdcError::Stopped => Classified::new(Retry, "stopped"),
            CdcError::Snapshot(_) => Classified::new(Retry, "snapshot"),
            CdcError::Operator { cause, .. } => Classified::new(Operator, cause),
            CdcError::Delivery(failure) => failure.classify(),
            CdcError::Kafka { source, .. } => match source.rdkafka_error_code() {
                Some(code) => classify_kafka(code),
                None => Classified::new(Retry, "broker"),
            },
            CdcError::Postgres { source, .. } => classify_sqlx(source),
            CdcError::Replication(error) => classify_replication(error),
        }
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

/// Kafka codes as vector's Kafka sink sorts them: what the broker says about a record itself
/// (too large, invalid, not authorized, unknown topic once created) is never retried; the
/// broker's own state (transport, leaders, timeouts, a full queue) is; credentials and cluster
/// authorization need an operator. Unknown codes are retried, as before this policy.
pub fn classify_kafka(code: RDKafkaErrorCode) -> Classified {
    use ErrorClass::*;
    use RDKafkaErrorCode as C;
    match code {
        C::MessageSizeTooLarge | C::MessageBatchTooLarge | C::InvalidMessageSize => {
            Classified::new(Never, "record_too_large")
        }
        C::InvalidRecord
        | C::InvalidMessage
        | C::BadMessage
        | C::InvalidTimestamp
        | C::UnsupportedForMessageFormat
        | C::PolicyViolation
        | C::KeySerialization
        | C::ValueSerialization => Classified::new(Never, "invalid_record"),
        C::TopicAuthorizationFailed => Classified::new(Never, "topic_authorization"),
        C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition | C::InvalidTopic => {
            Classified::new(Never, "unknown_topic")
        }
        C::Authentication
        | C::SaslAuthenticationFailed
        | C::UnsupportedSASLMechanism
        | C::IllegalSASLState
        | C::SSL => Classified::new(Operator, "broker_authentication"),
        C::ClusterAuthorizationFailed | C::TransactionalIdAuthorizationFailed => {
            Classified::new(Operator, "broker_authorization")
        }
        C::InvalidReplicationFactor | C::InvalidPartitions | C::InvalidConfig => {
            Classified::new(Operator, "topic_config")
        }
        C::QueueFull => Classified::new(Retry, "queue_full"),
        C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut => {
            Classified::new(Retry, "timeout")
        }
        C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::BrokerNotAvailable
        | C::NetworkException
        | C::Resolve => Classified::new(Retry, "broker_down"),
        C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::ReplicaNotAvailable => Classified::new(Retry, "leader"),
        _ => Classified::new(Retry, "broker"),
    }
}

/// A PostgreSQL error by its SQLSTATE (and, where one code covers several causes, the text).
pub fn classify_sqlstate(code: &str, message: &str) -> Classified {
    use ErrorClass::*;
    match code {
        "28000" | "28P01" => Classified::new(Operator, "authentication"),
        "42501" => Classified::new(Operator, "privileges"),
        "3D000" => Classified::new(Operator, "database_missing"),
        "42P01" => Classified::new(Operator, "missing_table"),
        "42704" if message.contains("publication") => Classified::new(Operator, "publication"),
        "55000" if message.contains("wal_level") => Classified::new(Operator, "wal_level"),
        "55000" if message.contains("slot") => Classified::new(Operator, "slot_invalidated"),
        "53400" => Classified::new(Operator, "max_replication_slots"),
        "55006" => Classified::new(Retry, "slot_in_use"),
        "57P01" | "57P02" | "57P03" => Classified::new(Retry, "postgres_restarting"),
        "53300" => Classified::new(Retry, "too_many_connections"),
        c if c.starts_with("08") => Classified::new(Retry, "connection"),
        _ => Classified::new(Retry, "postgres"),
    }
}

fn classify_sqlx(error: &sqlx::Error) -> Classified {
    match error {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => classify_sqlstate(&code, db.message()),
            None => Classified::new(ErrorClass::Retry, "postgres"),
        },
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Classified::new(ErrorClass::Retry, "connection")
        }
        sqlx::Error::Tls(_) => Classified::new(ErrorClass::Operator, "tls"),
        _ => Classified::new(ErrorClass::Retry, "postgres"),
    }
}

/// pg_walstream's errors carry the server's SQLSTATE as a `[XXXXX] ` prefix of their text.
fn classify_replication(error: &pg_walstream::ReplicationError) -> Classified {
    use pg_walstream::ReplicationError as R;
    let text = match error {
        R::Protocol(t)
        | R::TransientConnection(t)
        | R::PermanentConnection(t)
        | R::ReplicationConnection(t)
        | R::Authentication(t)
        | R::ReplicationSlot(t) => t.as_str(),
        _ => "",
    };
    if let Some(rest) = text.strip_prefix('[')
        && let Some((code, message)) = rest.split_once("] ")
        && code.len() == 5
    {
        return classify_sqlstate(code, message);
    }
    match error {
        R::Authentication(_) => Classified::new(ErrorClass::Operator, "authentication"),
        R::Config(_) => Classified::new(ErrorClass::Operator, "config"),
        _ => Classified::new(ErrorClass::Retry, "replication"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_codes_about_the_record_are_never_retried() {
        for code in [
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::InvalidRecord,
            RDKafkaErrorCode::TopicAuthorizationFailed,
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ] {
            assert_eq!(classify_kafka(code).class, ErrorClass::Never, "{code:?}");
        }
        assert_eq!(
            classify_kafka(RDKafkaErrorCode::MessageSizeTooLarge).cause,
            "record_too_large"
        );
        for code in [
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
            RDKafkaErrorCode::LeaderNotAvailable,
            RDKafkaErrorCode::RequestTimedOut,
            RDKafkaErrorCode::Fatal,
        ] {
            assert_eq!(classify_kafka(code).class, ErrorClass::Retry, "{code:?}");
        }
        assert_eq!(
            classify_kafka(RDKafkaErrorCode::SaslAuthenticationFailed).class,
            ErrorClass::Operator
        );
    }

    #[test]
    fn replication_errors_are_classified_by_their_sqlstate() {
        let error = CdcError::Replication(pg_walstream::ReplicationError::TransientConnection(
            "[55006] replication slot \"s\" is active for PID 42".to_owned(),
        ));
        assert_eq!(
            error.classify(),
            Classified::new(ErrorClass::Retry, "slot_in_use")
        );
        let error = CdcError::Replication(pg_walstream::ReplicationError::Protocol(
            "[42704] publication \"p\" does not exist".to_owned(),
        ));
        assert_eq!(
            error.classify(),
            Classified::new(ErrorClass::Operator, "publication")
        );
        let error = CdcError::Replication(pg_walstream::ReplicationError::PermanentConnection(
            "[42501] must be superuser or replication role to start walsender".to_owned(),
        ));
        assert_eq!(error.classify().cause, "privileges");
        let error = CdcError::Replication(pg_walstream::ReplicationError::TransientConnection(
            "connection refused".to_owned(),
        ));
        assert_eq!(error.classify().class, ErrorClass::Retry);
    }

    #[test]
    fn a_refused_record_names_its_table_key_and_size() {
        let failure = DeliveryFailure::kafka(
            RDKafkaErrorCode::MessageSizeTooLarge,
            "Broker: Message size too large",
            RecordInfo::new("public.t", "p.public.t", Some(b"{\"id\":1}"), 204_800),
        );
        let error = CdcError::Delivery(failure);
        assert_eq!(
            error.classify(),
            Classified::new(ErrorClass::Never, "record_too_large")
        );
        let text = error.to_string();
        for part in ["public.t", "{\"id\":1}", "204800 bytes"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }
}
