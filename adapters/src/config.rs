//! The adapter's configuration: a TOML file (see `cdc.example.toml` at the repository root)
//! plus `FICUS_CDC__<KEY>` environment overrides (`FICUS_CDC__KAFKA__BROKERS` sets
//! `kafka.brokers`), layered by `ficus_telemetry::config::Loader` like every component's. Every field has a named default function and is documented here; a bad
//! value is refused by [`CdcConfig::validate`], which reports every problem at once and names
//! the dotted key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ficus_telemetry::Env;
use serde::Deserialize;

use crate::error::CdcError;
use crate::regex_list::{KeyColumns, Lists, Selection};

/// Configuration of one `ficus cdc run`: one database, one slot, one publication.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcConfig {
    /// The monolith's database, as a `postgres://` URL. The role needs `REPLICATION` (or
    /// superuser), `CREATE` on the database (for schema `_ficus`) and, to create a publication
    /// `FOR ALL TABLES`, superuser.
    #[serde(default)]
    pub database_url: String,
    /// The logical replication slot (created with `pgoutput` when missing).
    #[serde(default = "default_slot")]
    pub slot: String,
    /// The publication the slot streams (created when missing).
    #[serde(default = "default_publication")]
    pub publication: String,
    /// Tables (`schema.table`) a created publication covers; empty means `FOR ALL TABLES`.
    /// ficus's heartbeat table and the declared outboxes are added to a listed publication.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Topic prefix: changes of `schema.table` go to `<topic_prefix>.<schema>.<table>`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// The value that stands for an unchanged TOAST column an update did not carry (as
    /// Debezium's `unavailable.value.placeholder`).
    #[serde(default = "default_toast_placeholder")]
    pub toast_placeholder: String,
    /// Where `/metrics` (Prometheus) and `/healthz` are served.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// How often the confirmed position is reported to PostgreSQL at most.
    #[serde(default = "default_feedback_interval_ms")]
    pub feedback_interval_ms: u64,
    /// The longest wait between reconnection attempts (PostgreSQL or a pipeline restart).
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// The broker.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// The initial snapshot.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Heartbeats.
    #[serde(default)]
    pub heartbeat: HeartbeatConfig,
    /// Tables that are transactional outboxes.
    #[serde(default)]
    pub outbox: Vec<OutboxConfig>,
    /// Records the broker will never take.
    #[serde(default)]
    pub errors: ErrorsConfig,
    /// What the change events look like, by Debezium's property names and defaults.
    #[serde(default)]
    pub debezium: DebeziumProperties,
    /// How keys, values and headers are serialized, by Kafka Connect's converter properties.
    #[serde(default)]
    pub connect: ConnectProperties,
    /// `[debezium]`'s regex lists, compiled once by [`CdcConfig::validate`] (not a setting;
    /// every list empty, capturing everything, until validated).
    #[serde(skip)]
    lists: std::sync::Arc<Lists>,
}

/// `[connect]`: Kafka Connect's `JsonConverter` settings, under Connect's own names
/// (`"value.converter.schemas.enable" = false`) or with underscores. `true` (JsonConverter's
/// default, and Debezium Server's `json` format's): every key, value and header is
/// `{"schema": <Connect schema>, "payload": <data>}`, as a Kafka Connect sink or Debezium
/// consumer with default converters expects; `false`: the bare payload (schemaless JSON).
/// Tombstones stay null either way.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectProperties {
    /// `key.converter.schemas.enable`
    #[serde(default = "default_true", alias = "key.converter.schemas.enable")]
    pub key_converter_schemas_enable: bool,
    /// `value.converter.schemas.enable`
    #[serde(default = "default_true", alias = "value.converter.schemas.enable")]
    pub value_converter_schemas_enable: bool,
    /// `header.converter.schemas.enable` (the `__debezium.*` headers; Debezium's embedded
    /// engine and Server serialize headers with JsonConverter too).
    #[serde(default = "default_true", alias = "header.converter.schemas.enable")]
    pub header_converter_schemas_enable: bool,
}

impl Default for ConnectProperties {
    fn default() -> Self {
        Self {
            key_converter_schemas_enable: true,
            value_converter_schemas_enable: true,
            header_converter_schemas_enable: true,
        }
    }
}

/// `[errors]`: what becomes of a record the broker will never take — over the size limit
/// (known before sending: the topic's `max.message.bytes` as the broker describes it, else the
/// producer's `message.max.bytes`, librdkafka's default 1000000, settable in
/// `[kafka.properties]`), or refused by the producer for good (invalid, not authorized). The
/// names are Kafka Connect's (`errors.tolerance`, `errors.deadletterqueue.topic.name`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorsConfig {
    /// `none` (the fail policy, Kafka Connect's default): capture stops at the record,
    /// `/healthz` answers 503 naming its table, key and size, as do `ficus cdc status` and
    /// `ficus_cdc_refused_record_bytes`; nothing after it is confirmed, so nothing is lost.
    /// `all` (the dead-letter policy): the record goes to the dead-letter topic, a placeholder
    /// event takes its place in the table's topic, and capture goes on.
    #[serde(default)]
    pub tolerance: ErrorTolerance,
    /// The dead-letter topic (`all`); default `__ficus-dlq.<topic_prefix>`.
    #[serde(default)]
    pub deadletterqueue_topic_name: Option<String>,
}

