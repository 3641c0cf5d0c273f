//! `ficus rollout` end to end: the controller binary drives the real proxy's routes file while
//! a load generator plays end users against the real monolith and the real people service
//! (its view fed by the change-data adapter from the monolith's PostgreSQL through the broker).
//!
//! - [`chain`]: a full rollout of `people-read` shadow → canary → extracted, and of two routes
//!   of one plan; two proxy instances on one routes file read and summed (from their admin
//!   listeners, and through a real Prometheus server's `/federate`); a candidate that
//!   mismatches in one field holds at shadow; one that starts failing in the canary rolls back
//!   (and stays paused across a controller restart until resumed; a person's pause then holds
//!   the canary); a low-traffic route never promotes on too few samples;
//! - [`cli`]: `ficus rollout check` of the repository's plan and of a broken one;
//! - [`sticky`]: raising a canary's percent keeps its users on the service, and a rollback
//!   moves the newest first.

mod chain;
mod cli;
mod sticky;
#[allow(dead_code)]
#[path = "../extracted/support.rs"]
mod support;
