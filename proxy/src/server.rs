//! The client-facing listener: HTTP/1.1 and HTTP/2 (h2c prior knowledge) on one port, header
//! read timeout against slow clients, graceful shutdown that drains within a bound.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::handler::Proxy;

/// Listener settings that are not in the routes file (they cannot change on reload).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// A client must send its whole header section within this time.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for in-flight requests and tunnels.
    pub shutdown_grace: Duration,
    /// Hard cap on an HTTP/1 header section (hyper answers 431 itself past it; the routes
    /// file's `max_header_bytes` is the finer, JSON-answered limit below it).
    pub max_header_bytes_hard: usize,
    /// Forward HTTP/1 header names in the case the client wrote them (legacy apps sometimes
    /// depend on it; costs about 5% of throughput, see docs/BENCHMARKS.md).
    pub preserve_header_case: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            max_header_bytes_hard: 64 * 1024,
            preserve_header_case: true,
        }
    }
}

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight requests
/// and tunnels finish within `shutdown_grace`, and returns.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_header_bytes_hard.max(8192))
        .preserve_header_case(settings.preserve_header_case)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(settings.max_header_bytes_hard as u32);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let service = service_fn(move |request| {
            let proxy = proxy.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(request, client).await) }
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %client, "connection ended with an error");
            }
        });
    }
    tracing::info!("draining connections");
    let tunnels = proxy.tunnels.drain(settings.shutdown_grace);
    let connections = async {
        if tokio::time::timeout(settings.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open at the end of the grace period");
        }
    };
    tokio::join!(tunnels, connections);
}
