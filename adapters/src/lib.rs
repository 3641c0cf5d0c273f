//! `ficus-adapters`: change-data capture from the monolith's PostgreSQL into Kafka.
//!
//! Empty on purpose: logical replication (pgoutput), Debezium-compatible events, snapshots,
//! heartbeats and the outbox arrive with the change-data adapter issue.