/// `errors.tolerance`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorTolerance {
    /// Fail: stop capture, loudly.
    #[default]
    None,
    /// Dead letter: set the record aside, put a placeholder in its place, go on.
    All,
}

// ---- [debezium]: Debezium's connector properties (names, values and defaults as Debezium's) ----

/// `[debezium]`: the properties of Debezium's PostgreSQL connector that shape the events, under
/// Debezium's own names (`"skipped.operations" = "t"`, quoted in TOML because of the dots) or
/// with underscores (`skipped_operations`), with Debezium's defaults, so a Debezium
/// configuration carries over. `FICUS_CDC__DEBEZIUM__SKIPPED_OPERATIONS` overrides the
/// underscore spelling; a file using the dotted one and the same variable are refused as a
/// duplicate key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebeziumProperties {
    /// `provide.transaction.metadata`: each change event carries a `transaction` block
    /// (`id`, `total_order`, `data_collection_order`) and `<topic.prefix>.<topic.transaction>`
    /// gets a BEGIN and an END record per transaction (see `decode::transaction`).
    #[serde(default, alias = "provide.transaction.metadata")]
    pub provide_transaction_metadata: bool,
    /// `topic.transaction`: the transaction topic's name after the prefix.
    #[serde(default = "default_topic_transaction", alias = "topic.transaction")]
    pub topic_transaction: String,
    /// `topic.heartbeat.prefix`: the heartbeat topic is `<this>.<topic.prefix>`.
    #[serde(
        default = "default_topic_heartbeat_prefix",
        alias = "topic.heartbeat.prefix"
    )]
    pub topic_heartbeat_prefix: String,
    /// `message.prefix.include.list`: the logical decoding messages (`pg_logical_emit_message`)
    /// sent to `<topic.prefix>.message`, by prefix (comma-separated regular expressions, whole
    /// prefix, case-insensitive). Unset, with no exclude list: every message, as Debezium.
    #[serde(default, alias = "message.prefix.include.list")]
    pub message_prefix_include_list: Option<String>,
    /// `message.prefix.exclude.list`: the messages not sent (not with an include list).
    #[serde(default, alias = "message.prefix.exclude.list")]
    pub message_prefix_exclude_list: Option<String>,
    /// `table.include.list`: the tables captured, as comma-separated regular expressions
    /// matched against the whole `schema.table`, case-insensitive (Debezium's). Tables
    /// outside it (or in `table.exclude.list`) are neither snapshotted nor streamed.
    #[serde(default, alias = "table.include.list")]
    pub table_include_list: Option<String>,
    /// `table.exclude.list`: the tables not captured (not with an include list).
    #[serde(default, alias = "table.exclude.list")]
    pub table_exclude_list: Option<String>,
    /// `schema.include.list`: the schemas whose tables are captured, comma-separated regular
    /// expressions matched against the whole schema name, case-insensitive. Combined with the
    /// table lists as Debezium does: a table is captured when its schema passes the schema
    /// list and `schema.table` passes the table list.
    #[serde(default, alias = "schema.include.list")]
    pub schema_include_list: Option<String>,
    /// `schema.exclude.list`: the schemas whose tables are not captured (not with an include
    /// list).
    #[serde(default, alias = "schema.exclude.list")]
    pub schema_exclude_list: Option<String>,
    /// `message.key.columns`: the columns that key a table's records instead of its primary
    /// key (or that give a table without one a key), as `<table>:<column>,<column>;...`, each
    /// table a regular expression matched against the whole `schema.table` and each column
    /// against the column's name (case-insensitive). The key's columns come in the order
    /// listed; a table none of whose columns match keeps its primary key.
    #[serde(default, alias = "message.key.columns")]
    pub message_key_columns: Option<String>,
    /// `column.include.list`: the columns in `before`/`after`, regular expressions matched
    /// against the whole `schema.table.column`. The key keeps its columns.
    #[serde(default, alias = "column.include.list")]
    pub column_include_list: Option<String>,
    /// `column.exclude.list`: the columns left out of `before`/`after` (not with an include
    /// list).
    #[serde(default, alias = "column.exclude.list")]
    pub column_exclude_list: Option<String>,
    /// `skipped.operations`: operations not emitted, a comma-separated list of `c`, `u`, `d`,
    /// `t`, or `none`. Debezium's default `t` skips truncates.
    #[serde(
        default = "default_skipped_operations",
        alias = "skipped.operations",
        deserialize_with = "skipped_operations"
    )]
    pub skipped_operations: SkippedOperations,
    /// `decimal.handling.mode`: `precise` (Debezium's default: `numeric(p, s)` and `money` as
    /// base64 bytes of the unscaled value, `numeric` without a scale as `{"scale", "value"}`),
    /// `string` (every digit, readable without a schema) or `double`.
    #[serde(default, alias = "decimal.handling.mode")]
    pub decimal_handling_mode: crate::decode::types::DecimalMode,
    /// `time.precision.mode`: `adaptive` (Debezium's default: `time`/`timestamp` in
    /// milliseconds up to precision 3, microseconds above), `adaptive_time_microseconds`
    /// (`time` always in microseconds), `connect` (Kafka Connect's `Date`, `Time`,
    /// `Timestamp`: milliseconds).
    #[serde(default, alias = "time.precision.mode")]
    pub time_precision_mode: crate::decode::types::TimePrecisionMode,
    /// `binary.handling.mode`: `bytes` (Debezium's default; base64 in JSON, schema `bytes`),
    /// `base64`, `base64-url-safe`, `hex` (strings).
    #[serde(default, alias = "binary.handling.mode")]
    pub binary_handling_mode: crate::decode::types::BinaryMode,
    /// `interval.handling.mode`: `numeric` (Debezium's default: microseconds, a month being
    /// 30.4375 days) or `string` (ISO-8601 `P1Y2M3DT4H5M6.5S`).
    #[serde(default, alias = "interval.handling.mode")]
    pub interval_handling_mode: crate::decode::types::IntervalMode,
    /// `hstore.handling.mode`: `json` (Debezium's default: a string holding a JSON object) or
    /// `map` (a JSON object).
    #[serde(default, alias = "hstore.handling.mode")]
    pub hstore_handling_mode: crate::decode::types::HstoreMode,
    /// `tombstones.on.delete`: a delete is followed by a tombstone (null value), for compaction.
    #[serde(default = "default_true", alias = "tombstones.on.delete")]
    pub tombstones_on_delete: bool,
    /// `extended.headers.enabled`: every record carries Debezium's context headers
    /// (`__debezium.context.connectorLogicalName`, `connectorName`, `taskId`, `runId`).
    #[serde(default = "default_true", alias = "extended.headers.enabled")]
    pub extended_headers_enabled: bool,
}

