//! `ficus-telemetry`: the process plumbing every ficus component shares, written once.
//!
//! A component (the proxy, the change-data adapter, the monolith, the extracted services) is
//! started the same way:
//!
//! ```text
//! file (TOML) ─┐
//! FICUS_<SECTION>__<KEY> (an Env passed in) ─┼─► config::Loader ─► typed settings ─► component::start
//! flags ───────┘                                                            │
//! logs::init (RUST_LOG or DEFAULT_FILTER) ◄── main                          ▼
//!                                 admin::Admin ─► /metrics, /healthz, /readyz (+ the component's routes)
//!                                   ▲ metrics::Exposition   ▲ health::Health (named checks, ready flag)
//! ```
//!
//! Files: [`env`] the environment behind a trait (tests pass a map); [`config`] the layered
//! loader whose errors name the key and where its value came from; [`logs`] the tracing
//! subscriber; [`metrics`] the registry holder and the Prometheus text exposition;
//! [`histogram`] a latency histogram cheap to observe on a request path, over fine bounds; [`health`]
//! liveness and readiness state; [`admin`] the router that serves them; [`shutdown`] a
//! cloneable stop signal for `start` functions.
//!
//! And the reading side of what components serve, for the proxy's dashboard and the rollout
//! controller alike: [`scrape`] a text exposition parsed into samples and a histogram's
//! quantile; [`views`] an extracted service's `/views` report, typed.

pub mod admin;
pub mod config;
pub mod env;
pub mod health;
pub mod histogram;
pub mod logs;
pub mod metrics;
pub mod scrape;
pub mod shutdown;
pub mod views;

pub use admin::Admin;
pub use config::{ConfigError, Loader};
pub use env::{Env, ProcessEnv};
pub use health::Health;
pub use metrics::{Exposition, MetricsRegistry};
pub use shutdown::Shutdown;
