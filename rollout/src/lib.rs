//! `ficus-rollout`: the controller behind `ficus rollout`, which moves routes through a plan
//! (shadow → canary percents → extracted) on evidence, never on time alone.
//!
//! ```text
//!  rollout.toml ─► plan ──────────────────────────────┐
//!  proxies' /metrics (or Prometheus /federate) ─► readings: deltas since the step began,
//!  the service's /views ─────────────────────────────►  summed over instances
//!                                                     ▼
//!                             gate::judge (stats: Wilson, Newcombe) ─► pass / fail / inconclusive
//!                                                     ▼
//!   controller: promote | roll back (then pause) | hold ─► ficus_proxy::edit::flip + check,
//!                                                          written atomically ─► routes.toml
//!                                                     ▼                          (proxies reload)
//!                              ledger (JSON lines: the decisions, and the controller's state)
//! ```
//!
//! Layout: [`plan`] (the file), [`readings`] (what is read and how it is summed), [`stats`]
//! and [`gate`] (pure judgement), [`controller`] (the loop and the edits), [`ledger`],
//! [`diff`], [`status`] (`ficus rollout status`), [`metrics`] (`ficus_rollout_*`).

pub mod controller;
pub mod diff;
pub mod gate;
pub mod ledger;
pub mod metrics;
pub mod plan;
pub mod readings;
pub mod stats;
pub mod status;

pub use controller::{Controller, ControllerError, set_paused};
pub use ledger::{Action, Entry, Ledger};
pub use plan::{Plan, Problems, RoutePlan, Step};
pub use stats::Verdict;
