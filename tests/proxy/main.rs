//! The routing proxy end to end: real listeners, real upstreams on loopback, the routes file on
//! disk and watched live.
//!
//! HTTP/1 clients are served by the lean path here (the default); `tests/proxy_hyper` runs the
//! same suite (`suite.rs`) with hyper serving every connection.

/// The HTTP/1 path this target's proxies use.
const HTTP1: ficus_proxy::Http1Path = ficus_proxy::Http1Path::Lean;

include!("suite.rs");
