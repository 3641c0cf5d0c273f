//! The admin listener (loopback by default): the live table, Prometheus metrics, health.
//!
//! - `GET /routes`: the table in force with its version, load time and the last reload error;
//! - `GET /.well-known/jwks.json`: the public keys of the internal identity tokens;
//! - `GET /shadow`: per shadow or recording route, its settings and rules, the counters
//!   (compared, matched, mismatched, skipped by reason), the noise calibration learned, the last
//!   mismatches with their differences and `curl`s (redacted), and the recording's state;
//! - `GET /dashboard`: a page that shows it all live, from `GET /dashboard/state`
//!   ([`crate::dashboard`]);
//! - `GET /metrics`, `GET /healthz`, `GET /readyz`: served by `ficus-telemetry`'s admin router
//!   over the proxy's metrics and its [`Health`] (ready once a table is loaded and the client
//!   listener serves; not ready once shutdown begins).

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ficus_telemetry::Health;

use crate::dashboard::{self, Dashboard};
use crate::handler::Proxy;
use crate::reload::Loader;

/// What the admin handlers read.
#[derive(Clone)]
pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub loader: Arc<Loader>,
    /// Liveness and readiness (the ready flag is set once the client listener serves).
    pub health: Health,
    /// The dashboard's samples and probe client (made by [`Admin::new`]).
    pub dashboard: Arc<Dashboard>,
}

impl Admin {
    pub fn new(proxy: Arc<Proxy>, loader: Arc<Loader>, health: Health) -> Self {
        Self {
            proxy,
            loader,
            health,
            dashboard: Arc::new(Dashboard::default()),
        }
    }

    pub fn router(self) -> Router {
        let proxy = self.proxy.clone();
        let health = self.health.clone();
        let own = Router::new()
            .route("/routes", get(routes))
            .route("/.well-known/jwks.json", get(jwks))
            .route("/shadow", get(shadow))
            .route("/dashboard", get(dashboard::page))
            .route("/dashboard/state", get(dashboard::state))
            .with_state(self);
        ficus_telemetry::Admin::new(health)
            .metrics(move || proxy.metrics.encode())
            .routes(own)
            .router()
    }
}

async fn routes(State(admin): State<Admin>) -> Response {
    let table = admin.proxy.table();
    let last = admin.loader.last_attempt();
    let seconds = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    };
    let routes: Vec<serde_json::Value> = table
        .file
        .routes
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "path": r.path,
                "methods": r.methods,
                "headers": r.headers,
                "mode": r.mode.as_str(),
                "serve": r.serve,
                "monolith": table.file.monolith_of(r),
                "percent": r.percent,
                "sticky": r.sticky.as_deref().unwrap_or("ip"),
                "fallback": r.fallback,
                "timeout_ms": r.timeout_ms.unwrap_or(table.file.proxy.timeout_ms),
                "max_body_bytes": r.max_body_bytes.unwrap_or(table.file.proxy.max_body_bytes),
            })
        })
        .collect();
    let body = serde_json::json!({
        "version": table.version,
        "loaded_at_unix": seconds(table.loaded_at),
        "file": admin.loader.path().display().to_string(),
        "last_reload_error": last.error,
        "last_reload_attempt_unix": last.at.map(seconds),
        "default": table.file.proxy.default,
        "routes": routes,
    });
    axum::Json(body).into_response()
}

/// The public keys of the internal identity tokens (empty without `[auth.internal_token]`).
async fn jwks(State(admin): State<Admin>) -> Response {
    let table = admin.proxy.table();
    let keys = table
        .authz
        .as_ref()
        .and_then(|a| a.signer())
        .map(|s| s.jwks())
        .unwrap_or_else(|| serde_json::json!({ "keys": [] }));
    axum::Json(keys).into_response()
}

/// Shadow comparison and recording, per route that does either ([`crate::shadow`]).
async fn shadow(State(admin): State<Admin>) -> Response {
    let table = admin.proxy.table();
    let routes: Vec<serde_json::Value> = table
        .routes
        .iter()
        .filter_map(|route| {
            route
                .parity
                .as_ref()
                .map(|parity| parity.status(route.mode.as_str()))
        })
        .collect();
    axum::Json(serde_json::json!({ "version": table.version, "routes": routes })).into_response()
}