impl Default for DebeziumProperties {
    fn default() -> Self {
        Self {
            provide_transaction_metadata: false,
            message_prefix_include_list: None,
            table_include_list: None,
            table_exclude_list: None,
            schema_include_list: None,
            schema_exclude_list: None,
            message_key_columns: None,
            column_include_list: None,
            column_exclude_list: None,
            message_prefix_exclude_list: None,
            topic_transaction: default_topic_transaction(),
            topic_heartbeat_prefix: default_topic_heartbeat_prefix(),
            skipped_operations: default_skipped_operations(),
            decimal_handling_mode: Default::default(),
            time_precision_mode: Default::default(),
            binary_handling_mode: Default::default(),
            interval_handling_mode: Default::default(),
            hstore_handling_mode: Default::default(),
            tombstones_on_delete: true,
            extended_headers_enabled: true,
        }
    }
}

/// `skipped.operations`, parsed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkippedOperations {
    pub create: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
}

impl std::str::FromStr for SkippedOperations {
    type Err = String;

    fn from_str(list: &str) -> Result<Self, String> {
        let mut skipped = SkippedOperations::default();
        for op in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            match op {
                "none" => {}
                "c" => skipped.create = true,
                "u" => skipped.update = true,
                "d" => skipped.delete = true,
                "t" => skipped.truncate = true,
                other => {
                    return Err(format!(
                        "unknown operation {other:?} (expected a comma-separated list of c, u, d, t, or none)"
                    ));
                }
            }
        }
        Ok(skipped)
    }
}

fn default_topic_transaction() -> String {
    "transaction".to_owned()
}

fn default_topic_heartbeat_prefix() -> String {
    "__debezium-heartbeat".to_owned()
}

fn default_skipped_operations() -> SkippedOperations {
    SkippedOperations {
        truncate: true,
        ..SkippedOperations::default()
    }
}

fn skipped_operations<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SkippedOperations, D::Error> {
    let list = String::deserialize(deserializer)?;
    list.parse().map_err(serde::de::Error::custom)
}

// ---- end of [debezium] ----

/// `[kafka]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port]`.
    #[serde(default)]
    pub brokers: String,
    /// Partitions of the topics the adapter creates.
    #[serde(default = "default_partitions")]
    pub topic_partitions: i32,
    /// Replication factor of the topics the adapter creates.
    #[serde(default = "default_replication_factor")]
    pub topic_replication_factor: i32,
    /// Events sent but not yet acknowledged, at most; the stream waits beyond (bounded memory).
    #[serde(default = "default_max_inflight_events")]
    pub max_inflight_events: usize,
    /// Extra librdkafka producer properties (`"linger.ms" = "10"`). The delivery guarantees
    /// (`enable.idempotence`, `acks`, `message.timeout.ms`, ...) are not overridable.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `[snapshot]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// `initial`: snapshot once, the first time the slot is used; `never`: stream only;
    /// `when_needed`: also snapshot again when the slot had to be created anew (its position
    /// was lost).
    #[serde(default)]
    pub mode: SnapshotMode,
    /// Rows per chunk (one query, one progress record).
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u32,
    /// The progress bar: `auto` draws one on stderr when it is a terminal and logs a progress
    /// line every 10 s otherwise; `never` only logs.
    #[serde(default)]
    pub progress_bar: ProgressBarMode,
}

