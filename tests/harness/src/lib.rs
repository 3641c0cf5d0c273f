//! `ficus-testkit`: what every test against real services needs, in one place.
//!
//! - [`TestDatabase`]: a database of its own per test on the private PostgreSQL that
//!   `scripts/services` starts (random name, dropped afterwards), optionally migrated;
//! - [`kafka`]: the broker's address, a topic name per test, topic creation, and a reader that
//!   reads a topic to its end or until a condition holds ([`kafka::read_topic`],
//!   [`kafka::wait_for_messages`]);
//! - [`PrivateBroker`]: a Tansu broker of a test's own, to stop and start (an outage);
//! - [`TestMonolith`]: the legacy monolith in-process on `127.0.0.1:0` over its own database,
//!   started by `ficus_monolith::start` like `ficus monolith`;
//! - [`TestAdapter`]: the change-data adapter in-process over a test database (slot, publication
//!   and topic prefix of its own; the slot dropped when it stops);
//! - [`TestProxy`]: the routing proxy in-process over a routes file it watches, started by
//!   `ficus_proxy::start` like `ficus proxy`;
//! - [`TestUpstream`]: small servers that say who they are, to tell which side answered (over
//!   TLS too);
//! - [`raw`]: raw HTTP/1.1 at both ends, for attacks: an upstream that records the bytes it
//!   receives (and can normalize paths like nginx, or accept h2c upgrades), a client that
//!   sends bytes as written;
//! - [`tls`]: a certificate authority per test, TLS servers and a client with a chosen ALPN;
//! - [`TestPrometheus`]: a real Prometheus server (Debian's `prometheus`) scraping the proxies
//!   a test starts, on a free port with a config and a TSDB of its own.
//!
//! The services' addresses come from `FICUS_TEST_DATABASE_URL` and `FICUS_TEST_KAFKA_BROKERS`
//! (`eval "$(scripts/services env)"`, or run everything with `scripts/test`). A test that finds
//! them missing fails with a message naming the script: tests never mock these services.

mod adapter;
mod broker;
mod db;
pub mod kafka;
mod monolith;
mod prometheus;
mod proxy;
pub mod raw;
pub mod tls;
pub mod upstream;

pub use adapter::{SERVICE_FORM, TestAdapter};
pub use broker::PrivateBroker;
pub use db::TestDatabase;
pub use monolith::{TestMonolith, shared_signing_key};
pub use prometheus::TestPrometheus;
pub use proxy::TestProxy;
pub use upstream::TestUpstream;

/// Where the tests find PostgreSQL: a URL to a database the test user may `CREATE DATABASE` from.
pub const DATABASE_URL_VAR: &str = "FICUS_TEST_DATABASE_URL";
/// Where the tests find the Kafka broker: `host:port[,host:port]`.
pub const KAFKA_BROKERS_VAR: &str = "FICUS_TEST_KAFKA_BROKERS";

/// Reads a service address from the environment, or fails the test saying how to get one.
pub fn service_env(var: &str) -> String {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{var} is not set: the tests need the real services. Start them with \
             `scripts/services start` and load their addresses with \
             `eval \"$(scripts/services env)\"`, or run every test with `scripts/test`."
        ),
    }
}

/// A short random suffix for names a test owns (databases, topics).
pub fn unique_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().r#gen();
    format!("{n:016x}")
}

/// Sends `tracing` output to the test's captured output, once per process (`RUST_LOG` filters,
/// `warn` by default).
pub fn init_tracing() {
    ficus_telemetry::logs::init_for_tests();
}
