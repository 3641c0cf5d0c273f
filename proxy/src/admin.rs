//! The admin listener (loopback by default): the live table, Prometheus metrics, health.
//!
//! - `GET /routes`: the table in force with its version, load time and the last reload error;
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: the process is up; `GET /readyz`: a table is loaded and the proxy serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::handler::Proxy;
use crate::reload::Loader;

/// What the admin handlers read.
#[derive(Clone)]
pub struct Admin {
    pub proxy: Arc<Proxy>,
    pub loader: Arc<Loader>,
    /// Set once the client listener serves; cleared when shutdown begins.
    pub ready: Arc<AtomicBool>,
}

impl Admin {
    pub fn router(self) -> Router {
        Router::new()
            .route("/routes", get(routes))
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(self)
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

async fn metrics(State(admin): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        admin.proxy.metrics.encode(),
    )
        .into_response()
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

async fn readyz(State(admin): State<Admin>) -> (StatusCode, &'static str) {
    if admin.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
