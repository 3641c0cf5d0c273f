//! Starting the proxy, the one way both `ficus proxy` and the test harness do it: load the
//! routes file, watch it, serve the admin router and the client listener on listeners the
//! caller bound (the CLI its configured addresses, tests `127.0.0.1:0`), and hand back a
//! [`Running`] to stop it.
//!
//! ```text
//! start(routes_file, ServerSettings, Listeners)
//!   ├─ Loader::load ─► Proxy (table, metrics)
//!   ├─ Loader::watch (file changes, SIGHUP) ─► Proxy::swap
//!   ├─ admin listener: /routes, JWKS, /shadow, /dashboard, /metrics, /healthz, /readyz
//!   └─ client listener: server::serve until Shutdown, then drain
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ficus_telemetry::{Health, Shutdown};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::handler::Proxy;
use crate::metrics::Metrics;
use crate::reload::{LoadError, Loader};
use crate::server::{ServerSettings, serve};

/// The listeners the proxy serves, bound by the caller.
pub struct Listeners {
    /// Where clients connect.
    pub client: TcpListener,
    /// The admin API (keep it on loopback or a private network).
    pub admin: TcpListener,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading the routes file: {0}")]
    Load(#[from] LoadError),
    #[error("watching the routes file: {0}")]
    Watch(#[source] std::io::Error),
    #[error("reading a listener's address: {0}")]
    Address(#[source] std::io::Error),
}

/// A proxy that serves. [`Running::stop`] (or a [`Shutdown`] trigger, then
/// [`Running::wait`]) stops it gracefully; dropping it aborts its tasks.
pub struct Running {
    /// The client listener's address.
    pub addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub loader: Arc<Loader>,
    /// Liveness and readiness, as `/healthz` and `/readyz` report them.
    pub health: Health,
    shutdown: Shutdown,
    server: Option<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the proxy over `routes_file`. Call from within a tokio runtime.
pub fn start(
    routes_file: &Path,
    settings: ServerSettings,
    listeners: Listeners,
) -> Result<Running, StartError> {
    let addr = listeners.client.local_addr().map_err(StartError::Address)?;
    let admin_addr = listeners.admin.local_addr().map_err(StartError::Address)?;
    let metrics = Arc::new(Metrics::default());
    let loader = Arc::new(Loader::new(routes_file, metrics.clone()));
    let table = loader.load()?;
    tracing::info!(
        routes = table.routes.len(),
        file = %routes_file.display(),
        "route table loaded"
    );
    let proxy = Arc::new(Proxy::new(table, metrics));
    let watch = loader
        .clone()
        .watch(proxy.clone())
        .map_err(StartError::Watch)?;

    let health = Health::new();
    let shutdown = Shutdown::new();
    let admin = Admin::new(proxy.clone(), loader.clone(), health.clone()).router();
    let admin_listener = listeners.admin;
    let admin_task = tokio::spawn(async move {
        if let Err(error) = axum::serve(admin_listener, admin).await {
            tracing::error!(%error, "admin listener failed");
        }
    });
    let stop = shutdown.clone();
    let draining = health.clone();
    let server = tokio::spawn(serve(
        listeners.client,
        proxy.clone(),
        settings,
        async move {
            stop.wait().await;
            // Out of the load balancer first, then drain.
            draining.set_ready(false);
        },
    ));
    health.set_ready(true);
    tracing::info!(listen = %addr, admin = %admin_addr, "proxy serving");
    Ok(Running {
        addr,
        admin_addr,
        proxy,
        loader,
        health,
        shutdown,
        server: Some(server),
        tasks: vec![watch, admin_task],
    })
}

impl Running {
    /// A handle that stops the proxy when triggered (signal handlers, tests).
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until the client listener has stopped and drained (after a trigger), then stops
    /// the watcher and the admin listener.
    pub async fn wait(mut self) {
        if let Some(server) = self.server.take()
            && let Err(error) = server.await
        {
            tracing::error!(%error, "the proxy's server task failed");
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        tracing::info!("proxy stopped");
    }

    /// Stops accepting, drains within the shutdown grace, and returns.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.wait().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(server) = self.server.take() {
            server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }
}
