//! Starting the monolith, the one way both `ficus monolith` and the test harness do it:
//! migrate and prepare ([`Monolith::new`]), then serve on a listener the caller bound (the CLI
//! its configured address, tests `127.0.0.1:0`) until the returned [`Running`] is stopped.

use std::net::SocketAddr;
use std::sync::Arc;

use ficus_telemetry::{Health, Shutdown};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::{Monolith, MonolithConfig, SigningKey, StartError, realtime};

/// A monolith that serves. [`Running::stop`] (or a [`Shutdown`] trigger, then
/// [`Running::wait`]) stops it gracefully; dropping it aborts the server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its live WebSocket rooms.
    pub rooms: Arc<realtime::Rooms>,
    /// What `/healthz` and `/readyz` report.
    pub health: Health,
    shutdown: Shutdown,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// Migrates `db`, ensures the bootstrap admin and serves on `listener`.
pub async fn start(
    db: PgPool,
    keys: Arc<SigningKey>,
    config: MonolithConfig,
    listener: TcpListener,
) -> Result<Running, StartError> {
    let addr = listener.local_addr().map_err(StartError::Listener)?;
    let monolith = Monolith::new(db, keys, config).await?;
    let rooms = monolith.rooms();
    let health = monolith.health();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(monolith.serve(listener, shutdown.wait()));
    tracing::info!(listen = %addr, "monolith serving");
    Ok(Running {
        addr,
        rooms,
        health,
        shutdown,
        server: Some(server),
    })
}

impl Running {
    /// A handle that stops the monolith when triggered.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Waits until the server has stopped (after a trigger) and drained its requests.
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.server.take() {
            Some(server) => server.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }

    /// Stops accepting, lets in-flight requests finish, and returns.
    pub async fn stop(self) -> std::io::Result<()> {
        self.shutdown.trigger();
        self.wait().await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
