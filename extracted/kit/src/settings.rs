//! A service's settings, loaded like every ficus component's (`ficus_telemetry::Loader`):
//! defaults, then `--config FILE` (TOML), then `FICUS_<SERVICE>__<KEY>` (`FICUS_PEOPLE__KAFKA__BROKERS`),
//! then flags. [`Settings::validate`] reports every problem at once, each at its dotted key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Section `<service>` of a service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address of the HTTP listener (API, `/healthz`, `/readyz`, `/views`, `/metrics`)
    /// [default: the service's own, e.g. 127.0.0.1:8081 for people].
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Where the views live: a SQLite file path (created when missing) or a `postgres://` URL
    /// [default: `.ficus/<service>.db`].
    #[serde(default)]
    pub store: Option<String>,
    /// The change topics are `<topic_prefix>.<schema>.<table>`, as `ficus cdc` names them.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    #[serde(default)]
    pub kafka: KafkaSettings,
    #[serde(default)]
    pub identity: IdentitySettings,
    #[serde(default)]
    pub views: ViewSettings,
}

/// `[kafka]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: `host:port[,host:port]` (required).
    #[serde(default)]
    pub brokers: String,
}

/// `[identity]`: how the identity the proxy forwards is verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySettings {
    /// The proxy admin API's JWKS (`http://`).
    #[serde(default = "default_jwks_url")]
    pub jwks_url: String,
    /// The `aud` the proxy signs for (`[auth.internal_token] audience`).
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The header carrying the token (`[auth.internal_token] header`).
    #[serde(default = "default_header")]
    pub header: String,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            jwks_url: default_jwks_url(),
            audience: default_audience(),
            header: default_header(),
        }
    }
}

/// `[views]`: how the views consume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSettings {
    /// Ready within this many events of the topic's end (0: only once at it).
    #[serde(default)]
    pub max_lag_events: u64,
    /// Most events per store transaction.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest wait for a batch to fill.
    #[serde(default = "default_batch_max_ms")]
    pub batch_max_ms: u64,
    /// How often the topic's end is fetched, for lag and readiness.
    #[serde(default = "default_watermark_interval_ms")]
    pub watermark_interval_ms: u64,
    /// Longest time the broker holds a fetch that has nothing new (librdkafka's
    /// `fetch.wait.max.ms`, 500 by default): the floor of the convergence lag when idle.
    #[serde(default = "default_fetch_wait_max_ms")]
    pub fetch_wait_max_ms: u64,
    /// Apply each monolith transaction whole across the service's views (one consumer for
    /// all of them and `<topic_prefix>.transaction`): a transaction that touched several
    /// tables shows in the views at once, never half. Needs the adapter's transaction metadata
    /// (Debezium's `provide.transaction.metadata`) [default: the service's choice,
    /// `Service::whole_transactions`: on for ficus-tasks, off for ficus-people].
    #[serde(default)]
    pub whole_transactions: Option<bool>,
    /// With whole transactions over a transaction topic of several partitions: how long a quiet
    /// partition must stay at its high watermark before a transaction waiting on it is taken
    /// (`ficus_view::TransactionalViews::settle_ms`).
    #[serde(default = "default_transaction_settle_ms")]
    pub transaction_settle_ms: u64,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            max_lag_events: 0,
            batch_max_events: default_batch_max_events(),
            batch_max_ms: default_batch_max_ms(),
            watermark_interval_ms: default_watermark_interval_ms(),
            fetch_wait_max_ms: default_fetch_wait_max_ms(),
            whole_transactions: None,
            transaction_settle_ms: default_transaction_settle_ms(),
        }
    }
}

