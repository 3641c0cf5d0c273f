//! `ficus-view`: the kit extracted services build on. A service keeps a materialized view of
//! the change topics it needs (Kafka Streams' KTable, in Rust), always caught up, instead of a
//! data copy kept in sync by hand, dual writes or remote calls into the monolith.
//!
//! Layout:
//! - [`event`]: the event contract as types, what `ficus cdc` writes (Debezium's shape): key,
//!   envelope, source, sequence, transaction block, tombstones, truncates, heartbeats, and the
//!   source [`Position`] the guard orders changes by;
//! - [`view`]: a view's declaration ([`ViewSpec`]: topic, typed columns, key) and the decoding
//!   of the adapter's JSON values into typed cells;
//! - [`join`]: the stream-table join, a view enriched from another view of the same store
//!   (tasks showing their assignee's name from people), joined at read time in a SQL view;
//! - [`store`]: SQLite (default, a file) or PostgreSQL (a URL) through sqlx; a batch of changes
//!   and its offsets in one transaction (PostgreSQL: a few multi-row statements per batch); the
//!   per-key source-position guard in the SQL;
//! - [`consumer`]: assign, seek to the stored offsets, poll, a bounded channel, batches;
//!   [`rebuild`]; [`start_transactional`]: several views applied a source transaction at a
//!   time (Debezium's transaction metadata), never half, and [`rebuild_transactional`];
//! - [`ready`]: readiness (caught up with the high watermarks seen at start) and lag;
//! - [`telemetry`]: `/readyz` and `/metrics` (`ficus_view_*`) as an axum router.
//!
//! Data flow:
//!
//! ```text
//! change topic --(assign + seek to stored offsets)--> poller --bounded channel--> applier
//!   applier: Event::decode -> Change (typed cells, Position) -> batch
//!   store:   one transaction { guarded upserts / deletes / truncates ; ficus_view_offsets }
//!   status:  offsets, applied position, watermarks -> /readyz, /metrics
//! ```
//!
//! Guarantees: an event is in the store exactly once or not at all together with its offset, so
//! a crash at any point neither skips nor re-applies one, and a restart resumes where the store
//! is (never from zero). A stale, duplicated or reordered event (adapter re-delivery, an old
//! producer's late messages) is a no-op by the guard: a row never goes back to an older state.

pub mod consumer;
pub mod error;
pub mod event;
pub mod join;
pub mod ready;
pub mod store;
pub mod telemetry;
pub mod view;

pub use consumer::{
    ConsumerConfig, DEFAULT_SETTLE_MS, Partitions, TransactionalViews, ViewHandle, ViewsHandle,
    rebuild, rebuild_transactional, start, start_transactional,
};
pub use error::{EventError, ViewError};
pub use event::{
    Envelope, Event, Heartbeat, Key, Op, Position, Source, TransactionBlock, TransactionMarker,
    TransactionStatus,
};
pub use join::{Join, Taken};
pub use ready::{StatusReport, ViewStatus};
pub use store::Store;
pub use view::{Cell, Column, ColumnType, ViewSpec};
