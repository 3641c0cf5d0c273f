//! `ficus-adapters`: change-data capture from the monolith's PostgreSQL into Kafka, as
//! Debezium-compatible events, with nothing lost across crashes.
//!
//! ```text
//!  PostgreSQL ──pgoutput over the replication protocol──▶ source ──▶ decode ──▶ sink ──▶ Kafka
//!  (slot, publication)      (pg_walstream)                (relation   (Debezium   (idempotent
//!        ▲                                                 cache)      envelope)   producer, acks=all)
//!        └──────────── confirmed LSN: every event up to it acknowledged ◀── ack tracker ◀┘
//! ```
//!
//! Layout, one file role per concern (the same in every component):
//! - [`config`]: the TOML/env configuration and its validation (dotted keys in every error);
//! - [`source`]: the replication stream and the setup (publication, slot) before it;
//! - [`decode`]: relations, the type mapping ([`decode::types`], documented there), the
//!   envelope, outbox routing, transaction metadata ([`decode::transaction`]), logical
//!   decoding messages;
//! - [`regex_list`]: Debezium's include/exclude lists (comma-separated regular expressions);
//! - [`sink`]: the producer, topic creation, the acknowledgement tracker ([`sink::ack`]),
//!   size limits and the dead-letter policy ([`sink::dead_letter`]);
//! - [`snapshot`]: the initial snapshot, chunked and resumable, and the filter that keeps the
//!   stream consistent with it;
//! - [`heartbeat`]: heartbeat writes and the slot-lag monitor;
//! - [`metrics`]: Prometheus metrics (`ficus_cdc_*`) and their HTTP listener;
//! - [`health`]: what `/healthz` reports (healthy, or the failure that stopped the pipeline);
//! - [`error`]: the error type and its policy (retry / operator / never);
//! - [`failpoint`]: crash points at the windows that matter, for tests (cargo feature
//!   `failpoints`; nothing at all without it);
//! - [`migrations`]: ficus's own schema (`_ficus`, never named like a role), tracked in
//!   `_ficus.schema_migrations`;
//! - [`status`]: what `ficus cdc status` prints;
//! - [`pipeline`]: the supervisor that runs it all, restarts it with backoff after a
//!   retriable failure and stops it (unhealthy, still serving) after one no retry fixes;
//! - [`catalog`]: the catalog queries (types, keys, tables).
//!
//! Delivery is at-least-once: a WAL position is confirmed to PostgreSQL only once the broker
//! acknowledged every event up to it, so a crash replays, never skips.

pub mod bench;
pub mod catalog;
pub mod config;
pub mod decode;
pub mod error;
pub mod failpoint;
pub mod health;
pub mod heartbeat;
pub mod metrics;
pub mod migrations;
pub mod pipeline;
pub mod regex_list;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod status;

pub use config::CdcConfig;
pub use error::CdcError;
pub use pg_walstream::CancellationToken;
pub use pipeline::{run, run_with_listener};
