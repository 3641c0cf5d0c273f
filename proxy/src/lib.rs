//! `ficus-proxy`: the routing reverse proxy that stands in front of the monolith.
//!
//! Empty on purpose: the route table, the modes (monolith, shadow, canary, extracted), fallback,
//! live reload and the admin API arrive with the routing-proxy issue. Nothing here pretends to work
//! before then.
