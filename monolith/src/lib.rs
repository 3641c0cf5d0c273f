//! `ficus-monolith`: the legacy application that ficus strangles in the demo and the tests.
//!
//! A deliberately ordinary monolith, with the habits real ones have, so that parity, CDC and
//! edge authz are exercised against something realistic:
//!
//! - [`people`] user management, [`tasks`] whose JSON joins the assignee's name from people,
//!   [`documents`] streamed binary uploads and downloads, [`realtime`] WebSocket rooms;
//! - [`auth`]: `POST /api/login` issues RS256 JWTs, `/.well-known/jwks.json` publishes the key,
//!   and every `/api` route checks the token itself (the legacy authz the proxy later lifts to
//!   the edge);
//! - generated ids, `updated_at` timestamps, pagination links and ETags on reads;
//! - [`error`]: every bad input gets a precise 4xx with a JSON body naming the problem; writes are
//!   single statements or transactions, so nothing is half-written.
//!
//! The schema lives in `migrations/monolith/` at the workspace root and is applied at start
//! ([`MIGRATOR`]). Data flow: HTTP request → axum router (tracing span, request id, metrics) →
//! extractor checks the token → handler → PostgreSQL through sqlx → JSON response.
//! `/metrics`, `/healthz` and `/readyz` (a database ping) come from `ficus-telemetry`'s admin
//! router, merged into the app's; [`start()`] is how both `ficus monolith` and the tests run it.

pub mod auth;
pub mod config;
pub mod documents;
pub mod error;
mod extract;
mod http;
mod metrics;
pub mod people;
pub mod realtime;
mod start;
pub mod tasks;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::routing::{get, post};
use ficus_telemetry::Health;
use ficus_telemetry::health::Scope;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use auth::{Claims, SigningKey};
pub use config::{AdminAccount, MonolithConfig};
pub use start::{Running, start};

use error::ApiError;

/// The monolith's schema migrations, embedded from `migrations/monolith/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/monolith");

/// Why the monolith could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    db: PgPool,
    keys: Arc<SigningKey>,
    config: Arc<MonolithConfig>,
    rooms: Arc<realtime::Rooms>,
    metrics: Arc<metrics::Metrics>,
}

/// A ready-to-serve monolith: migrated database, bootstrap admin ensured.
pub struct Monolith {
    state: AppState,
    health: Health,
}

impl Monolith {
    /// Applies the migrations, ensures the bootstrap admin, and prepares the routes.
    pub async fn new(
        db: PgPool,
        keys: Arc<SigningKey>,
        config: MonolithConfig,
    ) -> Result<Self, StartError> {
        MIGRATOR.run(&db).await?;
        if let Some(admin) = &config.bootstrap_admin {
            people::ensure_admin(&db, admin).await?;
        }
        let health = Health::new();
        let pool = db.clone();
        health.probe("database", Scope::Ready, move || {
            let pool = pool.clone();
            async move {
                match sqlx::query("SELECT 1").execute(&pool).await {
                    Ok(_) => Ok(()),
                    Err(error) => {
                        tracing::warn!(%error, "readiness check failed");
                        Err(format!("database unavailable: {error}"))
                    }
                }
            }
        });
        health.set_ready(true);
        Ok(Self {
            health,
            state: AppState {
                db,
                keys,
                config: Arc::new(config),
                rooms: Arc::default(),
                metrics: Arc::default(),
            },
        })
    }

    /// The HTTP application.
    pub fn router(&self) -> Router {
        let state = self.state.clone();
        let admin = ficus_telemetry::Admin::new(self.health.clone())
            .metrics(state.metrics.registry.clone())
            .router();
        Router::new()
            .route("/api/login", post(auth::login))
            .route("/.well-known/jwks.json", get(auth::jwks))
            .route("/api/people", get(people::list).post(people::create))
            .route(
                "/api/people/{id}",
                get(people::read)
                    .patch(people::update)
                    .delete(people::delete),
            )
            .route("/api/tasks", get(tasks::list).post(tasks::create))
            .route(
                "/api/tasks/{id}",
                get(tasks::read).patch(tasks::update).delete(tasks::delete),
            )
            .route(
                "/api/documents",
                get(documents::list).post(documents::upload),
            )
            .route(
                "/api/documents/{id}",
                get(documents::download).delete(documents::delete),
            )
            .route("/api/documents/{id}/metadata", get(documents::metadata))
            .route("/api/rooms/{room}/ws", get(realtime::join))
            .route("/api/me", get(people::me))
            .with_state(state.clone())
            .merge(admin)
            .route_layer(axum::middleware::from_fn_with_state(
                state.clone(),
                metrics::track,
            ))
            .fallback(no_route)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(state.config.max_json_bytes))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(
                TraceLayer::new_for_http().make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!(
                        "http",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                    )
                }),
            )
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    }

    /// Liveness and readiness (ready while serving and the database answers).
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Live WebSocket rooms (for tests and metrics).
    pub fn rooms(&self) -> Arc<realtime::Rooms> {
        self.state.rooms.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then drains in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self.router();
        let health = self.health.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                health.set_ready(false);
            })
            .await
    }
}

async fn no_route(request: Request) -> ApiError {
    ApiError::not_found("route", request.uri().path())
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(request.method().as_str(), request.uri().path())
}
