//! `ficus-proxy`: the routing reverse proxy that stands in front of the monolith.
//!
//! Data flow of a request: a route on the table in force, one context per request, then the
//! phases of [`handler`] in order (each a method of [`Proxy`]; a phase that refuses returns a
//! [`error::ProxyError`], answered in the last phase):
//!
//! ```text
//! client ─► server (cap, accept backoff) ─► connection (TLS, handshake and idle deadlines;
//!            h1/h2 by ALPN or preface, header read timeout) ─► handler::Proxy::handle
//!   ├─ 0 read the target: x-ficus-* out, exact method, canonical path (path), one Host (target)
//!   ├─ table (ArcSwap, swapped whole on reload): most specific route, or the default
//!   ├─ Ctx::new: request id, trusted client?, idempotent?, declared length
//!   ├─ 1 admit: header bytes (431), body bytes (413); authz: spoofable headers out, token
//!   │    verified, route policy decided (401/403, 503 without keys)
//!   ├─ 2 choose the side: Route::side: monolith | canary (sticky bucket < percent) | extracted
//!   ├─ 3 plan the body: hop-by-hop out, X-Forwarded-*, identity in; body streamed, or kept
//!   │    whole (bounded) when a fallback may replay it
//!   ├─ 4 forward: pooled keep-alive client, route's timeout (504) / connect (502)
//!   │    beside it on shadow/recording routes (shadow): a job copies the request to the
//!   │    extracted side, compares (ficus-parity), records; never awaited, never returned
//!   ├─ 5 fall back: idempotent, extracted side failed (connect, timeout, 5xx) → monolith
//!   └─ 6 respond and record: response streamed back (a 101 opens a tunnel), or ficus's own
//!        answer from the error; metrics by who answered (monolith | extracted | proxy)
//! ```
//!
//! HTTP/1.1 clients take the lean path of [`lean`] by default (`ServerSettings::http1`): the
//! same phases from the client's task, without hyper, for monolith, canary and extracted routes
//! over `http://` upstreams; what it does not serve goes to hyper with the connection.
//!
//! Files: [`config`] the routes file as typed values; [`check`] the one check of a routes file
//! (loader, `ficus routes check|flip`); [`authz`] authorization at the edge; [`table`] compiled routes, matching and
//! stickiness; [`handler`] the request path; [`body`] the body type; [`upstream`] connection
//! pools; [`error`] the error type; [`tunnel`] upgrades; [`server`] the listener and graceful
//! shutdown; [`connection`] one client connection and its deadlines; [`tls`] rustls
//! configurations; [`reload`] loading and live reload; [`shadow`] shadow mode and recording; [`admin`] the admin API; [`dashboard`] its live page; [`metrics`] Prometheus;
//! [`edit`] in-place edits for `ficus routes flip`; [`path`] the canonical path; [`target`] the
//! target read before routing (methods, Host, overrides, upgrade offers); [`start`] the one way to start it all (the
//! CLI and the test harness both call [`start()`]).

pub mod admin;
pub mod authz;
pub mod body;
pub mod check;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod edit;
pub mod error;
pub mod handler;
pub mod lean;
pub mod metrics;
pub mod path;
pub mod reload;
pub mod server;
pub mod shadow;
pub mod start;
pub mod table;
pub mod target;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use check::{CheckedFile, check};
pub use config::{Problem, Problems, RoutesFile};
pub use handler::Proxy;
pub use lean::Http1Path;
pub use reload::Loader;
pub use server::{ServerSettings, serve};
pub use start::{Listeners, Running, StartError, start};
