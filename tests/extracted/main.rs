//! The extracted services end to end: the monolith writes, `ficus cdc` streams its PostgreSQL
//! into the broker, the service binaries (`ficus-people`, `ficus-tasks`) keep their views and
//! answer through the proxy; real PostgreSQL, real broker, real processes.
//!
//! - [`parity`]: every read answered alike by the monolith and the service (status, the
//!   headers that matter, JSON bytes), with the convergence lag measured and printed;
//! - [`restore`]: kill -9 of a service restoring a topic of many thousands of events; after the
//!   restart the view equals the table, no event was applied twice, nothing restarted from zero;
//!   readiness false until caught up, then true;
//! - [`lag`]: the convergence lag at 1,000 writes/s sustained (a benchmark, ignored unless
//!   `scripts/bench-lag` runs it);
//! - [`outage`]: the broker killed under the people service: it keeps serving its view and
//!   reports its lag, then catches up;
//! - [`transaction`]: the tasks service applies a monolith transaction whole: a rename of the
//!   assignee and an edit of the task in one transaction are never seen half;
//! - [`shadow`]: the service shadowed behind the monolith (all compared, none mismatched), its
//!   reads recorded into a corpus that `ficus parity` replays green.

mod lag;
mod outage;
mod parity;
mod restore;
mod shadow;
mod support;
mod transaction;