/// `snapshot.mode`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    #[default]
    Initial,
    Never,
    WhenNeeded,
}

/// `snapshot.progress_bar`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProgressBarMode {
    #[default]
    Auto,
    Never,
}

/// `[heartbeat]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Interval between heartbeats; 0 turns them off.
    #[serde(default = "default_heartbeat_interval_ms")]
    pub interval_ms: u64,
    /// Write `_ficus.heartbeat` at each beat (an action query, so the slot advances even when
    /// the captured tables are idle).
    #[serde(default = "default_true")]
    pub write_table: bool,
    /// The topic heartbeat messages go to; default Debezium's,
    /// `<debezium."topic.heartbeat.prefix">.<topic_prefix>` (`__debezium-heartbeat.<topic_prefix>`).
    #[serde(default)]
    pub topic: Option<String>,
}

/// `[[outbox]]`: a table whose inserted rows are messages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// `schema.table`.
    pub table: String,
    /// The column whose value names the topic (after `topic_prefix`).
    #[serde(default = "default_outbox_topic_column")]
    pub topic_column: String,
    /// The column whose value is the message key.
    #[serde(default = "default_outbox_key_column")]
    pub key_column: String,
    /// The column whose value is the message value (json/jsonb as is, text as UTF-8, bytea raw).
    #[serde(default = "default_outbox_payload_column")]
    pub payload_column: String,
    /// Prepended to the topic column's value.
    #[serde(default = "default_outbox_topic_prefix")]
    pub topic_prefix: String,
    /// Columns copied into message headers (when present).
    #[serde(default = "default_outbox_header_columns")]
    pub header_columns: Vec<String>,
}

fn default_slot() -> String {
    "ficus".to_owned()
}
fn default_publication() -> String {
    "ficus".to_owned()
}
fn default_topic_prefix() -> String {
    "ficus".to_owned()
}
fn default_toast_placeholder() -> String {
    "__debezium_unavailable_value".to_owned()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9901".to_owned()
}
fn default_feedback_interval_ms() -> u64 {
    1_000
}
fn default_max_backoff_ms() -> u64 {
    30_000
}
fn default_partitions() -> i32 {
    1
}
fn default_replication_factor() -> i32 {
    1
}
fn default_max_inflight_events() -> usize {
    100_000
}
fn default_chunk_rows() -> u32 {
    10_000
}
fn default_heartbeat_interval_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_outbox_topic_column() -> String {
    "aggregatetype".to_owned()
}
fn default_outbox_key_column() -> String {
    "aggregateid".to_owned()
}
fn default_outbox_payload_column() -> String {
    "payload".to_owned()
}
fn default_outbox_topic_prefix() -> String {
    "outbox.event.".to_owned()
}
fn default_outbox_header_columns() -> Vec<String> {
    vec!["id".to_owned(), "type".to_owned()]
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic_partitions: default_partitions(),
            topic_replication_factor: default_replication_factor(),
            max_inflight_events: default_max_inflight_events(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            mode: SnapshotMode::default(),
            chunk_rows: default_chunk_rows(),
            progress_bar: ProgressBarMode::default(),
        }
    }
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        Self {
            interval_ms: default_heartbeat_interval_ms(),
            write_table: true,
            topic: None,
        }
    }
}

/// librdkafka properties the adapter sets itself: they carry the delivery guarantee.
pub const MANAGED_KAFKA_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "max.in.flight.requests.per.connection",
    "max.in.flight",
    "retries",
    "message.send.max.retries",
    "transactional.id",
];

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "FICUS_CDC";

impl CdcConfig {
    /// Defaults, then `file` (when given), then `FICUS_CDC__*` from `env` (a map, so tests need
    /// not touch the process environment). The result is validated.
    pub fn load(file: Option<&Path>, env: HashMap<String, String>) -> Result<Self, CdcError> {
        Self::load_from(file, &env)
    }

    /// [`CdcConfig::load`] from any [`Env`] (`&ficus_telemetry::ProcessEnv` in production).
    pub fn load_from(file: Option<&Path>, env: &dyn Env) -> Result<Self, CdcError> {
        let mut config: CdcConfig = ficus_telemetry::Loader::new("cdc")
            .file(file)
            .env(env)
            .load()
            .map_err(|error| CdcError::Config(vec![error.to_string()]))?;
        config.validate()?;
        Ok(config)
    }

