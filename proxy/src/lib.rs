//! `ficus-proxy`: the routing reverse proxy that stands in front of the monolith.
//!
//! Data flow of a request:
//!
//! ```text
//! client ─► server (h1/h2c, header read timeout) ─► handler::Proxy::handle
//!   ├─ table (ArcSwap, swapped whole on reload): most specific route, or the default
//!   ├─ limits: header bytes (431), body bytes (413)
//!   ├─ authz: spoofable headers out, token verified, route policy decided (401/403)
//!   ├─ Route::side: monolith | canary (sticky bucket < percent) | extracted
//!   ├─ headers: hop-by-hop out, X-Forwarded-*, x-request-id in; traceparent passes
//!   ├─ upstream (pooled keep-alive client) within the route's timeout (504) / connect (502)
//!   ├─ fallback: idempotent request, extracted side failed (connect, timeout, 5xx) → legacy
//!   └─ response streamed back; a 101 opens a tunnel (WebSockets)
//! ```
//!
//! Files: [`config`] the routes file and its validation; [`authz`] authorization at the edge; [`table`] compiled routes, matching and
//! stickiness; [`handler`] the request path; [`body`] the body type; [`upstream`] connection
//! pools; [`error`] the error type; [`tunnel`] upgrades; [`server`] the listener and graceful
//! shutdown; [`reload`] loading and live reload; [`admin`] the admin API; [`metrics`] Prometheus;
//! [`edit`] in-place edits for `ficus routes flip`; [`start`] the one way to start it all (the
//! CLI and the test harness both call [`start()`]).

pub mod admin;
pub mod authz;
pub mod body;
pub mod config;
pub mod edit;
pub mod error;
pub mod handler;
pub mod metrics;
pub mod reload;
pub mod server;
pub mod start;
pub mod table;
pub mod tunnel;
pub mod upstream;

pub use config::RoutesFile;
pub use handler::Proxy;
pub use reload::Loader;
pub use server::{ServerSettings, serve};
pub use start::{Listeners, Running, StartError, start};