fn default_topic_prefix() -> String {
    "ficus".to_owned()
}
fn default_jwks_url() -> String {
    "http://127.0.0.1:9900/.well-known/jwks.json".to_owned()
}
fn default_audience() -> String {
    "ficus-services".to_owned()
}
fn default_header() -> String {
    ficus_identity::DEFAULT_HEADER.to_owned()
}
fn default_transaction_settle_ms() -> u64 {
    ficus_view::DEFAULT_SETTLE_MS
}
fn default_batch_max_events() -> usize {
    1000
}
fn default_batch_max_ms() -> u64 {
    20
}
fn default_watermark_interval_ms() -> u64 {
    500
}
fn default_fetch_wait_max_ms() -> u64 {
    20
}

impl Settings {
    /// Every problem at once (`key: what is wrong`), or nothing.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.kafka.brokers.trim().is_empty() {
            problems.push(
                "kafka.brokers: required: set it in the file, with FICUS_<SERVICE>__KAFKA__BROKERS or --brokers"
                    .to_owned(),
            );
        }
        if self.topic_prefix.is_empty() || self.topic_prefix.contains(char::is_whitespace) {
            problems.push(format!(
                "topic_prefix: must be a topic name prefix without spaces, got {:?}",
                self.topic_prefix
            ));
        }
        if self.store.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push("store: must be a SQLite file path or a postgres:// URL".to_owned());
        }
        if !self.identity.jwks_url.starts_with("http://") {
            problems.push(format!(
                "identity.jwks_url: must be an http:// URL (the proxy's admin API), got {:?}",
                self.identity.jwks_url
            ));
        }
        if self.identity.audience.is_empty() {
            problems.push("identity.audience: must not be empty".to_owned());
        }
        if axum::http::HeaderName::try_from(self.identity.header.as_str()).is_err() {
            problems.push(format!(
                "identity.header: {:?} is not a header name",
                self.identity.header
            ));
        }
        if self.views.batch_max_events == 0 {
            problems.push("views.batch_max_events: must be 1 or more".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The store location, or the default file of `service`.
    pub fn store_location(&self, service: &str) -> String {
        self.store.clone().unwrap_or_else(|| {
            PathBuf::from(".ficus")
                .join(format!("{service}.db"))
                .display()
                .to_string()
        })
    }

    /// The adapter's transaction topic: `<topic_prefix>.transaction` (Debezium's name).
    pub fn transaction_topic(&self) -> String {
        format!("{}.transaction", self.topic_prefix)
    }

    /// `<topic_prefix>.public.<table>`.
    pub fn topic(&self, table: &str) -> String {
        format!("{}.public.{table}", self.topic_prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ficus_telemetry::ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ficus_telemetry::Loader::new("people").env(&env).load()
    }

    #[test]
    fn layers_and_every_problem_at_once() {
        let settings = load(&[
            ("FICUS_PEOPLE__KAFKA__BROKERS", "127.0.0.1:9092"),
            ("FICUS_PEOPLE__VIEWS__MAX_LAG_EVENTS", "5"),
        ])
        .unwrap();
        assert_eq!(settings.views.max_lag_events, 5);
        assert_eq!(settings.topic("people"), "ficus.public.people");
        assert_eq!(settings.store_location("people"), ".ficus/people.db");
        assert!(settings.validate().is_ok());

        let missing = load(&[]).unwrap().validate().unwrap_err();
        assert!(
            missing[0].starts_with("kafka.brokers: required"),
            "{missing:?}"
        );

        let bad = load(&[
            ("FICUS_PEOPLE__KAFKA__BROKERS", " "),
            ("FICUS_PEOPLE__IDENTITY__JWKS_URL", "https://x"),
            ("FICUS_PEOPLE__IDENTITY__HEADER", "bad header"),
            ("FICUS_PEOPLE__VIEWS__BATCH_MAX_EVENTS", "0"),
        ])
        .unwrap()
        .validate()
        .unwrap_err();
        let keys: Vec<&str> = bad.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "kafka.brokers",
                "identity.jwks_url",
                "identity.header",
                "views.batch_max_events"
            ]
        );
    }
}