    /// Every problem at once, each naming its dotted key. What it parses to check is kept:
    /// Debezium's regex lists, compiled ([`CdcConfig::lists`]); a configuration changed after
    /// loading is validated again before use.
    pub fn validate(&mut self) -> Result<(), CdcError> {
        let mut problems = Vec::new();
        let url = self.database_url.trim();
        if url.is_empty() {
            problems.push("database_url: required (a postgres:// URL)".to_owned());
        } else if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            problems.push(format!(
                "database_url: must be a postgres:// or postgresql:// URL, got {:?}",
                redact_url(url)
            ));
        }
        if !is_pg_identifier(&self.slot) {
            problems.push(format!(
                "slot: must be 1-63 lowercase letters, digits or underscores (a replication slot name), got {:?}",
                self.slot
            ));
        }
        if self.publication.is_empty() || self.publication.len() > 63 {
            problems.push(format!(
                "publication: must be 1-63 characters, got {:?}",
                self.publication
            ));
        }
        for (i, table) in self.tables.iter().enumerate() {
            if split_table(table).is_none() {
                problems.push(format!("tables[{i}]: must be schema.table, got {table:?}"));
            }
        }
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            problems.push(format!(
                "topic_prefix: must be non-empty and use only letters, digits, '.', '_' and '-', got {:?}",
                self.topic_prefix
            ));
        }
        if self.metrics_listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "metrics_listen: must be an address like 127.0.0.1:9901, got {:?}",
                self.metrics_listen
            ));
        }
        if self.feedback_interval_ms == 0 || self.feedback_interval_ms > 60_000 {
            problems.push(format!(
                "feedback_interval_ms: must be 1..=60000, got {}",
                self.feedback_interval_ms
            ));
        }
        if self.max_backoff_ms < 100 {
            problems.push(format!(
                "max_backoff_ms: must be at least 100, got {}",
                self.max_backoff_ms
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            problems.push("kafka.brokers: required (host:port[,host:port])".to_owned());
        }
        if self.kafka.topic_partitions < 1 {
            problems.push(format!(
                "kafka.topic_partitions: must be at least 1, got {}",
                self.kafka.topic_partitions
            ));
        }
        if self.kafka.topic_replication_factor < 1 {
            problems.push(format!(
                "kafka.topic_replication_factor: must be at least 1, got {}",
                self.kafka.topic_replication_factor
            ));
        }
        if self.kafka.max_inflight_events == 0 {
            problems.push("kafka.max_inflight_events: must be at least 1, got 0".to_owned());
        }
        for key in self.kafka.properties.keys() {
            if MANAGED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                problems.push(format!(
                    "kafka.properties.{key}: set by the adapter (it carries the delivery guarantee) and cannot be overridden"
                ));
            }
        }
        if self.snapshot.chunk_rows == 0 || self.snapshot.chunk_rows > 1_000_000 {
            problems.push(format!(
                "snapshot.chunk_rows: must be 1..=1000000, got {}",
                self.snapshot.chunk_rows
            ));
        }
        if self.heartbeat.interval_ms != 0 && self.heartbeat.interval_ms < 100 {
            problems.push(format!(
                "heartbeat.interval_ms: must be 0 (off) or at least 100, got {}",
                self.heartbeat.interval_ms
            ));
        }
        if let Some(topic) = &self.heartbeat.topic
            && !is_topic_name(topic)
        {
            problems.push(format!(
                "heartbeat.topic: must be a Kafka topic name, got {topic:?}"
            ));
        }
        for (key, value) in [
            (
                "debezium.topic.transaction",
                &self.debezium.topic_transaction,
            ),
            (
                "debezium.topic.heartbeat.prefix",
                &self.debezium.topic_heartbeat_prefix,
            ),
        ] {
            if !is_topic_name(value) {
                problems.push(format!(
                    "{key}: must be a Kafka topic name part, got {value:?}"
                ));
            }
        }
        let lists = match self.compile_lists() {
            Ok(lists) => Some(lists),
            Err(list_problems) => {
                problems.extend(list_problems);
                None
            }
        };
        for (i, outbox) in self.outbox.iter().enumerate() {
            if split_table(&outbox.table).is_none() {
                problems.push(format!(
                    "outbox[{i}].table: must be schema.table, got {:?}",
                    outbox.table
                ));
            }
            if outbox.table == "ficus.outbox" {
                problems.push(format!(
                    "outbox[{i}].table: ficus's ready-made outbox is now _ficus.outbox (schema ficus was renamed so that no role named ficus resolves into it), got {:?}",
                    outbox.table
                ));
            }
            for (key, value) in [
                ("topic_column", &outbox.topic_column),
                ("key_column", &outbox.key_column),
                ("payload_column", &outbox.payload_column),
            ] {
                if value.is_empty() {
                    problems.push(format!("outbox[{i}].{key}: must not be empty"));
                }
            }
            if !outbox
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                problems.push(format!(
                    "outbox[{i}].topic_prefix: use only letters, digits, '.', '_' and '-', got {:?}",
                    outbox.topic_prefix
                ));
            }
        }
        if let Some(topic) = &self.errors.deadletterqueue_topic_name
            && !is_topic_name(topic)
        {
            problems.push(format!(
                "errors.deadletterqueue_topic_name: must be a Kafka topic name, got {topic:?}"
            ));
        }
        if let Some(value) = self.kafka.properties.get("message.max.bytes")
            && value.parse::<usize>().map_or(true, |n| n < 1000)
        {
            problems.push(format!(
                "kafka.properties.message.max.bytes: must be a number of bytes (at least 1000), got {value:?}"
            ));
        }
        match lists {
            Some(lists) if problems.is_empty() => {
                self.lists = std::sync::Arc::new(lists);
                Ok(())
            }
            _ => Err(CdcError::Config(problems)),
        }
    }

    /// Debezium's include/exclude lists and `message.key.columns`, each parsed once; a problem
    /// names the property (`debezium.<Debezium's name>`) and its value.
    fn compile_lists(&self) -> Result<Lists, Vec<String>> {
        let d = &self.debezium;
        let mut problems = Vec::new();
        let mut selection = |include: (&str, &Option<String>), exclude: (&str, &Option<String>)| {
            Selection::new(
                (include.0, include.1.as_deref()),
                (exclude.0, exclude.1.as_deref()),
            )
            .unwrap_or_else(|error| {
                problems.push(format!("debezium.{error}"));
                Selection::All
            })
        };
        let schemas = selection(
            ("schema.include.list", &d.schema_include_list),
            ("schema.exclude.list", &d.schema_exclude_list),
        );
        let tables = selection(
            ("table.include.list", &d.table_include_list),
            ("table.exclude.list", &d.table_exclude_list),
        );
        let columns = selection(
            ("column.include.list", &d.column_include_list),
            ("column.exclude.list", &d.column_exclude_list),
        );
        let message_prefixes = selection(
            (
                "message.prefix.include.list",
                &d.message_prefix_include_list,
            ),
            (
                "message.prefix.exclude.list",
                &d.message_prefix_exclude_list,
            ),
        );
        let key_columns = match &d.message_key_columns {
            None => KeyColumns::default(),
            Some(list) => KeyColumns::parse(list).unwrap_or_else(|problem| {
                problems.push(format!(
                    "debezium.message.key.columns: {problem}, got {list:?}"
                ));
                KeyColumns::default()
            }),
        };
        if problems.is_empty() {
            Ok(Lists {
                schemas,
                tables,
                columns,
                message_prefixes,
                key_columns,
            })
        } else {
            Err(problems)
        }
    }

    /// `[debezium]`'s regex lists as [`CdcConfig::validate`] compiled them.
    pub fn lists(&self) -> &Lists {
        &self.lists
    }

    /// The metrics listener (validated).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listen
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9901)))
    }

    /// The heartbeat topic.
    pub fn heartbeat_topic(&self) -> String {
        self.heartbeat.topic.clone().unwrap_or_else(|| {
            format!(
                "{}.{}",
                self.debezium.topic_heartbeat_prefix, self.topic_prefix
            )
        })
    }

    /// The logical decoding message topic, `<topic_prefix>.message`.
    pub fn message_topic(&self) -> String {
        format!("{}.message", self.topic_prefix)
    }

    /// The transaction metadata topic, `<topic_prefix>.<topic.transaction>`.
    pub fn transaction_topic(&self) -> String {
        format!("{}.{}", self.topic_prefix, self.debezium.topic_transaction)
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.errors
            .deadletterqueue_topic_name
            .clone()
            .unwrap_or_else(|| format!("__ficus-dlq.{}", self.topic_prefix))
    }

    /// The producer's own record size limit: `kafka.properties."message.max.bytes"`, else
    /// librdkafka's default.
    pub fn producer_max_message_bytes(&self) -> usize {
        self.kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000)
    }

    pub fn feedback_interval(&self) -> Duration {
        Duration::from_millis(self.feedback_interval_ms)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_millis(self.max_backoff_ms)
    }

    /// The database name from the URL (for `source.db`).
    pub fn database_name(&self) -> String {
        let base = self.database_url.split('?').next().unwrap_or_default();
        let after_scheme = base.split_once("://").map(|(_, r)| r).unwrap_or(base);
        after_scheme
            .split_once('/')
            .map(|(_, db)| db.to_owned())
            .unwrap_or_default()
    }

    /// The URL of a replication connection (`replication=database`).
    pub fn replication_url(&self) -> String {
        let url = self.database_url.trim();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}replication=database")
    }
}

