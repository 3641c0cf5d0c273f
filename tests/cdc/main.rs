//! The change-data adapter end to end, against the real PostgreSQL and the real broker that
//! `scripts/services` starts: each test has its own database, slot, publication and topic
//! prefix, and drops its slot at the end. Crash tests run the real `ficus cdc run` and kill it;
//! the broker-outage and restart tests run private services of their own.

mod broker;
mod cli;
mod conformance;
mod crash;
mod failures;
mod heartbeat;
mod oracle;
mod oversize;
mod position;
mod reconnect;
mod roundtrip;
mod schema;
mod snapshot;
mod support;