/// `schema.table` into its two parts (both non-empty, no further dots).
pub fn split_table(name: &str) -> Option<(&str, &str)> {
    let (schema, table) = name.split_once('.')?;
    if schema.is_empty() || table.is_empty() || table.contains('.') {
        return None;
    }
    Some((schema, table))
}

fn is_pg_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(contents: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::new(contents)
    }

    /// A tiny temp-file helper (no extra dependency).
    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn new(contents: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "ficus-cdc-config-{}-{}.toml",
                    std::process::id(),
                    rand_suffix()
                ));
                std::fs::write(&path, contents).unwrap();
                Self(path)
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
        fn rand_suffix() -> u128 {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            nanos + u128::from(N.fetch_add(1, Ordering::SeqCst))
        }
    }

    const MINIMAL: &str = r#"
database_url = "postgres://u:p@127.0.0.1:5432/app"
[kafka]
brokers = "127.0.0.1:9092"
"#;

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let file = write(MINIMAL);
        let config = CdcConfig::load(Some(&file.0), HashMap::new()).unwrap();
        assert_eq!(config.slot, "ficus");
        assert_eq!(config.publication, "ficus");
        assert_eq!(config.topic_prefix, "ficus");
        assert_eq!(config.snapshot.mode, SnapshotMode::Initial);
        assert_eq!(config.snapshot.chunk_rows, 10_000);
        assert_eq!(config.heartbeat.interval_ms, 10_000);
        assert_eq!(config.database_name(), "app");
        assert_eq!(
            config.replication_url(),
            "postgres://u:p@127.0.0.1:5432/app?replication=database"
        );
        assert_eq!(config.heartbeat_topic(), "__debezium-heartbeat.ficus");
        assert_eq!(config.transaction_topic(), "ficus.transaction");
        assert!(!config.debezium.provide_transaction_metadata);
        assert_eq!(config.errors.tolerance, ErrorTolerance::None);
        assert_eq!(config.dead_letter_topic(), "__ficus-dlq.ficus");
        assert_eq!(config.producer_max_message_bytes(), 1_000_000);
        // Debezium's defaults.
        assert!(config.debezium.skipped_operations.truncate);
        assert!(!config.debezium.skipped_operations.delete);
        assert!(config.debezium.tombstones_on_delete);
        assert!(config.debezium.extended_headers_enabled);
    }

    #[test]
    fn the_errors_section_takes_kafka_connect_names() {
        let file = write(&format!(
            "{MINIMAL}\n[errors]\ntolerance = \"all\"\ndeadletterqueue_topic_name = \"dlq.app\"\n"
        ));
        let config = CdcConfig::load(Some(&file.0), HashMap::new()).unwrap();
        assert_eq!(config.errors.tolerance, ErrorTolerance::All);
        assert_eq!(config.dead_letter_topic(), "dlq.app");
        let file = write(&format!(
            "{MINIMAL}\n[errors]\ntolerance = \"some\"\ndeadletterqueue_topic_name = \"a b\"\n"
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("errors.tolerance") || text.contains("some"),
            "{text}"
        );
        let file = write(&format!(
            "{MINIMAL}\n[errors]\ndeadletterqueue_topic_name = \"a b\"\n[kafka.properties]\n\"message.max.bytes\" = \"lots\"\n"
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("errors.deadletterqueue_topic_name:"),
            "{text}"
        );
        assert!(
            text.contains("kafka.properties.message.max.bytes:"),
            "{text}"
        );
        let file = write(&format!(
            "{MINIMAL}\n[[outbox]]\ntable = \"ficus.outbox\"\n"
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("outbox[0].table:") && text.contains("_ficus.outbox"),
            "{text}"
        );
    }

    #[test]
    fn debezium_properties_take_debeziums_names() {
        let file = write(&format!(
            "{MINIMAL}\n[debezium]\n\"skipped.operations\" = \"none\"\n\"tombstones.on.delete\" = false\n"
        ));
        let config = CdcConfig::load(Some(&file.0), HashMap::new()).unwrap();
        assert_eq!(
            config.debezium.skipped_operations,
            SkippedOperations::default()
        );
        assert!(!config.debezium.tombstones_on_delete);
        // The environment overrides the underscore spelling (a file with the dotted one and
        // the same key from the environment is refused as a duplicate, naming it).
        let file = write(&format!(
            "{MINIMAL}\n[debezium]\nskipped_operations = \"none\"\n"
        ));
        let config = CdcConfig::load(
            Some(&file.0),
            env(&[("FICUS_CDC__DEBEZIUM__SKIPPED_OPERATIONS", "c,d")]),
        )
        .unwrap();
        let skipped = config.debezium.skipped_operations;
        assert!(skipped.create && skipped.delete && !skipped.update && !skipped.truncate);
        let file = write(&format!(
            "{MINIMAL}\n[debezium]\n\"skipped.operations\" = \"t,x\"\n"
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("skipped.operations") || text.contains("debezium"),
            "{text}"
        );
        assert!(text.contains("\"x\""), "{text}");
    }

    #[test]
    fn schema_and_table_lists_combine_as_debeziums() {
        use crate::decode::relation::is_captured;
        let load = |lists: &str| {
            let file = write(&format!("{MINIMAL}\n[debezium]\n{lists}\n"));
            CdcConfig::load(Some(&file.0), HashMap::new())
        };
        let config = load(r#""schema.include.list" = "app.*,Billing""#).unwrap();
        assert!(is_captured(&config, "app", "t") && is_captured(&config, "billing", "t"));
        assert!(!is_captured(&config, "public", "t"));
        // A table must pass both lists.
        let config = load(
            r#""schema.exclude.list" = "audit"
"table.include.list" = "(audit|app)\\.keep.*""#,
        )
        .unwrap();
        assert!(is_captured(&config, "app", "keep_me"));
        assert!(!is_captured(&config, "audit", "keep_me"), "schema excluded");
        assert!(!is_captured(&config, "app", "other"), "table not included");
        // An escaped comma belongs to its expression (Debezium's `RegExSplitter`).
        let config = load(r#""table.include.list" = "app\\.t{1\\,2}, app\\.u""#).unwrap();
        assert!(is_captured(&config, "app", "tt") && is_captured(&config, "app", "u"));
        assert!(!is_captured(&config, "app", "ttt"));
    }

    #[test]
    fn the_lists_are_compiled_by_validation() {
        let file = write(&format!(
            "{MINIMAL}\n[debezium]\n\"column.exclude.list\" = \"public\\\\.t\\\\.secret\"\n\"message.prefix.include.list\" = \"audit.*\"\n"
        ));
        let mut config = CdcConfig::load(Some(&file.0), HashMap::new()).unwrap();
        assert!(!config.lists().columns.includes("public.t.secret"));
        assert!(config.lists().columns.includes("public.t.name"));
        assert!(config.lists().message_prefixes.includes("AUDIT-1"));
        assert!(!config.lists().message_prefixes.includes("ops"));
        // Changed after loading: the compiled form follows only once validated again.
        config.debezium.message_prefix_include_list = Some("ops".to_owned());
        config.validate().unwrap();
        assert!(config.lists().message_prefixes.includes("ops"));
        // A refused change keeps the lists validated before.
        config.debezium.message_prefix_include_list = Some("(ops".to_owned());
        let text = config.validate().unwrap_err().to_string();
        assert!(
            text.contains(
                r#"debezium.message.prefix.include.list: "(ops" is not a regular expression"#
            ) && text.contains(r#"got "(ops""#),
            "{text}"
        );
        assert!(config.lists().message_prefixes.includes("ops"));
    }

    #[test]
    fn debezium_list_errors_name_the_property_and_its_value() {
        let file = write(&format!(
            r#"{MINIMAL}
[debezium]
"schema.include.list" = "app"
"schema.exclude.list" = "audit"
"table.exclude.list" = "public.(t"
"message.key.columns" = "public.t:id;public.u"
"column.include.list" = 'public.t.a,public.t.b\'
"#
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        for expected in [
            r#"debezium.schema.exclude.list: "schema.include.list" is already specified (set one of the two), got "audit""#,
            r#"debezium.table.exclude.list: "public.(t" is not a regular expression"#,
            r#"debezium.message.key.columns: "public.u" has an invalid format"#,
            r#"got "public.t:id;public.u""#,
            r#"got "public.(t""#,
            r#"debezium.column.include.list: unterminated escape sequence"#,
            r#"got "public.t.a,public.t.b\\""#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
        let file = write(&format!(
            "{MINIMAL}\n[debezium]\n\"decimal.handling.mode\" = \"exact\"\n"
        ));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("decimal.handling.mode") && text.contains("exact"),
            "{text}"
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let file = write(MINIMAL);
        let config = CdcConfig::load(
            Some(&file.0),
            env(&[
                ("FICUS_CDC__SLOT", "other_slot"),
                ("FICUS_CDC__KAFKA__BROKERS", "10.0.0.1:9092"),
                ("FICUS_CDC__SNAPSHOT__MODE", "when_needed"),
                ("FICUS_CDC__SNAPSHOT__CHUNK_ROWS", "500"),
                ("FICUS_CDC__TABLES", "public.people,public.tasks"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(config.slot, "other_slot");
        assert_eq!(config.kafka.brokers, "10.0.0.1:9092");
        assert_eq!(config.snapshot.mode, SnapshotMode::WhenNeeded);
        assert_eq!(config.snapshot.chunk_rows, 500);
        assert_eq!(config.tables, vec!["public.people", "public.tasks"]);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let file = write(
            r#"
database_url = "mysql://x"
slot = "Bad-Slot"
tables = ["people"]
metrics_listen = "nowhere"
[kafka]
brokers = ""
topic_partitions = 0
[kafka.properties]
"enable.idempotence" = "false"
"linger.ms" = "10"
[snapshot]
chunk_rows = 0
[heartbeat]
interval_ms = 5
[[outbox]]
table = "outbox"
key_column = ""
"#,
        );
        let err = CdcConfig::load(Some(&file.0), HashMap::new()).unwrap_err();
        let text = err.to_string();
        for key in [
            "database_url:",
            "slot:",
            "tables[0]:",
            "metrics_listen:",
            "kafka.brokers:",
            "kafka.topic_partitions:",
            "kafka.properties.enable.idempotence:",
            "snapshot.chunk_rows:",
            "heartbeat.interval_ms:",
            "outbox[0].table:",
            "outbox[0].key_column:",
        ] {
            assert!(text.contains(key), "{key} missing from:\n{text}");
        }
        assert!(!text.contains("linger.ms"), "{text}");
    }

    #[test]
    fn unknown_keys_and_bad_variants_name_the_key() {
        let file = write(&format!("{MINIMAL}\n[snapshot]\nmode = \"sometimes\"\n"));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(text.contains("snapshot.mode"), "{text}");
        assert!(text.contains("sometimes"), "{text}");

        let file = write(&format!("{MINIMAL}\nslott = \"x\"\n"));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(text.contains("slott"), "{text}");

        let file = write(&format!("{MINIMAL}\n[kafka.extra]\nx = 1\n"));
        let text = CdcConfig::load(Some(&file.0), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(text.contains("kafka") && text.contains("extra"), "{text}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let text = CdcConfig::load(Some(Path::new("/nonexistent/cdc.toml")), HashMap::new())
            .unwrap_err()
            .to_string();
        assert!(text.contains("/nonexistent/cdc.toml"), "{text}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
    }
}
